"""CustomerGauge assets: the raw responses of each sync window, the tables flattened from them, and the
current tables (the latest version of every response) built over all partitions; the same for the
non-responses (``raw_non_responses`` -> ``non_responses`` -> ``current_non_responses``), a stream of its own
(lib/lake.py ``Stream``: head cursor, lease, re-read record), synced in the same hourly job.

A raw asset and its flattened tables are one multi-asset, so one step: the sync's rows are flattened while
it pages the API (lib/tables.py ``FlattenAsSynced``), not read back from the raw file after it (about 1.5 s
of a 500k-record run's 15 s: issue 7). It can be subset: the raw asset alone syncs, the flattened tables alone
are flattened from the raw file (no API request); the flattened tables are written together, so all or none.

Every asset writes its own Parquet file per partition into the lake and returns ``MaterializeResult``
(no I/O manager): ``{lake}/<asset name>/<partition>.parquet``.

``account_assets(names)`` builds the four asset definitions (sixteen assets) of one account
(``keys.AccountNames``: its asset keys, group, op names and resource keys); the module-level ``raw_responses``
... ``current_non_responses`` are the default account's (no accounts file). The decorators are all an account
changes: every body is a shared function here that takes the account's names and resolves its resources by key
(``_resources``).
"""

import contextlib
import datetime as dt
from typing import Optional

import dagster as dg

from cg_dagster.customergauge.checks import (
    non_responses_check_results,
    non_responses_check_specs,
    partition_check_results,
    partition_check_specs,
)
from cg_dagster.customergauge.keys import CURRENT_KEYS as CURRENT_KEYS  # re-exported (tests import them here)
from cg_dagster.customergauge.keys import DEFAULT, AccountNames
from cg_dagster.customergauge.keys import RAW_KEY as RAW_KEY
from cg_dagster.customergauge.metadata import column_lineage, column_schema, lake_uri
from cg_dagster.customergauge.partitions import freshness_policy, hourly_partitions
from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource
from cg_dagster.lib.client import CustomerGaugeConfigError, Period
from cg_dagster.lib.current import NON_RESPONSES_CURRENT, update_current
from cg_dagster.lib.flatten import FlattenError
from cg_dagster.lib.lake import NON_RESPONSES, RESPONSES, LakeError, Stream
from cg_dagster.lib.lease import LeaseTimeoutError
from cg_dagster.lib.lookback import REREAD_FIELDS, explain, last_reread, lookback_field, plan_lookback
from cg_dagster.lib.schemas import (
    CURRENT_NON_RESPONSES,
    CURRENT_TABLES,
    FLAT_TABLE_NAMES,
    NON_RESPONSE_FLAT_TABLES,
    NON_RESPONSES_TABLE,
    RAW_NON_RESPONSES_TABLE,
    RAW_TABLE,
    TABLES,
    TableContract,
)
from cg_dagster.lib.sync import sync_partition
from cg_dagster.lib.tables import FlattenAsSynced, flatten_partition, stale_partitions
from cg_dagster.settings import LEASE_WAIT_SECONDS, LOOKBACK_DAYS, LOOKBACK_HOUR

LEASE_WAIT_ENV = LEASE_WAIT_SECONDS.name

MAX_LOOKBACK_DAYS = 3660  # ten years: a longer re-read is a full refresh


class RawResponsesConfig(dg.Config):
    """Run config of ``raw_responses`` and of ``raw_non_responses`` (each its own).

    ``full_refresh`` starts from no cursor (an initial load into this partition). The trailing-window
    re-read runs once a day (lib/lookback.py): in the first sync at or after the daily slot, hour
    ``lookback_hour`` (UTC; -1: never), unless the lake records a re-read since that slot; ``force_lookback``
    re-reads in this run whether due or not. It re-reads ``lookback_days`` days up to the partition's date
    through ``period[lookback_field]`` so records that changed after they were synced (api-notes.md: partial
    -> response 10-30 days later, GDPR anonymisation) arrive again; ``lookback_field`` must be a date the
    stream's records carry (lib/lookback.py ``REREAD_FIELDS``: no date_survey_response for the non-responses).
    ``lease_wait_seconds``: how long to wait for another run's sync of the same lake before failing
    (lib/lease.py). Unset (None), they come from CG_LOOKBACK_HOUR (2), CG_LOOKBACK_DAYS (35), the stream's
    field variable (CG_LOOKBACK_FIELD, date_survey_response; CG_NON_RESPONSES_LOOKBACK_FIELD, date_sent) and
    CG_LEASE_WAIT_SECONDS (1800) when the run starts (``resolved``; cg_dagster/settings.py), so scheduled
    and manual runs agree and a malformed variable fails the run, not the code location's load.
    """

    full_refresh: bool = False
    lookback_hour: Optional[int] = None
    lookback_days: Optional[int] = None
    lookback_field: Optional[str] = None
    force_lookback: bool = False
    lease_wait_seconds: Optional[int] = None

    def resolved(self, stream: Stream = RESPONSES) -> "RawResponsesConfig":
        """This config with every unset field read from its environment variable (or that one's default);
        ``lookback_field`` from ``stream``'s variable (``REREAD_FIELDS``).

        Raises:
            CustomerGaugeConfigError: a variable that is not a whole number, naming it.
        """
        env = {
            "lookback_hour": LOOKBACK_HOUR.integer,
            "lookback_days": LOOKBACK_DAYS.integer,
            "lookback_field": REREAD_FIELDS[stream].setting.text,
            "lease_wait_seconds": LEASE_WAIT_SECONDS.integer,
        }
        return self.model_copy(update={name: read() for name, read in env.items() if getattr(self, name) is None})

    def lookback_period(self, partition_start: dt.datetime, stream: Stream = RESPONSES) -> Period | None:
        """The ``period[...]`` a re-read of ``stream`` in the partition starting at ``partition_start`` covers,
        or None when the re-read is off (``lookback_hour`` -1 and not ``force_lookback``). Whether it is due is
        ``plan_lookback``'s decision.

        Raises:
            CustomerGaugeConfigError: lookback_hour outside -1..23, lookback_days outside
                1..MAX_LOOKBACK_DAYS, a field the stream's records do not carry (``lookback_field``),
                lease_wait_seconds below 0, a malformed variable.
        """
        field = lookback_field(stream, self.lookback_field)
        config = self.resolved(stream)
        if config.lease_wait_seconds < 0:
            raise CustomerGaugeConfigError(
                f"lease_wait_seconds must be 0 or more ({LEASE_WAIT_ENV} or run config), "
                f"got {config.lease_wait_seconds}"
            )
        if not -1 <= config.lookback_hour <= 23:
            raise CustomerGaugeConfigError(
                f"lookback_hour must be an hour 0..23 (or -1 to turn the re-read off; CG_LOOKBACK_HOUR or run "
                f"config), got {config.lookback_hour}"
            )
        if not 1 <= config.lookback_days <= MAX_LOOKBACK_DAYS:
            raise CustomerGaugeConfigError(
                f"lookback_days must be from 1 to {MAX_LOOKBACK_DAYS} (CG_LOOKBACK_DAYS or run config), "
                f"got {config.lookback_days}"
            )
        if config.lookback_hour == -1 and not config.force_lookback:
            return None
        end = partition_start.date()
        return Period(field=field, start=end - dt.timedelta(days=config.lookback_days), end=end)


class CurrentTablesConfig(dg.Config):
    """Run config of the current tables: ``full_rebuild`` rebuilds them from every partition file instead of
    updating only the ranges that changed (lib/current.py); both give the same tables."""

    full_rebuild: bool = False


def account_assets(names: AccountNames) -> list[dg.AssetsDefinition]:
    """The four asset definitions of one account, on its keys, group, op names and resource keys (``names``):
    ``raw_responses`` (raw_responses, the five tables flattened from it and their eight checks),
    ``current_tables`` (five tables), ``raw_non_responses`` (raw_non_responses, its two flattened tables and
    their four checks), ``current_non_responses`` (two tables). Every account shares the
    partition grid and the freshness policy. Only the decorators are here; each body is a shared function."""
    resource_keys = {names.api_resource, names.lake_resource}
    # every hourly Parquet asset of the account: its group, kind, partition grid and freshness
    partitioned = {
        "group_name": names.group,
        "kinds": {"parquet"},
        "partitions_def": hourly_partitions,
        "freshness_policy": freshness_policy,
    }
    current_op = names.current_op

    @dg.multi_asset(
        name=names.op(RAW_TABLE),  # the op name of the single asset it was: run config goes under it
        specs=[
            dg.AssetSpec(
                key=names.raw_key,
                **partitioned,
                description=(
                    "One row per response record fetched in this sync window, with its original JSON, "
                    "number_customergauge, the fetch time and the cursor of its page. The first materialization "
                    "of a partition pages the v7 sync API from the committed cursor until the data is empty and "
                    "commits the new cursor after the file; materializing it again replays the recorded range and "
                    "rewrites the same file without moving the cursor (idempotent)."
                ),
            ),
            *_flat_specs(FLAT_TABLE_NAMES, names.flat_keys, names.raw_key, RAW_TABLE, partitioned),
        ],
        check_specs=partition_check_specs(names),
        partitions_def=hourly_partitions,
        required_resource_keys=resource_keys,
        can_subset=True,
        op_tags={"dagster/priority": "1"},  # the responses' sync runs before the non-responses' (default 0) in a run
    )
    def raw_responses(context: dg.AssetExecutionContext, config: RawResponsesConfig):
        """Sync one window of responses into ``raw_responses/<partition>.parquet`` and flatten it into the five
        tables as it is synced, then judge them (``_sync_and_flatten``); either alone when selected alone."""
        yield from _sync_and_flatten(context, config, names, RESPONSES, _flatten_responses)

    @dg.multi_asset(
        name=names.op(RAW_NON_RESPONSES_TABLE),
        specs=[
            dg.AssetSpec(
                key=names.raw_non_responses_key,
                **partitioned,
                description=(
                    "One row per non-response record (a survey sent that got no answer: GET "
                    "/v7/rest/sync/non-responses) fetched in this sync window, as raw_responses holds responses: "
                    "its own cursor, lease and commit, the same replay and exactly-once guarantees."
                ),
            ),
            *_flat_specs(
                NON_RESPONSE_FLAT_TABLES,
                names.non_response_keys,
                names.raw_non_responses_key,
                RAW_NON_RESPONSES_TABLE,
                partitioned,
            ),
        ],
        check_specs=non_responses_check_specs(names),
        partitions_def=hourly_partitions,
        required_resource_keys=resource_keys,
        can_subset=True,
    )
    def raw_non_responses(context: dg.AssetExecutionContext, config: RawResponsesConfig):
        """Sync one window of non-responses into ``raw_non_responses/<partition>.parquet`` and flatten it into
        its two tables as it is synced (``_sync_and_flatten``); either alone when selected alone."""
        yield from _sync_and_flatten(context, config, names, NON_RESPONSES, _flatten_non_responses)

    @dg.multi_asset(
        name=current_op,
        specs=[
            dg.AssetSpec(
                key=names.current_keys[name],
                deps=[names.flat_keys[name], names.flat_keys["responses"]],
                group_name=names.group,
                kinds={"parquet", "duckdb"},
                freshness_policy=freshness_policy,
                description=(
                    f"{TABLES[name].description} Latest version of every response across all partitions (the "
                    "latest fetch of each number_customergauge wins; child rows of that fetch only), one file per "
                    "range of ids. Updated with DuckDB after each sync by rewriting only the ranges the new "
                    "partitions touch (run config full_rebuild: true rebuilds it whole). This is the table to query."
                ),
                metadata={"dagster/column_schema": column_schema(TABLES[name])},
            )
            for name in CURRENT_TABLES
        ],
        required_resource_keys=resource_keys,
        can_subset=False,
    )
    def current_tables(context: dg.AssetExecutionContext, config: CurrentTablesConfig):
        """Update the current response tables (``_update_current_tables``)."""
        yield from _update_current_tables(context, config, names)

    @dg.multi_asset(
        name=names.op(CURRENT_NON_RESPONSES.name),  # the op name of the single asset it was (run config path)
        specs=[
            dg.AssetSpec(
                key=key,
                deps=[names.non_response_keys[name], names.non_responses_key, names.current_keys["responses"]],
                group_name=names.group,
                kinds={"parquet", "duckdb"},
                freshness_policy=freshness_policy,
                description=(
                    f"{_current_contract(name).description} Latest fetch of each number_customergauge across all "
                    f"partitions (child rows of that fetch only), in current/{name}/ (one file per range of ids, "
                    "updated as the current response tables are)."
                ),
                metadata={"dagster/column_schema": column_schema(_current_contract(name))},
            )
            for name, key in names.current_non_response_keys.items()
        ],
        required_resource_keys=resource_keys,
        can_subset=False,
    )
    def current_non_responses(context: dg.AssetExecutionContext, config: CurrentTablesConfig):
        """Update ``current/non_responses/`` and ``current/non_response_properties/``
        (``_update_current_non_responses``)."""
        yield from _update_current_non_responses(context, config, names)

    return [raw_responses, current_tables, raw_non_responses, current_non_responses]


def _flat_specs(tables, keys: dict, raw_key: dg.AssetKey, raw_table: str, partitioned: dict) -> list[dg.AssetSpec]:
    """The specs of the tables flattened from ``raw_table`` (``keys``: {table: asset key}), each depending on
    ``raw_key`` in the same multi-asset."""
    return [
        dg.AssetSpec(
            key=keys[name],
            deps=[raw_key],
            **partitioned,
            description=(
                f"{TABLES[name].description} Flattened from the same partition of {raw_table}, as it is synced; "
                f"materialized without {raw_table} (with the other flattened tables: they are written together), "
                "it rewrites the partition's file from the raw file (idempotent, no API request)."
            ),
            metadata={"dagster/column_schema": column_schema(TABLES[name])},
        )
        for name in tables
    ]


def _current_contract(name: str) -> TableContract:
    """The contract of the current table of flat table ``name`` (``NON_RESPONSES_CURRENT.contract``)."""
    return NON_RESPONSES_CURRENT.contract(name)


def _resources(context: dg.AssetExecutionContext, names: AccountNames) -> tuple[CustomerGaugeResource, LakeResource]:
    """The account's API and lake resources, by their keys (``names.api_resource``, ``names.lake_resource``)."""
    return getattr(context.resources, names.api_resource), getattr(context.resources, names.lake_resource)


def _sync_window(
    context: dg.AssetExecutionContext,
    config: RawResponsesConfig,
    names: AccountNames,
    stream: Stream,
    key: dg.AssetKey,
    flattening: FlattenAsSynced | None = None,
) -> dg.MaterializeResult:
    """Sync one window of ``stream`` into its raw table (see ``lib/sync.py``), holding the stream's sync lease
    (``lib/lease.py``) so two runs never page the API from the same head at once; the metadata of ``key``'s
    materialization (``cursor`` is the committed head after it).

    Raises:
        CustomerGaugeConfigError, LakeError, the client's and the sync's errors: see ``sync_partition``; nothing
            committed.
    """
    customergauge, lake = _resources(context, names)
    partition_start = context.partition_time_window.start
    period = config.lookback_period(partition_start, stream)  # before resolving: errors name run config or variable
    config = config.resolved(stream)
    params = customergauge.sync_params()
    client = customergauge.get_client()  # validates every setting before any request or write
    the_lake = flattening.lake if flattening is not None else lake.get_lake()  # one Lake: its leases guard both
    dagster_cursor = _latest_cursor_metadata(context, key)
    setting = f"lease_wait_seconds (run config of {stream.raw_table}) or {LEASE_WAIT_ENV}"
    lease = the_lake.lease(stream.lease).hold(context.run_id, wait_seconds=config.lease_wait_seconds, setting=setting)
    with contextlib.closing(client), lease:
        plan = plan_lookback(
            last_reread(the_lake, stream),
            partition_start,
            period,
            hour=config.lookback_hour,
            force=config.force_lookback,
            stream=stream,
        )
        result = sync_partition(
            client,
            params,
            the_lake,
            partition_key=context.partition_key,
            run_id=context.run_id,
            full_refresh=config.full_refresh,
            lookback=plan.period,
            stream=stream,
            flattening=flattening,
        )
    lake_cursor_before = result.head_before.cursor if result.head_before else None
    if dagster_cursor is not None and dagster_cursor != lake_cursor_before and not config.full_refresh:
        context.log.warning(
            f"Dagster's last recorded cursor is {dagster_cursor} but the lake's committed cursor was "
            f"{lake_cursor_before}; the lake's copy wins (it is committed with the data it covers)."
        )
    record = result.manifest
    head = result.head_after.cursor if result.head_after else None
    lookback_reason = explain(plan, mode=record.mode, cursor_start=record.cursor_start, recorded_period=record.lookback)
    context.log.info(f"{result.summary(stream.endpoint)}; head cursor {head}; trailing re-read: {lookback_reason}")
    return dg.MaterializeResult(
        asset_key=key,
        metadata={
            "sync_mode": record.mode,
            "cursor_start": record.cursor_start,
            "cursor_end": record.cursor_end,
            "cursor": head,
            "pages": record.pages,
            "per_page": record.per_page,
            "lookback": dg.MetadataValue.json(record.lookback) if record.lookback else None,
            "lookback_rows": record.lookback_rows,
            "lookback_reason": lookback_reason,
            "kept_rows": record.kept_rows,
            "full_refresh": record.full_refresh,
            "reason": record.reason,
            "dagster/row_count": result.rows,
            "dagster/uri": lake_uri(result.path),
            "dagster/column_schema": column_schema(TABLES[stream.raw_table]),
        },
    )


def _require_one_partition(context: dg.AssetExecutionContext) -> None:
    """Refuse a run over a range of partitions: each sync window commits its own cursor, one per run
    (without a backfill policy, which these assets do not set, a backfill launches one run per partition)."""
    if context.has_partition_key_range:
        window = context.partition_key_range
        if window.start != window.end:
            raise dg.Failure(
                f"this run covers partitions {window.start} to {window.end}, but a sync commits one window's "
                "cursor at a time: launch a backfill (one run per partition) or materialize one partition"
            )


def _latest_cursor_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> int | None:
    """The ``cursor`` metadata of the raw asset ``key``'s latest materialization in this instance, or None."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get("cursor")
    return value.value if value is not None else None


def _sync_and_flatten(
    context: dg.AssetExecutionContext, config: RawResponsesConfig, names: AccountNames, stream: Stream, flatten
):
    """The step of a stream's raw asset and its flattened tables, as selected (a run of the group, the UI's
    Materialize, a backfill): sync the window (``_sync_window``) while its rows are flattened
    (``FlattenAsSynced``), then publish and judge the flat files (``flatten``: ``_flatten_responses``,
    ``_flatten_non_responses``, given the flattening); the raw asset alone syncs, the flattened tables alone are
    flattened from the raw file (no API request). The flattened tables are written together, so all of them or
    none are selected.

    Raises:
        dg.Failure: some of the flattened tables selected, not all (names them); checks selected without any
            asset (the UI's Execute on a check: names what to materialize); a run over a range of partitions.
            Otherwise as ``_sync_window`` and ``flatten``.
    """
    _require_one_partition(context)
    raw_key = names.raw_key if stream == RESPONSES else names.raw_non_responses_key
    flat_keys = names.flat_keys if stream == RESPONSES else names.non_response_keys
    flat_selected = [key for key in flat_keys.values() if key in context.selected_asset_keys]
    every_flat = ", ".join(key.to_user_string() for key in flat_keys.values())
    if flat_selected and len(flat_selected) < len(flat_keys):
        raise dg.Failure(
            f"{', '.join(key.to_user_string() for key in flat_selected)} selected without the other tables "
            f"flattened from {stream.raw_table}, which are written with them: select all of {every_flat}"
        )
    if raw_key not in context.selected_asset_keys and not flat_selected:
        raise dg.Failure(
            f"the checks of the tables flattened from {stream.raw_table} are judged while they are written: to run "
            f"them for partition {context.partition_key}, materialize {every_flat} (flattened again from the raw "
            "file, no API request), which runs every check"
        )
    if raw_key not in context.selected_asset_keys:
        yield from flatten(context, names)
        return
    if not flat_selected:
        yield _sync_window(context, config, names, stream, raw_key)
        return
    customergauge, lake = _resources(context, names)
    along = FlattenAsSynced(
        lake.get_lake(), context.partition_key, system_timezone=customergauge.system_timezone, stream=stream
    )
    with along:
        yield _sync_window(context, config, names, stream, raw_key, flattening=along)
        yield from flatten(context, names, along)


def _flatten_responses(context: dg.AssetExecutionContext, names: AccountNames, along: FlattenAsSynced | None = None):
    """Flatten one raw partition into the five tables (``lib/tables.py``: streamed in batches, each file
    written atomically with exactly its declared schema, even when empty), then judge them: the partition's
    asset checks (``checks.py``) are computed here and yielded after the materializations; a failed blocking
    check fails this step, so the current tables are not rebuilt in this run."""
    customergauge, lake = _resources(context, names)
    the_lake = along.lake if along is not None else lake.get_lake()
    raw_path = the_lake.partition_path(RAW_TABLE, context.partition_key)
    if not raw_path.exists():
        raise dg.Failure(
            f"raw_responses has no file for partition {context.partition_key} at {raw_path}: materialize "
            f"{names.raw_key.to_user_string()} for this partition first"
        )
    done = flatten_partition(
        the_lake,
        context.partition_key,
        system_timezone=customergauge.system_timezone,
        run_id=context.run_id,
        along=along,
    )
    stats = done.stats
    if stats.unknown_fields:
        context.log.warning(
            f"fields the contract does not know (kept in raw_responses): {sorted(stats.unknown_fields)}"
        )
    for name in FLAT_TABLE_NAMES:
        metadata = {
            "dagster/row_count": done.rows[name],
            "dagster/uri": lake_uri(done.paths[name]),
            "dagster/column_schema": column_schema(TABLES[name]),
            "dagster/column_lineage": column_lineage(TABLES[name], names.raw_key),
            "flattened_along_sync": done.along_sync,
        }
        if name == "responses":
            # every counter of FlattenStats (nps_invalid, dates_invalid, ...) and the unknown field names
            metadata.update(stats.counters())
            metadata["unknown_fields"] = dg.MetadataValue.json(sorted(stats.unknown_fields))
        yield dg.MaterializeResult(asset_key=names.flat_keys[name], metadata=metadata)
    # every check is judged (a failed blocking one quarantines the partition even when a selection left it out:
    # `without_checks()`), the selected ones are reported
    every_check = {spec.key for spec in partition_check_specs(names)}
    for result in partition_check_results(the_lake, context.partition_key, done, every_check):
        if dg.AssetCheckKey(result.asset_key, result.check_name) in context.selected_asset_check_keys:
            yield result


def _update_current_tables(context: dg.AssetExecutionContext, config: CurrentTablesConfig, names: AccountNames):
    """Update ``current/<table>/`` for the five flattened tables (see ``lib/current.py``): merge the new
    partitions into the ranges they touch, rebuild the ranges of a rewritten or quarantined one, or rebuild
    everything (``full_rebuild``, first build).

    First every raw partition whose flattened files are missing or older than its raw file (a run killed
    between the raw commit and the flattening, a raw file rewritten since) is flattened again and judged by
    the partition checks (quarantine included), so it is in this update; ``reflattened`` lists them. One
    that cannot be flattened is left out of this update, which still runs, and then fails the step naming
    it and the error. One that another run is flattening (its lease held past ``CG_LEASE_WAIT_SECONDS``) is
    left out of this update without failing it, with that run's files merged by the next one
    (``_flatten_stale``); ``being_flattened`` lists them and who holds each lease."""
    _, lake = _resources(context, names)
    the_lake = lake.get_lake()
    wait = LEASE_WAIT_SECONDS.integer(minimum=0)
    with the_lake.lease("current").hold(context.run_id, wait_seconds=wait, setting=LEASE_WAIT_ENV):
        # one update at a time: two would interleave their file writes
        reflattened, failed, busy = _flatten_stale(context, the_lake, lake.system_timezone, names)
        update = update_current(the_lake, full_rebuild=config.full_rebuild)
    context.log.info(f"current tables: {update.mode} ({update.reason}); {update.ranges} ranges rewritten")
    for name in CURRENT_TABLES:
        yield dg.MaterializeResult(
            asset_key=names.current_keys[name],
            metadata={
                "update_mode": update.mode,
                "update_reason": update.reason,
                "ranges_rewritten": update.ranges,
                "reflattened": dg.MetadataValue.json(reflattened),
                "being_flattened": dg.MetadataValue.json(busy),
                "dagster/row_count": update.rows[name],
                "dagster/uri": lake_uri(the_lake.current_path(name)),
                "dagster/column_schema": column_schema(TABLES[name]),
                "dagster/column_lineage": _current_lineage(TABLES[name], names.flat_keys[name]),
            },
        )
    if failed:
        raise dg.Failure(
            f"the current tables were updated without {len(failed)} partitions whose raw file is newer than "
            f"their flattened files and could not be flattened again: {failed}"
        )


def _current_lineage(contract: TableContract, flat_key: dg.AssetKey) -> dg.TableColumnLineage:
    """``dagster/column_lineage`` of a current table: each column of flat table ``contract`` back to the same
    column of its flat asset ``flat_key``."""
    return dg.TableColumnLineage(
        deps_by_column={
            column.name: [dg.TableColumnDep(asset_key=flat_key, column_name=column.name)] for column in contract.columns
        }
    )


def _flatten_stale(
    context: dg.AssetExecutionContext, the_lake, system_timezone: str, names: AccountNames, stream: Stream = RESPONSES
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Flatten again every partition of ``stream`` that ``stale_partitions`` names and, for the responses, run
    its checks for their side effect (quarantine); returns (partition keys flattened, {partition key: error}
    of those that failed, {partition key: the lease error} of those another run was flattening).

    A partition whose flattening lease another run held for ``CG_LEASE_WAIT_SECONDS`` (``LeaseTimeoutError``:
    that run is flattening it now) is not flattened here: this update keeps what the partition's files held
    before, and the other run publishes files newer than the raw file, which the next update (that run's
    own, or the next hourly one) finds rewritten and merges; should that flattening die, the partition is still
    stale and the next update flattens it. Either way it reaches ``current`` at a later update."""
    done, failed, busy = [], {}, {}
    checks = {spec.key for spec in partition_check_specs(names)}
    for key in stale_partitions(the_lake, stream):
        try:
            flat = flatten_partition(
                the_lake, key, system_timezone=system_timezone, stream=stream, run_id=context.run_id
            )
        except LeaseTimeoutError as error:
            context.log.warning(
                f"partition {key} is being flattened by another run: left out of this update, the next one merges "
                f"its files ({error})"
            )
            busy[key] = str(error)
            continue
        except (FlattenError, LakeError) as error:
            context.log.error(f"partition {key} could not be flattened again: {error}")
            failed[key] = str(error)
            continue
        if stream == RESPONSES:
            list(partition_check_results(the_lake, key, flat, checks))
        context.log.warning(f"partition {key}: raw file newer than its flattened files; flattened again")
        done.append(key)
    return done, failed, busy


def _flatten_non_responses(
    context: dg.AssetExecutionContext, names: AccountNames, along: FlattenAsSynced | None = None
):
    """Flatten one raw_non_responses partition into ``non_responses/`` and ``non_response_properties/``
    ``<partition>.parquet`` (``lib/tables.py``, the responses' rules on the keys they read:
    ``flatten_non_responses``), then yield their checks (``checks.py``, none blocking). ``unread_fields`` (on
    non_responses): per key a response has that these tables do not read (the answer; a segment list of another
    shape), how many records carried it; kept in raw_non_responses, never checked."""
    customergauge, lake = _resources(context, names)
    the_lake = along.lake if along is not None else lake.get_lake()
    if not the_lake.exists(the_lake.partition_path(RAW_NON_RESPONSES_TABLE, context.partition_key)):
        raise dg.Failure(
            f"raw_non_responses has no file for partition {context.partition_key}: materialize "
            f"{names.raw_non_responses_key.to_user_string()} for this partition first"
        )
    done = flatten_partition(
        the_lake,
        context.partition_key,
        system_timezone=customergauge.system_timezone,
        stream=NON_RESPONSES,
        run_id=context.run_id,
        along=along,
    )
    if done.stats.unknown_fields:
        context.log.warning(
            f"fields the contract does not know (kept in raw_non_responses): {sorted(done.stats.unknown_fields)}"
        )
    for name, key in names.non_response_keys.items():
        metadata = {
            "dagster/row_count": done.rows[name],
            "dagster/uri": lake_uri(done.paths[name]),
            "dagster/column_schema": column_schema(TABLES[name]),
            "dagster/column_lineage": column_lineage(TABLES[name], names.raw_non_responses_key),
            "flattened_along_sync": done.along_sync,
        }
        if name == NON_RESPONSES_TABLE:
            metadata.update(done.stats.counters())
            metadata["unknown_fields"] = dg.MetadataValue.json(sorted(done.stats.unknown_fields))
            metadata["unread_fields"] = dg.MetadataValue.json(dict(sorted(done.stats.unread_fields.items())))
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)
    yield from non_responses_check_results(the_lake, context.partition_key, done, context.selected_asset_check_keys)


def _update_current_non_responses(context: dg.AssetExecutionContext, config: CurrentTablesConfig, names: AccountNames):
    """Update ``current/non_responses/`` and ``current/non_response_properties/`` (``lib/current.py``,
    ``NON_RESPONSES_CURRENT``) holding the lake's
    "current" lease, after flattening again the partitions whose raw file is newer than their flat file (as
    ``current_tables`` does: ``reflattened``, ``being_flattened``); the update also sets ``is_response`` from
    current/responses."""
    _, lake = _resources(context, names)
    the_lake = lake.get_lake()
    wait = LEASE_WAIT_SECONDS.integer(minimum=0)
    with the_lake.lease("current").hold(context.run_id, wait_seconds=wait, setting=LEASE_WAIT_ENV):
        reflattened, failed, busy = _flatten_stale(context, the_lake, lake.system_timezone, names, NON_RESPONSES)
        update = update_current(the_lake, NON_RESPONSES_CURRENT, full_rebuild=config.full_rebuild)
    context.log.info(f"current non-responses: {update.mode} ({update.reason}); {update.ranges} ranges rewritten")
    for name, key in names.current_non_response_keys.items():
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "update_mode": update.mode,
                "update_reason": update.reason,
                "ranges_rewritten": update.ranges,
                "reflattened": dg.MetadataValue.json(reflattened),
                "being_flattened": dg.MetadataValue.json(busy),
                "dagster/row_count": update.rows[name],
                "dagster/uri": lake_uri(the_lake.current_path(name)),
                "dagster/column_schema": column_schema(_current_contract(name)),
                "dagster/column_lineage": _current_lineage(TABLES[name], names.non_response_keys[name]),
            },
        )
    if failed:
        raise dg.Failure(f"current_non_responses was updated without partitions that could not be flattened: {failed}")


# The default account's assets (no accounts file): today's keys, op names and resource keys.
raw_responses, current_tables, raw_non_responses, current_non_responses = account_assets(DEFAULT)
