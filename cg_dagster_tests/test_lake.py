"""Lake housekeeping: stray temporary files of killed runs."""

import os
import time

from cg_dagster.lib.lake import Lake


def test_sweep_tmp_removes_only_files_a_day_old(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.ensure_writable()
    tmp = lake.root / "_tmp"
    stale = tmp / "raw_responses__2026-11-01-1000.parquet.0123.tmp"  # the name a killed sync leaves
    fresh = tmp / "responses__2026-11-01-1000.parquet.4567.tmp"  # a write in progress
    for path in (stale, fresh):
        path.write_bytes(b"PAR1")
    two_days_ago = time.time() - 2 * 86_400
    os.utime(stale, (two_days_ago, two_days_ago))
    assert lake.sweep_tmp() == [stale.name]
    assert sorted(p.name for p in tmp.iterdir()) == [fresh.name]
    assert Lake(tmp_path / "never-written").sweep_tmp() == []
