"""Tests of cg_dagster.lib.client, over real HTTP against the sandbox (and a tiny scripted server for
answers the sandbox never gives, such as a cursor that does not advance). Retry-After, redirects, repeated
pages, JSON parsing and prefetching have their own test_client_*.py files."""

import datetime
import logging
import time
import traceback
from urllib.parse import urlsplit

import pytest
import requests

from cg_dagster.lib.client import (
    WITH_VALUES,
    CustomerGaugeAPIError,
    CustomerGaugeAuthError,
    CustomerGaugeBodyError,
    CustomerGaugeClient,
    CustomerGaugeConfigError,
    CustomerGaugeConnectionError,
    CustomerGaugeCursorError,
    CustomerGaugeError,
    Period,
    SyncParams,
    default_base_urls,
    validate_base_url,
)
from cg_dagster.lib.client import auth as client_auth
from cg_dagster.sandbox import SandboxFaults, SandboxServer
from cg_dagster_tests._fixtures_client import CLIENT_ID, SECRET, make_client, response_requests
from cg_dagster_tests._fixtures_http import TOKEN_OK, ScriptedAPI, Trickle, page_body, token_reply

RECORDS = 350
PER_PAGE = 100


def new_server():
    return SandboxServer(records=RECORDS, client_id=CLIENT_ID, client_secret=SECRET)


@pytest.fixture(scope="module")
def shared_server():
    with new_server() as srv:
        yield srv


@pytest.fixture
def server(shared_server):
    """The module's sandbox with default faults and an empty log. Tests that change records or stop the
    server use ``own_server`` instead."""
    shared_server.faults = SandboxFaults()
    shared_server.reset_log()
    return shared_server


@pytest.fixture
def own_server():
    with new_server() as srv:
        yield srv


@pytest.fixture
def client(server):
    with make_client(server.base_url) as cg:
        yield cg


def expected_records(server):
    """The sandbox's ground truth as the API sends it (no internal _pos)."""
    return [{k: v for k, v in record.items() if k != "_pos"} for record in server.records()]


def sync_all(cg, params=SyncParams(per_page=PER_PAGE), cursor=None):
    return list(cg.iter_pages(params, cursor))


def all_records(pages):
    return [record for page in pages for record in page.records]


# ---------------------------------------------------------------------------------------------- paging


def test_paging_returns_every_record_once_in_order(server, client):
    pages = sync_all(client)

    assert all_records(pages) == expected_records(server)
    assert [len(page.records) for page in pages] == [100, 100, 100, 50]
    assert [page.number for page in pages] == [1, 2, 3, 4]
    assert [page.orjson_safe for page in pages] == [True] * 4
    assert pages[0].cursor_sent is None
    for before, after in zip(pages, pages[1:]):
        assert after.cursor_sent == before.cursor_next
        assert after.cursor_next > before.cursor_next
    # one request per page plus the final empty page
    assert [entry.status for entry in response_requests(server)] == [200] * 5


def test_cursor_is_not_number_customergauge(server, client):
    pages = sync_all(client)
    assert pages[-1].cursor_next != pages[-1].records[-1]["number_customergauge"]


def test_every_page_sends_identical_parameters_except_cursor(server, client):
    period = Period("date_creation", datetime.date(2026, 9, 1), datetime.date(2026, 10, 31))
    params = SyncParams(per_page=10, with_=("tags", "properties"), filter="sandbox-responses", period=period)

    pages = sync_all(client, params)

    sent = [entry.query for entry in response_requests(server)]
    assert len(sent) == len(pages) + 1
    assert sent[0] == [
        ("per_page", "10"),
        ("with[]", "tags"),
        ("with[]", "properties"),
        ("filter", "sandbox-responses"),
        ("period[field]", "date_creation"),
        ("period[start]", "2026-09-01"),
        ("period[end]", "2026-10-31"),
    ]
    for query, page_cursor in zip(sent, [None] + [page.cursor_next for page in pages]):
        expected = list(sent[0])
        if page_cursor is not None:
            expected.insert(1, ("cursor", str(page_cursor)))
        assert query == expected


def test_filters_and_expansions_are_applied_by_the_api(server, client):
    period = Period("date_creation", datetime.date(2026, 9, 20), datetime.date(2026, 10, 10))
    params = SyncParams(per_page=PER_PAGE, with_=("tags", "properties"), filter="sandbox-responses", period=period)

    got = all_records(sync_all(client, params))

    def wanted(record):
        day = record["date_creation"][:10]
        return record["status"] == "response" and "2026-09-20" <= day <= "2026-10-10"

    expected = [
        {k: v for k, v in record.items() if k not in ("selected_drivers", "questions")}
        for record in expected_records(server)
        if wanted(record)
    ]
    assert 0 < len(got) < RECORDS
    assert got == expected


def test_number_customergauge_returns_that_record_only(server, client):
    target = expected_records(server)[42]
    params = SyncParams(per_page=PER_PAGE, number_customergauge=target["number_customergauge"])

    pages = sync_all(client, params)

    assert all_records(pages) == [target]
    assert ("number_customergauge", str(target["number_customergauge"])) in response_requests(server)[0].query


def test_no_expansions_sends_no_with_and_gets_none(server, client):
    pages = sync_all(client, SyncParams(per_page=PER_PAGE, with_=()))

    assert response_requests(server)[0].query == [("per_page", "100")]
    first = pages[0].records[0]
    assert first["number_customergauge"] == 3414
    assert not set(WITH_VALUES) & set(first)


def test_resume_from_stored_cursor_and_max_pages(server, client):
    first_two = list(client.iter_pages(SyncParams(per_page=PER_PAGE), max_pages=2))
    rest = sync_all(client, cursor=first_two[-1].cursor_next)

    assert [page.number for page in first_two] == [1, 2]
    assert [page.number for page in rest] == [1, 2]
    assert rest[0].cursor_sent == first_two[-1].cursor_next
    assert all_records(first_two + rest) == expected_records(server)
    # max_pages stops without asking for a third page
    assert len(response_requests(server)) == 2 + 3


def test_pages_are_fetched_lazily(server, client):
    pages = client.iter_pages(SyncParams(per_page=PER_PAGE))
    assert response_requests(server) == []
    next(pages)
    pages.close()
    assert len(response_requests(server)) in (1, 2)  # the first page, and the next one if it was prefetched


@pytest.mark.parametrize("empty_next", ["same", "null", "absent", "no_cursor"])
def test_empty_last_page_stops_and_keeps_last_real_cursor(own_server, empty_next):
    server = own_server
    server.faults.empty_next = empty_next
    with make_client(server.base_url) as client:
        pages = sync_all(client)
        last_cursor = pages[-1].cursor_next
        assert sync_all(client, cursor=last_cursor) == []
        server.append_records(3)
        new_pages = sync_all(client, cursor=last_cursor)

    assert len(pages) == 4
    assert all_records(pages) == expected_records(server)[:-3]
    assert all_records(new_pages) == expected_records(server)[-3:]
    assert new_pages[0].cursor_sent == last_cursor


# ---------------------------------------------------------------------------------------------- token


def test_token_is_reused_across_pages_and_clients(server):
    with make_client(server.base_url) as first, make_client(server.base_url) as second:
        sync_all(first)
        sync_all(second)

    assert server.token_requests == 1
    token_posts = [entry for entry in server.requests_log if entry.path == "/oauth2/token"]
    assert len(token_posts) == 1
    # the sandbox logs the form with the secret redacted; token_requests counts only correct secrets
    assert token_posts[0].form["grant_type"] == "client_credentials"
    assert token_posts[0].form["client_id"] == CLIENT_ID
    authorizations = {entry.authorization for entry in response_requests(server)}
    assert len(response_requests(server)) == 10
    assert len(authorizations) == 1
    assert authorizations.pop().startswith("Bearer ")


def test_token_refreshed_when_less_than_60_seconds_remain(server, client, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(client_auth, "_clock", lambda: now[0])
    token = client.access_token()

    now[0] += 3600 - 61
    assert client.access_token() == token
    assert server.token_requests == 1

    now[0] += 2  # 59 s left
    assert client.access_token() != token
    assert server.token_requests == 2


def test_short_lived_token_is_refreshed_before_it_expires(server, client):
    server.faults.token_ttl = 1  # refresh margin is then half the lifetime: 0.5 s
    sync_all(client)
    time.sleep(0.6)
    pages = sync_all(client)

    assert all_records(pages) == expected_records(server)
    assert server.token_requests == 2
    assert 401 not in [entry.status for entry in server.requests_log]


def test_401_refreshes_the_token_and_repeats_the_request(server, client):
    stale = client_auth._CachedToken(access_token="stale-token", lifetime=3600.0, expires_at=1e12)
    client_auth._token_cache[client._cache_key] = stale

    pages = sync_all(client)

    assert all_records(pages) == expected_records(server)
    statuses = [entry.status for entry in response_requests(server)]
    assert statuses == [401] + [200] * 5
    assert response_requests(server)[0].authorization == "Bearer stale-token"
    assert server.token_requests == 1
    assert client.access_token() != "stale-token"


def test_missing_expires_in_assumes_3600_seconds(server, client, monkeypatch):
    server.faults.omit_expires_in = True
    monkeypatch.setattr(client_auth, "_clock", lambda: 500.0)
    client.access_token()

    cached = client_auth._token_cache[client._cache_key]
    assert cached.lifetime == 3600.0
    assert cached.expires_at == 4100.0


def test_refused_credentials_raise_auth_error_without_the_secret(server):
    with make_client(server.base_url, secret="wrong-secret-value") as cg:
        with pytest.raises(CustomerGaugeAuthError) as caught:
            sync_all(cg)

    assert str(caught.value) == (
        "token endpoint refused the client credentials (400 invalid_client): check client_id / client_secret"
    )
    assert response_requests(server) == []


# ---------------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    "faults",
    [
        SandboxFaults(fail_every=3),
        SandboxFaults(fail_every=2, fail_status=504),
        SandboxFaults(rate_limit_every=3, retry_after=1),
        SandboxFaults(rate_limit_every=2, retry_after=None),
        SandboxFaults(drop_body_every=2),
        SandboxFaults(truncate_json_every=2),
    ],
    ids=["5xx", "504", "429-retry-after", "429-no-retry-after", "dropped-body", "truncated-json"],
)
def test_transient_faults_still_deliver_every_page_once(server, client, faults, caplog):
    clean_cursors = [page.cursor_next for page in sync_all(client)]
    server.reset_log()
    server.faults = faults

    with caplog.at_level(logging.WARNING, logger="cg_dagster.client"):
        pages = sync_all(client)

    assert all_records(pages) == expected_records(server)
    assert [page.cursor_next for page in pages] == clean_cursors
    assert len(response_requests(server)) > 5  # some requests were repeated
    if faults.drop_body_every:
        warning = "page 2: the body broke while being read (ProtocolError) (attempt 1 of 6)"
        assert warning in caplog.messages
    if faults.truncate_json_every:
        assert any(m.startswith("page 2: the body is not valid JSON") for m in caplog.messages)


def test_logs_pages_and_refreshes_but_no_secrets(server, client, caplog):
    stale = client_auth._CachedToken(access_token="stale-token", lifetime=3600.0, expires_at=1e12)
    client_auth._token_cache[client._cache_key] = stale

    with caplog.at_level(logging.DEBUG, logger="cg_dagster.client"):
        pages = sync_all(client)

    assert f"page 1: cursor sent None, 100 records, next {pages[0].cursor_next}" in caplog.messages
    assert any("fetching an access token" in m for m in caplog.messages)
    token = client.access_token()
    assert token not in caplog.text and "stale-token" not in caplog.text and SECRET not in caplog.text


def test_persistent_5xx_raises_api_error_without_secrets(server, client):
    token = client.access_token()
    server.faults.fail_every = 1

    with pytest.raises(CustomerGaugeAPIError) as caught:
        sync_all(client)

    error = caught.value
    assert (error.status, error.path, error.api_message) == (503, "/v7/rest/sync/responses", "Server Error")
    assert str(error) == "GET /v7/rest/sync/responses answered 503: Server Error"
    assert len(response_requests(server)) == 6  # 1 + max_retries
    for text in (str(error), repr(error)):
        assert token not in text and SECRET not in text


def test_504_plain_text_body_is_quoted(server, client):
    server.faults.fail_every = 1
    server.faults.fail_status = 504
    with pytest.raises(CustomerGaugeAPIError) as caught:
        sync_all(client)
    assert str(caught.value) == "GET /v7/rest/sync/responses answered 504: Gateway Time-out"


def test_422_message_flattens_laravel_errors(server, client):
    with pytest.raises(CustomerGaugeAPIError) as caught:
        sync_all(client, SyncParams(per_page=PER_PAGE, filter="no-such-filter"))

    error = caught.value
    assert error.status == 422
    assert str(error).startswith("GET /v7/rest/sync/responses answered 422: The given data was invalid. (filter: ")
    assert len(response_requests(server)) == 1  # 422 is not retried


def test_422_per_page_message(server, client):
    params = SyncParams(per_page=PER_PAGE)
    object.__setattr__(params, "per_page", 1001)  # bypass validation to see the API's own answer
    with pytest.raises(CustomerGaugeAPIError) as caught:
        sync_all(client, params)
    assert str(caught.value) == (
        "GET /v7/rest/sync/responses answered 422: The given data was invalid. "
        "(per_page: The per page must be between 1 and 1000.)"
    )


def test_no_server_raises_connection_error_without_the_request(own_server):
    base_url = own_server.base_url
    own_server.stop()
    with make_client(base_url, max_retries=1) as cg:
        with pytest.raises(CustomerGaugeConnectionError) as caught:
            cg.access_token()
    assert str(caught.value) == (
        f"POST /oauth2/token on {urlsplit(base_url).netloc} got no answer after 1 retries: ConnectionError; "
        "check the network and auth_base_url (CUSTOMERGAUGE_AUTH_BASE_URL)"
    )
    cause = caught.value.__cause__
    assert isinstance(cause, requests.exceptions.ConnectionError)
    assert cause.request is None  # the token POST's body holds the client secret
    assert SECRET not in str(cause) and SECRET not in repr(cause.args)


# ------------------------------------------------------------------------------------ scripted server


@pytest.mark.parametrize(
    "second_next, received",
    [(20, "20"), (15, "15"), (None, "None"), ("30", "'30'"), (..., "no cursor.next"), (2**63, str(2**63))],
    ids=["same", "backwards", "null", "string", "absent", "beyond-int64"],
)
def test_cursor_that_does_not_advance_raises(second_next, received):
    answers = [(200, page_body([1, 2], 20)), (200, page_body([3], second_next))]
    with ScriptedAPI(answers) as api, make_client(api.base_url) as cg:
        pages = cg.iter_pages(SyncParams(per_page=2))
        assert next(pages).cursor_next == 20
        with pytest.raises(CustomerGaugeCursorError) as caught:
            next(pages)
    assert str(caught.value) == (
        f"page 2 (cursor sent: 20) has records but cursor.next is {received}; "
        "it must be an integer greater than the cursor sent (and below 2**63, the lake's int64): refusing to "
        "loop, go backwards or store a cursor the lake cannot hold"
    )


def test_first_page_with_null_cursor_raises():
    with ScriptedAPI([(200, page_body([1], None))]) as api, make_client(api.base_url) as cg:
        with pytest.raises(CustomerGaugeCursorError, match=r"page 1 \(cursor sent: None\)"):
            sync_all(cg)


def test_second_401_raises_auth_error():
    with ScriptedAPI([(401, {"message": "Unauthenticated."})]) as api, make_client(api.base_url) as cg:
        with pytest.raises(CustomerGaugeAuthError, match="answered 401 Unauthenticated even with a fresh"):
            sync_all(cg)
        assert len(api.queries) == 2


@pytest.mark.parametrize("body", [b'{"data": [{"a": 1}', b'{"items": []}', b"[]", b'{"data": [1]}'])
def test_body_broken_on_every_attempt_raises_body_error(body):
    with ScriptedAPI([(200, body)]) as api, make_client(api.base_url, max_retries=2) as cg:
        with pytest.raises(CustomerGaugeBodyError, match=r"^page 1: .*, on all 3 attempts$"):
            sync_all(cg)
        assert len(api.queries) == 3


def test_token_post_is_retried_on_5xx():
    token_answers = [(503, {"message": "Server Error"}), TOKEN_OK]
    with ScriptedAPI([(200, page_body([], ...))], token_answers) as api, make_client(api.base_url) as cg:
        assert cg.access_token() == "scripted-token"
        assert api.token_posts == 2


def test_token_endpoint_persistent_5xx_raises_api_error():
    token_answers = [(500, {"message": "Server Error"})]
    api = ScriptedAPI([(200, page_body([], ...))], token_answers)
    with api, make_client(api.base_url, max_retries=1) as cg:
        with pytest.raises(CustomerGaugeAPIError) as caught:
            cg.access_token()
        assert api.token_posts == 2
    assert str(caught.value) == "POST /oauth2/token answered 500: Server Error"


def test_token_response_without_access_token_raises_auth_error():
    token_answers = [(200, {"token_type": "Bearer"})]
    with ScriptedAPI([(200, page_body([], ...))], token_answers) as api, make_client(api.base_url) as cg:
        message = "^POST /oauth2/token answered 200 without an access_token$"
        with pytest.raises(CustomerGaugeAuthError, match=message):
            cg.access_token()


def test_api_error_redacts_an_echoed_token():
    answers = [(500, b"debug: Authorization: Bearer scripted-token")]
    with ScriptedAPI(answers) as api, make_client(api.base_url, max_retries=0) as cg:
        with pytest.raises(CustomerGaugeAPIError) as caught:
            sync_all(cg)
    assert caught.value.api_message == "debug: Authorization: Bearer [redacted]"


def test_access_token_never_appears_in_the_exception_chain():
    token = "TOKEN-VALUE-123456\n"  # a token the header layer refuses
    with ScriptedAPI([(200, b'{"data":[]}')], [token_reply(token)]) as api:
        with pytest.raises(Exception) as raised:
            list(make_client(api.base_url, max_retries=0).iter_pages(SyncParams()))
    text = "".join(traceback.format_exception(raised.value))
    assert "TOKEN-VALUE-123456" not in text


def test_token_endpoint_error_code_echoing_the_secret_is_redacted():
    answer = (400, {"error": f"invalid_client {SECRET}"})
    with ScriptedAPI([answer], [answer]) as api:
        with pytest.raises(CustomerGaugeError) as raised:
            make_client(api.base_url, max_retries=0).access_token()
    assert SECRET not in str(raised.value)


def test_non_latin1_access_token_fails_with_a_project_error():
    with ScriptedAPI([(200, b'{"data":[]}')], [token_reply("tok€n")]) as api:
        with pytest.raises(CustomerGaugeError):  # before the fix: UnicodeEncodeError from http.client
            list(make_client(api.base_url, max_retries=0).iter_pages(SyncParams()))


@pytest.mark.slow
def test_a_trickling_body_does_not_outlive_the_timeout_many_times_over():
    body = Trickle(b'{"data":[],"cursor":{"next":null}}' + b" " * 40, seconds=0.25)
    with ScriptedAPI([(200, body)], [token_reply()]) as api:
        started = time.monotonic()
        try:
            list(make_client(api.base_url, timeout=1.0, max_retries=0).iter_pages(SyncParams()))
        except CustomerGaugeError:
            pass
        assert time.monotonic() - started < 5, "timeout=1 s but one page took ~19 s (no overall deadline)"


# ---------------------------------------------------------------------------------------------- config


def test_default_base_urls():
    assert default_base_urls("eu") == (
        "https://api.eu.customergauge.com",
        "https://auth.eu.customergauge.com",
    )
    with pytest.raises(CustomerGaugeConfigError, match="region must be one of eu, us, au"):
        default_base_urls("nl")


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://api.eu.customergauge.com/", "https://api.eu.customergauge.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://127.8.0.1:8765/", "http://127.8.0.1:8765"),
        ("http://localhost:1/prefix/", "http://localhost:1/prefix"),
        ("http://[::1]:8765", "http://[::1]:8765"),
    ],
)
def test_validate_base_url_accepts(url, expected):
    assert validate_base_url(url, "api_base_url") == expected


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://api.eu.customergauge.com", "api_base_url uses plain http for the non-loopback host"),
        ("http://10.0.0.1:8765", "api_base_url uses plain http"),
        ("ftp://api.eu.customergauge.com", "api_base_url must be an absolute https:// URL"),
        ("api.eu.customergauge.com", "api_base_url must be an absolute https:// URL"),
        ("", "api_base_url must be a URL"),
        ("https://api.eu.customergauge.com?x=1", "api_base_url must not have a query string"),
    ],
)
def test_validate_base_url_rejects(url, message):
    with pytest.raises(CustomerGaugeConfigError, match=message):
        validate_base_url(url, "api_base_url")


@pytest.mark.parametrize(
    "url", ["https://api.example.com:99999", "https://api.example.com:abc", "https://api example.com", "https://[::1"]
)
def test_malformed_base_url_is_a_config_error_naming_the_setting(url):
    with pytest.raises(CustomerGaugeConfigError, match="api_base_url"):
        validate_base_url(url, "api_base_url")


def test_validate_base_url_does_not_echo_credentials():
    with pytest.raises(CustomerGaugeConfigError) as caught:
        validate_base_url("https://user:hunter2@api.eu.customergauge.com", "auth_base_url")
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).startswith("auth_base_url must not hold user:password@")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"per_page": 0}, r"per_page must be an integer from 1 to 1000 \(vendor page\), got 0"),
        ({"per_page": 1001}, "per_page must be an integer from 1 to 1000"),
        ({"per_page": True}, "per_page must be an integer"),
        ({"with_": ("tags", "drivers")}, r"unknown value 'drivers' \(use 'selected_drivers'\)"),
        ({"with_": ("tags", "tags")}, "with_ must not repeat a value"),
        ({"with_": "tags"}, "with_ must be a tuple of values"),
        ({"number_customergauge": 0}, "number_customergauge must be a positive integer"),
        ({"filter": " "}, "filter must be the reference of an Outbound filter"),
        ({"period": "last week"}, "period must be a Period"),
    ],
)
def test_sync_params_rejects(kwargs, message):
    with pytest.raises(CustomerGaugeConfigError, match=message):
        SyncParams(**kwargs)


def test_sync_params_accepts_a_list_for_with():
    assert SyncParams(with_=["tags"]).with_ == ("tags",)


def test_period_from_strings():
    assert Period.from_strings(None, None, None) is None
    assert Period.from_strings("", "", "") is None
    assert Period.from_strings("date_sent", "2023-01-05", "2023-01-25") == Period(
        "date_sent", datetime.date(2023, 1, 5), datetime.date(2023, 1, 25)
    )


@pytest.mark.parametrize(
    "strings, message",
    [
        (("date_sent", "2023-01-05", None), "period\\[end\\] missing: give all three"),
        ((None, "2023-01-05", None), "period\\[field\\] and period\\[end\\] missing"),
        (("date_sent", "2023-01-25", "2023-01-05"), r"period\[start\] 2023-01-25 is after period\[end\]"),
        (("date_sent", "2023-1-5", "2023-01-25"), "period\\[start\\] must be a date written YYYY-MM-DD"),
        (("date_sent", "20230105", "2023-01-25"), "period\\[start\\] must be a date written YYYY-MM-DD"),
        (("date_sent", "2023-01-05", "2023-02-30"), "period\\[end\\] must be a date written YYYY-MM-DD"),
        (("date_modified", "2023-01-05", "2023-01-25"), "period\\[field\\] must be one of date_creation"),
    ],
)
def test_period_rejects(strings, message):
    with pytest.raises(CustomerGaugeConfigError, match=message):
        Period.from_strings(*strings)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"client_id": ""}, "client_id must be a non-empty string"),
        ({"client_secret": ""}, "client_secret must be a non-empty string"),
        ({"api_base_url": "http://api.eu.customergauge.com"}, "api_base_url uses plain http"),
        ({"auth_base_url": "http://auth.eu.customergauge.com"}, "auth_base_url uses plain http"),
        ({"timeout": 0}, "timeout must be a number > 0"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0"),
        ({"backoff_factor": -1}, "backoff_factor must be a number >= 0"),
    ],
)
def test_client_rejects(change, message):
    settings = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "api_base_url": "https://api.eu.customergauge.com",
        "auth_base_url": "https://auth.eu.customergauge.com",
    }
    with pytest.raises(CustomerGaugeConfigError, match=message):
        CustomerGaugeClient(**{**settings, **change})


def test_iter_pages_rejects_bad_arguments_at_call_time(client):
    with pytest.raises(CustomerGaugeConfigError, match="cursor must be an integer"):
        client.iter_pages(SyncParams(), cursor="123")
    with pytest.raises(CustomerGaugeConfigError, match="max_pages must be a positive integer"):
        client.iter_pages(SyncParams(), max_pages=0)


def test_repr_hides_secret_and_token(server, client):
    token = client.access_token()
    text = repr(client)
    assert text == (
        f"CustomerGaugeClient(api_base_url={server.base_url!r}, auth_base_url={server.base_url!r}, "
        f"client_id='sandbox-client')"
    )
    cached_repr = repr(client_auth._token_cache[client._cache_key])
    assert token not in cached_repr and SECRET not in text


def test_a_long_retry_after_is_capped_so_an_hourly_sync_cannot_stall_for_an_hour():
    from cg_dagster.lib.client import MAX_RETRY_AFTER

    with CustomerGaugeClient(
        client_id="id", client_secret="s", api_base_url="http://127.0.0.1:9", auth_base_url="http://127.0.0.1:9"
    ) as client:
        retry = client._transport.session.get_adapter("http://127.0.0.1:9/").max_retries
        assert retry.parse_retry_after("3600") == MAX_RETRY_AFTER == 120.0
        assert retry.parse_retry_after("2") == 2
        assert retry.new(total=1).parse_retry_after("3600") == MAX_RETRY_AFTER  # kept across urllib3's copies
