"""The benchmark's lake-age case (issue 9): its synthetic partitions follow the contract and age like a lake,
and ``--lake-age-only --quick`` reports the hourly update at each age. No figure is asserted."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from cg_dagster.lib.current import update_current
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.schemas import TABLES
from cg_dagster_tests._fixtures_dev import PROJECT as ROOT
from cg_dagster_tests._fixtures_dev import load_benchmark


def test_synthetic_partitions_have_the_contract_schemas_and_resend_the_responses_of_a_day_before(tmp_path):
    bench = load_benchmark()
    lake, template = Lake(tmp_path / "lake"), bench.age_template()
    for index in range(26):
        bench.write_age_partition(lake, template, index)

    files = lake.partition_files("responses")
    assert len(files) == 26
    for name in TABLES:
        if name != "raw_responses":
            assert all(pq.read_schema(path).equals(TABLES[name].arrow_schema) for path in lake.partition_files(name))
    ids = [pq.read_table(path).column("number_customergauge").to_pylist() for path in files]
    assert [len(set(hour)) for hour in ids] == [bench.LAKE_AGE_RESPONSES] * 26
    assert max(ids[0]) < bench.LAKE_AGE_IDS <= min(ids[1])  # each hour's ids above the last hour's
    resent = set(ids[25]) & set().union(*ids[:25])
    assert len(resent) == bench.LAKE_AGE_RESENT and resent <= set(ids[1])  # re-sent from 24 hours before
    update = update_current(lake)
    assert update.rows["responses"] == 26 * bench.LAKE_AGE_RESPONSES - 2 * bench.LAKE_AGE_RESENT


@pytest.mark.slow
def test_lake_age_only_quick_reports_each_age_and_the_two_targets(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--lake-age-only", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())

    assert figures["cases"] == [] and figures["ratios"] == []
    assert [(age["age"], age["partitions"]) for age in figures["lake_age"]] == [("a day", 24), ("a week", 168)]
    for age in figures["lake_age"]:
        assert (age["full_mode"], age["hourly_mode"]) == ("full rebuild", "merge")
        hours = age["partitions"] + 1  # the lake and the hourly update's partition; from hour 24 on, 10 re-sent
        assert age["responses"] == hours * 100 - (hours - 24) * 10
        assert age["hourly_wall_s"] > 0 and age["hourly_peak_rss_mb"] > 0
    assert [target["target"].split()[0] for target in figures["lake_age_targets"]] == ["6a", "6b"]
    for target in figures["lake_age_targets"]:
        assert isinstance(target["met"], bool) and target["target"] in done.stdout
