"""Replays (lib/sync.py, ``_replay``): a partition synced before is re-fetched over its recorded range and its
file rewritten with the latest versions; the head never moves, and no committed response is ever lost or
doubled. First on a ``PageSource`` (no HTTP), then as Dagster runs against the sandbox (slow); each on a local
lake and on ``s3://`` (``lake_root``)."""

import collections

import dagster as dg
import pytest

from cg_dagster.customergauge.keys import raw_run_config
from cg_dagster.lib.lake import Lake
from cg_dagster_tests._fixtures_runs import cursor_pass_numbers, raw_numbers, run
from cg_dagster_tests._fixtures_sandbox import make_resources
from cg_dagster_tests._fixtures_sync import PageSource, records, sync

P1, P2 = "2026-11-01-10:00", "2026-11-01-11:00"
LOOKBACK = raw_run_config(lookback_hour=11, lookback_days=10)


def file_numbers(lake: Lake, partition: str) -> list[int]:
    """number_customergauge of every row of a raw partition file, both passes, in file order."""
    return lake.read_table(lake.partition_path("raw_responses", partition))["number_customergauge"].to_pylist()


def record_json(lake: Lake, partition: str) -> dict[int, str]:
    """{number_customergauge: record_json} of a raw partition file."""
    table = lake.read_table(lake.partition_path("raw_responses", partition))
    return dict(zip(table["number_customergauge"].to_pylist(), table["record_json"].to_pylist()))


# ---- on a page source ------------------------------------------------------------------------------------


def test_a_replay_rewrites_the_range_with_the_latest_versions_and_keeps_the_head(lake_root):
    lake = Lake(lake_root)
    source = PageSource(records(25))
    sync(source, lake, P1)
    source.records += records(5, first=126)
    sync(source, lake, P2)
    head = lake.read_head()
    source.records[2]["nps"] = 0  # number 103 changed in place upstream
    result = sync(source, lake, P1)
    assert source.calls[-1] == (None, None) and lake.read_head() == head
    assert '"nps":0' in record_json(lake, P1)[103].replace(" ", "") and raw_numbers(lake, P1) == list(range(101, 126))
    manifest = result.manifest
    assert (manifest.mode, manifest.cursor_start, manifest.cursor_end) == ("replay", None, 25)
    assert manifest.reason == f"replay of the range recorded by run run-{P1}" and manifest.kept_rows == 0


def test_a_replay_page_that_reaches_past_the_range_keeps_only_the_ranges_responses(lake_root):
    # The last page of the range held 121..125; with 126..128 appended it now holds 121..128 (cursor 28 > 25).
    lake = Lake(lake_root)
    source = PageSource(records(25))
    sync(source, lake, P1)
    source.records += records(3, first=126)
    assert sync(source, lake, P1).manifest.pages == 3
    assert raw_numbers(lake, P1) == list(range(101, 126)) and lake.read_head().cursor == 25
    sync(source, lake, P2)  # the next sync fetches them
    assert raw_numbers(lake, P2) == [126, 127, 128]


def test_a_response_deleted_upstream_keeps_its_committed_row(lake_root):
    lake = Lake(lake_root)
    source = PageSource(records(25))
    sync(source, lake, P1)
    del source.records[6]  # number 107
    result = sync(source, lake, P1)
    assert sorted(raw_numbers(lake, P1)) == list(range(101, 126)) and result.manifest.kept_rows == 1


def test_a_replay_of_a_skipped_partition_requests_nothing_and_stays_skipped(lake_root):
    lake = Lake(lake_root)
    source = PageSource(records(25))
    sync(source, lake, P2)
    skipped = sync(source, lake, P1).manifest
    source.calls.clear()
    replayed = sync(source, lake, P1).manifest
    assert source.calls == [] and raw_numbers(lake, P1) == []
    assert (replayed.mode, replayed.reason, replayed.run_id) == ("skipped", skipped.reason, "run-" + P1)


# ---- Dagster runs against the sandbox ---------------------------------------------------------------------


@pytest.mark.slow
def test_replay_after_in_place_status_change_keeps_every_committed_response(sandbox, lake_root):
    """With an Outbound filter (sandbox-responses), a partial survey that becomes a response in place
    (api-notes.md: position after the change is unknown) shifts the recorded range by one. The replay
    trimmed by row count and dropped the range's last response, which no other partition holds."""
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root, filter="sandbox-responses")
    records = sandbox.records()
    late = next(r["number_customergauge"] for r in records if r["status"] != "response")
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        committed = set(raw_numbers(lake, P1))
        sandbox.update_record(late, {"status": "response"})
        run(instance, resources, P1)  # re-materialize: replay of the recorded range
        run(instance, resources, P2)  # the next hourly sync
    in_lake = set(cursor_pass_numbers(lake))
    current = set(lake.read_table(lake.current_path("responses"))["number_customergauge"].to_pylist())
    assert committed - in_lake == set(), "responses committed to the lake vanished after a replay"
    assert committed - current == set()


@pytest.mark.slow
def test_replay_does_not_duplicate_a_carried_over_response_that_the_lookback_returns(sandbox, lake_root):
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root)
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
    counts = collections.Counter(file_numbers(lake, P2))
    assert counts[x["number_customergauge"]] == 1, counts[x["number_customergauge"]]


@pytest.mark.slow
def test_replay_keeps_committed_lookback_rows_the_api_no_longer_returns(sandbox, lake_root):
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        y = sandbox.records()[10]["number_customergauge"]
        sandbox.update_record(y, {"date_survey_response": "2026-10-30 10:00:00", "comment": {"original": "v2"}})
        run(instance, resources, P2, run_config=LOOKBACK)
        assert y in raw_numbers(lake, P2, "lookback")
        sandbox.delete_record(y)  # or: its date moves out of the window
        run(instance, resources, P2, run_config=LOOKBACK)  # replay
    assert y in file_numbers(lake, P2), "replay removed the committed v2 of the response"
    current = lake.read_table(lake.current_path("responses")).to_pylist()
    [row] = [r for r in current if r["number_customergauge"] == y]
    assert row["comment_original"] == "v2", row["comment_original"]
