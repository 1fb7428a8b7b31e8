"""The hourly job and schedule: one sync window (the last complete hour) of responses and of non-responses, their
flattening, the current tables.

One job for both endpoints: the run queue's limit of one sync run at a time (deploy/dagster.yaml, SYNC_RUN_TAGS)
and the schedule's partitions hold for both, and ``current_non_responses`` needs the hour's current responses
(``is_response``). The two syncs are independent steps with their own cursors and leases: one failing (the
other endpoint down) leaves the other's commit in place, and the next run resumes each from its own head."""

import dagster as dg

from cg_dagster.customergauge.keys import (
    CURRENT_KEYS,
    CURRENT_NON_RESPONSES_KEY,
    FLAT_KEYS,
    NON_RESPONSES_KEY,
    RAW_KEY,
    RAW_NON_RESPONSES_KEY,
    SYNC_RUN_TAGS,
)

hourly_sync_job = dg.define_asset_job(
    name="customergauge_hourly_sync",
    selection=dg.AssetSelection.assets(
        RAW_KEY,
        *FLAT_KEYS.values(),
        *CURRENT_KEYS.values(),
        RAW_NON_RESPONSES_KEY,
        NON_RESPONSES_KEY,
        CURRENT_NON_RESPONSES_KEY,
    ),
    description=(
        "Sync one window of CustomerGauge responses and non-responses into the lake, flatten it, and update the "
        "current tables."
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
