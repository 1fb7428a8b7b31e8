"""Page bodies are parsed with orjson where it gives exactly what json.loads gives, and with json.loads
where it could differ (issue 7); ``Page.orjson_safe`` says which, so record_json can use orjson.dumps."""

import json

import orjson
import pytest

from cg_dagster.lib.client import CustomerGaugeBodyError, SyncParams, parse_page_body
from cg_dagster_tests._fixtures_client import make_client
from cg_dagster_tests._fixtures_http import ScriptedAPI


def page(record_json: bytes) -> bytes:
    return b'{"data":[{"number_customergauge":1,"value":' + record_json + b'}],"cursor":{"next":2}}'


SAME_WITH_ORJSON = {
    "plain": page(b'{"nps":10,"comment":"caf\\u00e9 \\ud83d\\ude00 \xe2\x82\xac","x":null,"ok":true}'),
    "escapes": page(b'"\\u0000\\/\\"\\\\\\b\\f\\n\\r\\t"'),
    "duplicate-keys": page(b'{"a":1,"b":2,"a":3}'),
    "floats": page(b"[0.1,-0.0,1E5,1.5e-400,4.9e-324,2.2250738585072014e-308,12345678901234567.5]"),
    "18-digit-ints": page(b"[999999999999999999,-999999999999999999]"),
    "nesting-250": page(b"[" * 250 + b"]" * 250),
}
STDLIB_ONLY = {  # orjson refuses these, or (the integers) would silently turn them into floats
    "lone-surrogate": page(b'"\\ud800"'),
    "lone-low-surrogate-key": page(b'{"\\udc00x":1}'),
    "reversed-surrogates": page(b'"\\udfff\\ud800"'),
    "nan": page(b"NaN"),
    "infinity": page(b"[Infinity,-Infinity]"),
    "beyond-double": page(b"[1e400,-1.7976931348623157e309]"),
    "beyond-uint64": page(b"18446744073709551616"),
    "below-int64": page(b"-9223372036854775809"),
    "huge-int": page(b"123456789012345678901234567890"),
    "uint64-max": page(b"18446744073709551615"),  # orjson is right here, but any 19-digit run goes to json
    "19-digits-in-a-string": page(b'"+1234567890123456789"'),
    "utf8-bom": b"\xef\xbb\xbf" + page(b"1"),
    "utf16": page(b'"\xc3\xa9"').decode().encode("utf-16"),
    "nesting-300": page(b"[" * 300 + b"]" * 300),  # orjson reads it but cannot write it back
}


@pytest.mark.parametrize("raw", SAME_WITH_ORJSON.values(), ids=SAME_WITH_ORJSON.keys())
def test_orjson_parses_what_it_parses_like_json(raw):
    value, orjson_safe = parse_page_body(raw)
    assert orjson_safe is True
    assert repr(value) == repr(json.loads(raw))  # repr: 1 and 1.0 differ, nan equals nan
    assert orjson.loads(orjson.dumps(value["data"])) == value["data"]


@pytest.mark.parametrize("raw", STDLIB_ONLY.values(), ids=STDLIB_ONLY.keys())
def test_the_standard_library_parses_what_orjson_would_refuse_or_change(raw):
    value, orjson_safe = parse_page_body(raw)
    assert orjson_safe is False
    assert repr(value) == repr(json.loads(raw))


def test_integers_beyond_64_bits_stay_integers():
    value, _ = parse_page_body(page(b"[18446744073709551616,-9223372036854775809]"))
    assert value["data"][0]["value"] == [18446744073709551616, -9223372036854775809]
    assert [type(n) for n in value["data"][0]["value"]] == [int, int]


@pytest.mark.parametrize("name", ["plain", "lone-surrogate", "beyond-uint64"])
def test_pages_over_http_carry_the_parser_used(name):
    raw = {**SAME_WITH_ORJSON, **STDLIB_ONLY}[name]
    with (
        ScriptedAPI([(200, raw), (200, b'{"data":[]}')]) as api,
        make_client(api.base_url) as client,
    ):
        (got,) = client.iter_pages(SyncParams())
    assert got.orjson_safe is (name in SAME_WITH_ORJSON)
    assert repr(got.records) == repr(json.loads(raw)["data"])


@pytest.mark.parametrize(
    "raw",
    [
        page(b"[" * 5000 + b"]" * 5000),  # past json/msgspec recursion limits on 3.11 and 3.12 (3.12 reads 1010)
        b"[" * 100_000 + b"]" * 100_000,
        b'{"data":[' + b"[" * 100_000,
        b"\xff",
        b"",
    ],
    ids=["nesting-5000", "nesting-100000", "unclosed", "not-utf8", "empty"],
)
def test_a_body_that_neither_parser_reads_is_a_body_error(raw):
    with (
        ScriptedAPI([(200, raw)]) as api,
        make_client(api.base_url, max_retries=0) as client,
    ):
        with pytest.raises(
            CustomerGaugeBodyError,
            match=r"^page 1: the body is not valid JSON \(\d+ bytes\), on all 1",
        ):
            list(client.iter_pages(SyncParams()))
