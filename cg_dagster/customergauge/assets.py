"""CustomerGauge assets: the raw responses of each sync window, the tables flattened from them, and the
current tables (the latest version of every response) built over all partitions.

Every asset writes its own Parquet file per partition into the lake and returns ``MaterializeResult``
(no I/O manager): ``{lake}/<asset name>/<partition>.parquet``.
"""

import contextlib
import datetime as dt
import os

import dagster as dg

from cg_dagster.customergauge.metadata import column_lineage, column_schema, lake_uri
from cg_dagster.customergauge.partitions import hourly_partitions
from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource
from cg_dagster.lib.current import CURRENT_TABLES, build_current
from cg_dagster.lib.client import PERIOD_FIELDS, CustomerGaugeConfigError, Period
from cg_dagster.lib.flatten import FLAT_TABLE_NAMES
from cg_dagster.lib.schemas import TABLES
from cg_dagster.lib.sync import RAW_TABLE, sync_partition
from cg_dagster.lib.tables import flatten_partition

GROUP = "customergauge"
KEY_PREFIX = "customergauge"
RAW_KEY = dg.AssetKey([KEY_PREFIX, RAW_TABLE])
FLAT_TABLES = FLAT_TABLE_NAMES
FLAT_KEYS = {name: dg.AssetKey([KEY_PREFIX, name]) for name in FLAT_TABLES}
CURRENT_KEYS = {name: dg.AssetKey([KEY_PREFIX, f"current_{name}"]) for name in CURRENT_TABLES}
SYNC_POOL = "customergauge_sync"
CURRENT_POOL = "customergauge_current"


def _env_int(name: str, default: int) -> int:
    """An integer setting from the environment; raises CustomerGaugeConfigError naming the variable."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise CustomerGaugeConfigError(f"{name}={value!r} is not an integer: set it to a whole number or unset it") from None


MAX_LOOKBACK_DAYS = 3660  # ten years: a longer re-read is a full refresh


class RawResponsesConfig(dg.Config):
    """Run config of ``raw_responses``.

    ``full_refresh`` starts from no cursor (an initial load into this partition). The trailing-window
    re-read runs once a day, in the partition whose hour (UTC) is ``lookback_hour`` (-1: never): it re-reads
    ``lookback_days`` days up to the partition's date through ``period[lookback_field]`` so records that
    changed after they were synced (api-notes.md: partial -> response 10-30 days later, GDPR anonymisation)
    arrive again. Defaults come from CG_LOOKBACK_HOUR (2), CG_LOOKBACK_DAYS (35) and CG_LOOKBACK_FIELD
    (date_survey_response), so scheduled and manual runs agree; run config overrides them per run.
    """

    full_refresh: bool = False
    lookback_hour: int = _env_int("CG_LOOKBACK_HOUR", 2)
    lookback_days: int = _env_int("CG_LOOKBACK_DAYS", 35)
    lookback_field: str = os.environ.get("CG_LOOKBACK_FIELD", "date_survey_response")

    def lookback_period(self, partition_start: dt.datetime) -> Period | None:
        """The ``period[...]`` to re-read in the partition starting at ``partition_start``, or None.

        Raises:
            CustomerGaugeConfigError: lookback_hour outside -1..23, lookback_days outside
                1..MAX_LOOKBACK_DAYS, unknown field.
        """
        if not -1 <= self.lookback_hour <= 23:
            raise CustomerGaugeConfigError(
                f"lookback_hour must be an hour 0..23 (or -1 to turn the re-read off; CG_LOOKBACK_HOUR or run "
                f"config), got {self.lookback_hour}"
            )
        if not 1 <= self.lookback_days <= MAX_LOOKBACK_DAYS:
            raise CustomerGaugeConfigError(
                f"lookback_days must be from 1 to {MAX_LOOKBACK_DAYS} (CG_LOOKBACK_DAYS or run config), "
                f"got {self.lookback_days}"
            )
        if self.lookback_field not in PERIOD_FIELDS:
            raise CustomerGaugeConfigError(
                f"lookback_field {self.lookback_field!r} is not a period field (CG_LOOKBACK_FIELD or run config): "
                f"use one of {', '.join(PERIOD_FIELDS)}"
            )
        if partition_start.hour != self.lookback_hour:
            return None
        end = partition_start.date()
        return Period(field=self.lookback_field, start=end - dt.timedelta(days=self.lookback_days), end=end)


@dg.asset(
    key=RAW_KEY,
    group_name=GROUP,
    kinds={"parquet"},
    partitions_def=hourly_partitions,
    pool=SYNC_POOL,
    description=(
        "One row per response record fetched in this sync window, with its original JSON, "
        "number_customergauge, the fetch time and the cursor of its page. The first materialization of a "
        "partition pages the v7 sync API from the committed cursor until the data is empty and commits the "
        "new cursor after the file; materializing it again replays the recorded range and rewrites the same "
        "file without moving the cursor (idempotent)."
    ),
)
def raw_responses(
    context: dg.AssetExecutionContext,
    config: RawResponsesConfig,
    customergauge: CustomerGaugeResource,
    lake: LakeResource,
) -> dg.MaterializeResult:
    """Sync one window of responses into ``raw_responses/<partition>.parquet`` (see ``lib/sync.py``)."""
    _require_one_partition(context)
    lookback = config.lookback_period(context.partition_time_window.start)
    params = customergauge.sync_params()
    client = customergauge.get_client()  # validates every setting before any request or write
    the_lake = lake.get_lake()
    dagster_cursor = _latest_cursor_metadata(context)
    with contextlib.closing(client):
        result = sync_partition(
            client,
            params,
            the_lake,
            partition_key=context.partition_key,
            run_id=context.run_id,
            full_refresh=config.full_refresh,
            lookback=lookback,
        )
    lake_cursor_before = result.head_before.cursor if result.head_before else None
    if dagster_cursor is not None and dagster_cursor != lake_cursor_before and not config.full_refresh:
        context.log.warning(
            f"Dagster's last recorded cursor is {dagster_cursor} but the lake's committed cursor was "
            f"{lake_cursor_before}; the lake's copy wins (it is committed with the data it covers)."
        )
    record = result.record
    head = result.head_after.cursor if result.head_after else None
    context.log.info(
        f"{record.mode}: {record.rows} responses in {record.pages} pages, cursor {record.cursor_start} -> "
        f"{record.cursor_end}; head cursor {head}"
    )
    return dg.MaterializeResult(
        metadata={
            "sync_mode": record.mode,
            "cursor_start": record.cursor_start,
            "cursor_end": record.cursor_end,
            "cursor": head,
            "pages": record.pages,
            "per_page": record.per_page,
            "lookback": dg.MetadataValue.json(record.lookback) if record.lookback else None,
            "lookback_rows": record.lookback_rows,
            "kept_rows": record.kept_rows,
            "full_refresh": record.full_refresh,
            "reason": record.reason,
            "dagster/row_count": result.rows,
            "dagster/uri": lake_uri(result.path),
            "dagster/column_schema": column_schema(TABLES[RAW_TABLE]),
        }
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


def _latest_cursor_metadata(context: dg.AssetExecutionContext) -> int | None:
    """The ``cursor`` metadata of raw_responses' latest materialization in this Dagster instance, or None."""
    event = context.instance.get_latest_materialization_event(RAW_KEY)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get("cursor")
    return value.value if value is not None else None


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key=FLAT_KEYS[name],
            deps=[RAW_KEY],
            group_name=GROUP,
            kinds={"parquet"},
            partitions_def=hourly_partitions,
            description=(
                f"{TABLES[name].description} Flattened from the same partition of raw_responses; "
                "re-materializing rewrites the partition's file from the raw file (idempotent)."
            ),
            metadata={"dagster/column_schema": column_schema(TABLES[name])},
        )
        for name in FLAT_TABLES
    ],
    partitions_def=hourly_partitions,
    can_subset=False,
)
def flattened_tables(context: dg.AssetExecutionContext, customergauge: CustomerGaugeResource, lake: LakeResource):
    """Flatten one raw partition into the five tables (``lib/tables.py``: streamed in batches, each file
    written atomically with exactly its declared schema, even when empty)."""
    _require_one_partition(context)
    the_lake = lake.get_lake()
    raw_path = the_lake.partition_path(RAW_TABLE, context.partition_key)
    if not raw_path.exists():
        raise dg.Failure(
            f"raw_responses has no file for partition {context.partition_key} at {raw_path}: materialize "
            "customergauge/raw_responses for this partition first"
        )
    done = flatten_partition(the_lake, context.partition_key, system_timezone=customergauge.system_timezone)
    stats = done.stats
    if stats.unknown_fields:
        context.log.warning(f"fields the contract does not know (kept in raw_responses): {sorted(stats.unknown_fields)}")
    for name in FLAT_TABLES:
        metadata = {
            "dagster/row_count": done.rows[name],
            "dagster/uri": lake_uri(done.paths[name]),
            "dagster/column_schema": column_schema(TABLES[name]),
            "dagster/column_lineage": column_lineage(TABLES[name], RAW_KEY),
        }
        if name == "responses":
            # every counter of FlattenStats (nps_invalid, dates_invalid, ...) and the unknown field names
            metadata.update(stats.counters())
            metadata["unknown_fields"] = dg.MetadataValue.json(sorted(stats.unknown_fields))
        yield dg.MaterializeResult(asset_key=FLAT_KEYS[name], metadata=metadata)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key=CURRENT_KEYS[name],
            deps=[FLAT_KEYS[name], FLAT_KEYS["responses"]],
            group_name=GROUP,
            kinds={"parquet", "duckdb"},
            description=(
                f"{TABLES[name].description} Latest version of every response across all partitions (the "
                "latest fetch of each number_customergauge wins; child rows of that fetch only). Rebuilt "
                "whole from the partition files with DuckDB (idempotent). This is the table to query."
            ),
            metadata={"dagster/column_schema": column_schema(TABLES[name])},
        )
        for name in CURRENT_TABLES
    ],
    pool=CURRENT_POOL,
    can_subset=False,
)
def current_tables(context: dg.AssetExecutionContext, lake: LakeResource):
    """Rebuild ``current/<table>.parquet`` for the five flattened tables (see ``lib/current.py``)."""
    the_lake = lake.get_lake()
    counts = build_current(the_lake)
    for name in CURRENT_TABLES:
        yield dg.MaterializeResult(
            asset_key=CURRENT_KEYS[name],
            metadata={
                "dagster/row_count": counts[name],
                "dagster/uri": lake_uri(the_lake.current_path(name)),
                "dagster/column_schema": column_schema(TABLES[name]),
                "dagster/column_lineage": dg.TableColumnLineage(
                    deps_by_column={
                        column.name: [dg.TableColumnDep(asset_key=FLAT_KEYS[name], column_name=column.name)]
                        for column in TABLES[name].columns
                    }
                ),
            },
        )
