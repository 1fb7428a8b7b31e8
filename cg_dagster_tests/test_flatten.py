"""Tests of cg_dagster.lib.flatten: exact rows for the vendor example record and for each odd input."""

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cg_dagster.lib.flatten import (
    FlatTables,
    FlattenError,
    FlattenStats,
    flatten_non_responses,
    flatten_raw,
    flatten_records,
    raw_rows,
)
from cg_dagster.lib.schemas import NON_RESPONSE_SEGMENT_KEYS, NON_RESPONSE_UNREAD_KEYS, TABLES
from cg_dagster.sandbox.data import EXPANSIONS, as_non_response, generate_records
from cg_dagster.sandbox.server import _render
from cg_dagster_tests._fixtures_flatten import BARE_RECORD, DROP, FETCHED_AT, VENDOR_RECORD, odd_page, record

F = FETCHED_AT
VENDOR_DATE = datetime(2022, 3, 30, 12, 34, 56, tzinfo=timezone.utc)


def flat(records, system_timezone="UTC"):
    return flatten_records(records, fetched_at=FETCHED_AT, system_timezone=system_timezone)


def rows(records, table, system_timezone="UTC"):
    return flat(records, system_timezone).tables[table].to_pylist()


def response(rec, system_timezone="UTC"):
    (row,) = rows([rec], "responses", system_timezone)
    return row


def driver_row(position, primary, secondary_position, secondary, source="selected_drivers"):
    """An expected response_drivers row of record 3414 (no extra keys)."""
    return {
        "number_customergauge": 3414,
        "driver_position": position,
        "primary_driver": primary,
        "secondary_position": secondary_position,
        "secondary_driver": secondary,
        "driver_source": source,
        "extra_json": None,
        "fetched_at": F,
    }


VENDOR_RESPONSE = {
    "number_customergauge": 3414,
    "status": "response",
    "contact_first_name": "John",
    "contact_last_name": "Doe",
    "account_name": "ACME",
    "account_number": "123",
    "number_customer": "123",
    "number_order": "321",
    "email": "example@customergauge.com",
    "phone": "1234567890",
    "nps": 10,
    "comment_original": "Comentário de exemplo",
    "comment_translation": "Example Comment",
    "date_creation": VENDOR_DATE,
    "date_order": VENDOR_DATE,
    "date_sent": VENDOR_DATE,
    "date_survey_response": VENDOR_DATE,
    "language": "EN",
    "locale": "en_GB",
    "follow_up_requested": False,
    "follow_up_details": "1234567890",
    "fetched_at": F,
}
"""The exact responses row of the vendor example record (its dates read as UTC)."""


def vendor_response(**changes) -> dict:
    """VENDOR_RESPONSE with ``changes``: the exact row expected of a vendor record with one odd input."""
    return VENDOR_RESPONSE | changes


@pytest.fixture
def new_york_host(monkeypatch):
    """The host's local time zone set to America/New_York for the test."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    assert time.strftime("%Z", time.localtime(0)) == "EST"
    yield
    monkeypatch.undo()
    time.tzset()


# --- the vendor example record ----------------------------------------------------------------------


def test_vendor_record_responses_row():
    assert rows([VENDOR_RECORD], "responses") == [VENDOR_RESPONSE]


def test_vendor_record_driver_rows():
    assert rows([VENDOR_RECORD], "response_drivers") == [
        driver_row(0, "Ordering", 0, "Ease of Ordering"),
        driver_row(0, "Ordering", 1, "Product Information"),
        driver_row(1, "Product", 0, "Ease of Use"),
        driver_row(1, "Product", 1, "Return on Investment"),
    ]


def test_vendor_record_tag_rows():
    assert rows([VENDOR_RECORD], "response_tags") == [
        {
            "number_customergauge": 3414,
            "tag_position": 0,
            "label": "Product",
            "tag_type": "topic",
            "sentiment": "mixed",
            "extra_json": None,
            "fetched_at": F,
        },
        {
            "number_customergauge": 3414,
            "tag_position": 1,
            "label": "Support",
            "tag_type": "tag",
            "sentiment": None,
            "extra_json": None,
            "fetched_at": F,
        },
    ]


def test_vendor_record_question_rows():
    assert rows([VENDOR_RECORD], "response_questions") == [
        {
            "number_customergauge": 3414,
            "question_position": 0,
            "title": "We made it easy to solve your support issue.",
            "answer": "7",
            "answer_number": 7.0,
            "extra_json": None,
            "fetched_at": F,
        },
    ]


def test_vendor_record_property_rows():
    def prop(position, field, reference):
        return {
            "number_customergauge": 3414,
            "property_position": position,
            "field": field,
            "reference": reference,
            "property_origin": "properties",
            "extra_json": None,
            "fetched_at": F,
        }

    assert rows([VENDOR_RECORD], "response_properties") == [
        prop(0, "Country", "NL"),
        prop(1, "Division", "Global"),
        prop(2, "Touchpoint", "Relationship"),
        prop(3, "Key Contact", None),
        prop(4, "Segment A", None),
        prop(5, "Account Manager", None),
    ]


def test_vendor_record_stats():
    expected = FlattenStats(records=1, nps_invalid=0, dates_invalid=0, unknown_fields=set())
    assert flat([VENDOR_RECORD]).stats == expected


def test_empty_input_gives_empty_tables():
    result = flat([])
    assert {name: table.num_rows for name, table in result.tables.items()} == {
        "responses": 0,
        "response_drivers": 0,
        "response_tags": 0,
        "response_questions": 0,
        "response_properties": 0,
    }
    assert result.stats == FlattenStats()


def test_input_is_not_modified():
    rec = record(nps="10", custom_fields=[{"field": "Tier", "reference": 2}])
    before = json.dumps(rec)
    flat([rec])
    raw_rows([rec], fetched_at=F, cursor_sent=None, sync_pass="cursor")
    assert json.dumps(rec) == before


# --- nps ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nps, expected, invalid",
    [
        (0, 0, 0),
        (10, 10, 0),
        ("10", 10, 0),
        ("0", 0, 0),
        (10.0, 10, 0),
        ("ten", None, 1),
        (11, None, 1),
        (-1, None, 1),
        (7.5, None, 1),
        ("7.5", None, 1),
        ("", None, 1),
        (True, None, 1),
        (False, None, 1),
        ([7], None, 1),
        (10**400, None, 1),
        (float("nan"), None, 1),
        (None, None, 0),
        (DROP, None, 0),
    ],
)
def test_nps(nps, expected, invalid):
    result = flat([record(nps=nps)])
    assert result.tables["responses"].to_pylist() == [vendor_response(nps=expected)]
    assert result.stats.nps_invalid == invalid


# --- identifiers and other scalars ----------------------------------------------------------------------


def test_ids_sent_as_numbers_become_text():
    account = {"name": "ACME", "number": 456}
    row = response(record(number_customer=123, number_order=321, account=account, phone=31612345678))
    assert row == vendor_response(number_customer="123", number_order="321", account_number="456", phone="31612345678")


@pytest.mark.parametrize(
    "requested, expected, invalid",
    [
        (True, True, 0),
        (False, False, 0),
        (1, True, 0),
        (0, False, 0),
        ("yes", None, 1),
        ("true", None, 1),
        (2, None, 1),
        (1.0, None, 1),
        (None, None, 0),
        (DROP, None, 0),
    ],
)
def test_follow_up_requested(requested, expected, invalid):
    follow_up = {"details": "call me"}
    if requested is not DROP:
        follow_up["requested"] = requested
    result = flat([record(follow_up=follow_up)])
    assert result.tables["responses"].to_pylist() == [
        vendor_response(follow_up_requested=expected, follow_up_details="call me")
    ]
    assert result.stats.follow_up_invalid == invalid


# --- dates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, invalid",
    [
        ("0000-00-00 00:00:00", 1),
        ("", 1),
        ("2022-13-01 00:00:00", 1),
        ("2022-02-30 10:00:00", 1),
        ("2022-03-30T12:34:56", 1),
        ("2022-03-30 12:34:56+02:00", 1),
        ("30-03-2022 12:34:56", 1),
        ("2022-03-30", 1),
        (1648643696, 1),
        (None, 0),
        (DROP, 0),
    ],
)
def test_bad_or_missing_date_is_null(value, invalid):
    result = flat([record(date_sent=value)])
    assert result.tables["responses"].to_pylist() == [vendor_response(date_sent=None)]
    assert result.stats.dates_invalid == invalid


def test_all_four_dates_counted():
    rec = record(date_creation="", date_order="0000-00-00 00:00:00", date_sent="x", date_survey_response=None)
    assert flat([rec]).stats.dates_invalid == 3


AMSTERDAM_CASES = [
    ("2022-07-01 12:00:00", datetime(2022, 7, 1, 10, 0, tzinfo=timezone.utc)),  # summer, CEST +2
    ("2022-01-10 12:00:00", datetime(2022, 1, 10, 11, 0, tzinfo=timezone.utc)),  # winter, CET +1
    ("2022-03-27 02:30:00", datetime(2022, 3, 27, 1, 30, tzinfo=timezone.utc)),  # DST gap: fold=0, +1
    ("2022-10-30 02:30:00", datetime(2022, 10, 30, 0, 30, tzinfo=timezone.utc)),  # ambiguous: fold=0, +2
]


@pytest.mark.parametrize("local, expected", AMSTERDAM_CASES)
def test_dates_read_in_system_timezone(local, expected):
    row = response(record(date_survey_response=local), "Europe/Amsterdam")
    vendor_in_amsterdam = datetime(2022, 3, 30, 10, 34, 56, tzinfo=timezone.utc)  # CEST, +2
    assert row == vendor_response(
        date_creation=vendor_in_amsterdam,
        date_order=vendor_in_amsterdam,
        date_sent=vendor_in_amsterdam,
        date_survey_response=expected,
    )


def test_dates_default_to_utc():
    assert response(record(date_sent="2022-07-01 12:00:00"))["date_sent"] == datetime(
        2022, 7, 1, 12, 0, tzinfo=timezone.utc
    )


@pytest.mark.parametrize("local, expected", AMSTERDAM_CASES)
def test_host_timezone_does_not_change_results(new_york_host, local, expected):
    assert response(record(date_sent=local), "Europe/Amsterdam")["date_sent"] == expected
    assert response(record(date_sent="2022-07-01 12:00:00"))["date_sent"] == datetime(
        2022, 7, 1, 12, 0, tzinfo=timezone.utc
    )


def test_fetched_at_in_other_offset_is_stored_as_utc_instant(new_york_host):
    fetched = datetime(2024, 5, 1, 4, 0, tzinfo=timezone(timedelta(hours=-4)))
    result = flatten_records([VENDOR_RECORD], fetched_at=fetched)
    assert result.tables["responses"].column("fetched_at").to_pylist() == [F]
    raw = raw_rows([VENDOR_RECORD], fetched_at=fetched, cursor_sent=None, sync_pass="cursor")
    assert raw.column("fetched_at").cast(pa.int64()).to_pylist() == [int(F.timestamp()) * 1_000_000]


@pytest.mark.parametrize("name", ["Mars/Base", "", "../etc/passwd", None])
def test_bad_system_timezone_raises(name):
    with pytest.raises(FlattenError, match="system_timezone .*Europe/Amsterdam"):
        flat([VENDOR_RECORD], name)


# --- drivers ------------------------------------------------------------------------------------------


def test_legacy_drivers_shape():
    rec = record(selected_drivers=DROP, drivers=[{"label": "Price"}, {"label": "Speed"}])
    assert rows([rec], "response_drivers") == [
        driver_row(0, "Price", None, None, source="drivers"),
        driver_row(1, "Speed", None, None, source="drivers"),
    ]


def test_both_driver_shapes_in_one_record():
    selected = [{"primary": "Ordering", "secondary": ["Speed"]}]
    rec = record(selected_drivers=selected, drivers=[{"label": "Price"}])
    assert rows([rec], "response_drivers") == [
        driver_row(0, "Ordering", 0, "Speed"),
        driver_row(0, "Price", None, None, source="drivers"),
    ]


@pytest.mark.parametrize("secondary", [DROP, None, []])
def test_primary_without_secondary_gives_one_row(secondary):
    item = {"primary": "Ordering"}
    if secondary is not DROP:
        item["secondary"] = secondary
    rec = record(selected_drivers=[item, {"primary": "Product", "secondary": ["Ease of Use"]}])
    assert rows([rec], "response_drivers") == [
        driver_row(0, "Ordering", None, None),
        driver_row(1, "Product", 0, "Ease of Use"),
    ]


# --- properties / custom_fields -------------------------------------------------------------------------


def test_custom_fields_rows_with_origin():
    rec = record(
        properties=[{"field": "Country", "reference": "NL"}],
        custom_fields=[{"field": "Tier", "reference": 2}, {"field": "Owner", "reference": None}],
    )
    assert rows([rec], "response_properties") == [
        {
            "number_customergauge": 3414,
            "property_position": 0,
            "field": "Country",
            "reference": "NL",
            "property_origin": "properties",
            "extra_json": None,
            "fetched_at": F,
        },
        {
            "number_customergauge": 3414,
            "property_position": 0,
            "field": "Tier",
            "reference": "2",
            "property_origin": "custom_fields",
            "extra_json": None,
            "fetched_at": F,
        },
        {
            "number_customergauge": 3414,
            "property_position": 1,
            "field": "Owner",
            "reference": None,
            "property_origin": "custom_fields",
            "extra_json": None,
            "fetched_at": F,
        },
    ]


# --- questions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, text, number",
    [
        ("7", "7", 7.0),
        (7, "7", 7.0),
        (7.5, "7.5", 7.5),
        ("7.5", "7.5", 7.5),
        (" 8 ", " 8 ", 8.0),
        ("\x1c9\u3000", "\x1c9\u3000", 9.0),  # str.strip() strips these, float() alone refused \x1c (ValueError)
        ("abc", "abc", None),
        ("", "", None),
        (["a", "b"], '["a","b"]', None),
        ({"x": 1}, '{"x":1}', None),
        (True, "true", None),
        (None, None, None),
    ],
)
def test_question_answers(answer, text, number):
    rec = record(questions=[{"title": "Q", "answer": answer}])
    assert rows([rec], "response_questions") == [
        {
            "number_customergauge": 3414,
            "question_position": 0,
            "title": "Q",
            "answer": text,
            "answer_number": number,
            "extra_json": None,
            "fetched_at": F,
        },
    ]


# --- missing, null and empty lists and objects ----------------------------------------------------------


@pytest.mark.parametrize("form", [DROP, None, []], ids=["missing", "null", "empty"])
@pytest.mark.parametrize(
    "list_name, table, rows_left",
    [
        ("tags", "response_tags", 0),
        ("questions", "response_questions", 0),
        ("selected_drivers", "response_drivers", 0),
        ("drivers", "response_drivers", 4),
        ("properties", "response_properties", 0),
        ("custom_fields", "response_properties", 6),
    ],
)
def test_missing_null_or_empty_list_gives_no_rows(list_name, table, rows_left, form):
    result = flat([record(**{list_name: form})])
    vendor = flat([VENDOR_RECORD]).tables  # pinned row by row by the test_vendor_record_* tests
    assert result.tables[table].num_rows == rows_left
    for name in result.tables:
        # The list's own rows are gone; rows_left are those of the record's other list in the same table
        # (selected_drivers beside drivers, properties beside custom_fields), exactly the vendor's rows.
        expected = [] if name == table and rows_left == 0 else vendor[name].to_pylist()
        assert result.tables[name].to_pylist() == expected, name


@pytest.mark.parametrize("form", [DROP, None, {}], ids=["missing", "null", "empty"])
@pytest.mark.parametrize(
    "object_name, columns",
    [
        ("contact", ("contact_first_name", "contact_last_name")),
        ("account", ("account_name", "account_number")),
        ("comment", ("comment_original", "comment_translation")),
        ("follow_up", ("follow_up_requested", "follow_up_details")),
    ],
)
def test_missing_null_or_empty_object_gives_null_columns(object_name, columns, form):
    row = response(record(**{object_name: form}))
    assert row == vendor_response(**{column: None for column in columns})


def test_bare_record_gives_one_null_response_row():
    result = flat([BARE_RECORD])
    (row,) = result.tables["responses"].to_pylist()
    assert row == {name: None for name in row} | {"number_customergauge": 1, "fetched_at": F}
    assert [result.tables[name].num_rows for name in result.tables] == [1, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"tags": "Product"}, "'tags'"),
        ({"tags": ["Product"]}, r"'tags\[0\]'"),
        ({"properties": {"Country": "NL"}}, "'properties'"),
        ({"contact": "John Doe"}, "'contact'"),
        ({"selected_drivers": [{"primary": "P", "secondary": "S"}]}, r"'selected_drivers\[0\].secondary'"),
    ],
)
def test_wrong_container_type_raises_naming_field(changes, field):
    with pytest.raises(FlattenError, match=f"number_customergauge=3414: {field}"):
        flat([record(**changes)])


# --- extra keys on list items ---------------------------------------------------------------------------


def test_extra_item_keys_go_to_extra_json():
    rec = record(
        tags=[{"label": "A", "type": "tag", "zone": "eu", "score": 0.9, "id": 5, "b": 0}],
        questions=[{"title": "Q", "answer": "1", "type": "CES"}],
        selected_drivers=[{"primary": "P", "secondary": ["S1", "S2"], "weight": {"b": 2, "a": 1}}],
        drivers=[{"label": "L", "id": "d1"}],
        properties=[{"field": "F", "reference": "R", "label": "Ländercode"}],
        custom_fields=[{"field": "C", "reference": None, "type": None}],
    )
    tables = flat([rec]).tables
    assert tables["response_tags"].to_pylist() == [
        {
            "number_customergauge": 3414,
            "tag_position": 0,
            "label": "A",
            "tag_type": "tag",
            "sentiment": None,
            "extra_json": '{"b":0,"id":5,"score":0.9,"zone":"eu"}',
            "fetched_at": F,
        },
    ]
    assert tables["response_questions"].to_pylist() == [
        {
            "number_customergauge": 3414,
            "question_position": 0,
            "title": "Q",
            "answer": "1",
            "answer_number": 1.0,
            "extra_json": '{"type":"CES"}',
            "fetched_at": F,
        },
    ]
    assert tables["response_drivers"].column("extra_json").to_pylist() == [
        '{"weight":{"b":2,"a":1}}',
        '{"weight":{"b":2,"a":1}}',
        '{"id":"d1"}',
    ]
    assert tables["response_properties"].column("extra_json").to_pylist() == [
        '{"label":"Ländercode"}',
        '{"type":null}',
    ]
    assert tables["response_tags"].column("label").to_pylist() == ["A"]


# --- free text ----------------------------------------------------------------------------------------


def test_free_text_is_kept_byte_for_byte():
    long_comment = "Great 😀 service.\n" * 4000 + "  trailing spaces  "
    assert len(long_comment.encode()) > 70_000
    rec = record(
        comment={"original": long_comment, "translation": '["not", "a list"]'},
        contact={"first_name": "  Zoë 👍", "last_name": "[Doe"},
        questions=[{"title": "[Why?]", "answer": '{"x": 1}  \t'}],
    )
    tables = flat([rec]).tables
    assert tables["response_questions"].to_pylist() == [
        {
            "number_customergauge": 3414,
            "question_position": 0,
            "title": "[Why?]",
            "answer": '{"x": 1}  \t',
            "answer_number": None,
            "extra_json": None,
            "fetched_at": F,
        },
    ]
    assert tables["responses"].to_pylist() == [
        vendor_response(
            comment_original=long_comment,
            comment_translation='["not", "a list"]',
            contact_first_name="  Zoë 👍",
            contact_last_name="[Doe",
        )
    ]


def test_lone_surrogates_are_replaced_counted_and_kept_in_raw():
    # The exact input: JSON escapes of unpaired UTF-16 halves, as json.loads decodes them.
    rec = json.loads(
        '{"number_customergauge": 3414, "comment": {"original": "ok \\ud800 \\udfff"},'
        ' "contact": {"first_name": "Zo\\u00eb \\ud83d\\ude00"},'
        ' "tags": [{"label": "\\udc00", "type": "topic"}]}'
    )
    result = flat([rec])
    row = result.tables["responses"].to_pylist()[0]
    assert row["comment_original"] == "ok \ufffd \ufffd"
    assert row["contact_first_name"] == "Zoë 😀"  # a valid surrogate pair is one emoji, not repaired
    assert result.tables["response_tags"].column("label").to_pylist() == ["\ufffd"]
    assert result.stats.text_invalid == 2  # values repaired, not surrogates
    raw = raw_rows([rec], fetched_at=F, cursor_sent=None, sync_pass="cursor")
    text = raw.column("record_json")[0].as_py()
    assert "\\ud800" in text and json.loads(text) == rec  # lossless
    assert flatten_raw(raw).tables["responses"].column("comment_original").to_pylist() == ["ok \ufffd \ufffd"]


def test_raw_json_stays_readable_utf8_without_surrogates():
    rec = record(comment={"original": "Olá 😀"})
    text = raw_rows([rec], fetched_at=F, cursor_sent=None, sync_pass="cursor").column("record_json")[0].as_py()
    assert "Olá 😀" in text  # ensure_ascii=False unless a surrogate forces escapes


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**30])
def test_number_customergauge_outside_int64_raises(number):
    bad = record(number_customergauge=number)
    with pytest.raises(FlattenError, match=f"record 0: number_customergauge {number} is outside the int64"):
        raw_rows([bad], fetched_at=F, cursor_sent=None, sync_pass="cursor")
    with pytest.raises(FlattenError, match="outside the int64 range"):
        flat([bad])


def test_number_customergauge_at_int64_bounds_is_kept():
    edge = [record(number_customergauge=2**63 - 1), record(number_customergauge=-(2**63))]
    assert flat(edge).tables["responses"].column("number_customergauge").to_pylist() == [2**63 - 1, -(2**63)]


# --- unknown fields and stats ---------------------------------------------------------------------------


def test_unknown_top_level_and_nested_keys_reported():
    rec = record(
        score=5, survey={"id": 1}, contact={"first_name": "J", "title": "Dr"},
        tags=[{"label": "a", "zone": "EU"}], selected_drivers=[{"primary": "P", "secondary": [], "weight": 2}],
    )  # fmt: skip
    result = flat([rec, BARE_RECORD])
    assert result.stats.unknown_fields == {
        "score",
        "survey",
        "contact.title",
        "tags[].zone",
        "selected_drivers[].weight",
    }
    assert result.tables["responses"].column("contact_first_name").to_pylist() == ["J", None]


def test_stats_over_a_mixed_page():
    expected = FlattenStats(records=3, nps_invalid=1, dates_invalid=2, unknown_fields={"surprise", "questions[].kind"})
    assert flat(odd_page()).stats == expected


def test_stats_merge():
    total = FlattenStats(records=2, nps_invalid=1, dates_invalid=0, unknown_fields={"a"})
    total.merge(FlattenStats(records=3, nps_invalid=0, dates_invalid=4, unknown_fields={"b", "a"}))
    assert total == FlattenStats(records=5, nps_invalid=1, dates_invalid=4, unknown_fields={"a", "b"})


# --- fetched_at ---------------------------------------------------------------------------------------


def test_fetched_at_per_record():
    later = F + timedelta(hours=1)
    result = flatten_records([VENDOR_RECORD, BARE_RECORD], fetched_at=[F, later])
    assert result.tables["responses"].column("fetched_at").to_pylist() == [F, later]
    assert set(result.tables["response_tags"].column("fetched_at").to_pylist()) == {F}


@pytest.mark.parametrize(
    "fetched_at, message",
    [
        (datetime(2024, 5, 1, 8, 0), "fetched_at must be a timezone-aware datetime .*got a naive datetime"),
        ([F], "fetched_at has fewer values than records"),
        ([F, F, F], "fetched_at has more values than records"),
        ([F, None], r"fetched_at\[1\] must be a timezone-aware datetime"),
        ("2024-05-01", r"fetched_at\[0\] must be a timezone-aware datetime"),
    ],
)
def test_bad_fetched_at_raises(fetched_at, message):
    with pytest.raises(FlattenError, match=message):
        flatten_records([VENDOR_RECORD, BARE_RECORD], fetched_at=fetched_at)


# --- raw_rows and flatten_raw -------------------------------------------------------------------------


def test_raw_rows_exact():
    small = {"number_customergauge": 5, "comment": {"original": "Olá 😀"}, "tags": [], "nps": None}
    table = raw_rows([VENDOR_RECORD, small], fetched_at=F, cursor_sent=3000, sync_pass="lookback")
    assert table.to_pylist()[1] == {
        "number_customergauge": 5,
        "fetched_at": F,
        "sync_pass": "lookback",
        "cursor_sent": 3000,
        "record_json": '{"number_customergauge":5,"comment":{"original":"Olá 😀"},"tags":[],"nps":null}',
    }
    first = table.to_pylist()[0]
    assert (first["number_customergauge"], first["cursor_sent"]) == (3414, 3000)
    assert json.loads(first["record_json"]) == VENDOR_RECORD


def test_raw_rows_without_cursor_and_empty():
    table = raw_rows([BARE_RECORD], fetched_at=F, cursor_sent=None, sync_pass="cursor")
    assert table.to_pylist() == [
        {
            "number_customergauge": 1,
            "fetched_at": F,
            "sync_pass": "cursor",
            "cursor_sent": None,
            "record_json": '{"number_customergauge":1}',
        }
    ]
    assert raw_rows([], fetched_at=F, cursor_sent=None, sync_pass="cursor").num_rows == 0


@pytest.mark.parametrize("number", [DROP, None, "3414", True, 3414.0])
def test_record_without_integer_id_raises(number):
    bad = record(number_customergauge=number)
    with pytest.raises(FlattenError, match="record 1 has no integer number_customergauge"):
        raw_rows([VENDOR_RECORD, bad], fetched_at=F, cursor_sent=None, sync_pass="cursor")
    with pytest.raises(FlattenError, match="record 1 has no integer number_customergauge"):
        flat([VENDOR_RECORD, bad])


def test_record_that_is_not_an_object_raises():
    with pytest.raises(FlattenError, match="record 0 is a list, not a JSON object"):
        raw_rows([[3414]], fetched_at=F, cursor_sent=None, sync_pass="cursor")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sync_pass": "full", "cursor_sent": None}, "sync_pass must be one of"),
        ({"sync_pass": "cursor", "cursor_sent": "123"}, "cursor_sent must be the integer cursor"),
        ({"sync_pass": "cursor", "cursor_sent": True}, "cursor_sent must be the integer cursor"),
    ],
)
def test_raw_rows_bad_arguments_raise(kwargs, message):
    with pytest.raises(FlattenError, match=message):
        raw_rows([VENDOR_RECORD], fetched_at=F, **kwargs)


def assert_same_flat_tables(got, expected):
    assert got.stats == expected.stats
    for name, table in expected.tables.items():
        assert got.tables[name].equals(table), name


def test_flatten_raw_equals_flatten_records():
    later = F + timedelta(minutes=5)
    page_1 = raw_rows([VENDOR_RECORD], fetched_at=F, cursor_sent=None, sync_pass="cursor")
    page_2 = raw_rows(odd_page(), fetched_at=later, cursor_sent=3414, sync_pass="cursor")
    expected = flatten_records(
        [VENDOR_RECORD, *odd_page()], fetched_at=[F, later, later, later], system_timezone="Europe/Amsterdam"
    )
    got = flatten_raw(pa.concat_tables([page_1, page_2]), system_timezone="Europe/Amsterdam")
    assert_same_flat_tables(got, expected)
    assert got.tables["responses"].column("fetched_at").to_pylist() == [F, later, later, later]


def test_flatten_raw_accepts_a_record_batch():
    batch = raw_rows(odd_page(), fetched_at=F, cursor_sent=3414, sync_pass="cursor").to_batches()[0]
    assert isinstance(batch, pa.RecordBatch)
    assert_same_flat_tables(flatten_raw(batch), flat(odd_page()))


def test_flatten_raw_bad_input_raises():
    raw = raw_rows([VENDOR_RECORD, BARE_RECORD], fetched_at=F, cursor_sent=None, sync_pass="cursor")
    texts = pa.array(['{"number_customergauge": 1}', '{"secret": "x'], pa.string())
    broken = raw.set_column(4, "record_json", texts)
    with pytest.raises(FlattenError, match="raw row 1: record_json is not valid JSON") as error:
        flatten_raw(broken)
    assert "secret" not in str(error.value)
    with pytest.raises(FlattenError, match="raw table has no 'fetched_at' column"):
        flatten_raw(raw.drop_columns(["fetched_at"]))


# ---- the edges of the types: ids beyond int64, lone surrogates, a follow-up flag that is not a boolean ----------


def test_number_customergauge_beyond_int64_is_refused_with_a_flatten_error():
    records = [{"number_customergauge": 2**63, "nps": 5}]
    with pytest.raises(FlattenError, match="number_customergauge"):
        raw_rows(records, fetched_at=FETCHED_AT, cursor_sent=None, sync_pass="cursor")
    with pytest.raises(FlattenError, match="number_customergauge"):
        flatten_records(records, fetched_at=FETCHED_AT)


def test_a_lone_surrogate_is_kept_escaped_in_the_raw_row_and_replaced_and_counted_when_flattened():
    record = json.loads('{"number_customergauge": 1, "comment": {"original": "ok \\ud800 ok"}}')
    raw = raw_rows([record], fetched_at=FETCHED_AT, cursor_sent=None, sync_pass="cursor")
    assert raw.column("record_json").to_pylist() == [
        '{"number_customergauge":1,"comment":{"original":"ok \\ud800 ok"}}'
    ]
    flat = flatten_records([record], fetched_at=FETCHED_AT)
    assert flat.tables["responses"].column("comment_original").to_pylist() == ["ok \ufffd ok"]
    assert flat.stats.text_invalid == 1


def test_a_follow_up_flag_that_is_not_a_boolean_is_null_and_counted():
    flat = flatten_records([{"number_customergauge": 1, "follow_up": {"requested": "true"}}], fetched_at=FETCHED_AT)
    assert flat.tables["responses"]["follow_up_requested"].to_pylist() == [None]
    assert flat.stats.follow_up_invalid == 1


# ---- non-responses: keys non_responses does not read are neither read nor checked (issue 11 review); a segment
# list of another shape gives no rows (issue 11: non-responses keep their properties) ----------------------------

NON_RESPONSE = {key: value for key, value in VENDOR_RECORD.items() if key not in NON_RESPONSE_UNREAD_KEYS} | {
    "status": "non_response"
}


def flat_non_responses(records) -> FlatTables:
    return flatten_non_responses(raw_rows(records, fetched_at=F, cursor_sent=None, sync_pass="cursor"))


@pytest.mark.parametrize(
    "key, value",
    [
        ("tags", {}),
        ("drivers", "x"),
        ("questions", 5),
        ("properties", "y"),
        ("properties", [1]),
        ("properties", [None]),
        ("custom_fields", [{"field": "a"}, "b"]),
        ("selected_drivers", [1]),
        ("custom_fields", {"field": "a"}),
        ("comment", "x"),
        ("follow_up", [True]),
        ("nps", 11),
        ("date_survey_response", "0000-00-00 00:00:00"),
    ],
)
def test_a_key_non_responses_do_not_read_neither_blocks_nor_changes_the_row(key, value):
    other = {**NON_RESPONSE, "number_customergauge": 3415, "email": "other@example.com"}
    got = flat_non_responses([{**NON_RESPONSE, key: value}, other])
    table = got.tables["non_responses"]
    usual = flat_non_responses([NON_RESPONSE, other])
    assert table.equals(usual.tables["non_responses"])
    properties = got.tables["non_response_properties"]
    if key in NON_RESPONSE_SEGMENT_KEYS:  # the odd list gives no rows; the record's other list and `other` do
        expected = usual.tables["non_response_properties"]
        keep = pc.or_(pc.equal(expected["number_customergauge"], 3415), pc.not_equal(expected["property_origin"], key))
        assert properties.equals(expected.filter(keep))
        assert properties.num_rows < expected.num_rows or key not in NON_RESPONSE  # the vendor's has no custom_fields
    else:
        assert properties.equals(usual.tables["non_response_properties"])
    assert table.select(["number_customergauge", "status", "email", "date_sent"]).to_pylist() == [
        {
            "number_customergauge": n,
            "status": "non_response",
            "email": e,
            "date_sent": datetime(2022, 3, 30, 12, 34, 56, tzinfo=UTC),
        }
        for n, e in ((3414, "example@customergauge.com"), (3415, "other@example.com"))
    ]
    assert got.stats == FlattenStats(records=2, unread_fields=Counter({key: 1}))  # not nps_invalid, not dates_invalid


def test_sandbox_non_responses_flatten_as_responses_do_on_the_keys_they_share():
    """Differential: each sandbox non-response gives the non_responses row and the non_response_properties rows
    that flattening it as a response gives in responses and response_properties (plain records: the Arrow path;
    with every odd kind of the sandbox's expansions, the per-record rules too)."""
    plain = [_render(as_non_response(r), frozenset(EXPANSIONS), False) for r in generate_records(4, 300)]
    variants = (  # segments of the shapes the per-record rules or the text re-encoding take
        lambda r: {**r, "custom_fields": [{"field": "Tier", "reference": 2}, {"field": None}]},
        lambda r: {**r, "properties": [{**r["properties"][0], "zone": [1]}, *r["properties"][1:]]},
        lambda r: {**r, "properties": [*r["properties"], {"field": "Touch\ud800", "reference": 7.5}]},
        lambda r: {**r, "properties": None, "custom_fields": []},
    )
    odd = [variants[i % 5](r) if i % 5 < 4 else r for i, r in enumerate(plain)]
    for records in (plain, odd):
        raw = raw_rows(records, fetched_at=F, cursor_sent=None, sync_pass="cursor")
        got = flatten_non_responses(raw)
        as_responses = flatten_raw(raw)
        names = got.tables["non_responses"].schema.names
        assert got.tables["non_responses"].equals(as_responses.tables["responses"].select(names))
        assert got.tables["non_response_properties"].equals(as_responses.tables["response_properties"])
        assert got.tables["non_response_properties"].schema == TABLES["non_response_properties"].arrow_schema
        unread = Counter(key for r in records for key in r.keys() & NON_RESPONSE_UNREAD_KEYS)
        assert got.stats.unread_fields == unread and "properties" not in unread
        assert got.stats.unknown_fields == as_responses.stats.unknown_fields
    touchpoints = pc.equal(got.tables["non_response_properties"]["field"], "Touchpoint")
    assert pc.sum(touchpoints).as_py() == 300 - 60  # one per record (the rate groups by it) but properties None
    assert got.stats.text_invalid == 60 and "properties[].zone" in got.stats.unknown_fields


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"number_customergauge": 1, "contact": "x"}', "record number_customergauge=1: 'contact' must be an object"),
        ('{"number_customergauge": 1,', "raw row 0: record_json is not valid JSON"),
        ('{"tags": {}}', "record 0 has no integer number_customergauge"),
    ],
)
def test_a_non_response_that_cannot_be_flattened_names_raw_non_responses(text, message):
    raw = raw_rows([BARE_RECORD], fetched_at=F, cursor_sent=None, sync_pass="cursor")
    with pytest.raises(FlattenError) as error:
        flatten_non_responses(raw.set_column(4, "record_json", pa.array([text], pa.string())))
    assert str(error.value).startswith(message)
    assert str(error.value).endswith(
        "check the API response (the raw_non_responses table keeps each record as received)"
    )


@pytest.mark.parametrize(
    "text",
    [
        b'{"number_customergauge": 1, "comment": "\xff"}',  # the input noticed (a raw file rewritten as binary)
        b'{"number_customergauge": 1, "nps": 3, "comment": "\xff"}',  # a key non-responses leave unread: parsed first
    ],
)
@pytest.mark.parametrize("flatten", [flatten_raw, flatten_non_responses])
def test_record_json_bytes_that_are_not_utf8_raise_a_flatten_error_naming_the_row(flatten, text):
    raw = raw_rows([BARE_RECORD, BARE_RECORD], fetched_at=F, cursor_sent=None, sync_pass="cursor")
    column = pa.array([b'{"number_customergauge": 2, "nps": 11}', text], pa.binary())
    with pytest.raises(FlattenError) as error:
        flatten(raw.set_column(4, "record_json", column))
    table, at = "raw_responses" if flatten is flatten_raw else "raw_non_responses", text.index(b"\xff")
    assert str(error.value).startswith(
        f"raw row 1: record_json is not UTF-8 text (byte {at} is not UTF-8); the sync writes UTF-8 "
        f"only, so a tool rewrote the {table} file: materialize {table} for this partition again"
    )
