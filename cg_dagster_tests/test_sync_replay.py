"""Replays (lib/sync.py, ``_replay``): a partition synced before is re-fetched over its recorded range and its
file rewritten with the latest versions; the head never moves, and no committed response is ever lost or
doubled. First on a ``PageSource`` (no HTTP), then as Dagster runs against the sandbox (slow); each on a local
lake and on ``s3://`` (``lake_root``)."""

import collections
import logging

import dagster as dg
import pyarrow as pa
import pytest

from cg_dagster.customergauge.keys import raw_run_config
from cg_dagster.lib.lake import Lake, LakeError
from cg_dagster.lib.schemas import TABLES
from cg_dagster.lib.tables import flatten_partition
from cg_dagster_tests._fixtures_runs import cursor_pass_numbers, raw_numbers, run
from cg_dagster_tests._fixtures_s3 import write_like_a_tool
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


def test_a_replay_that_fetched_nothing_says_its_rows_were_kept_not_fetched(lake_root, caplog):
    # The input noticed: a replay whose API returned none of the range's 177 responses logged
    # "replay: 177 responses in 0 pages", as if they had been fetched.
    lake = Lake(lake_root)
    source = PageSource(records(177))
    first = sync(source, lake, P1)
    assert first.summary("responses") == "sync: 177 responses fetched in 18 pages, cursor None -> 177"
    source.records.clear()  # upstream returns none of them now
    caplog.clear()  # the first sync's line, when an earlier test left cg_dagster.sync at INFO
    with caplog.at_level(logging.INFO, logger="cg_dagster.sync"):
        result = sync(source, lake, P1)
    summary = "replay: 0 responses fetched in 0 pages, 177 kept from the committed file (the API no longer returns "
    summary += "them), cursor None -> 177"
    assert result.summary("responses") == summary and result.manifest.kept_rows == 177
    assert caplog.messages == [f"raw_responses partition {P1}: {summary}"]
    assert caplog.records[0].levelno == logging.WARNING and sorted(raw_numbers(lake, P1)) == list(range(101, 278))


def test_a_replay_that_fetched_some_and_kept_some_counts_each_once(lake_root):
    lake = Lake(lake_root)
    source = PageSource(records(25))
    sync(source, lake, P1)
    del source.records[20:]  # 121..125 deleted upstream
    summary = sync(source, lake, P1).summary("responses")
    assert summary == (
        "replay: 20 responses fetched in 2 pages, 5 kept from the committed file (the API no longer returns them), "
        "cursor None -> 25"
    )


@pytest.mark.parametrize("deleted", [None, 104, 103], ids=["none", "another", "the-bad-one"])
def test_a_replay_of_a_raw_file_rewritten_with_bytes_that_are_not_utf8_rewrites_it_or_is_refused(lake_root, deleted):
    # The flattening's advice for the input noticed (record_json rewritten as binary, 103's holding b"\xff"): a
    # replay rewrites every record the API still returns; a kept row it cannot read is refused, naming the file.
    lake = Lake(lake_root)
    source = PageSource(records(5))
    sync(source, lake, P1)
    path = lake.partition_path("raw_responses", P1)
    table = lake.read_table(path)
    texts = [text.encode() for text in table["record_json"].to_pylist()]
    texts[2] = b'{"number_customergauge": 103, "comment": "\xff"}'
    write_like_a_tool(lake, path, table.set_column(4, "record_json", pa.array(texts, pa.binary())))
    rewritten = lake.read_table(path)
    source.records = [r for r in source.records if r["number_customergauge"] != deleted]
    if deleted == 103:
        with pytest.raises(LakeError) as raised:
            sync(source, lake, P1)
        assert str(raised.value).startswith(
            f"{str(path)!r} holds committed rows the API no longer returns, which a replay keeps, but they cannot "
            "be read as the raw table's types (Invalid UTF8 payload; a tool rewrote the file?), so nothing was "
            "replaced: restore it from a backup, or run raw_responses"
        )
        assert lake.read_table(path) == rewritten
        return
    result = sync(source, lake, P1)
    assert result.manifest.kept_rows == (deleted is not None) and sorted(raw_numbers(lake, P1)) == list(range(101, 106))
    assert lake.read_table(path).schema == TABLES["raw_responses"].arrow_schema
    assert record_json(lake, P1)[103] == '{"number_customergauge":103,"nps":4}'
    assert flatten_partition(lake, P1).rows["responses"] == 5


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
