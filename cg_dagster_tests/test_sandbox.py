"""Tests of the sandbox API (cg_dagster.sandbox) over real HTTP with requests."""

import json
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta

import pytest
import requests

from cg_dagster.sandbox import SandboxFaults, SandboxServer, generate_records
from cg_dagster.sandbox.data import VENDOR_EXAMPLE_RECORD
from cg_dagster.sandbox.server import QueryInvalid, parse_responses_query

RESPONSES = "/v7/rest/sync/responses"
ALL_WITH = ["selected_drivers", "tags", "questions", "properties"]
INVALID = "The given data was invalid."


@pytest.fixture(scope="module")
def shared():
    """Read-only server with the default 2500 records; tests using it must not change it."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def small():
    """Fresh 60-record server per test, for faults and data changes."""
    with SandboxServer(records=60) as server:
        yield server


def token(server: SandboxServer) -> str:
    reply = requests.post(
        server.base_url + "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()["access_token"]


def get(server: SandboxServer, access_token: str, params=None) -> requests.Response:
    return requests.get(server.base_url + RESPONSES, params=params, headers={"Authorization": f"Bearer {access_token}"})


def page_all(server: SandboxServer, params: dict) -> tuple[list[dict], list[int]]:
    """Follow the cursor (from params["cursor"], if any) to the empty page; return all rows and every
    cursor.next seen."""
    access_token, rows, cursors, cursor = token(server), [], [], params.get("cursor")
    while True:
        body = get(server, access_token, {**params, "cursor": cursor}).json()
        cursors.append(body["cursor"]["next"])
        if not body["data"]:
            return rows, cursors
        rows += body["data"]
        cursor = body["cursor"]["next"]


# --- records ------------------------------------------------------------------------------------------


def test_generate_records_is_deterministic_per_seed():
    first = generate_records(7, 300)
    assert first == generate_records(7, 300)
    assert first[1:] != generate_records(8, 300)[1:]
    positions = [record["_pos"] for record in first]
    numbers = [record["number_customergauge"] for record in first]
    assert positions[0] == 1000
    assert all(1 <= b - a <= 5 for a, b in zip(positions, positions[1:]))
    assert numbers == sorted(set(numbers))
    assert not set(positions) & set(numbers)


def test_generate_records_start_key_moves_positions():
    assert [r["_pos"] for r in generate_records(7, 3, start_key=50)][0] == 50


def test_first_record_is_the_vendor_example(shared):
    first = shared.records()[0]
    assert first == VENDOR_EXAMPLE_RECORD
    assert first["number_customergauge"] == 3414
    assert first["comment"] == {"original": "Comentário de exemplo", "translation": "Example Comment"}
    assert first["selected_drivers"][0] == {
        "primary": "Ordering",
        "secondary": ["Ease of Ordering", "Product Information"],
    }
    assert first["properties"][3] == {"field": "Key Contact", "reference": None}
    body = get(shared, token(shared), {"per_page": 1, "with[]": ALL_WITH}).json()
    assert body == {"data": [VENDOR_EXAMPLE_RECORD], "cursor": {"next": 1000}}


def _variety_counts(records: list[dict]) -> dict[str, int]:
    def count(predicate):
        return sum(1 for record in records if predicate(record))

    def secondaries(record):
        return [driver.get("secondary", "missing") for driver in record["selected_drivers"]]

    answers = [q["answer"] for r in records for q in r["questions"]]
    return {
        "unicode": count(
            lambda r: (
                r["contact"]["first_name"] == "Zoë"
                and "Łódź" in r["account"]["name"]
                and "東京" in r["comment"]["original"]
                and "🙂👍" in r["comment"]["original"]
            )
        ),
        "bracket_comment": count(lambda r: (r["comment"]["original"] or "").startswith("[")),
        "long_comment": count(lambda r: len((r["comment"]["original"] or "").encode()) > 60_000),
        "null_email_phone": count(lambda r: r["email"] is None and r["phone"] is None),
        "null_translation": count(lambda r: r["comment"]["translation"] is None),
        "null_nps": count(lambda r: r["nps"] is None),
        "zero_nps": count(lambda r: r["nps"] == 0),
        "empty_tags": count(lambda r: r["tags"] == []),
        "empty_questions": count(lambda r: r["questions"] == []),
        "secondary_empty": count(lambda r: [] in secondaries(r)),
        "secondary_missing": count(lambda r: "missing" in secondaries(r)),
        "many_drivers": count(lambda r: len(r["selected_drivers"]) >= 3),
        "null_references": count(lambda r: all(p["reference"] is None for p in r["properties"])),
        "partial": count(lambda r: r["status"] == "partial"),
        "non_response": count(lambda r: r["status"] == "non_response"),
        "int_numbers": count(
            lambda r: isinstance(r["account"]["number"], int) and isinstance(r["number_customer"], int)
        ),
        "zero_date_order": count(lambda r: r["date_order"] == "0000-00-00 00:00:00"),
        "empty_date_order": count(lambda r: r["date_order"] == ""),
        "custom_fields": count(lambda r: "custom_fields" in r),
        "topic_with_sentiment": count(lambda r: any(t["type"] == "topic" and "sentiment" in t for t in r["tags"])),
        "tag_without_sentiment": count(lambda r: any(t["type"] == "tag" and "sentiment" not in t for t in r["tags"])),
        "numeric_answer": sum(1 for a in answers if isinstance(a, str) and a.isdigit()),
        "text_answer": sum(1 for a in answers if isinstance(a, str) and not a.isdigit()),
        "list_answer": sum(1 for a in answers if isinstance(a, list)),
        "object_answer": sum(1 for a in answers if isinstance(a, dict)),
    }


def test_every_variety_is_in_the_first_50_records():
    counts = _variety_counts(generate_records(7, 50))
    assert [kind for kind, n in counts.items() if n == 0] == []


def test_every_variety_appears_several_times_in_2500_records():
    counts = _variety_counts(generate_records(7, 2500))
    assert [kind for kind, n in counts.items() if n < 3] == []


def test_dates_lie_in_the_60_days_before_the_base_date():
    for base in (date(2026, 11, 1), date(2025, 1, 15)):
        records = generate_records(7, 300, base_date=base)[1:]
        created = [datetime.strptime(r["date_creation"], "%Y-%m-%d %H:%M:%S") for r in records]
        assert min(created) >= datetime.combine(base - timedelta(days=60), datetime.min.time())
        assert max(created) < datetime.combine(base, datetime.min.time())
    assert generate_records(7, 2)[1]["date_creation"].startswith("2026-")


# --- paging and parameters ----------------------------------------------------------------------------


def test_paging_from_no_cursor_returns_every_record_once_in_order(shared):
    rows, cursors = page_all(shared, {"per_page": 300, "with[]": ALL_WITH})
    assert rows == shared.records()
    assert len(rows) == 2500
    assert len(cursors) == 10  # 9 pages (8 x 300 + 100) then the empty page
    assert cursors[-1] == cursors[-2] == shared.last_cursor
    last_numbers = [rows[min(i * 300 + 299, 2499)]["number_customergauge"] for i in range(9)]
    assert all(cursor != number for cursor, number in zip(cursors, last_numbers))
    assert cursors == sorted(cursors)


def test_cursor_skips_records_at_or_before_it(shared):
    access_token = token(shared)
    first_two = get(shared, access_token, {"per_page": 2}).json()
    after = get(shared, access_token, {"per_page": 1, "cursor": first_two["cursor"]["next"]}).json()
    third = shared.records()[2]["number_customergauge"]
    assert after["data"][0]["number_customergauge"] == third
    assert get(shared, access_token, {"per_page": 1, "cursor": -5}).json()["cursor"] == {"next": 1000}


def test_per_page_limits(shared):
    access_token = token(shared)
    assert len(get(shared, access_token, {"per_page": 1}).json()["data"]) == 1
    assert len(get(shared, access_token, {"per_page": 1000}).json()["data"]) == 1000
    assert len(get(shared, access_token).json()["data"]) == 1000  # default page size


@pytest.mark.parametrize("expansions", [[], ["tags"], ["questions", "properties"], ALL_WITH])
def test_with_returns_only_the_expansions_asked_for(shared, expansions):
    row = get(shared, token(shared), {"per_page": 1, "with[]": expansions}).json()["data"][0]
    assert [key for key in ALL_WITH if key in row] == [key for key in ALL_WITH if key in expansions]
    for key in expansions:
        assert row[key] == VENDOR_EXAMPLE_RECORD[key]
    assert "_pos" not in row and row["nps"] == 10


def test_number_customergauge_returns_only_that_record(shared):
    access_token = token(shared)
    wanted = shared.records()[7]
    body = get(
        shared, access_token, {"number_customergauge": wanted["number_customergauge"], "with[]": ALL_WITH}
    ).json()
    assert body["data"] == [wanted]
    assert get(shared, access_token, {"number_customergauge": 1}).json()["data"] == []


@pytest.mark.parametrize("reference", ["sandbox-nl", "sandbox-responses"])
def test_outbound_filter(shared, reference):
    rows, _ = page_all(shared, {"filter": reference, "with[]": ["properties"]})
    if reference == "sandbox-nl":
        expected = [r for r in shared.records() if r["properties"][0]["reference"] == "NL"]
    else:
        expected = [r for r in shared.records() if r["status"] == "response"]
    assert [r["number_customergauge"] for r in rows] == [r["number_customergauge"] for r in expected]
    assert 100 < len(rows) < 2500


def test_period_filter_compares_the_date_part_inclusively(shared):
    target = shared.records()[5]["date_sent"][:10]
    params = {"period[field]": "date_sent", "period[start]": target, "period[end]": target}
    rows, _ = page_all(shared, params)
    expected = [r["number_customergauge"] for r in shared.records() if r["date_sent"][:10] == target]
    assert [r["number_customergauge"] for r in rows] == expected
    assert len(expected) >= 2


def test_period_filter_on_date_order_skips_zero_and_empty_dates(shared):
    rows, _ = page_all(
        shared, {"period[field]": "date_order", "period[start]": "2000-01-01", "period[end]": "2100-01-01"}
    )
    assert all(row["date_order"][:4] not in ("0000", "") for row in rows)
    expected = [r for r in shared.records() if r["date_order"] not in ("", "0000-00-00 00:00:00")]
    assert len(rows) == len(expected)


@pytest.mark.parametrize(
    "params, errors",
    [
        ({"per_page": 0}, {"per_page": ["The per page must be between 1 and 1000."]}),
        ({"per_page": 1001}, {"per_page": ["The per page must be between 1 and 1000."]}),
        ({"per_page": "ten"}, {"per_page": ["The per page must be an integer."]}),
        ({"cursor": "abc"}, {"cursor": ["The cursor must be an integer."]}),
        ({"number_customergauge": "3414x"}, {"number_customergauge": ["The number customergauge must be an integer."]}),
        ({"with[]": ["tags", "drivers"]}, {"with.1": ["The selected with.1 is invalid."]}),
        ({"with": "tags"}, {"with": ["The with must be an array."]}),
        ({"filter": "nope"}, {"filter": ["The selected filter is invalid."]}),
        (
            {"period[field]": "date_x", "period[start]": "2026-01-01", "period[end]": "2026-01-02"},
            {"period.field": ["The selected period.field is invalid."]},
        ),
        (
            {"period[field]": "date_sent", "period[start]": "2026-1-5", "period[end]": "2026-02-30"},
            {
                "period.start": ["The period.start does not match the format Y-m-d."],
                "period.end": ["The period.end does not match the format Y-m-d."],
            },
        ),
        (
            {"period[field]": "date_sent", "period[start]": "2026-02-02", "period[end]": "2026-02-01"},
            {"period.end": ["The period.end must be a date after or equal to period.start."]},
        ),
        (
            {"period[field]": "date_sent"},
            {
                "period.start": ["The period.start field is required when period.field / period.end is present."],
                "period.end": ["The period.end field is required when period.field / period.start is present."],
            },
        ),
        (
            {"per_page": -1, "cursor": "x"},
            {"per_page": ["The per page must be between 1 and 1000."], "cursor": ["The cursor must be an integer."]},
        ),
    ],
)
def test_bad_parameters_answer_422_laravel_style(shared, params, errors):
    reply = get(shared, token(shared), params)
    assert reply.status_code == 422
    assert reply.json() == {"message": INVALID, "errors": errors}


def test_unknown_and_empty_parameters_are_ignored(shared):
    body = get(shared, token(shared), {"per_page": 2, "colour": "blue", "cursor": ""}).json()
    assert [row["number_customergauge"] for row in body["data"]] == [
        r["number_customergauge"] for r in shared.records()[:2]
    ]


@pytest.mark.parametrize("name, value", [("per_page", "１００"), ("per_page", "٣"), ("cursor", "１２３")])
def test_sandbox_refuses_non_ascii_digits_like_php(name, value):
    """PHP's FILTER_VALIDATE_INT (Laravel 'integer') accepts ASCII digits only; \\d and int() accept any Unicode
    digit, so a client sending '１００' would pass against the sandbox."""
    with pytest.raises(QueryInvalid) as raised:
        parse_responses_query([(name, value)])
    assert list(raised.value.errors) == [name]


def test_sandbox_period_start_with_non_ascii_digits_is_a_format_error():
    pairs = [("period[field]", "date_creation"), ("period[start]", "２０２３-01-05"), ("period[end]", "2023-01-25")]
    with pytest.raises(QueryInvalid) as raised:
        parse_responses_query(pairs)
    assert raised.value.errors.get("period.start") == ["The period.start does not match the format Y-m-d."]


def test_sandbox_with_given_a_named_key_is_validated_not_ignored():
    """PHP parses with[x]=bogus into with = {"x": "bogus"}; Laravel's with.* rule reports with.x (the sandbox
    once ignored the key: no error, no expansion)."""
    with pytest.raises(QueryInvalid) as raised:
        parse_responses_query([("with[x]", "bogus")])
    assert "with.x" in raised.value.errors


def test_json_is_utf8_without_escapes(shared):
    reply = get(shared, token(shared), {"per_page": 1})
    assert reply.headers["Content-Type"] == "application/json"
    assert "Comentário".encode() in reply.content


# --- auth -----------------------------------------------------------------------------------------------


def test_token_response_shape(small):
    reply = requests.post(
        small.base_url + "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"},
    )
    body = reply.json()
    assert sorted(body) == ["access_token", "expires_in", "token_type"]
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert len(body["access_token"]) == 40 and int(body["access_token"], 16) >= 0
    assert small.token_requests == 1


@pytest.mark.parametrize(
    "form, error",
    [
        (
            {"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "wrong"},
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "other", "client_secret": "sandbox-secret"},
            "invalid_client",
        ),
        ({"grant_type": "client_credentials", "client_id": "sandbox-client"}, "invalid_client"),
        (
            {"grant_type": "password", "client_id": "sandbox-client", "client_secret": "sandbox-secret"},
            "unsupported_grant_type",
        ),
        ({"client_id": "sandbox-client", "client_secret": "sandbox-secret"}, "unsupported_grant_type"),
    ],
)
def test_token_errors(small, form, error):
    reply = requests.post(small.base_url + "/oauth2/token", data=form)
    assert (reply.status_code, reply.json()) == (400, {"error": error})
    assert small.token_requests == 0


def test_secret_is_redacted_in_log_and_repr(small):
    token(small)
    entry = small.requests_log[-1]
    assert entry.form == {
        "grant_type": "client_credentials",
        "client_id": "sandbox-client",
        "client_secret": "<redacted>",
    }
    assert "sandbox-secret" not in repr(small) + repr(small.requests_log)


def test_omit_expires_in(small):
    small.faults.omit_expires_in = True
    access_token = token(small)
    reply = requests.post(
        small.base_url + "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"},
    )
    assert sorted(reply.json()) == ["access_token", "token_type"]
    assert get(small, access_token, {"per_page": 1}).status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer 0123", "Basic c2FuZGJveA=="])
def test_missing_or_unknown_token_is_401(small, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    reply = requests.get(small.base_url + RESPONSES, headers=headers)
    assert (reply.status_code, reply.json()) == (401, {"message": "Unauthenticated."})


def test_expired_token_is_401(small):
    small.faults.token_ttl = 1
    access_token = token(small)
    assert get(small, access_token, {"per_page": 1}).status_code == 200
    time.sleep(1.1)
    reply = get(small, access_token, {"per_page": 1})
    assert (reply.status_code, reply.json()) == (401, {"message": "Unauthenticated."})


# --- faults ---------------------------------------------------------------------------------------------


def test_fail_every_counts_responses_requests_only(small):
    small.faults.fail_every = 3
    access_token = token(small)
    token(small)  # token requests do not count
    replies = [get(small, access_token, {"per_page": 1}) for _ in range(6)]
    assert [r.status_code for r in replies] == [200, 200, 503, 200, 200, 503]
    assert replies[2].json() == {"message": "Server Error"}


def test_fail_status_504_is_plain_text(small):
    small.faults.fail_every, small.faults.fail_status = 1, 504
    reply = get(small, token(small))
    assert (reply.status_code, reply.text) == (504, "Gateway Time-out")
    assert reply.headers["Content-Type"] == "text/plain"


def test_rate_limit_with_and_without_retry_after(small):
    small.faults.rate_limit_every, small.faults.retry_after = 2, 7
    access_token = token(small)
    replies = [get(small, access_token, {"per_page": 1}) for _ in range(4)]
    assert [r.status_code for r in replies] == [200, 429, 200, 429]
    assert replies[1].json() == {"message": "Too Many Attempts."}
    assert replies[1].headers["Retry-After"] == "7"
    small.faults.retry_after = None
    replies = [get(small, access_token, {"per_page": 1}) for _ in range(2)]
    assert [r.status_code for r in replies] == [200, 429]
    assert "Retry-After" not in replies[1].headers


def test_faults_do_not_count_a_request_twice(small):
    small.faults.fail_every, small.faults.rate_limit_every = 2, 3
    access_token = token(small)
    assert [get(small, access_token).status_code for _ in range(6)] == [200, 503, 429, 503, 200, 503]


def test_drop_body_breaks_the_body(small):
    small.faults.drop_body_every = 2
    access_token = token(small)
    assert get(small, access_token).status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(small, access_token)
    assert len(get(small, access_token).json()["data"]) == 60


def test_truncate_json_sends_half_a_document(small):
    small.faults.truncate_json_every = 1
    reply = get(small, token(small), {"per_page": 5})
    full = json.dumps({"data": small.records()[:5], "cursor": {"next": 0}}, ensure_ascii=False)
    assert reply.status_code == 200
    assert int(reply.headers["Content-Length"]) == len(reply.content) < len(full.encode())
    with pytest.raises(ValueError):
        json.loads(reply.content)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("same", {"data": [], "cursor": {"next": 99999}}),
        ("null", {"data": [], "cursor": {"next": None}}),
        ("absent", {"data": [], "cursor": {}}),
        ("no_cursor", {"data": []}),
    ],
)
def test_empty_next_modes(small, mode, expected):
    small.faults.empty_next = mode
    assert get(small, token(small), {"cursor": 99999}).json() == expected


def test_empty_next_same_without_cursor_is_zero():
    with SandboxServer(records=0) as server:
        assert get(server, token(server)).json() == {"data": [], "cursor": {"next": 0}}


def test_legacy_drivers(small):
    small.faults.legacy_drivers = True
    access_token = token(small)
    for name in ("selected_drivers", "drivers"):
        row = get(small, access_token, {"per_page": 1, "with[]": name}).json()["data"][0]
        assert "selected_drivers" not in row
        assert row["drivers"] == [{"label": "Ordering"}, {"label": "Product"}]


def test_faults_validate_their_options():
    with pytest.raises(ValueError, match="fail_status"):
        SandboxFaults(fail_status=418)
    with pytest.raises(ValueError, match="empty_next"):
        SandboxFaults(empty_next="zero")
    with pytest.raises(ValueError, match="retry_after_value must be text without CR or LF"):
        SandboxFaults(retry_after_value="1\r\nSet-Cookie: x=1")
    with pytest.raises(ValueError, match="redirect_to must be text without CR or LF"):
        SandboxFaults(redirect_to="http://localhost/\n")
    with pytest.raises(ValueError, match="repeat_page_after must be an integer >= 0, got -1"):
        SandboxFaults(repeat_page_after=-1)


@pytest.mark.parametrize("value", ["0.5", "1m0s", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", "abc", ""])
def test_retry_after_value_is_sent_verbatim(small, value):
    small.faults.rate_limit_every, small.faults.retry_after_value = 1, value
    reply = get(small, token(small))
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == value


def test_redirect_to_answers_every_responses_request_302_before_the_token_check(small):
    small.faults.redirect_to = "https://proxy.example.com/login?next=/v7"
    for authorization in (token(small), "not-a-token"):
        reply = requests.get(
            small.base_url + RESPONSES, headers={"Authorization": f"Bearer {authorization}"}, allow_redirects=False
        )
        assert (reply.status_code, reply.headers["Location"], reply.content) == (
            302,
            "https://proxy.example.com/login?next=/v7",
            b"",
        )
    assert [entry.status for entry in small.requests_log if entry.path == RESPONSES] == [302, 302]


def test_repeat_page_after_repeats_page_n_under_a_growing_cursor(small):
    small.faults.repeat_page_after = 2
    access_token = token(small)
    bodies, cursor = [], None
    for _ in range(4):
        bodies.append(get(small, access_token, {"per_page": 10, "cursor": cursor}).json())
        cursor = bodies[-1]["cursor"]["next"]
    numbers = [[row["number_customergauge"] for row in body["data"]] for body in bodies]
    expected = [r["number_customergauge"] for r in small.records()]
    assert numbers == [expected[:10], expected[10:20], expected[10:20], expected[10:20]]
    nexts = [body["cursor"]["next"] for body in bodies]
    assert nexts[2:] == [nexts[1] + 1, nexts[1] + 2]
    small.reset_log()  # restarts the page count
    assert [r["number_customergauge"] for r in get(small, access_token, {"per_page": 10}).json()["data"]] == expected[
        :10
    ]


# --- data changes -----------------------------------------------------------------------------------------


def test_append_records_come_after_the_last_cursor(small):
    _, cursors = page_all(small, {})
    appended = small.append_records(3)
    expected = [{k: v for k, v in r.items() if k != "_pos"} for r in generate_records(7, 63)[60:]]
    assert appended == expected
    access_token = token(small)
    body = get(small, access_token, {"cursor": cursors[-1], "with[]": ALL_WITH}).json()
    assert body["data"] == appended
    assert body["cursor"]["next"] == small.last_cursor > cursors[-1]


def test_update_record_in_place_and_moved_to_end(small):
    number = small.records()[10]["number_customergauge"]
    last_name = small.records()[10]["contact"]["last_name"]
    updated = small.update_record(number, {"nps": 3, "contact": {"first_name": "Anne"}})
    assert (updated["nps"], updated["contact"]) == (3, {"first_name": "Anne", "last_name": last_name})
    assert small.records()[10] == updated
    _, cursors = page_all(small, {})
    assert page_all(small, {"cursor": cursors[-1]})[0] == []
    moved = small.update_record(number, {"status": "response", "nps": 9}, move_to_end=True)
    rows = page_all(small, {"cursor": cursors[-1], "with[]": ALL_WITH})[0]
    assert rows == [moved] and moved["nps"] == 9 and small.records()[-1] == moved
    assert len(small.records()) == 60


def test_update_record_rejects_bad_input(small):
    with pytest.raises(KeyError, match="number_customergauge=1"):
        small.update_record(1, {"nps": 1})
    with pytest.raises(ValueError, match="number_customergauge"):
        small.update_record(3414, {"number_customergauge": 5})


def test_anonymise_record(small):
    small.anonymise_record(3414)
    row = get(small, token(small), {"number_customergauge": 3414}).json()["data"][0]
    assert row["contact"] == {"first_name": "Anonymised", "last_name": "Anonymised"}
    assert (row["email"], row["phone"]) == (None, None)
    assert row["comment"] == {"original": "Anonymised", "translation": None}
    assert row["nps"] == 10 and small.records()[0]["number_customergauge"] == 3414


def test_delete_record(small):
    number = small.records()[4]["number_customergauge"]
    small.delete_record(number)
    rows, _ = page_all(small, {})
    assert len(rows) == 59 and number not in [r["number_customergauge"] for r in rows]
    assert get(small, token(small), {"number_customergauge": number}).json()["data"] == []
    with pytest.raises(KeyError):
        small.delete_record(number)


# --- control endpoints, routing, log ---------------------------------------------------------------------


def test_control_endpoints(small):
    reply = requests.post(small.base_url + "/_sandbox/append", params={"count": 2})
    expected = [r["number_customergauge"] for r in generate_records(7, 62)[60:]]
    assert reply.json() == {"appended": 2, "numbers": expected}
    stats = requests.get(small.base_url + "/_sandbox/stats").json()
    last_non_response = stats.pop("non_responses_last_cursor")  # checked against a page in test_non_responses_*
    assert stats == {"records": 62, "last_cursor": small.last_cursor, "non_responses": 20}
    assert isinstance(last_non_response, int)
    bad = requests.post(small.base_url + "/_sandbox/append", params={"count": 0})
    assert bad.status_code == 422
    assert bad.json()["errors"] == {"count": ["The count must be between 1 and 100000."]}


def test_unknown_path_and_wrong_method(small):
    missing = requests.get(small.base_url + "/v7/rest/sync/nothing")
    assert (missing.status_code, missing.json()) == (404, {"message": "Not Found."})
    assert requests.post(small.base_url + RESPONSES).status_code == 405


def test_request_log_keeps_order_and_repeats(small):
    access_token = token(small)
    small.reset_log()
    requests.get(
        small.base_url + RESPONSES + "?with[]=tags&per_page=2&with%5B%5D=questions",
        headers={"Authorization": f"Bearer {access_token}"},
    )
    [entry] = small.requests_log
    assert (entry.method, entry.path, entry.status, entry.form) == ("GET", RESPONSES, 200, None)
    assert entry.query == [("with[]", "tags"), ("per_page", "2"), ("with[]", "questions")]
    assert entry.authorization == f"Bearer {access_token}"
    assert small.token_requests == 0


def test_base_url_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="not started"):
        _ = SandboxServer(records=1).base_url


# --- CLI ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_serves_until_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "cg_dagster.sandbox", "--port", "0", "--records", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        stats = requests.get(line.split(" on ")[1] + "/_sandbox/stats").json()
        assert stats["records"] == 5
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_cli_refuses_a_non_loopback_host():
    result = subprocess.run(
        [sys.executable, "-m", "cg_dagster.sandbox", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "not an IPv4 loopback address" in result.stderr


def test_cli_fault_flags_reach_the_faults():
    from cg_dagster.sandbox.__main__ import build_parser, faults_from_args

    args = build_parser().parse_args([
        "--fail-every", "3", "--fail-status", "502", "--rate-limit-every", "4", "--retry-after", "none",
        "--token-ttl", "5", "--omit-expires-in", "--latency", "0.5", "--drop-body-every", "6",
        "--truncate-json-every", "7", "--empty-next", "null", "--legacy-drivers", "--retry-after-value", "1m0s",
        "--redirect-to", "https://proxy.example.com/", "--repeat-page-after", "2",
    ])  # fmt: skip
    assert faults_from_args(args) == SandboxFaults(
        fail_every=3, fail_status=502, rate_limit_every=4, retry_after=None, token_ttl=5, omit_expires_in=True,
        latency=0.5, drop_body_every=6, truncate_json_every=7, empty_next="null", legacy_drivers=True,
        retry_after_value="1m0s", redirect_to="https://proxy.example.com/", repeat_page_after=2,
    )  # fmt: skip
    assert faults_from_args(build_parser().parse_args([])) == SandboxFaults()


def test_cli_reports_a_bad_fault_value_as_a_usage_error(capsys):
    from cg_dagster.sandbox.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--port", "0", "--repeat-page-after", "-1"])
    assert exited.value.code == 2
    assert "repeat_page_after must be an integer >= 0, got -1" in capsys.readouterr().err
