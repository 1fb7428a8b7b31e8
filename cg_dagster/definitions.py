"""The code location: every CustomerGauge asset, the hourly schedule and the resources bound from the environment.

Every run executes in one process (``in_process_executor``): the group is a handful of short steps, and a
process per step (Dagster's default executor) cost 15-20 s of start-up per hourly run (issue 7). This covers
``dagster asset materialize``, the hourly schedule's job and backfills, whoever launches them.

Environment (see README): CUSTOMERGAUGE_REGION (default eu), CUSTOMERGAUGE_CLIENT_ID,
CUSTOMERGAUGE_CLIENT_SECRET, CUSTOMERGAUGE_API_BASE_URL / CUSTOMERGAUGE_AUTH_BASE_URL (optional overrides,
e.g. the sandbox), CUSTOMERGAUGE_SYSTEM_TIMEZONE (default UTC), CUSTOMERGAUGE_PER_PAGE (default 1000),
CG_LAKE_ROOT (default ./lake), CG_PARTITIONS_START and CG_FRESHNESS_HOURS (customergauge/partitions.py).
"""

import os

import dagster as dg

from cg_dagster.customergauge.assets import current_tables, flattened_tables, raw_responses
from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource
from cg_dagster.customergauge.schedules import hourly_sync_job, hourly_sync_schedule
from cg_dagster.lib.tables import use_jemalloc_pool

use_jemalloc_pool()  # Arrow's pool for every process that loads the code location (lib/tables.py says why)


def _optional(name: str) -> str | None:
    return os.environ.get(name) or None


def _per_page() -> int:
    """CUSTOMERGAUGE_PER_PAGE as an int (default 1000); the range 1..1000 is checked before the first request."""
    text = os.environ.get("CUSTOMERGAUGE_PER_PAGE") or "1000"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"CUSTOMERGAUGE_PER_PAGE must be an integer from 1 to 1000, got {text!r}") from None


defs = dg.Definitions(
    assets=[raw_responses, flattened_tables, current_tables],
    jobs=[hourly_sync_job],
    schedules=[hourly_sync_schedule],
    executor=dg.in_process_executor,
    resources={
        "customergauge": CustomerGaugeResource(
            region=os.environ.get("CUSTOMERGAUGE_REGION", "eu"),
            client_id=dg.EnvVar("CUSTOMERGAUGE_CLIENT_ID"),
            client_secret=dg.EnvVar("CUSTOMERGAUGE_CLIENT_SECRET"),
            api_base_url=_optional("CUSTOMERGAUGE_API_BASE_URL"),
            auth_base_url=_optional("CUSTOMERGAUGE_AUTH_BASE_URL"),
            system_timezone=os.environ.get("CUSTOMERGAUGE_SYSTEM_TIMEZONE", "UTC"),
            per_page=_per_page(),
        ),
        "lake": LakeResource(
            root=os.environ.get("CG_LAKE_ROOT", "lake"),
            system_timezone=os.environ.get("CUSTOMERGAUGE_SYSTEM_TIMEZONE", "UTC"),
        ),
    },
)
