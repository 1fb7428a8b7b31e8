"""Asset checks on every hourly partition of the flattened tables, computed in the step that flattens them.

The checks are ``check_specs`` of the ``raw_responses`` multi-asset (assets.py, with the five flattened
tables): that step has just written the partition's five files and holds the flattening stats and the key facts
of the rows it wrote (``lib/tables.py`` ``KeyFacts``, gathered batch by batch as they were written), so it
judges them itself, without reading a file back (memory: 16 bytes per response, whatever the child tables
hold), and yields an ``AssetCheckResult`` per check after the materializations (no process, step or instance
read per check).
Each check is partitioned like its asset (``partitions_def`` on the spec; Dagster 1.13 then records the
evaluation with the step's partition key, ``AssetCheckResult.to_asset_check_evaluation``), so the UI shows
each hour's result and a failed hour stays failed when the next hour passes.

Blocking checks (severity ERROR) catch data that is wrong: Dagster fails the step once it has yielded every
result (``execute_step.py``: ``DagsterAssetCheckFailedError``), so the current tables are not rebuilt in that
run. The checks that judge a whole partition (nps range, row counts, child rows) also quarantine it in the
lake (``Lake.quarantine``: ``_state/quarantine/``; read by ``lib/current.py``), so later rebuilds of the
current tables leave it out until the check passes again. The uniqueness check does not quarantine: the
current tables already leave out, response by response, a version fetched twice in one page. Warning checks
flag what is only suspicious.

The non-responses' tables have four checks of their own (``NON_RESPONSES_CHECK_SPECS``, computed in their step
the same way): unique number_customergauge, one row per raw row, no unknown fields, and every
``non_response_properties`` row pointing to a non-response of its partition. None blocks or quarantines: a
non-response fetched twice in one page is left out of the current tables, as a response is.

A check does not run alone: the five files are written together, so re-checking an hour means materializing
its flattened tables again (re-flattened from the raw file, no API request), which runs every check.

Every account's group has the same checks (``partition_check_specs(names)``, ``non_responses_check_specs(names)``
on its own asset keys); one code judges them all: each result takes its asset key from the selected check key.
"""

import warnings
from collections.abc import Iterator
from collections.abc import Set as AbstractSet

import dagster as dg
import numpy as np

from cg_dagster.customergauge.keys import DEFAULT, AccountNames
from cg_dagster.customergauge.partitions import hourly_partitions
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.schemas import CHILD_TABLES, NON_RESPONSE_PROPERTIES, RAW_NON_RESPONSES_TABLE, RAW_TABLE
from cg_dagster.lib.tables import FlattenedPartition, KeyFacts

UNIQUE = "responses_number_customergauge_unique"
NPS_IN_RANGE = "responses_nps_in_range"
ROW_COUNT = "responses_row_count_matches_raw"
NO_UNKNOWN_FIELDS = "responses_no_unknown_fields"
NON_RESPONSES_UNIQUE = "non_responses_number_customergauge_unique"
NON_RESPONSES_ROW_COUNT = "non_responses_row_count_matches_raw"
NON_RESPONSES_NO_UNKNOWN_FIELDS = "non_responses_no_unknown_fields"
NON_RESPONSE_PROPERTIES_POINT = f"{NON_RESPONSE_PROPERTIES.name}_rows_point_to_non_responses"


def _child_check_name(table: str) -> str:
    return f"{table}_rows_point_to_responses"


def _spec(
    name: str, asset: dg.AssetKey, description: str, blocking: bool = True, additional_deps=()
) -> dg.AssetCheckSpec:
    """A check of ``asset``, partitioned like it (one result per hourly partition)."""
    with warnings.catch_warnings():  # partitions_def on a check spec is marked preview in 1.13; it is what we need
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name,
            asset=asset,
            description=description,
            blocking=blocking,
            additional_deps=additional_deps,
            partitions_def=hourly_partitions,
        )


def partition_check_specs(names: AccountNames) -> list[dg.AssetCheckSpec]:
    """The eight checks of an account's flattened response tables (``names``: its asset keys)."""
    responses = names.flat_keys["responses"]
    return [
        _spec(
            UNIQUE,
            responses,
            "number_customergauge is unique in the partition. Two rows of the same fetch (same fetched_at) are a "
            "duplication bug (ERROR); two fetches of one response in one window (the API re-sent it while we "
            "paged) are only suspicious (WARN): the current tables keep the latest.",
        ),
        _spec(NPS_IN_RANGE, responses, "nps is 0..10 or null (NPS scale)."),
        _spec(
            ROW_COUNT,
            responses,
            "responses has exactly one row per row of raw_responses in the partition: nothing lost in flattening.",
            additional_deps=[names.raw_key],
        ),
        _spec(
            NO_UNKNOWN_FIELDS,
            responses,
            "The API sent no fields the table contract does not know (top-level keys, keys of nested objects or of "
            "list items). Unknown fields are kept in raw_responses.record_json; when this warns, extend "
            "lib/schemas.py.",
            blocking=False,
        ),
        *(
            _spec(
                _child_check_name(table),
                names.flat_keys[table],
                f"Every row of {table} has a number_customergauge that is in responses of the same partition.",
                additional_deps=[responses],
            )
            for table in CHILD_TABLES
        ),
    ]


def non_responses_check_specs(names: AccountNames) -> list[dg.AssetCheckSpec]:
    """The four checks of an account's non-responses' tables (``names``: its asset keys)."""
    return [
        _spec(
            NON_RESPONSES_UNIQUE,
            names.non_responses_key,
            "number_customergauge is unique in the partition (severity as for responses: ERROR within one fetch, "
            "WARN across two); the current table keeps the latest unambiguous version.",
            blocking=False,
        ),
        _spec(
            NON_RESPONSES_ROW_COUNT,
            names.non_responses_key,
            "non_responses has exactly one row per row of raw_non_responses in the partition.",
            blocking=False,
            additional_deps=[names.raw_non_responses_key],
        ),
        _spec(
            NON_RESPONSES_NO_UNKNOWN_FIELDS,
            names.non_responses_key,
            "The API sent no fields the table contract does not know (kept in raw_non_responses.record_json).",
            blocking=False,
        ),
        _spec(
            NON_RESPONSE_PROPERTIES_POINT,
            names.non_response_keys[NON_RESPONSE_PROPERTIES.name],
            f"Every row of {NON_RESPONSE_PROPERTIES.name} has a number_customergauge that is in non_responses of "
            "the same partition.",
            blocking=False,
            additional_deps=[names.non_responses_key],
        ),
    ]


PARTITION_CHECK_SPECS = partition_check_specs(DEFAULT)  # the default account's
NON_RESPONSES_CHECK_SPECS = non_responses_check_specs(DEFAULT)


def non_responses_check_results(
    lake: Lake, partition_key: str, done: FlattenedPartition, selected: AbstractSet[dg.AssetCheckKey]
) -> Iterator[dg.AssetCheckResult]:
    """The results of the ``selected`` non-responses checks (of any account: each result is on its check key's
    asset) on one partition ``flatten_partition`` just wrote (raw row count from the raw file's footer, the
    rest from ``done``). Nothing is quarantined."""
    keys = {key.name: key.asset_key for key in selected}
    if NON_RESPONSES_UNIQUE in keys:
        yield _unique(done.facts, keys[NON_RESPONSES_UNIQUE], NON_RESPONSES_UNIQUE)
    if NON_RESPONSES_ROW_COUNT in keys:
        raw = lake.parquet_file(lake.partition_path(RAW_NON_RESPONSES_TABLE, partition_key)).metadata.num_rows
        flat = done.rows["non_responses"]
        yield dg.AssetCheckResult(
            asset_key=keys[NON_RESPONSES_ROW_COUNT],
            check_name=NON_RESPONSES_ROW_COUNT,
            passed=raw == flat,
            metadata={"raw_rows": raw, "non_responses_rows": flat},
        )
    if NON_RESPONSES_NO_UNKNOWN_FIELDS in keys:
        yield _no_unknown_fields(done, keys[NON_RESPONSES_NO_UNKNOWN_FIELDS], NON_RESPONSES_NO_UNKNOWN_FIELDS)
    if NON_RESPONSE_PROPERTIES_POINT in keys:
        orphans = done.facts.orphans(NON_RESPONSE_PROPERTIES.name)
        yield dg.AssetCheckResult(
            asset_key=keys[NON_RESPONSE_PROPERTIES_POINT],
            check_name=NON_RESPONSE_PROPERTIES_POINT,
            passed=len(orphans) == 0,
            metadata=_orphan_metadata(orphans),
        )


def partition_check_results(
    lake: Lake, partition_key: str, done: FlattenedPartition, selected: AbstractSet[dg.AssetCheckKey]
) -> Iterator[dg.AssetCheckResult]:
    """The results of the ``selected`` checks (of any account: each result is on its check key's asset) on one
    partition that ``flatten_partition`` just wrote.

    Reads the partition's raw row count from its footer; the rest comes from what the flattening wrote:
    ``done.rows``, ``done.facts`` (keys, nps, child rows without a response) and ``done.stats`` (unknown
    fields). Quarantines (or releases) the partition per whole-partition check as a side effect.
    """
    keys = {key.name: key.asset_key for key in selected}
    if UNIQUE in keys:
        yield _unique(done.facts, keys[UNIQUE], UNIQUE)
    if NPS_IN_RANGE in keys:
        out_of_range = done.facts.nps_out_of_range
        yield _judged(lake, partition_key, keys, NPS_IN_RANGE, out_of_range == 0, {"out_of_range": out_of_range})
    if ROW_COUNT in keys:
        raw = lake.parquet_file(lake.partition_path(RAW_TABLE, partition_key)).metadata.num_rows  # local or s3://
        flat = done.rows["responses"]
        yield _judged(lake, partition_key, keys, ROW_COUNT, raw == flat, {"raw_rows": raw, "responses_rows": flat})
    if NO_UNKNOWN_FIELDS in keys:
        yield _no_unknown_fields(done, keys[NO_UNKNOWN_FIELDS], NO_UNKNOWN_FIELDS)
    for table in CHILD_TABLES:
        name = _child_check_name(table)
        if name in keys:
            orphans = done.facts.orphans(table)
            yield _judged(lake, partition_key, keys, name, len(orphans) == 0, _orphan_metadata(orphans))


def _orphan_metadata(orphans) -> dict:
    """Metadata of a child-rows check: how many numbers of child rows are in no key table row, and examples."""
    return {"orphan_numbers": len(orphans), "examples": dg.MetadataValue.json(orphans.to_pylist()[:20])}


def _no_unknown_fields(done: FlattenedPartition, asset: dg.AssetKey, name: str) -> dg.AssetCheckResult:
    """WARN naming the record fields the contract does not know (``done.stats.unknown_fields``), if any."""
    unknown = sorted(done.stats.unknown_fields)
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=not unknown,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"unknown_fields": dg.MetadataValue.json(unknown)},
    )


def _unique(facts: KeyFacts, asset: dg.AssetKey, name: str) -> dg.AssetCheckResult:
    """Numbers held by more than one key table row; ERROR when two of those rows share their fetch."""
    numbers, fetched_at = facts.responses_keys()
    ordered = np.sort(numbers)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    pairs, counts = np.unique(
        np.column_stack([numbers, fetched_at])[np.isin(numbers, repeated)], axis=0, return_counts=True
    )
    same_fetch = np.unique(pairs[counts > 1, 0])
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=repeated.size == 0,
        severity=dg.AssetCheckSeverity.ERROR if same_fetch.size else dg.AssetCheckSeverity.WARN,
        metadata={
            "duplicated_numbers": repeated.size,
            "duplicated_within_one_fetch": same_fetch.size,
            "examples": dg.MetadataValue.json(repeated[:20].tolist()),
        },
    )


def _judged(
    lake: Lake, partition_key: str, keys: dict[str, dg.AssetKey], name: str, passed: bool, metadata: dict
) -> dg.AssetCheckResult:
    """The result of check ``name`` (on ``keys[name]``) that quarantines its partition on failure and releases
    it on success."""
    if passed:
        lake.release(partition_key, name)
    else:
        lake.quarantine(partition_key, name, {"metadata": {k: v for k, v in metadata.items() if isinstance(v, int)}})
    return dg.AssetCheckResult(
        asset_key=keys[name], check_name=name, passed=passed, metadata={**metadata, "quarantined": not passed}
    )
