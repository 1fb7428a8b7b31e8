"""The code location: every CustomerGauge asset, the hourly schedule and the resources bound from the environment.

Every run executes in one process (``in_process_executor``): the group is a handful of short steps, and a
process per step (Dagster's default executor) cost 15-20 s of start-up per hourly run (issue 7). This covers
``dagster asset materialize``, the hourly schedule's job and backfills, whoever launches them.

Settings come from the environment, as listed (defaults, parsers, errors) in ``cg_dagster/settings.py``; they
are read when used, so a malformed one fails the run that needs it, naming the variable, and not this load
(except the two that shape the definitions, CG_PARTITIONS_START and CG_FRESHNESS_HOURS: see settings.py).
"""

import dagster as dg

from cg_dagster.customergauge.assets import (
    current_non_responses,
    current_tables,
    flattened_tables,
    non_responses,
    raw_non_responses,
    raw_responses,
)
from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource
from cg_dagster.customergauge.schedules import hourly_sync_job, hourly_sync_schedule
from cg_dagster.lib.tables import use_jemalloc_pool
from cg_dagster.settings import (
    API_BASE_URL,
    AUTH_BASE_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    LAKE_ROOT,
    REGION,
    SYSTEM_TIMEZONE,
)

use_jemalloc_pool()  # Arrow's pool for every process that loads the code location (lib/tables.py says why)


defs = dg.Definitions(
    assets=[raw_responses, flattened_tables, current_tables, raw_non_responses, non_responses, current_non_responses],
    jobs=[hourly_sync_job],
    schedules=[hourly_sync_schedule],
    executor=dg.in_process_executor,
    resources={
        "customergauge": CustomerGaugeResource(
            region=REGION.text(),
            client_id=dg.EnvVar(CLIENT_ID.name),
            client_secret=dg.EnvVar(CLIENT_SECRET.name),
            api_base_url=API_BASE_URL.text(),
            auth_base_url=AUTH_BASE_URL.text(),
            system_timezone=SYSTEM_TIMEZONE.text(),
        ),
        "lake": LakeResource(root=LAKE_ROOT.text(), system_timezone=SYSTEM_TIMEZONE.text()),
    },
)
