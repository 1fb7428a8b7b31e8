"""The hourly job and schedule of an account: one sync window (the last complete hour) of responses and of
non-responses, their flattening, the current tables.

One job for both endpoints: the run queue's limit of one sync run at a time per account (deploy/dagster.yaml,
``AccountNames.sync_run_tags``) and the schedule's partitions hold for both, and ``current_non_responses`` needs
the hour's current responses (``is_response``). The two syncs are independent steps with their own cursors and
leases: one failing (the other endpoint down) leaves the other's commit in place, and the next run resumes each
from its own head."""

import dagster as dg

from cg_dagster.customergauge.keys import DEFAULT, AccountNames


def hourly_sync(names: AccountNames):
    """``(job, schedule)``: the account's hourly asset job (``names.job``: its sixteen assets, tagged
    ``names.sync_run_tags``) and its schedule (``<job>_schedule``), running by default: a connector that has been
    deployed is meant to sync. The 10:05 tick requests the 09:00 partition (the last complete hour)."""
    job = dg.define_asset_job(
        name=names.job,
        selection=dg.AssetSelection.assets(*names.all_keys),
        description=(
            "Sync one window of CustomerGauge responses and non-responses into the lake, flatten it, and update "
            "the current tables."
        ),
        tags=names.sync_run_tags,
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job, minute_of_hour=5, default_status=dg.DefaultScheduleStatus.RUNNING
    )
    return job, schedule


hourly_sync_job, hourly_sync_schedule = hourly_sync(DEFAULT)  # the default account's (no accounts file)
