"""Page bodies split into record texts without decoding the records (issue 7): ``split_page_body`` gives each
record's JSON as received (whitespace between tokens removed) and its number_customergauge, only for bodies
``json.loads`` reads to the same records; ``raw_rows_from_json`` keeps those texts as record_json, and the
flat tables made from them equal those made from today's re-encoded record_json. Not timed."""

import json

import pyarrow.parquet as pq
import pytest

from cg_dagster.lib.client import (
    CustomerGaugeBodyError,
    CustomerGaugeClient,
    SyncParams,
    parse_page_body,
    split_page_body,
)
from cg_dagster.lib.flatten import FlattenError, flatten_raw, raw_rows, raw_rows_from_json
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.schemas import RAW_TABLE
from cg_dagster.lib.sync import sync_partition
from cg_dagster.sandbox.data import EXPANSIONS, generate_records
from cg_dagster.sandbox.server import _render
from cg_dagster_tests._fixtures_client import make_client
from cg_dagster_tests._fixtures_flatten import FETCHED_AT, VENDOR_RECORD, odd_page
from cg_dagster_tests._fixtures_http import ScriptedAPI
from cg_dagster_tests._fixtures_sandbox import SANDBOX_ID, SANDBOX_SECRET


def body(*records: bytes, cursor: bytes = b'{"next":99}') -> bytes:
    return b'{"data":[' + b",".join(records) + b'],"cursor":' + cursor + b"}"


def rec(value: bytes, number: bytes = b"1") -> bytes:
    return b'{"number_customergauge":' + number + b',"value":' + value + b"}"


SANDBOX = [_render(r, frozenset(EXPANSIONS), False) for r in generate_records(3, 40)]

# Bodies split_page_body reads: odd spellings, escapes, whitespace and repeated keys json.loads reads too.
SPLIT = {
    "sandbox": body(*(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() for r in SANDBOX)),
    "indented": json.dumps({"data": SANDBOX[:5], "cursor": {"next": 9}}, indent=2).encode(),
    "python-separators": json.dumps({"data": [VENDOR_RECORD, *odd_page()], "cursor": {"next": 9}}).encode(),
    "tabs-and-crlf": b'{\t"data" :\r\n [ {"number_customergauge" : 5 ,\t"nps": 7 } ] , "cursor":{"next":6}}',
    "number-spellings": body(rec(b"[1E5,1.50,-0,0.0,1e-7,-0.0,2.5e+3]")),
    "nps-spellings": body(
        *(
            b'{"number_customergauge":%d,"nps":%s}' % (i, v)
            for i, v in enumerate([b"10.0", b"1e1", b"-0", b"1E0", b"7.00", b"1e400", b"-1e400", b'"1e1"'], start=1)
        )
    ),
    "huge-ints-elsewhere": body(rec(b"[123456789012345678901234567890,-9223372036854775809]")),
    "escapes": body(rec(b'"a\\/b \\"q\\" \\\\ \\n\\r\\t\\b\\f \\u0000 \\u001f"')),
    "unicode-escapes": body(rec(b'{"comment":{"original":"caf\\u00e9 \\ud83d\\ude00"},"c":"\\u20ac"}')),
    "raw-unicode": body(rec('"café 😀 €"'.encode())),
    "repeated-keys": body(b'{"number_customergauge":1,"nps":3,"nps":9,"number_customergauge":2}'),
    "nesting-300": body(rec(b"[" * 300 + b"]" * 300)),
    "empty-record-parts": body(rec(b'{"a":[],"b":{},"c":""}')),
    "int64-bounds": body(rec(b"0", b"9223372036854775807"), rec(b"0", b"-9223372036854775808")),
    "no-cursor": b'{"data":[{"number_customergauge":1}]}',
    "empty": b'{"data":[],"cursor":{"next":null}}',
}

# Bodies json.loads refuses: split_page_body must refuse them too (then parse_page_body raises).
INVALID = {
    "bad-escape": body(rec(b'"\\x"')),
    "short-unicode-escape": body(rec(b'"\\u12"')),
    "leading-zero": body(rec(b"01")),
    "dot-end": body(rec(b"1.")),
    "dot-start": body(rec(b".5")),
    "lone-minus": body(rec(b"-")),
    "bare-exponent": body(rec(b"1e")),
    "plus": body(rec(b"+1")),
    "truncated-literal": body(rec(b"tru")),
    "trailing-comma-list": body(rec(b"[1,]")),
    "trailing-comma-object": body(rec(b'{"a":1,}')),
    "key-without-value": body(rec(b'{"a"}')),
    "single-quotes": body(rec(b"'a'")),
    "raw-newline-in-string": body(rec(b'"a\nb"')),
    "raw-tab-in-string": body(rec(b'"a\tb"')),
    "unterminated": body(rec(b'"abc')),
    "trailing-garbage": body(rec(b"1")) + b"x",
    "two-values": body(rec(b"1")) + b"{}",
}

# Bodies json.loads reads but split_page_body leaves to parse_page_body (kept as today).
LEFT_TO_PARSE = {
    "lone-surrogate": body(rec(b'"\\ud800"')),
    "nan": body(rec(b"NaN")),
    "infinity": body(rec(b"-Infinity")),
    "byte-order-mark": b"\xef\xbb\xbf" + body(rec(b"1")),
    "not-utf8-in-a-string": body(rec(b'"\xff"')),
    "not-utf8-in-a-key": body(b'{"number_customergauge":1,"\xc3":1}'),
    "number-beyond-int64": body(rec(b"1", b"9223372036854775808")),
    "number-below-int64": body(rec(b"1", b"-9223372036854775809")),
    "number-float": body(rec(b"1", b"1.0")),
    "number-bool": body(rec(b"1", b"true")),
    "number-string": body(rec(b"1", b'"1"')),
    "number-missing": body(b'{"value":1}'),
    "record-not-an-object": body(b"[1]"),
    "data-not-a-list": b'{"data":{"number_customergauge":1}}',
    "body-a-list": b'[{"number_customergauge":1}]',
    "nesting-5000": body(
        rec(b"[" * 5000 + b"]" * 5000)
    ),  # past both parsers' limits on 3.11 and 3.12 (3.12 reads 1010)
}


@pytest.mark.parametrize("raw", SPLIT.values(), ids=SPLIT.keys())
def test_split_texts_read_back_as_the_records_json_loads_gives(raw):
    texts, numbers, cursor = split_page_body(raw)
    texts = [bytes(text) for text in texts]
    parsed = json.loads(raw)
    assert [repr(json.loads(text)) for text in texts] == [repr(r) for r in parsed["data"]]  # 1 and 1.0 differ
    assert numbers == [r["number_customergauge"] for r in parsed["data"]]
    assert cursor == parsed.get("cursor")
    assert not any(byte in text for text in texts for byte in b"\n\r\t")  # one line each, as the flattening joins them


@pytest.mark.parametrize("name, ascii", [("sandbox", False), ("indented", True), ("python-separators", True)])
def test_whitespace_between_tokens_is_removed_and_nothing_else(name, ascii):
    records = json.loads(SPLIT[name])["data"]
    compact = [json.dumps(r, ensure_ascii=ascii, separators=(",", ":")).encode() for r in records]
    assert [bytes(text) for text in split_page_body(SPLIT[name])[0]] == compact


def test_split_keeps_strings_and_numbers_byte_for_byte_and_drops_only_whitespace():
    raw = b'{ "data" : [ { "number_customergauge" : 7 , "x" : [ 1E5 , 1.50 , "a , b : c \\u00e9\\/" ] } ] }'
    assert [bytes(text) for text in split_page_body(raw)[0]] == [
        b'{"number_customergauge":7,"x":[1E5,1.50,"a , b : c \\u00e9\\/"]}'
    ]


@pytest.mark.parametrize("raw", INVALID.values(), ids=INVALID.keys())
def test_split_refuses_whatever_json_loads_refuses(raw):
    with pytest.raises(ValueError):
        json.loads(raw)
    assert split_page_body(raw) is None


@pytest.mark.parametrize("raw", LEFT_TO_PARSE.values(), ids=LEFT_TO_PARSE.keys())
def test_bodies_split_cannot_take_are_left_to_parse_page_body(raw):
    assert split_page_body(raw) is None


@pytest.mark.parametrize("name", ["indented", "unicode-escapes", "lone-surrogate", "number-bool"])
def test_pages_over_http_carry_texts_or_records_and_the_same_records_either_way(name):
    raw = {**SPLIT, **LEFT_TO_PARSE}[name]
    with ScriptedAPI([(200, raw), (200, b'{"data":[]}')]) as api, make_client(api.base_url) as client:
        (page,) = client.iter_pages(SyncParams())
    assert (page.record_json is not None) is (name in SPLIT)
    assert repr(page.records) == repr(json.loads(raw)["data"])
    assert page.cursor_next == json.loads(raw)["cursor"]["next"]


def test_a_page_with_bytes_that_are_not_utf8_inside_a_record_is_a_body_error():
    with (
        ScriptedAPI([(200, LEFT_TO_PARSE["not-utf8-in-a-string"])]) as api,
        make_client(api.base_url, max_retries=0) as client,
        pytest.raises(CustomerGaugeBodyError, match=r"^page 1: the body is not valid JSON"),
    ):
        list(client.iter_pages(SyncParams()))


# --- raw_rows_from_json ---------------------------------------------------------------------------------


def from_json(raw: bytes):
    texts, numbers, _ = split_page_body(raw)
    return raw_rows_from_json(numbers, texts, fetched_at=FETCHED_AT, cursor_sent=4, sync_pass="cursor")


def from_records(raw: bytes):
    records, orjson_safe = parse_page_body(raw)
    return raw_rows(records["data"], fetched_at=FETCHED_AT, cursor_sent=4, sync_pass="cursor", fast_json=orjson_safe)


@pytest.mark.parametrize("name", [name for name in SPLIT if name != "empty"])
def test_raw_rows_from_texts_equal_raw_rows_from_records_but_for_the_spelling(name):
    fast, slow = from_json(SPLIT[name]), from_records(SPLIT[name])
    assert fast.schema == slow.schema
    assert fast.drop_columns(["record_json"]).equals(slow.drop_columns(["record_json"]))
    fast_json, slow_json = fast.column("record_json").to_pylist(), slow.column("record_json").to_pylist()
    assert [repr(json.loads(text)) for text in fast_json] == [repr(json.loads(text)) for text in slow_json]


@pytest.mark.parametrize("name", [name for name in SPLIT if name != "empty"])
@pytest.mark.parametrize("zone", ["UTC", "Europe/Amsterdam"])
def test_flat_tables_from_texts_as_received_equal_those_from_re_encoded_records(name, zone):
    fast, slow = (
        flatten_raw(from_json(SPLIT[name]), system_timezone=zone),
        flatten_raw(from_records(SPLIT[name]), system_timezone=zone),
    )
    assert fast.stats == slow.stats
    for table, rows in slow.tables.items():
        assert fast.tables[table].equals(rows), table


def test_record_json_keeps_the_text_as_received_and_re_encodes_unicode_escapes():
    raw = body(rec(b'"a\\/b 1E5"'), rec(b'"caf\\u00e9 \\ud83d\\ude00"', b"2"), rec(b"[1.50,-0]", b"3"))
    texts = from_json(raw).column("record_json").to_pylist()
    assert texts == [
        '{"number_customergauge":1,"value":"a\\/b 1E5"}',  # as received
        '{"number_customergauge":2,"value":"café 😀"}',  # non-ASCII kept as is, as the contract says
        '{"number_customergauge":3,"value":[1.50,-0]}',
    ]


def test_only_records_with_a_unicode_escape_are_re_encoded_wherever_they_are_on_the_page():
    raw = body(
        rec(b'"\\u00e9"', b"1"),  # first record
        rec(b'"x\\\\u0041 \\/"', b"2"),  # an escaped backslash, then the letters u0041: no escape
        rec(b'"x\\\\\\u00e9"', b"3"),  # an escaped backslash, then an escape
        rec(b'"\\"\\\\"', b"4"),
        rec(b'"\\u20ac"', b"5"),  # last record
    )
    assert from_json(raw).column("record_json").to_pylist() == [
        '{"number_customergauge":1,"value":"é"}',
        '{"number_customergauge":2,"value":"x\\\\u0041 \\/"}',
        '{"number_customergauge":3,"value":"x\\\\é"}',
        '{"number_customergauge":4,"value":"\\"\\\\"}',
        '{"number_customergauge":5,"value":"€"}',
    ]


def test_a_lone_surrogate_escape_stays_an_escape_when_re_encoded():
    table = raw_rows_from_json(
        [1], [rec(b'"\\ud800 \\u00e9"')], fetched_at=FETCHED_AT, cursor_sent=None, sync_pass="cursor"
    )
    assert table.column("record_json").to_pylist() == ['{"number_customergauge":1,"value":"\\ud800 \\u00e9"}']


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"numbers": [1, 2]}, r"2 numbers for 1 record texts"),
        ({"sync_pass": "later"}, r"sync_pass must be one of"),
        ({"cursor_sent": "3"}, r"cursor_sent must be the integer cursor"),
        ({"fetched_at": FETCHED_AT.replace(tzinfo=None)}, r"fetched_at must be a timezone-aware datetime"),
    ],
)
def test_raw_rows_from_json_bad_arguments_raise(kwargs, message):
    arguments = {"numbers": [1], "fetched_at": FETCHED_AT, "cursor_sent": None, "sync_pass": "cursor", **kwargs}
    with pytest.raises(FlattenError, match=message):
        raw_rows_from_json(texts=[rec(b"1")], **arguments)


def test_a_record_without_an_integer_id_still_fails_the_sync_naming_it(tmp_path):
    """number-float goes to parse_page_body, then raw_rows refuses it as before: nothing is committed."""
    with (
        ScriptedAPI([(200, LEFT_TO_PARSE["number-float"]), (200, b'{"data":[]}')]) as api,
        make_client(api.base_url) as client,
    ):
        lake = Lake(tmp_path)
        with pytest.raises(FlattenError, match=r"^record 0 has no integer number_customergauge \(got float\)"):
            sync_partition(client, SyncParams(), lake, partition_key="2026-11-02-10:00", run_id="r")
    assert lake.read_head() is None and not lake.partition_path(RAW_TABLE, "2026-11-02-10:00").exists()


def test_a_synced_raw_file_holds_the_sandbox_records_as_received(sandbox, tmp_path):
    client = CustomerGaugeClient(
        client_id=SANDBOX_ID,
        client_secret=SANDBOX_SECRET,
        api_base_url=sandbox.base_url,
        auth_base_url=sandbox.base_url,
    )
    with client:
        result = sync_partition(
            client, SyncParams(per_page=100), Lake(tmp_path), partition_key="2026-11-02-10:00", run_id="r"
        )
    texts = pq.read_table(result.path).column("record_json").to_pylist()
    assert [json.loads(text) for text in texts] == sandbox.records()
    assert texts == [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in sandbox.records()]
