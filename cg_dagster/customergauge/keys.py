"""Dagster names of the CustomerGauge assets: group, asset keys and the raw asset's op name.

One home for them, imported by the assets, the checks and the schedule (assets.py re-exports them). Table
names come from the table contract (``lib/flatten.py``, ``lib/current.py``, ``lib/sync.py``).
"""

import dagster as dg

from cg_dagster.lib.current import CURRENT_TABLES
from cg_dagster.lib.flatten import FLAT_TABLE_NAMES
from cg_dagster.lib.sync import RAW_TABLE

GROUP = "customergauge"
KEY_PREFIX = "customergauge"
RAW_KEY = dg.AssetKey([KEY_PREFIX, RAW_TABLE])
FLAT_TABLES = FLAT_TABLE_NAMES
FLAT_KEYS = {name: dg.AssetKey([KEY_PREFIX, name]) for name in FLAT_TABLES}
CURRENT_KEYS = {name: dg.AssetKey([KEY_PREFIX, f"current_{name}"]) for name in CURRENT_TABLES}
RAW_OP = f"{KEY_PREFIX}__{RAW_TABLE}"  # the op of raw_responses: run config goes under ops.<RAW_OP>.config
