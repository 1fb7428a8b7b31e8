"""The hourly job and schedule: one sync window (the last complete hour), its flattening, the current tables."""

import dagster as dg

from cg_dagster.customergauge.keys import CURRENT_KEYS, FLAT_KEYS, RAW_KEY, SYNC_RUN_TAGS

hourly_sync_job = dg.define_asset_job(
    name="customergauge_hourly_sync",
    selection=dg.AssetSelection.assets(RAW_KEY, *FLAT_KEYS.values(), *CURRENT_KEYS.values()),
    description=(
        "Sync one window of CustomerGauge responses into the lake, flatten it, and rebuild the current tables."
    ),
    tags=SYNC_RUN_TAGS,
)

# The 10:05 tick requests the 09:00 partition (the last complete hour). Running by default: a connector
# that has been deployed is meant to sync.
hourly_sync_schedule = dg.build_schedule_from_partitioned_job(
    hourly_sync_job,
    minute_of_hour=5,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
