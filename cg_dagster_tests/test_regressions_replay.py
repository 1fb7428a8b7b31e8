"""Regressions in replay found by a second adversarial review: a replay keeps one row per response and pass, and never drops a committed lookback row."""

import collections

import dagster as dg
import pyarrow.parquet as pq

from cg_dagster.lib.lake import Lake
from cg_dagster_tests.conftest import make_resources
from cg_dagster_tests._fixtures_runs import run, raw_numbers

P1, P2 = "2026-11-01-10:00", "2026-11-01-11:00"
LOOKBACK = {"ops": {"customergauge__raw_responses": {"config": {"lookback_hour": 11, "lookback_days": 10}}}}


def _file_numbers(lake, partition):
    return pq.read_table(lake.partition_path("raw_responses", partition)).column("number_customergauge").to_pylist()


def test_replay_does_not_duplicate_a_carried_over_response_that_the_lookback_returns(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        [x, *_] = sandbox.append_records(5)
        run(instance, resources, P2, run_config=LOOKBACK)
        assert x["number_customergauge"] in raw_numbers(lake, P2)
        sandbox.append_records(200)  # X's new position is past the first replay page
        sandbox.update_record(
            x["number_customergauge"], {"date_survey_response": "2026-10-30 10:00:00"}, move_to_end=True
        )
        run(instance, resources, P2, run_config=LOOKBACK)  # replay
    counts = collections.Counter(_file_numbers(lake, P2))
    assert counts[x["number_customergauge"]] == 1, counts[x["number_customergauge"]]


def test_replay_keeps_committed_lookback_rows_the_api_no_longer_returns(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        y = sandbox.records()[10]["number_customergauge"]
        sandbox.update_record(y, {"date_survey_response": "2026-10-30 10:00:00", "comment": {"original": "v2"}})
        run(instance, resources, P2, run_config=LOOKBACK)
        assert y in raw_numbers(lake, P2, "lookback")
        sandbox.delete_record(y)  # or: its date moves out of the window
        run(instance, resources, P2, run_config=LOOKBACK)  # replay
    assert y in _file_numbers(lake, P2), "replay removed the committed v2 of the response"
    current = pq.read_table(lake.current_path("responses")).to_pylist()
    [row] = [r for r in current if r["number_customergauge"] == y]
    assert row["comment_original"] == "v2", row["comment_original"]
