"""The sync protocol (lib/sync.py) on its own: ``sync_partition`` paging a ``PageSource`` (no HTTP) into a lake
in a temp folder and on ``s3://`` (``lake_root``). What each mode writes (sync, skipped), what a commit leaves
when it cannot happen (a head moved meanwhile, a failed page, a corrupt clock record), the trailing-window pass,
and the head's roll-forward.
Replays are in test_sync_replay.py, the manifest's crash cases in test_sync_manifest.py; the last tests page
a ``ScriptedAPI`` over HTTP for bodies only a server sends."""

import datetime as dt
import json
import types

import pytest

from cg_dagster.lib.client import CustomerGaugeAPIError, CustomerGaugeError, Period, SyncParams
from cg_dagster.lib.flatten import FlattenError
from cg_dagster.lib.lake import CursorConflictError, HeadCursor, Lake, LakeError
from cg_dagster.lib.lookback import last_reread
from cg_dagster.lib.sync import recover_lost_head, sync_partition
from cg_dagster_tests._fixtures_client import make_client
from cg_dagster_tests._fixtures_http import ScriptedAPI, paged
from cg_dagster_tests._fixtures_runs import raw_numbers
from cg_dagster_tests._fixtures_sync import PageSource, records, sync

P1, P2, P3 = "2026-11-01-10:00", "2026-11-01-11:00", "2026-11-01-12:00"
WINDOW = Period(field="date_survey_response", start=dt.date(2026, 10, 25), end=dt.date(2026, 11, 1))
CLEAR_ERRORS = (CustomerGaugeError, FlattenError, LakeError)


@pytest.fixture
def lake(lake_root) -> Lake:
    return Lake(lake_root)


def leftovers(lake: Lake) -> list[str]:
    """Names of the temporary files writes left: in the lake's ``_tmp/`` (local) or its upload folder (S3)."""
    folder = lake.scratch_dir("uploads") if lake.storage.remote else lake.root / "_tmp"
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


# ---- the sync mode ---------------------------------------------------------------------------------------


def test_an_initial_load_writes_every_record_and_commits_the_last_cursor(lake):
    source = PageSource(records(25))
    result = sync(source, lake, P1)
    assert raw_numbers(lake, P1) == list(range(101, 126)) and source.calls == [(None, None)]
    manifest = result.manifest
    assert (manifest.mode, manifest.cursor_start, manifest.cursor_end, manifest.pages, manifest.rows) == (
        "sync", None, 25, 3, 25,
    )  # fmt: skip
    assert (manifest.per_page, manifest.with_, manifest.filter, manifest.lookback) == (10, (), None, None)
    assert lake.read_manifest(lake.partition_path("raw_responses", P1)) == manifest
    assert result.head_before is None and lake.read_head() == result.head_after
    head = result.head_after
    assert (head.cursor, head.partition_key, head.run_id) == (25, P1, "run-" + P1)
    assert last_reread(lake)["partition_key"] == P1  # an initial load read everything: it counts as the re-read
    assert leftovers(lake) == []


def test_the_next_sync_pages_from_the_head_and_writes_only_what_is_new(lake):
    source = PageSource(records(25))
    sync(source, lake, P1)
    source.records += records(5, first=126)
    result = sync(source, lake, P2)
    assert source.calls[-1] == (25, None) and raw_numbers(lake, P2) == [126, 127, 128, 129, 130]
    assert (result.manifest.cursor_start, result.manifest.cursor_end, result.manifest.pages) == (25, 30, 1)
    assert (lake.read_head().cursor, lake.read_head().partition_key) == (30, P2)
    assert raw_numbers(lake, P1) == list(range(101, 126))  # the older partition is left alone


def test_a_sync_that_finds_nothing_new_keeps_the_cursor_in_the_new_partition(lake):
    source = PageSource(records(25))
    sync(source, lake, P1)
    result = sync(source, lake, P2)
    assert raw_numbers(lake, P2) == [] and (result.manifest.rows, result.manifest.pages) == (0, 0)
    assert (result.manifest.cursor_start, result.manifest.cursor_end) == (25, 25)
    assert (lake.read_head().cursor, lake.read_head().partition_key) == (25, P2)


def test_an_initial_load_of_an_empty_account_commits_no_cursor_and_an_empty_file(lake):
    result = sync(PageSource([]), lake, P1)
    assert lake.parquet_file(lake.partition_path("raw_responses", P1)).metadata.num_rows == 0
    assert (result.manifest.cursor_end, lake.read_head().cursor, lake.read_head().partition_key) == (None, None, P1)


def test_an_older_never_synced_partition_is_written_empty_without_a_request(lake):
    source = PageSource(records(25))
    sync(source, lake, P2)
    head = lake.read_head()
    source.calls.clear()
    result = sync(source, lake, P1)
    assert source.calls == [] and lake.read_head() == head and raw_numbers(lake, P1) == []
    assert (result.manifest.mode, result.manifest.cursor_start, result.manifest.cursor_end) == ("skipped", 25, 25)
    assert result.manifest.reason == (
        f"partition {P1} is older than {P2}, the partition of the committed head cursor 25: its window passed "
        "without a sync and its responses are in later partitions"
    )


# ---- commits that cannot happen leave nothing -------------------------------------------------------------


def test_a_head_moved_by_another_sync_fails_the_commit_and_leaves_no_file(lake):
    source = PageSource(records(25))
    other = HeadCursor(cursor=99, partition_key=P1, run_id="other", committed_at="2026-11-01T10:30:00+00:00")

    def pages_while_another_sync_commits(params, cursor=None):
        for page in source.iter_pages(params, cursor):
            yield page
            Lake(lake.root).write_head(other)

    with pytest.raises(CursorConflictError, match="it was absent .* and is now 99 .*Nothing was committed"):
        sync(types.SimpleNamespace(iter_pages=pages_while_another_sync_commits), lake, P1)
    target = lake.partition_path("raw_responses", P1)
    assert lake.read_head() == other and not lake.exists(target) and not lake.exists(lake.manifest_path(target))
    assert leftovers(lake) == [] and lake.read_state("fetched_at.json") is None


def test_a_page_that_fails_midway_commits_nothing(lake):
    source = PageSource(records(25))
    sync(source, lake, P1)
    source.records += records(30, first=126)
    head = lake.read_head()

    def failing_after_two_pages(params, cursor=None):
        yield from list(source.iter_pages(params, cursor))[:2]
        raise CustomerGaugeAPIError("GET", "/v7/rest/sync/responses", 503, "Service Unavailable")

    with pytest.raises(CustomerGaugeAPIError, match="503"):
        sync(types.SimpleNamespace(iter_pages=failing_after_two_pages), lake, P2)
    assert lake.read_head() == head and not lake.exists(lake.partition_path("raw_responses", P2))
    assert leftovers(lake) == []
    sync(source, lake, P2)  # run again: from the same head, every record the failed run had paged
    assert raw_numbers(lake, P2) == list(range(126, 156))


def test_a_corrupt_fetched_at_record_is_named_before_any_request(lake):
    lake.write_state("fetched_at.json", {"fetched_at": "yesterday"})
    source = PageSource(records(5))
    with pytest.raises(LakeError, match=r"fetched_at.json' is corrupt .*: delete it \(the next sync writes it again\)"):
        sync(source, lake, P1)
    assert source.calls == [] and lake.read_head() is None


def test_every_page_has_a_later_fetched_at_and_the_latest_is_recorded(lake):
    sync(PageSource(records(25)), lake, P1)
    table = lake.read_table(lake.partition_path("raw_responses", P1), columns=["fetched_at"])
    per_page = [values[0] for values in (table["fetched_at"].to_pylist()[i : i + 10] for i in (0, 10, 20))]
    assert per_page == sorted(set(per_page)) and len(set(table["fetched_at"].to_pylist())) == 3
    assert dt.datetime.fromisoformat(lake.read_state("fetched_at.json")["fetched_at"]) == per_page[-1]


# ---- the trailing-window pass ------------------------------------------------------------------------------


def test_the_window_pass_rereads_the_window_but_not_what_the_cursor_pass_just_fetched(lake):
    source = PageSource(records(25))
    sync(source, lake, P1)
    source.records += records(3, first=126)
    source.window = {103, 105, 126}
    result = sync(source, lake, P2, lookback=WINDOW)
    assert source.calls[-2:] == [(25, None), (None, WINDOW)]
    assert raw_numbers(lake, P2) == [126, 127, 128] and raw_numbers(lake, P2, "lookback") == [103, 105]
    window = {"field": "date_survey_response", "start": "2026-10-25", "end": "2026-11-01"}
    assert (result.manifest.lookback, result.manifest.lookback_pages, result.manifest.lookback_rows) == (window, 1, 2)
    assert (last_reread(lake)["partition_key"], last_reread(lake)["period"]) == (P2, window)


# ---- the head's roll-forward -----------------------------------------------------------------------------------


def test_newer_files_a_full_refresh_left_behind_never_move_the_head_back(lake):
    source = PageSource(records(25))
    sync(source, lake, P1)
    source.records += records(5, first=126)
    sync(source, lake, P2)  # P2's manifest ends at cursor 30
    source.records += records(5, first=131)
    sync(source, lake, P1, full_refresh=True)  # the operator reloads everything into the older partition
    head = lake.read_head()
    assert (head.cursor, head.partition_key) == (35, P1)
    assert recover_lost_head(lake) == head
    assert sync(source, lake, P3).manifest.cursor_start == 35 and raw_numbers(lake, P3) == []


def test_a_raw_file_with_its_manifest_only_in_the_footer_gets_its_sidecar_back(lake):
    sync(PageSource(records(5)), lake, P1)
    path = lake.partition_path("raw_responses", P1)
    sidecar = lake.manifest_path(path)
    written = json.loads(lake.storage.read_bytes(sidecar))
    lake.delete(sidecar)
    assert recover_lost_head(lake).cursor == 5
    assert json.loads(lake.storage.read_bytes(sidecar)) == written


# ---- bodies only a server sends (ScriptedAPI over HTTP) ------------------------------------------------------


def sync_over_http(api: ScriptedAPI, lake: Lake):
    client = make_client(api.base_url, max_retries=1)
    return sync_partition(client, SyncParams(per_page=10), lake, partition_key=P1, run_id="r")


def test_sync_of_a_page_with_an_id_beyond_int64_fails_with_a_clear_error(lake):
    pages = {None: b'{"data":[{"number_customergauge":9223372036854775808}],"cursor":{"next":5}}'}
    with ScriptedAPI(paged(pages)) as api:
        try:
            sync_over_http(api, lake)
        except CLEAR_ERRORS:
            pass  # any project error naming the problem is fine; OverflowError from pyarrow is not
    assert lake.read_head() is None


def test_cursor_next_beyond_int64_is_refused_before_it_is_committed(lake):
    big = 2**63
    pages = {
        None: b'{"data":[{"number_customergauge":1}],"cursor":{"next":%d}}' % big,
        str(big): b'{"data":[{"number_customergauge":2}],"cursor":{"next":%d}}' % (big + 1),
    }
    with ScriptedAPI(paged(pages)) as api:
        with pytest.raises(CLEAR_ERRORS):  # once: OverflowError "Python int too large to convert to C long"
            sync_over_http(api, lake)


def test_sync_of_a_page_with_a_lone_surrogate_does_not_crash_with_unicode_error(lake):
    pages = {None: b'{"data":[{"number_customergauge":1,"comment":{"original":"\\ud83d"}}],"cursor":{"next":5}}'}
    with ScriptedAPI(paged(pages)) as api:
        try:
            sync_over_http(api, lake)
        except CLEAR_ERRORS:
            pass
