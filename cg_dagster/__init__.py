"""cg_dagster: a Dagster project that keeps a Parquet lake in sync with CustomerGauge survey responses.

Arrow's jemalloc reads its options once, when pyarrow is imported, so they are set here, before any module of
the package imports it: one arena (lib/tables.py ``use_jemalloc_pool`` says why), unless the environment
chooses other options.
"""

import os

os.environ.setdefault("JE_ARROW_MALLOC_CONF", "narenas:1")
