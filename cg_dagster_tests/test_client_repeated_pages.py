"""A server that repeats the same records under a growing cursor (issue 8 #6) would be paged forever: two
consecutive pages with the same number_customergauge set stop the sync with a CustomerGaugeCursorError that
names the pages and cursors, and nothing commits."""

import pytest

from cg_dagster.lib.client import CustomerGaugeCursorError, SyncParams
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.sync import sync_partition
from cg_dagster.sandbox import SandboxFaults, SandboxServer
from cg_dagster_tests._fixtures_client import CLIENT_ID, SECRET, make_client, response_requests
from cg_dagster_tests._fixtures_http import ScriptedAPI, page_body

P1, P2 = "2026-11-29-09:00", "2026-11-29-10:00"


@pytest.fixture
def server():
    with SandboxServer(records=350, client_id=CLIENT_ID, client_secret=SECRET) as srv:
        yield srv


def test_a_repeated_page_stops_the_paging(server):
    server.faults = SandboxFaults(repeat_page_after=2)
    pages = []
    with make_client(server.base_url) as client:
        with pytest.raises(CustomerGaugeCursorError) as caught:
            for page in client.iter_pages(SyncParams(per_page=100)):
                pages.append(page)
    first, second = pages
    assert [r["number_customergauge"] for r in first.records + second.records] == [
        r["number_customergauge"] for r in server.records()[:200]
    ]
    assert str(caught.value) == (
        f"page 3 (cursor sent: {second.cursor_next}, next: {second.cursor_next + 1}) holds the same 100 "
        "records "
        f"(number_customergauge) as page 2 (cursor sent: {first.cursor_next}, next: {second.cursor_next}): "
        "the API repeats records under a growing cursor; stopping instead of paging forever"
    )
    assert len(response_requests(server)) == 3  # nothing requested after the repeated page


def test_the_same_records_in_another_order_count_as_repeated_but_an_overlap_does_not():
    answers = [
        (200, page_body([5, 6], 10)),
        (200, page_body([6, 7], 20)),
        (200, page_body([7, 6], 30)),
    ]
    with ScriptedAPI(answers) as api, make_client(api.base_url) as client:
        pages = client.iter_pages(SyncParams(per_page=2))
        assert [next(pages).cursor_next, next(pages).cursor_next] == [10, 20]
        with pytest.raises(
            CustomerGaugeCursorError,
            match=r"^page 3 \(cursor sent: 20, next: 30\) holds the same 2",
        ):
            next(pages)


def test_a_repeating_server_commits_nothing(server, tmp_path):
    lake = Lake(tmp_path / "lake")
    with make_client(server.base_url) as client:
        sync_partition(client, SyncParams(per_page=100), lake, partition_key=P1, run_id="first")
        head = lake.read_head()
        assert head.cursor == server.last_cursor
        server.append_records(250)
        server.reset_log()  # restarts the sandbox's page count
        server.faults = SandboxFaults(repeat_page_after=1)
        with pytest.raises(
            CustomerGaugeCursorError,
            match=r"^page 2 \(cursor sent: \d+, next: \d+\) holds the same 100",
        ):
            sync_partition(
                client,
                SyncParams(per_page=100),
                lake,
                partition_key=P2,
                run_id="second",
            )
    assert lake.read_head() == head
    assert not lake.partition_path("raw_responses", P2).exists()
    assert list((lake.root / "_tmp").glob("*")) == []  # the temporary file was removed too
    assert sorted(path.name for path in lake.table_dir("raw_responses").iterdir()) == [
        lake.partition_path("raw_responses", P1).name
    ]
    assert len(response_requests(server)) == 2


def test_a_record_changed_upstream_between_two_pages_is_not_a_repeat():
    # The adversarial review's input: per_page=1, record 6009 updated and moved to the end after pages 1 and 2
    # were fetched, so page 3 holds 6009 again, in its new version; then 6024; then the empty page.
    changed = {"number_customergauge": 6009, "comment": {"original": "changed"}}
    answers = [
        (200, page_body([3414], 10)),
        (200, page_body([6009], 20)),
        (200, {"data": [changed], "cursor": {"next": 30}}),
        (200, page_body([6024], 40)),
        (200, page_body([], ...)),
    ]
    with ScriptedAPI(answers) as api, make_client(api.base_url) as client:
        pages = list(client.iter_pages(SyncParams(per_page=1)))
    assert [[r["number_customergauge"] for r in page.records] for page in pages] == [[3414], [6009], [6009], [6024]]
    assert pages[2].records == [changed]
