"""Dagster names of the CustomerGauge assets: group, asset keys, the raw asset's op name and its run config,
the sync runs' tags.

One home for them, imported by the assets, the checks, the schedule, the scripts and the tests. Table names
come from the table contract (``lib/schemas.py``).
"""

import dagster as dg

from cg_dagster.lib.schemas import (
    CURRENT_NON_RESPONSES,
    CURRENT_TABLES,
    FLAT_TABLE_NAMES,
    NON_RESPONSES_TABLE,
    RAW_NON_RESPONSES_TABLE,
    RAW_TABLE,
)

GROUP = "customergauge"
KEY_PREFIX = "customergauge"
RAW_KEY = dg.AssetKey([KEY_PREFIX, RAW_TABLE])
FLAT_KEYS = {name: dg.AssetKey([KEY_PREFIX, name]) for name in FLAT_TABLE_NAMES}
CURRENT_KEYS = {name: dg.AssetKey([KEY_PREFIX, f"current_{name}"]) for name in CURRENT_TABLES}
RAW_OP = f"{KEY_PREFIX}__{RAW_TABLE}"  # the op of raw_responses: run config goes under ops.<RAW_OP>.config
RAW_NON_RESPONSES_KEY = dg.AssetKey([KEY_PREFIX, RAW_NON_RESPONSES_TABLE])
NON_RESPONSES_KEY = dg.AssetKey([KEY_PREFIX, NON_RESPONSES_TABLE])
CURRENT_NON_RESPONSES_KEY = dg.AssetKey([KEY_PREFIX, CURRENT_NON_RESPONSES.name])
RAW_NON_RESPONSES_OP = f"{KEY_PREFIX}__{RAW_NON_RESPONSES_TABLE}"
# Carried by every run of the hourly sync job (schedule ticks, backfills): deploy/dagster.yaml's run queue
# starts at most one run with this tag key at a time (tag_concurrency_limits).
SYNC_RUN_TAGS = {"customergauge/sync": "true"}


def raw_run_config(*, non_responses: bool = False, **config) -> dict:
    """Run config of a run that materializes ``raw_responses`` (and ``raw_non_responses`` with
    ``non_responses``): ``config`` (fields of ``RawResponsesConfig``, e.g. ``lookback_hour=-1``) under
    ``ops.<op>.config`` of each."""
    ops = (RAW_OP, RAW_NON_RESPONSES_OP) if non_responses else (RAW_OP,)
    return {"ops": {op: {"config": config} for op in ops}}
