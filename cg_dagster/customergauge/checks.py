"""Asset checks on every partition of the flattened tables.

Blocking checks (severity ERROR) catch data that is wrong: a failure stops the current tables from being
rebuilt in that run, and the checks that judge a whole partition (nps range, row counts, child rows) also
quarantine it in the lake (``_state/quarantine/``), so later rebuilds of the current tables leave it out
until the check passes again (re-materialize the partition). The uniqueness check does not quarantine: the
current tables already leave out, response by response, a version fetched twice in one page. Warning
checks flag what is only suspicious. Each check reads the partition's files from the lake, so it can run
alone from the UI for any partition.
"""

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cg_dagster.customergauge.assets import FLAT_KEYS, RAW_KEY
from cg_dagster.customergauge.resources import LakeResource
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.sync import RAW_TABLE

CHILD_TABLES = ("response_drivers", "response_tags", "response_questions", "response_properties")


def _read(lake: Lake, table: str, partition_key: str, columns: list[str]):
    """Columns of one partition file; raises ``dg.Failure`` naming the file when it is missing."""
    path = lake.partition_path(table, partition_key)
    if not path.exists():
        raise dg.Failure(f"{table} has no file for partition {partition_key} ({path}): materialize it first")
    return pq.read_table(path, columns=columns)


@dg.asset_check(
    asset=FLAT_KEYS["responses"],
    blocking=True,
    description=(
        "number_customergauge is unique in the partition. Two rows of the same fetch (same fetched_at) "
        "are a duplication bug (ERROR); two fetches of one response in one window (the API re-sent it "
        "while we paged) are only suspicious (WARN): the current tables keep the latest."
    ),
)
def responses_number_customergauge_unique(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    table = _read(lake.get_lake(), "responses", context.partition_key, ["number_customergauge", "fetched_at"])
    numbers = table.group_by("number_customergauge").aggregate([("fetched_at", "count"), ("fetched_at", "count_distinct")])
    repeated = numbers.filter(pc.greater(numbers["fetched_at_count"], 1))
    same_fetch = repeated.filter(pc.not_equal(repeated["fetched_at_count"], repeated["fetched_at_count_distinct"]))
    return dg.AssetCheckResult(
        passed=repeated.num_rows == 0,
        severity=dg.AssetCheckSeverity.ERROR if same_fetch.num_rows else dg.AssetCheckSeverity.WARN,
        metadata={
            "duplicated_numbers": repeated.num_rows,
            "duplicated_within_one_fetch": same_fetch.num_rows,
            "examples": dg.MetadataValue.json(repeated["number_customergauge"].to_pylist()[:20]),
        },
    )


@dg.asset_check(asset=FLAT_KEYS["responses"], blocking=True, description="nps is 0..10 or null (NPS scale).")
def responses_nps_in_range(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    nps = _read(lake.get_lake(), "responses", context.partition_key, ["nps"])["nps"]
    out_of_range = pc.sum(pc.or_(pc.less(nps, 0), pc.greater(nps, 10))).as_py() or 0
    return _judged(lake.get_lake(), context, out_of_range == 0, {"out_of_range": out_of_range})


@dg.asset_check(
    asset=FLAT_KEYS["responses"],
    blocking=True,
    additional_deps=[RAW_KEY],
    description="responses has exactly one row per row of raw_responses in the partition: nothing lost in flattening.",
)
def responses_row_count_matches_raw(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    the_lake = lake.get_lake()
    raw = pq.read_metadata(_path_or_fail(the_lake, RAW_TABLE, context.partition_key)).num_rows
    flat = pq.read_metadata(_path_or_fail(the_lake, "responses", context.partition_key)).num_rows
    return _judged(the_lake, context, raw == flat, {"raw_rows": raw, "responses_rows": flat})


def _judged(lake: Lake, context: dg.AssetCheckExecutionContext, passed: bool, metadata: dict) -> dg.AssetCheckResult:
    """The result of a check that quarantines its partition on failure and releases it on success."""
    name = context.check_specs[0].name
    if passed:
        lake.release(context.partition_key, name)
    else:
        lake.quarantine(context.partition_key, name, {"metadata": {k: v for k, v in metadata.items() if isinstance(v, int)}})
    return dg.AssetCheckResult(passed=passed, metadata={**metadata, "quarantined": not passed})


def _path_or_fail(lake: Lake, table: str, partition_key: str):
    path = lake.partition_path(table, partition_key)
    if not path.exists():
        raise dg.Failure(f"{table} has no file for partition {partition_key} ({path}): materialize it first")
    return path


def _child_points_to_response_check(table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=FLAT_KEYS[table],
        name=f"{table}_rows_point_to_responses",
        blocking=True,
        additional_deps=[FLAT_KEYS["responses"]],
        description=f"Every row of {table} has a number_customergauge that is in responses of the same partition.",
    )
    def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        the_lake = lake.get_lake()
        children = _read(the_lake, table, context.partition_key, ["number_customergauge"])["number_customergauge"]
        parents = _read(the_lake, "responses", context.partition_key, ["number_customergauge"])["number_customergauge"]
        orphans = pc.unique(children.filter(pc.invert(pc.is_in(children, value_set=parents.combine_chunks()))))
        return _judged(
            the_lake,
            context,
            len(orphans) == 0,
            {"orphan_numbers": len(orphans), "examples": dg.MetadataValue.json(orphans.to_pylist()[:20])},
        )

    return _check


@dg.asset_check(
    asset=FLAT_KEYS["responses"],
    blocking=False,
    description=(
        "The API sent no fields the table contract does not know (top-level keys, keys of nested objects or "
        "of list items). Unknown fields are kept in "
        "raw_responses.record_json; when this warns, extend lib/schemas.py."
    ),
)
def responses_no_unknown_fields(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=FLAT_KEYS["responses"], asset_partitions=[context.partition_key]), limit=1
    ).records
    metadata = records[0].asset_materialization.metadata if records else {}
    unknown = metadata["unknown_fields"].value if "unknown_fields" in metadata else []
    return dg.AssetCheckResult(
        passed=not unknown,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"unknown_fields": dg.MetadataValue.json(unknown)},
    )


child_checks = [_child_points_to_response_check(table) for table in CHILD_TABLES]
partition_checks = [
    responses_number_customergauge_unique,
    responses_nps_in_range,
    responses_row_count_matches_raw,
    responses_no_unknown_fields,
    *child_checks,
]
