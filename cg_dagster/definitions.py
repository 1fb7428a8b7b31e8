"""The code location: every CustomerGauge asset, the hourly schedule and the resources, for one account bound
from the environment or for each account of an accounts file.

Without ``CG_ACCOUNTS_FILE`` the code location holds one account, configured by the ``CUSTOMERGAUGE_*`` and
``CG_LAKE_ROOT`` variables, with the names it always had (``customergauge/raw_responses``, group
``customergauge``, job ``customergauge_hourly_sync``, resources ``customergauge`` and ``lake``). With it, it holds
each account the file lists (``customergauge/accounts.py``), under its own names (``keys.AccountNames``:
``customergauge/<account>/raw_responses``, group ``customergauge_<account>``, job and schedule
``customergauge_<account>_hourly_sync[_schedule]``, resources ``customergauge_<account>`` and ``lake_<account>``)
and its own lake, so its cursors and leases are its own. ``customergauge_definitions`` builds one account's
``Definitions``; ``build_defs`` merges them (``dg.Definitions.merge``).

A plain factory rather than a Dagster Component per account: a component would call the same factory from its
``build_defs`` and add a component class with a resolvable schema, a ``defs/`` folder with one ``defs.yaml`` per
account and a ``dg`` project layout, while the checks that span accounts (names and lakes apart) would still
have to run outside any one component; the zero-configuration account would remain a separate path. One YAML
file read by one function is less to learn and to keep.

Every run executes in one process (``in_process_executor``): the group is a handful of short steps, and a
process per step (Dagster's default executor) cost 15-20 s of start-up per hourly run (issue 7). This covers
``dagster asset materialize``, the hourly schedule's job and backfills, whoever launches them.

Settings come from the environment, as listed (defaults, parsers, errors) in ``cg_dagster/settings.py``; they
are read when used, so a malformed one fails the run that needs it, naming the variable, and not this load
(except the three that shape the definitions, CG_PARTITIONS_START, CG_FRESHNESS_HOURS and CG_ACCOUNTS_FILE: see
settings.py).
"""

from typing import Optional

import dagster as dg

from cg_dagster.customergauge.accounts import load_accounts
from cg_dagster.customergauge.assets import account_assets
from cg_dagster.customergauge.keys import DEFAULT, AccountNames
from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource
from cg_dagster.customergauge.schedules import hourly_sync
from cg_dagster.lib.tables import use_jemalloc_pool
from cg_dagster.settings import (
    ACCOUNTS_FILE,
    API_BASE_URL,
    AUTH_BASE_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    LAKE_ROOT,
    REGION,
    SYSTEM_TIMEZONE,
)

use_jemalloc_pool()  # Arrow's pool for every process that loads the code location (lib/tables.py says why)


def customergauge_definitions(
    names: AccountNames, customergauge: CustomerGaugeResource, lake: LakeResource
) -> dg.Definitions:
    """One account's asset group (``account_assets``), hourly job and schedule (``hourly_sync``), and its two
    resources under the account's keys, run by the in-process executor."""
    job, schedule = hourly_sync(names)
    return dg.Definitions(
        assets=account_assets(names),
        jobs=[job],
        schedules=[schedule],
        executor=dg.in_process_executor,
        resources={names.api_resource: customergauge, names.lake_resource: lake},
    )


def build_defs(accounts_file: Optional[str]) -> dg.Definitions:
    """The code location: the default account from the environment when ``accounts_file`` is None, else every
    account of that file.

    Raises:
        CustomerGaugeConfigError: a malformed accounts file (``load_accounts``).
    """
    if accounts_file is None:
        customergauge = CustomerGaugeResource(
            region=REGION.text(),
            client_id=dg.EnvVar(CLIENT_ID.name),
            client_secret=dg.EnvVar(CLIENT_SECRET.name),
            api_base_url=API_BASE_URL.text(),
            auth_base_url=AUTH_BASE_URL.text(),
            system_timezone=SYSTEM_TIMEZONE.text(),
        )
        lake = LakeResource(root=LAKE_ROOT.text(), system_timezone=SYSTEM_TIMEZONE.text())
        return customergauge_definitions(DEFAULT, customergauge, lake)
    return dg.Definitions.merge(
        *(
            customergauge_definitions(
                AccountNames(account.name),
                CustomerGaugeResource(
                    region=account.region,
                    client_id=dg.EnvVar(account.client_id_env),
                    client_secret=dg.EnvVar(account.client_secret_env),
                    api_base_url=account.api_base_url,
                    auth_base_url=account.auth_base_url,
                    system_timezone=account.system_timezone,
                ),
                LakeResource(root=account.lake_root, system_timezone=account.system_timezone),
            )
            for account in load_accounts(accounts_file)
        )
    )


defs = build_defs(ACCOUNTS_FILE.text())
