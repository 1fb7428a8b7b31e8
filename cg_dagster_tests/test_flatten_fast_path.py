"""flatten_raw's Arrow path against the per-record rules: equal tables (schema, values, row order), equal
stats and equal errors, on the odd inputs the flatten tests hold, on the sandbox's records (every with[]
subset, the legacy drivers shape) and on a seeded mutation fuzz. Not timed."""

import copy
import itertools
import json
import random
from datetime import timedelta

import orjson
import pyarrow as pa
import pytest

import cg_dagster.lib.flatten as flatten_module
from cg_dagster.lib.flatten import FlattenError, _flatten_raw_per_record, flatten_raw, raw_rows
from cg_dagster.lib.schemas import TIMESTAMP_UTC
from cg_dagster.sandbox.data import EXPANSIONS, generate_records
from cg_dagster.sandbox.server import _render
from cg_dagster_tests._fixtures_flatten import (
    BARE_RECORD,
    DROP,
    FETCHED_AT,
    VENDOR_RECORD,
    odd_page,
    record,
)

ZONES = ("UTC", "Europe/Amsterdam", "America/New_York")


def raw_table(texts: list, fetched_at=FETCHED_AT) -> pa.Table:
    """The two columns flatten_raw reads; `fetched_at` one datetime for all rows or one per row."""
    stamps = fetched_at if isinstance(fetched_at, list) else [fetched_at] * len(texts)
    return pa.table({"record_json": pa.array(texts, pa.string()), "fetched_at": pa.array(stamps, TIMESTAMP_UTC)})


def dumped(rec) -> str:
    """record_json as raw_rows writes it (json.dumps), also for records raw_rows refuses (no valid id)."""
    try:
        return json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode().decode()
    except UnicodeEncodeError:
        return json.dumps(rec, separators=(",", ":"))


def outcome(flatten, raw, zone):
    try:
        return flatten(raw, system_timezone=zone)
    except FlattenError as error:
        return str(error)


def assert_same(raw: pa.Table, zone: str = "UTC") -> None:
    fast = outcome(flatten_raw, raw, zone)
    slow = outcome(lambda table, system_timezone: _flatten_raw_per_record(table, system_timezone), raw, zone)
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow
        return
    assert fast.stats == slow.stats
    for name, table in slow.tables.items():
        assert fast.tables[name].schema == table.schema, name
        assert fast.tables[name].to_pylist() == table.to_pylist(), name


def with_neighbours(rec) -> list[str]:
    """An odd record between plain ones (the vendor's and a sandbox record), so row order is checked."""
    plain = _render(generate_records(3, 2)[1], frozenset(EXPANSIONS), False)
    return [dumped(VENDOR_RECORD), dumped(rec), dumped(plain), dumped(VENDOR_RECORD)]


# --- (a) the odd inputs of test_flatten.py and _fixtures_flatten.py -------------------------------------

NPS = [
    0,
    10,
    "10",
    "0",
    10.0,
    "ten",
    11,
    -1,
    7.5,
    "7.5",
    "",
    True,
    False,
    [7],
    10**400,
    float("nan"),
    None,
    DROP,
]
FOLLOW_UP = [True, False, 1, 0, "yes", "true", 2, 1.0, None]
DATES = [
    "0000-00-00 00:00:00",
    "",
    "2022-13-01 00:00:00",
    "2022-02-30 10:00:00",
    "2022-03-30T12:34:56",
    "2022-03-30 12:34:56+02:00",
    "30-03-2022 12:34:56",
    "2022-03-30",
    1648643696,
    None,
    DROP,
    "2022-07-01 12:00:00",
    "2022-01-10 12:00:00",
    "2022-03-27 02:30:00",
    "2022-10-30 02:30:00",
    "2022-03-13 02:30:00",
    "2022-11-06 01:30:00",
    "2022-03-30 12:34:60",
    "2022-03-30 24:00:00",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59",
    "1899-12-31 23:59:59",
    "2037-07-01 12:00:00",
    "2022-03-30 12:34:56\n",
    "２０２２-03-30 12:34:56",
]
ANSWERS = [
    "7",
    7,
    7.5,
    "7.5",
    " 8 ",
    "abc",
    "",
    ["a", "b"],
    {"x": 1},
    True,
    None,
    "\u20038\u3000",
    "\x1c9",
    "1e400",
    "1" * 400,
    "1_000",
    "-0",
    "1e+16",
    1e16,
    10**30,
    "00012",
    "1.",
    ".5",
]


def odd_records() -> list:
    records = [record(nps=v) for v in NPS]
    records += [record(follow_up={"details": "call me", "requested": v}) for v in FOLLOW_UP]
    records += [record(date_sent=v) for v in DATES]
    records += [record(questions=[{"title": "Q", "answer": v}]) for v in ANSWERS]
    for name in ("tags", "questions", "selected_drivers", "drivers", "properties", "custom_fields"):
        records += [record(**{name: form}) for form in (DROP, None, [], [None], {})]
    for name in ("contact", "account", "comment", "follow_up"):
        records += [record(**{name: form}) for form in (DROP, None, {}, "x")]
    records += [
        record(number_customer=123, number_order=321, account={"name": "ACME", "number": 456}, phone=31612345678),
        record(tags="Product"),
        record(tags=["Product"]),
        record(properties={"Country": "NL"}),
        record(selected_drivers=[{"primary": "P", "secondary": "S"}]),
        record(
            selected_drivers=[
                {"primary": "Ordering"},
                {"primary": "Price", "secondary": None},
                {"primary": "P", "secondary": [None, "S", 3]},
            ]
        ),
        record(selected_drivers=DROP, drivers=[{"label": "Price"}, {"label": "Speed"}]),
        record(selected_drivers=[{"primary": "Ordering", "secondary": ["Speed"]}], drivers=[{"label": "Price"}]),
        record(custom_fields=[{"field": "Tier", "reference": 2}, {"field": "Owner", "reference": None}]),
        record(
            tags=[{"label": "A", "type": "tag", "zone": "eu", "score": 0.9}],
            score=5,
            survey={"id": 1},
            contact={"first_name": "J", "title": "Dr"},
        ),
        record(comment={"original": "Great 😀 service.\n" * 4000, "translation": '["not", "a list"]'}),
        json.loads(
            '{"number_customergauge": 3414, "comment": {"original": "ok \\ud800 \\udfff"},'
            ' "contact": {"first_name": "Zo\\u00eb \\ud83d\\ude00"}, "tags": [{"label": "\\udc00"}]}'
        ),
        record(number_customergauge=2**63),
        record(number_customergauge=-(2**63)),
        record(number_customergauge=2**63 - 1),
        record(number_customergauge=None),
        record(number_customergauge="3414"),
        record(number_customergauge=True),
        record(number_customergauge=3414.0),
        record(number_customergauge=DROP),
        [3414],
        "text",
        None,
        {"number_customergauge": 1, "follow_up": {"requested": "true"}},
        *odd_page(),
        BARE_RECORD,
    ]
    return records


@pytest.mark.slow
@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("index", range(len(odd_records())))
def test_odd_record_between_plain_ones(index, zone):
    assert_same(raw_table(with_neighbours(odd_records()[index])), zone)


ODD_TEXTS = [
    '{\n"number_customergauge": 1}',
    '{"number_customergauge": 1}\r{"number_customergauge": 2}',
    ' {"number_customergauge": 1} ',
    '\ufeff{"number_customergauge": 1}',
    '{"number_customergauge":1}{"nps":2}',
    '{"number_customergauge":1,"number_customergauge":2}',
    '{"number_customergauge":1,"nps":NaN}',
    '{"number_customergauge":1,"status":"a\tb"}',
    '{"number_customergauge":1,"status":"\\ud800"}',
    '{"number_customergauge":1,"contact":{"first_name":"a","first_name":"b"}}',
    '{"number_customergauge": 1',
    '{"st\\u0061tus":"x","number_customergauge":1}',
    '{"number_customergauge":1,"status":"\\u0000"}',
    "",
    "{}",
    '{"number_customergauge":1,"nps":1e1}',
    '{"number_customergauge":-0,"nps":-0}',
    None,
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_odd_record_json_text(text):
    texts = [dumped(VENDOR_RECORD), text, dumped(BARE_RECORD)]
    assert_same(raw_table(texts), "Europe/Amsterdam")


def test_null_and_offset_fetched_at():
    texts = [dumped(VENDOR_RECORD)] * 3
    assert_same(raw_table(texts, [FETCHED_AT, None, FETCHED_AT]))
    amsterdam = pa.array([FETCHED_AT] * 3, pa.timestamp("us", tz="+02:00"))
    assert_same(raw_table(texts).set_column(1, "fetched_at", amsterdam))


def test_raw_rows_tables_of_both_encoders():
    records = [VENDOR_RECORD, *odd_page(), record(comment={"original": "Olá 😀"}, number_customer=7)]
    for fast_json in (False, True):
        raw = raw_rows(records, fetched_at=FETCHED_AT, cursor_sent=5, sync_pass="cursor", fast_json=fast_json)
        assert [json.loads(text) for text in raw.column("record_json").to_pylist()] == records
        assert_same(raw, "Europe/Amsterdam")


# --- (b) the sandbox's records -------------------------------------------------------------------------


SUBSETS = [frozenset(s) for n in range(len(EXPANSIONS) + 1) for s in itertools.combinations(EXPANSIONS, n)]


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(sorted(s)) or "none")
def test_sandbox_records(subset, legacy):
    records = [_render(rec, subset, legacy) for rec in generate_records(11, 600)]
    raw = raw_rows(records, fetched_at=FETCHED_AT, cursor_sent=1, sync_pass="cursor", fast_json=True)
    for start in range(0, raw.num_rows, 200):
        assert_same(raw.slice(start, 200), "Europe/Amsterdam")


@pytest.mark.slow
@pytest.mark.parametrize("zone", ZONES)
def test_sandbox_records_every_zone(zone):
    records = [_render(rec, frozenset(EXPANSIONS), False) for rec in generate_records(5, 1500)]
    assert_same(raw_rows(records, fetched_at=FETCHED_AT, cursor_sent=1, sync_pass="cursor", fast_json=True), zone)


# --- (c) a seeded mutation fuzz -------------------------------------------------------------------------

DST_DATES = [
    "2022-03-27 02:00:00",
    "2022-03-27 02:59:59",
    "2022-03-27 03:00:00",
    "2022-03-27 01:59:59",
    "2022-10-30 02:00:00",
    "2022-10-30 02:59:59",
    "2022-10-30 03:00:00",
    "2022-03-13 02:00:00",
    "2022-03-13 02:45:10",
    "2022-03-13 03:00:00",
    "2022-11-06 01:00:00",
    "2022-11-06 01:59:59",
    "2022-11-06 02:00:00",
    "1916-04-30 23:30:00",
    "1945-04-02 02:30:00",
    "2036-12-31 23:59:59",
    "2037-03-29 02:30:00",
    "2037-10-25 02:30:00",
    "1900-01-01 00:00:00",
    "1899-12-31 23:59:59",
]
VALUES = [
    None,
    0,
    1,
    -1,
    7.5,
    10.0,
    "10",
    "",
    "x",
    " 9 ",
    True,
    False,
    [],
    {},
    [1],
    ["a"],
    {"a": 1},
    2**70,
    -(2**63),
    "\ud800",
    "a\udfffb",
    "😀",
    "Łódź 東京",
    1e300,
    float("inf"),
    "0000-00-00 00:00:00",
    *DST_DATES,
]


def value(rng: random.Random):
    return copy.deepcopy(rng.choice(VALUES))  # a copy: a later change must not edit VALUES


def mutate(rec: dict, rng: random.Random) -> dict:
    """One to three random changes anywhere in the record: a value replaced, a key dropped or added."""
    rec = copy.deepcopy(rec)
    for _ in range(rng.randint(1, 3)):
        holder = rec
        for _ in range(rng.randint(0, 2)):  # walk into an object or a list item
            inner = [
                v
                for v in (holder.values() if isinstance(holder, dict) else holder)
                if isinstance(v, (dict, list)) and v
            ]
            if not inner:
                break
            holder = rng.choice(inner)
        if isinstance(holder, list):
            holder[rng.randrange(len(holder))] = value(rng)
            continue
        action = rng.random()
        if action < 0.15 and holder:
            holder.pop(rng.choice(list(holder)))
        elif action < 0.25:
            holder[rng.choice(["extra", "zone", "label", "secondary"])] = value(rng)
        elif holder:
            holder[rng.choice(list(holder))] = value(rng)
    return rec


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_mutation_fuzz(seed):
    rng = random.Random(seed)
    plain = [_render(rec, frozenset(EXPANSIONS), seed % 2 == 1) for rec in generate_records(seed, 400)]
    records = [mutate(rec, rng) if rng.random() < 0.5 else rec for rec in plain]
    for rec in records:  # dates from the DST lists on otherwise plain records too
        if rng.random() < 0.2:
            rec[rng.choice(["date_creation", "date_order", "date_sent", "date_survey_response"])] = rng.choice(
                DST_DATES
            )
    texts = [dumped(rec) for rec in records]
    fetched = [FETCHED_AT + timedelta(seconds=i) for i in range(len(texts))]
    for start in range(0, len(texts), 100):
        batch = raw_table(texts[start : start + 100], fetched[start : start + 100])
        for zone in ("Europe/Amsterdam", "America/New_York"):
            assert_same(batch, zone)


def per_record_rows(monkeypatch, texts: list[str], zone: str = "Europe/Amsterdam") -> list[int]:
    """flatten_raw of `texts` (checked equal to the per-record rules), returning the rows it sent to them."""
    seen = []
    real = flatten_module._per_record_parts
    monkeypatch.setattr(
        flatten_module,
        "_per_record_parts",
        lambda texts, fetched, rows, zone: seen.extend(rows) or real(texts, fetched, rows, zone),
    )
    assert_same(raw_table(texts), zone)
    return [int(row) for row in seen]


def test_arrow_path_takes_the_plain_sandbox_records(monkeypatch):
    """The differential tests are only worth something if the Arrow path takes the plain records: of 200
    sandbox records none reaches the per-record rules, not even the kinds with a non-string text value (ids
    sent as numbers, structured answers), which are re-encoded as text first."""
    records = [_render(rec, frozenset(EXPANSIONS), False) for rec in generate_records(0, 200)]
    non_string = [
        i
        for i, rec in enumerate(records)
        if isinstance(rec["number_customer"], int) or any(not isinstance(q["answer"], str) for q in rec["questions"])
    ]
    assert len(non_string) >= 5
    assert per_record_rows(monkeypatch, [orjson.dumps(rec).decode() for rec in records]) == []


# --- (d) non-string values in text fields: re-encoded as text, or left to the per-record rules -------------

TEXT_PATHS = [
    ("status",),
    ("number_customer",),
    ("phone",),
    ("contact", "first_name"),
    ("account", "number"),
    ("comment", "original"),
    ("follow_up", "details"),
    ("selected_drivers", 0, "primary"),
    ("tags", 0, "sentiment"),
    ("questions", 0, "title"),
    ("questions", 0, "answer"),
    ("properties", 3, "reference"),
]
# Values Arrow then reads (as their _text), and values that keep the record on the per-record rules.
RE_ENCODED = [
    7,
    -5,
    0,
    2**63,
    10**30,
    7.5,
    -0.0,
    1e16,
    1e-7,
    5e-324,
    True,
    False,
    ["Phone", "Chat"],
    {"score": 4, "scale": 5},
    [],
    {},
    [1, [2, {"a": None}]],
    {"z": "Łódź 😀", "a": '"q"\n'},
]
LEFT = [float("nan"), float("inf"), ["\ud800"], {"k": "a\udfffb"}]


def put(rec: dict, path: tuple, value) -> dict:
    rec = copy.deepcopy(rec)
    holder = rec
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return rec


@pytest.mark.parametrize("path", TEXT_PATHS, ids=lambda path: ".".join(map(str, path)))
def test_non_string_text_values(monkeypatch, path):
    texts = [dumped(put(VENDOR_RECORD, path, value)) for value in RE_ENCODED + LEFT]
    texts += [dumped(VENDOR_RECORD)]
    left = list(range(len(RE_ENCODED), len(RE_ENCODED) + len(LEFT)))
    assert per_record_rows(monkeypatch, texts) == left


@pytest.mark.parametrize(
    "text",
    [
        '{"number_customergauge":1,"number_customer":12,"number_customer":"x"}',  # duplicate key: last wins
        '{"number_customergauge":1,"number_customer":12,"number_customer":13}',
        '{"number_customergauge":1,\n"number_customer":12}',  # a line break outside strings
        '{"number_customergauge":1,"number_customer":012}',  # not JSON
        '{"number_customergauge":1,"number_customer":-0}',
        '{"number_customergauge":1,"number_customer":1E400}',
        '{"number_customergauge":1,"number_customer":12,"nps":NaN}',
        '{"number_customergauge":1,"number_customer":12,"surprise":1}',  # an unknown key
        '{"number_customergauge":"1","number_customer":12}',
        '{"number_customergauge":1,"comment":{"original":"say \\"status\\":5 or \\"title\\":[1]"}}',
        '{"number_customergauge":1,"contact":{"first_name":5,"title":"Dr"}}',
        '{"number_customergauge":1,"tags":[{"label":5},7]}',
        '{"number_customergauge":1,"tags":{"label":5}}',
        '{"number_customergauge":1,"contact":[{"first_name":5}]}',
        '{"number_customergauge":1,"selected_drivers":[{"primary":1,"secondary":[2,null,"x"]}]}',
        '{"number_customergauge":1,"selected_drivers":[{"primary":"p","secondary":7}]}',
        '{"number_customergauge":1,"date_sent":1648643696,"phone":31612345678}',
        '{"number_customergauge":1,"questions":[{"title":"Q","answer":{"a":1,"a":2}}]}',
        '[{"number_customergauge":1,"phone":5}]',
    ],
)
def test_non_string_text_value_texts(text):
    assert_same(raw_table([dumped(VENDOR_RECORD), text, dumped(BARE_RECORD)]), "Europe/Amsterdam")
