"""Dagster instance set-up the project needs before its first run.

A pool's slots are created from ``concurrency: pools: default_limit`` (dagster.yaml) the first time a run
claims one. Two runs starting at that same moment on a fresh instance can both create them and both run
(seen with two ``dagster asset materialize`` processes on a new SQLite DAGSTER_HOME), which would defeat
the one-sync-at-a-time limit. ``initialize_pools`` creates them up front; ``run.py`` calls it once per
DAGSTER_HOME. Idempotent.
"""

import dagster as dg

from cg_dagster.customergauge.assets import CURRENT_POOL, SYNC_POOL

POOLS = (SYNC_POOL, CURRENT_POOL)


def initialize_pools(instance: dg.DagsterInstance) -> dict[str, int | None]:
    """Create the slots of the project's pools at the instance's default limit; return pool -> limit
    (None when the instance sets no limit, i.e. dagster.yaml is missing from DAGSTER_HOME)."""
    storage = instance.event_log_storage
    limits = {}
    for pool in POOLS:
        storage.initialize_concurrency_limit_to_default(pool)
        info = storage.get_concurrency_info(pool)
        limits[pool] = info.slot_count if instance.global_op_concurrency_default_limit is not None else None
    return limits


def main() -> None:
    """``python -m cg_dagster.customergauge.instance``: initialize the pools of $DAGSTER_HOME and print them."""
    with dg.DagsterInstance.get() as instance:
        for pool, limit in initialize_pools(instance).items():
            print(f"pool {pool}: limit {limit}")


if __name__ == "__main__":
    main()
