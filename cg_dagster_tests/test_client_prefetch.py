"""iter_pages fetches page n+1 while the caller holds page n (issue 7), at most one page ahead. Asserted on
the order of requests in the sandbox's log, never on durations: the request for the next page arrives while
the caller is still processing the current one; after an early stop at most the one request in flight is
made, and the worker thread is gone."""

import gc
import threading
import time

import pytest

from cg_dagster.lib.client import CustomerGaugeAPIError, SyncParams
from cg_dagster.sandbox import SandboxFaults, SandboxServer
from cg_dagster_tests._fixtures_client import CLIENT_ID, SECRET, make_client, response_requests
from cg_dagster_tests._fixtures_http import ScriptedAPI, page_body

PATIENCE = 10.0  # seconds to wait for a request that must come; only reached when the code is wrong


@pytest.fixture
def server():
    with SandboxServer(records=350, client_id=CLIENT_ID, client_secret=SECRET) as srv:
        srv.faults = SandboxFaults(latency=0.05)
        yield srv


def sent_cursors(server) -> list:
    return [dict(entry.query).get("cursor") for entry in response_requests(server)]


def arrives(server, cursor: int) -> bool:
    """Wait until the sandbox logged a request for ``cursor``; False if it did not come within PATIENCE."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if str(cursor) in sent_cursors(server):
            return True
        time.sleep(0.01)
    return False


def prefetch_threads() -> list:
    return [thread for thread in threading.enumerate() if thread.name.startswith("cg-page-prefetch")]


def settled_requests(server) -> int:
    """The number of responses requests, once no more arrive (one latency and then some)."""
    time.sleep(0.3)
    return len(response_requests(server))


def test_the_next_page_is_requested_while_the_caller_processes_this_one(server):
    seen_while_processing, records, nexts = [], [], []
    with make_client(server.base_url) as client:
        for page in client.iter_pages(SyncParams(per_page=50)):
            seen_while_processing.append(arrives(server, page.cursor_next))  # the caller's processing
            records += page.records
            nexts.append(page.cursor_next)
    assert seen_while_processing == [True] * 7  # 350 records: 7 pages, each overlapped with the next request
    assert records == server.records()
    assert sent_cursors(server) == [None] + [str(cursor) for cursor in nexts]  # each page once, in order


def test_a_break_stops_after_the_request_in_flight(server):
    server.faults = SandboxFaults(latency=0.2)
    with make_client(server.base_url) as client:
        for page in client.iter_pages(SyncParams(per_page=50)):
            assert arrives(server, page.cursor_next)
            break
        assert prefetch_threads() == []  # closing the generator joined the worker
        assert settled_requests(server) == 2  # page 1 and the prefetched page 2, nothing more
        assert client.access_token()  # the client is still usable


def test_an_exception_in_the_caller_stops_the_worker(server):
    with make_client(server.base_url) as client:
        with pytest.raises(RuntimeError, match="the caller failed"):
            for page in client.iter_pages(SyncParams(per_page=50)):
                if page.number == 3:
                    raise RuntimeError("the caller failed")
        assert prefetch_threads() == []
        assert settled_requests(server) in (
            3,
            4,
        )  # pages 1-3, and page 4 if it was already requested


def test_an_abandoned_generator_is_cleaned_up_by_garbage_collection(server):
    with make_client(server.base_url) as client:
        pages = client.iter_pages(SyncParams(per_page=50))
        next(pages)
        del pages
        gc.collect()
        assert prefetch_threads() == []
        assert settled_requests(server) in (1, 2)


def test_max_pages_is_not_prefetched_past(server):
    with make_client(server.base_url) as client:
        pages = list(client.iter_pages(SyncParams(per_page=50), max_pages=2))
    assert [page.number for page in pages] == [1, 2]
    assert settled_requests(server) == 2


def test_an_error_surfaces_at_its_page_after_the_pages_before_it():
    answers = [
        (200, page_body([1, 2], 10)),
        (422, {"message": "The given data was invalid."}),
    ]
    with ScriptedAPI(answers) as api, make_client(api.base_url) as client:
        pages = client.iter_pages(SyncParams(per_page=2))
        first = next(pages)
        deadline = time.monotonic() + PATIENCE
        while len(api.queries) < 2 and time.monotonic() < deadline:  # page 2 failed in the background
            time.sleep(0.01)
        assert first.records == [
            {"number_customergauge": 1},
            {"number_customergauge": 2},
        ]
        assert len(api.queries) == 2
        with pytest.raises(CustomerGaugeAPIError, match="answered 422"):
            next(pages)
        assert list(pages) == []  # the generator is finished
    assert len(api.queries) == 2


def test_concurrent_pagings_share_one_token(server):
    results = {}

    def page_all(name):
        with make_client(server.base_url) as client:
            results[name] = [
                r["number_customergauge"] for p in client.iter_pages(SyncParams(per_page=50)) for r in p.records
            ]

    threads = [threading.Thread(target=page_all, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    expected = [r["number_customergauge"] for r in server.records()]
    assert results == {"a": expected, "b": expected, "c": expected}
    assert server.token_requests == 1
    assert prefetch_threads() == []
