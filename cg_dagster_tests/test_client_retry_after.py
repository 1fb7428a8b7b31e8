"""Retry-After values that are not a whole number of seconds (issue 8 #2), over real HTTP against the
sandbox: fractional seconds and HTTP dates are honoured, anything else falls back to the exponential
backoff, and MAX_RETRY_AFTER caps them all. The waits urllib3 takes are recorded (and really slept)."""

import email.utils
import logging
import time
import types

import pytest
import urllib3.util.retry
from urllib3 import HTTPResponse

from cg_dagster.lib.client import MAX_RETRY_AFTER, CustomerGaugeAPIError, SyncParams
from cg_dagster.sandbox import SandboxFaults, SandboxServer
from cg_dagster_tests._fixtures_client import CLIENT_ID, SECRET, make_client, response_requests

UNUSABLE = [
    "1m0s",
    "-1",
    "abc",
    "",
    "Mon, 99 Foo 2026 99:99:99 GMT",
    "1 Jan 99999999999999 00:00:00 GMT",
    "Mon, 32 Dec 2026 99:00:00 GMT",  # no such day or hour: not rolled into a far-future date (the 120 s cap)
]


@pytest.fixture(scope="module")
def server():
    with SandboxServer(records=350, client_id=CLIENT_ID, client_secret=SECRET) as srv:
        yield srv


@pytest.fixture
def waits(monkeypatch):
    """Every sleep urllib3's Retry takes, in seconds (slept for real too)."""
    taken = []

    def sleep(seconds):
        taken.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(urllib3.util.retry, "time", types.SimpleNamespace(time=time.time, sleep=sleep))
    return taken


def http_date(offset: float) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


def sync_under_429s(server, retry_after_value):
    """Page all 350 records, every 3rd request answered 429 with ``retry_after_value``: the records, the
    number of 429s."""
    server.faults = SandboxFaults(rate_limit_every=3, retry_after_value=retry_after_value)
    server.reset_log()
    with make_client(server.base_url) as client:
        records = [record for page in client.iter_pages(SyncParams(per_page=100)) for record in page.records]
    return records, [entry.status for entry in response_requests(server)].count(429)


def expected(server):
    return server.records()


def test_fractional_seconds_are_honoured(server, waits):
    records, rate_limited = sync_under_429s(server, "0.5")
    assert records == expected(server)
    assert rate_limited == 2
    assert waits == [0.5, 0.5]


def test_an_http_date_in_the_future_is_honoured(server, waits):
    until = int(time.time()) + 2  # an HTTP date has whole seconds
    records, rate_limited = sync_under_429s(server, email.utils.formatdate(until, usegmt=True))
    assert records == expected(server)
    assert rate_limited == 2
    assert time.time() >= until  # the first 429 waited until the date; the second came after it (no wait)
    assert len(waits) == 1 and 0 < waits[0] <= 2, waits


def test_an_http_date_in_the_past_retries_at_once(server, waits):
    records, rate_limited = sync_under_429s(server, http_date(-2))
    assert records == expected(server)
    assert rate_limited == 2
    assert waits == []  # 0 s to wait, and the backoff before a first retry is 0 too


@pytest.mark.parametrize("value", UNUSABLE)
def test_an_unusable_value_falls_back_to_the_backoff(server, waits, value, caplog):
    with caplog.at_level(logging.WARNING, logger="cg_dagster.client"):
        records, rate_limited = sync_under_429s(server, value)
    assert records == expected(server)  # before: "got no answer after 5 retries" at the first 429
    assert rate_limited == 2
    assert waits == []  # the backoff before a first retry is 0
    warning = f"429 with an unusable Retry-After {value!r}: waiting the exponential backoff instead"
    assert caplog.messages.count(warning) == 2


@pytest.mark.parametrize("value", ["1m0s", "-1", "abc", ""])
def test_repeated_429s_with_an_unusable_value_back_off_and_end_in_the_429(server, waits, value):
    server.faults = SandboxFaults(rate_limit_every=1, retry_after_value=value)
    server.reset_log()
    with make_client(server.base_url, max_retries=3) as client:
        with pytest.raises(CustomerGaugeAPIError) as caught:
            list(client.iter_pages(SyncParams(per_page=100)))
    assert str(caught.value) == "GET /v7/rest/sync/responses answered 429: Too Many Attempts."
    assert len(response_requests(server)) == 4
    assert waits == [
        0.02,
        0.04,
    ]  # backoff_factor 0.01 * 2 ** (n - 1) from the second retry on


def retry_after(client, value):
    """What the client's Retry makes of a 429 carrying ``Retry-After: value``."""
    retry = client._transport.session.get_adapter("http://127.0.0.1/").max_retries
    return retry.new(total=1).get_retry_after(HTTPResponse(status=429, headers={"Retry-After": value}))


def test_parsed_values_and_the_cap():
    with make_client("http://127.0.0.1:9") as client:
        assert retry_after(client, "0.5") == 0.5
        assert retry_after(client, " 2 ") == 2.0
        assert retry_after(client, "0.25") == 0.25
        assert retry_after(client, "3600") == MAX_RETRY_AFTER == 120.0
        assert retry_after(client, "3600.5") == MAX_RETRY_AFTER
        assert retry_after(client, "9" * 5000) == MAX_RETRY_AFTER  # int() would refuse 5000 digits
        assert retry_after(client, http_date(7200)) == MAX_RETRY_AFTER
        assert 0 < retry_after(client, http_date(30)) <= 30
        assert retry_after(client, http_date(-30)) == 0
        for value in [*UNUSABLE, "1e3", "NaN", "0x10", "+5", "1.", ".5", "５"]:
            assert retry_after(client, value) is None, value
