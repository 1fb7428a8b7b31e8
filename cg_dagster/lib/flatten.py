"""Flattening: CustomerGauge sync records in, Arrow tables out.

Pure code: no I/O, no Dagster. `flatten_records` applies the rules below record by record; `flatten_raw`
reads most records column-wise with pyarrow instead, with exactly the same result. A record is one item
of the `data` list of a `GET /v7/rest/sync/responses` page, as decoded by `json.loads` (shape: vendor
page example, plus the variants in api-notes.md). Every output table has exactly
`TABLES[name].arrow_schema` (schemas.py).

Value rules (see the `TABLES` column descriptions):
- Text columns keep strings byte for byte (never stripped or parsed); a non-string value is rendered
  as compact JSON text (123 -> "123", 7.5 -> "7.5", true -> "true", ["a"] -> '["a"]').
- `nps`: an int 0..10, an integral float or a numeric string 0..10 (e.g. "10") is kept; any other
  present value (11, -1, 7.5, "ten", true) becomes null and is counted in `FlattenStats.nps_invalid`.
- Dates `YYYY-MM-DD HH:MM:SS` carry no zone: they are in the customer's system time zone (vendor page
  note). They are read in `system_timezone` and converted to UTC. A local time that occurs twice (DST
  end) or not at all (DST start) is resolved as zoneinfo does with fold=0: the offset in force before
  the transition (e.g. Europe/Amsterdam 02:30 on a DST-start day is 01:30 UTC; on a DST-end day,
  00:30 UTC). Empty, zero ('0000-00-00 00:00:00') or malformed dates become null and are counted in
  `FlattenStats.dates_invalid`; a missing or null date is null and not counted.
- A missing, null or empty list or nested object gives no rows / null columns. A list or object of
  the wrong JSON type raises FlattenError naming the record and the field.
- A string holding a lone UTF-16 surrogate (JSON `"\\ud800"`: not Unicode, so not storable as UTF-8
  Parquet text) has each surrogate replaced by U+FFFD in the flat tables and is counted in
  `FlattenStats.text_invalid`; raw_responses keeps it losslessly as a `\\u` escape in `record_json`.
- `number_customergauge` must be an integer in the int64 range; otherwise FlattenError.
- A raw `record_json` whose bytes are not UTF-8 (the sync writes none: a tool rewrote the raw file as binary)
  raises FlattenError naming the row and the fix; its bytes are checked once, before anything decodes them.
"""

import json
import math
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from itertools import accumulate, repeat
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from cg_dagster.lib.client import parse_page_body
from cg_dagster.lib.client.errors import BodyProblem
from cg_dagster.lib.schemas import (
    FLAT_TABLE_NAMES,
    ITEM_KEYS,
    KEY_TABLE,
    NON_RESPONSE_PROPERTIES,
    NON_RESPONSE_SEGMENT_KEYS,
    NON_RESPONSE_UNREAD_KEYS,
    NON_RESPONSES_TABLE,
    OBJECT_KEYS,
    RAW_NON_RESPONSES_TABLE,
    RAW_TABLE,
    RECORD_KEYS,
    TABLES,
    TIMESTAMP_UTC,
    TableContract,
)

SYNC_PASSES = ("cursor", "lookback")
DATE_FIELDS = ("date_creation", "date_order", "date_sent", "date_survey_response")

_COMPACT = (",", ":")
_NO_OBJECT: dict[str, Any] = {}
_MISSING = object()
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", re.ASCII)
_NUMBER_TEXT = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", re.ASCII)
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT64 = range(-(2**63), 2**63)


def _raw_hint(raw_table: str) -> str:
    """The end of an error about a record: where to look (the raw table ``raw_table`` holds it)."""
    return f"check the API response (the {raw_table} table keeps each record as received)"


_RAW_HINT = _raw_hint(RAW_TABLE)  # the per-record rules' errors end with it (flatten_non_responses: its own)


class FlattenError(ValueError):
    """Input that cannot be flattened: a bad payload or a bad argument. The message names the field."""


@dataclass
class FlattenStats:
    """Counts of what flattening had to repair or could not place, for run metadata and alerts.

    - records: records flattened.
    - nps_invalid: `nps` values present and not null but not an integer 0..10 (set to null).
    - dates_invalid: date values present and not null but empty, zero or malformed (set to null).
    - text_invalid: text values holding lone UTF-16 surrogates, stored with U+FFFD in their place.
    - follow_up_invalid: `follow_up.requested` values present and not null but not true/false/1/0 (set to
      null).
    - unknown_fields: record keys the contract does not know: top-level keys (e.g. "score") and keys
      of the nested objects contact/account/comment/follow_up as dotted paths (e.g. "contact.title"), and
      keys of list items as "<list>[].<key>" (e.g. "tags[].zone"; their values also go to `extra_json`).
      Their values are still kept in the raw table (raw_responses, raw_non_responses).
    - unread_fields: non-responses only (`flatten_non_responses`): per top-level key the contract knows but
      the non-responses' tables do not read, how many records carried it: an answer key (schemas.py
      NON_RESPONSE_UNREAD_KEYS, e.g. "tags") whatever its value, a segment list (NON_RESPONSE_SEGMENT_KEYS)
      when it is not a list of objects or null; kept in raw_non_responses.
    """

    records: int = 0
    nps_invalid: int = 0
    dates_invalid: int = 0
    text_invalid: int = 0
    follow_up_invalid: int = 0
    unknown_fields: set[str] = field(default_factory=set)
    unread_fields: Counter[str] = field(default_factory=Counter)

    def counters(self) -> dict[str, int]:
        """The counts of values repaired or nulled, by name (every int field but ``records``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "records"}
        return {name: value for name, value in values.items() if isinstance(value, int)}

    def merge(self, other: "FlattenStats") -> None:
        """Add `other`'s counts to this one and union its unknown fields, in place."""
        self.records += other.records
        self.nps_invalid += other.nps_invalid
        self.dates_invalid += other.dates_invalid
        self.text_invalid += other.text_invalid
        self.follow_up_invalid += other.follow_up_invalid
        self.unknown_fields |= other.unknown_fields
        self.unread_fields.update(other.unread_fields)


@dataclass
class FlatTables:
    """The flat tables of a batch of records (keys: FLAT_TABLE_NAMES, or NON_RESPONSE_FLAT_TABLES) and the
    batch's stats."""

    tables: dict[str, pa.Table]
    stats: FlattenStats


def raw_rows(
    records: Iterable[dict],
    *,
    fetched_at: Iterable[datetime] | datetime,
    cursor_sent: int | None,
    sync_pass: str,
    fast_json: bool = False,
) -> pa.Table:
    """Build raw_responses rows (one per record, in order) for records fetched on one page.

    `fetched_at`: a timezone-aware datetime for all records, or one per record; stored in UTC.
    `cursor_sent`: the cursor parameter sent for the page (None when none was sent).
    `sync_pass`: "cursor" or "lookback".
    `record_json` is compact UTF-8 JSON with non-ASCII kept as is, lossless (`json.loads(record_json)`
    gives the record back): `json.dumps(record, ensure_ascii=False, separators=(",", ":"))` (a record
    holding a lone surrogate, which UTF-8 cannot store, is dumped with `ensure_ascii=True` instead).
    `fast_json=True` encodes with `orjson.dumps` (same compact form, about 4x faster; numbers may be spelt
    differently, e.g. 1e16 for 1e+16, but read back equal). Pass it only for records orjson parsed
    (`Page.orjson_safe`): orjson writes NaN and Infinity, which orjson never parses, as null. A record
    orjson cannot write (a lone surrogate, an integer beyond 64 bits) is dumped as without `fast_json`.

    Returns a table with exactly `TABLES["raw_responses"].arrow_schema`.
    Raises FlattenError for a record that is not an object or has no integer `number_customergauge`
    (message names the record's index in `records`; a record without its id must fail the sync, never be
    dropped), a naive or missing `fetched_at`, a bad `cursor_sent` or an unknown `sync_pass`.
    """
    _check_page_facts(cursor_sent, sync_pass)
    encode = _fast_json if fast_json else _lossless_json
    numbers, stamps, texts = [], [], []
    for index, (record, fetched) in enumerate(_with_fetched_at(records, fetched_at)):
        numbers.append(_record_number(record, index))
        stamps.append(fetched)
        texts.append(encode(record))
    return _raw_table(numbers, pa.array(stamps, TIMESTAMP_UTC), _string_array(texts), cursor_sent, sync_pass)


def raw_rows_from_json(
    numbers: list[int], texts: Sequence, *, fetched_at: datetime, cursor_sent: int | None, sync_pass: str
) -> pa.Table:
    """Build raw_responses rows from records' JSON texts, without decoding them (one page: `Page.numbers`,
    `Page.record_json`).

    `numbers`: each record's number_customergauge (ints in the int64 range); `texts`: each record's JSON
    text as `client.split_page_body` gives it (bytes-like; compact UTF-8, strings and numbers as the API wrote
    them).
    `record_json` is the text as received, so it is the record exactly (`json.loads(record_json)` gives it
    back, numbers spelt as sent, e.g. 1E5); a text holding a `\\u` escape is re-encoded as `raw_rows` encodes
    (orjson, else json), so non-ASCII is kept as is there too. `fetched_at`: one timezone-aware datetime for
    the page; `cursor_sent`, `sync_pass`: as for `raw_rows`.

    Returns a table with exactly `TABLES["raw_responses"].arrow_schema`.
    Raises FlattenError for counts that differ, a naive `fetched_at`, a bad `cursor_sent` or an unknown
    `sync_pass`.
    """
    _check_page_facts(cursor_sent, sync_pass)
    if len(numbers) != len(texts):
        raise FlattenError(f"{len(numbers)} numbers for {len(texts)} record texts: pass one per record")
    data = b"".join(texts)
    escaped = _rows_with_unicode_escapes(data, texts)
    if escaped:
        texts = [_unescaped_json(bytes(text)) if row in escaped else text for row, text in enumerate(texts)]
        data = b"".join(texts)
    stamps = pa.repeat(pa.scalar(_utc(fetched_at, "fetched_at"), TIMESTAMP_UTC), len(texts))
    return _raw_table(numbers, stamps, _string_array(texts, data), cursor_sent, sync_pass)


def _check_page_facts(cursor_sent: int | None, sync_pass: str) -> None:
    if sync_pass not in SYNC_PASSES:
        raise FlattenError(f"sync_pass must be one of {SYNC_PASSES}, got {sync_pass!r}")
    if cursor_sent is not None and (isinstance(cursor_sent, bool) or not isinstance(cursor_sent, int)):
        raise FlattenError(
            f"cursor_sent must be the integer cursor sent for the page, or None; got {type(cursor_sent).__name__}"
        )


def _raw_table(
    numbers: list[int], stamps: pa.Array, texts: pa.Array, cursor_sent: int | None, sync_pass: str
) -> pa.Table:
    count = len(numbers)
    arrays = [
        pa.array(numbers, pa.int64()),
        stamps,
        pa.repeat(pa.scalar(sync_pass, pa.string()), count),
        pa.repeat(pa.scalar(cursor_sent, pa.int64()), count),
        texts,
    ]
    return pa.Table.from_arrays(arrays, schema=TABLES["raw_responses"].arrow_schema)


def flatten_records(
    records: Iterable[dict],
    *,
    fetched_at: Iterable[datetime] | datetime,
    system_timezone: str = "UTC",
) -> FlatTables:
    """Flatten sync records into the five flat tables (responses and its child tables).

    `records`: decoded records (vendor page shape and api-notes.md variants).
    `fetched_at`: a timezone-aware datetime for all records, or one per record (same count).
    `system_timezone`: IANA name of the CustomerGauge system's time zone, in which the API sends dates
    (vendor page note). The host's time zone is never used.

    Returns FlatTables whose tables have exactly `TABLES[name].arrow_schema`; no records gives empty
    tables. Value rules are in the module docstring.
    Raises FlattenError for a bad `system_timezone`, a naive `fetched_at` or a count mismatch, a record
    without an integer `number_customergauge` (names its index), or a list/object field of the wrong
    JSON type (names number_customergauge and the field).
    """
    return _flatten_each(_Flattener(system_zone(system_timezone)), records, fetched_at)


def _flatten_each(
    flattener: "_Flattener", records: Iterable[Any], fetched_at: Iterable[datetime] | datetime
) -> FlatTables:
    for index, (record, fetched) in enumerate(_with_fetched_at(records, fetched_at)):
        flattener.add(index, record, fetched)
    return flattener.result()


def flatten_raw(raw: pa.Table | pa.RecordBatch, *, system_timezone: str = "UTC") -> FlatTables:
    """Flatten raw_responses rows: parses each `record_json` and uses the row's `fetched_at`.

    `raw` needs the columns `record_json` (string; binary, large or dictionary-encoded text is read the same)
    and `fetched_at` (timestamp with time zone); other columns are ignored. Same result and errors as
    `flatten_records`, plus FlattenError when a column is missing or a `record_json` is not UTF-8 or not valid
    JSON (names the row index, never the content).
    Records of the plain shape are flattened column-wise by Arrow (over 10x faster), the others by the
    per-record rules; the tables, their row order and the stats are the same either way (see "Arrow-native
    flattening" below).
    """
    return _flatten_raw_arrow(_raw_columns(raw, RAW_TABLE), system_timezone)


def flatten_non_responses(raw: pa.Table | pa.RecordBatch, *, system_timezone: str = "UTC") -> FlatTables:
    """Flatten raw_non_responses rows (same columns as raw_responses) into ``non_responses`` and
    ``non_response_properties`` (schemas.py NON_RESPONSE_FLAT_TABLES).

    A non-response is read as a response is (``flatten_raw``: same value rules, same stats, unknown fields
    reported the same way) from the keys the non-responses' contract reads (schemas.py NON_RESPONSE_COLUMNS;
    its segments ``properties`` and ``custom_fields`` into non_response_properties exactly as
    response_properties holds a response's). Two departures, so that one odd record never blocks its
    partition (the shape of a non-response is not documented):

    - the keys a response has that it does not read (NON_RESPONSE_UNREAD_KEYS: the answer) are neither read
      nor checked, whatever they hold (``"tags": {}`` or ``"nps": 11`` flatten as if absent);
    - a segment list (NON_RESPONSE_SEGMENT_KEYS) that is not a list of objects or null (``"properties": "y"``,
      ``[1]``), which a response would be refused for, gives no rows for that record;

    each such key is counted per record in ``FlattenStats.unread_fields`` and stays in raw_non_responses'
    record_json. Returns FlatTables with the two tables (exactly their schemas); raises as ``flatten_raw``,
    the message naming raw_non_responses.
    """
    raw = _raw_columns(raw, RAW_NON_RESPONSES_TABLE)
    texts, unread = _without_unread_keys(raw.column("record_json"))
    rows = pa.table({"record_json": texts, "fetched_at": raw.column("fetched_at")})
    try:
        flat = _flatten_raw_arrow(rows, system_timezone, NON_RESPONSE_SEGMENT_KEYS)
    except FlattenError as error:  # the per-record rules' errors end with _RAW_HINT
        raise FlattenError(str(error).replace(_RAW_HINT, _raw_hint(RAW_NON_RESPONSES_TABLE))) from None
    flat.stats.unread_fields.update(unread)
    names = TABLES[NON_RESPONSES_TABLE].arrow_schema.names
    properties = flat.tables["response_properties"]  # the same schema (schemas.py: the twin)
    return FlatTables(
        {NON_RESPONSES_TABLE: flat.tables[KEY_TABLE].select(names), NON_RESPONSE_PROPERTIES.name: properties},
        flat.stats,
    )


def _raw_columns(raw: pa.Table | pa.RecordBatch, raw_table: str) -> pa.Table:
    """The two columns the flattening reads, ``record_json`` as one chunk of UTF-8 text (``pa.string()``) when
    it holds text of any Arrow type (string, binary, their large forms, dictionary-encoded: a tool may rewrite
    a raw file so), ``fetched_at`` as it is. The one place raw bytes become text: nothing after it decodes bytes.

    Raises:
        FlattenError: a column is missing, or a record_json holds bytes that are not UTF-8 (names the raw row
            and the fix, never the content; ``raw_table`` is the table the rows come from).
    """
    for name in ("record_json", "fetched_at"):
        if name not in raw.schema.names:
            raise FlattenError(
                f"raw table has no {name!r} column; pass a table with TABLES['raw_responses'].arrow_schema"
            )
    texts = _one_chunk(raw.column("record_json"))
    if pa.types.is_dictionary(texts.type):  # pandas writes a categorical column so
        texts = texts.dictionary_decode()
    if texts.type in _TEXT_TYPES:
        try:
            texts = texts.cast(pa.string())  # from binary: validates UTF-8
            texts.validate(full=True)  # from (large) string: the cast does not
        except pa.ArrowInvalid:
            _raise_not_utf8(texts, raw_table)
    return pa.table({"record_json": texts, "fetched_at": raw.column("fetched_at")})


_TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())


def _raise_not_utf8(texts: pa.Array, raw_table: str) -> None:
    """Raise FlattenError naming the first row of ``texts`` (text or binary) whose bytes are not UTF-8."""
    large = texts.type in (pa.large_string(), pa.large_binary())
    for row, data in enumerate(texts.view(pa.large_binary() if large else pa.binary()).to_pylist()):
        try:
            (data or b"").decode()
        except UnicodeDecodeError as error:
            raise FlattenError(
                f"raw row {row}: record_json is not UTF-8 text (byte {error.start} is not UTF-8); the sync writes "
                f"UTF-8 only, so a tool rewrote the {raw_table} file: materialize {raw_table} for this partition "
                "again (a replay rewrites every record the API still returns), restore the file from a backup, or "
                f"run {raw_table} for this partition with full_refresh: true"
            ) from None


# A key of NON_RESPONSE_UNREAD_KEYS as a JSON object key; only a hint (a nested object's key matches it too).
_UNREAD_HINT = '"(?:' + "|".join(sorted(NON_RESPONSE_UNREAD_KEYS)) + r')"\s*:'


def _without_unread_keys(texts: pa.Array) -> tuple[pa.Array, Counter[str]]:
    """The record texts without their top-level keys of NON_RESPONSE_UNREAD_KEYS, and how many records carried
    each. Only texts matching _UNREAD_HINT are parsed; one holding such a key is re-encoded as ``raw_rows``
    encodes, the others are kept as they are (a text that is not a JSON object too: flatten_raw refuses it)."""
    unread: Counter[str] = Counter()
    if texts.type != pa.string():
        return texts, unread  # not text (``_raw_columns``): flatten_raw refuses it by the per-record rules
    hinted = np.flatnonzero(_mask(pc.match_substring_regex(texts, _UNREAD_HINT)))
    rows, encoded = [], []
    for row, text in zip(hinted, texts.take(pa.array(hinted, pa.int64())).to_pylist(), strict=True):
        try:
            record, orjson_safe = parse_page_body(text.encode())
        except BodyProblem:
            continue
        keys = record.keys() & NON_RESPONSE_UNREAD_KEYS if isinstance(record, dict) else set()
        if keys:
            unread.update(keys)
            rows.append(row)
            kept = {key: value for key, value in record.items() if key not in keys}
            encoded.append(_fast_json(kept) if orjson_safe else _lossless_json(kept))
    if not rows:
        return texts, unread
    replaced = np.zeros(len(texts), bool)
    replaced[rows] = True
    return pc.replace_with_mask(texts, pa.array(replaced), pa.array(encoded, texts.type)), unread


class _Flattener:
    """Accumulates the rows (tuples in schema column order) of the five flat tables, record by record.
    Datetimes in rows are naive UTC (see _naive_utc)."""

    def __init__(self, zone: ZoneInfo, optional_lists: frozenset[str] = frozenset()) -> None:
        self.zone = zone
        self.optional_lists = optional_lists  # lists whose value of another shape is dropped and counted (unread)
        self.stats = FlattenStats()
        self.rows: dict[str, list[tuple]] = {name: [] for name in FLAT_TABLE_NAMES}

    def add(self, index: int, record: Any, fetched_at: datetime) -> None:
        number = _record_number(record, index)
        if dropped := {name for name in self.optional_lists & record.keys() if not _is_item_list(record[name])}:
            self.stats.unread_fields.update(dropped)
            record = {key: value for key, value in record.items() if key not in dropped}
        self.stats.records += 1
        self._note_unknown_fields(record)
        self.rows["responses"].append(self._response_row(record, number, fetched_at))
        unknown = self.stats.unknown_fields  # list-item keys are added where extra_json is built
        self.rows["response_drivers"].extend(_driver_rows(record, number, fetched_at, unknown))
        self.rows["response_tags"].extend(_tag_rows(record, number, fetched_at, unknown))
        self.rows["response_questions"].extend(_question_rows(record, number, fetched_at, unknown))
        self.rows["response_properties"].extend(_property_rows(record, number, fetched_at, unknown))

    def result(self) -> FlatTables:
        tables = {name: _to_table(TABLES[name], rows, self.stats) for name, rows in self.rows.items()}
        return FlatTables(tables=tables, stats=self.stats)

    def _note_unknown_fields(self, record: dict) -> None:
        self.stats.unknown_fields.update(record.keys() - RECORD_KEYS)
        for name, known in OBJECT_KEYS.items():
            value = record.get(name)
            if isinstance(value, dict):
                self.stats.unknown_fields.update(f"{name}.{key}" for key in value.keys() - known)

    def _response_row(self, record: dict, number: int, fetched_at: datetime) -> tuple:
        contact = _object(record, "contact", number)
        account = _object(record, "account", number)
        comment = _object(record, "comment", number)
        follow_up = _object(record, "follow_up", number)
        dates = [self._counted(record.get(name), self._utc_instant, "dates_invalid") for name in DATE_FIELDS]
        return (
            number,
            _text(record.get("status")),
            _text(contact.get("first_name")),
            _text(contact.get("last_name")),
            _text(account.get("name")),
            _text(account.get("number")),
            _text(record.get("number_customer")),
            _text(record.get("number_order")),
            _text(record.get("email")),
            _text(record.get("phone")),
            self._counted(record.get("nps"), _nps_score, "nps_invalid"),
            _text(comment.get("original")),
            _text(comment.get("translation")),
            *dates,
            _text(record.get("language")),
            _text(record.get("locale")),
            self._counted(follow_up.get("requested"), _flag, "follow_up_invalid"),
            _text(follow_up.get("details")),
            fetched_at,
        )

    def _utc_instant(self, text: Any) -> datetime | None:
        return _utc_instant(text, self.zone)

    def _counted(self, value: Any, parse: Callable[[Any], Any], counter: str) -> Any:
        """``parse(value)``; a present value it cannot use becomes None and adds 1 to ``stats.<counter>``."""
        if value is None:
            return None
        parsed = parse(value)
        if parsed is None:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        return parsed


def _driver_rows(record: dict, number: int, fetched_at: datetime, unknown: set[str]) -> list[tuple]:
    """response_drivers rows: one per primary/secondary pair of `selected_drivers` (one with null
    secondary when a primary has none), then one per `drivers` label (legacy shape, api-notes.md)."""
    rows = []
    source = "selected_drivers"
    for position, item in enumerate(_items(record, source, number)):
        primary = _text(item.get("primary"))
        extra = _extra_json(item, source, unknown)
        secondaries = _list(item.get("secondary"), f"{source}[{position}].secondary", number)
        if not secondaries:
            rows.append((number, position, primary, None, None, source, extra, fetched_at))
        for secondary_position, secondary in enumerate(secondaries):
            secondary_driver = _text(secondary)
            rows.append((number, position, primary, secondary_position, secondary_driver, source, extra, fetched_at))
    for position, item in enumerate(_items(record, "drivers", number)):
        label = _text(item.get("label"))
        extra = _extra_json(item, "drivers", unknown)
        rows.append((number, position, label, None, None, "drivers", extra, fetched_at))
    return rows


def _tag_rows(record: dict, number: int, fetched_at: datetime, unknown: set[str]) -> list[tuple]:
    return [
        (
            number,
            position,
            _text(item.get("label")),
            _text(item.get("type")),
            _text(item.get("sentiment")),
            _extra_json(item, "tags", unknown),
            fetched_at,
        )
        for position, item in enumerate(_items(record, "tags", number))
    ]


def _question_rows(record: dict, number: int, fetched_at: datetime, unknown: set[str]) -> list[tuple]:
    rows = []
    for position, item in enumerate(_items(record, "questions", number)):
        answer = item.get("answer")
        title = _text(item.get("title"))
        extra = _extra_json(item, "questions", unknown)
        rows.append((number, position, title, _text(answer), _answer_number(answer), extra, fetched_at))
    return rows


def _property_rows(record: dict, number: int, fetched_at: datetime, unknown: set[str]) -> list[tuple]:
    """response_properties rows: `properties` items, then `custom_fields` items (api-notes.md)."""
    rows = []
    for origin in ("properties", "custom_fields"):
        for position, item in enumerate(_items(record, origin, number)):
            field_name = _text(item.get("field"))
            reference = _text(item.get("reference"))
            extra = _extra_json(item, origin, unknown)
            rows.append((number, position, field_name, reference, origin, extra, fetched_at))
    return rows


def _to_table(contract: TableContract, rows: list[tuple], stats: FlattenStats | None = None) -> pa.Table:
    """Rows (tuples in column order) to a table with exactly the contract's schema. With `stats`, text
    holding lone surrogates is repaired (U+FFFD) and counted; without, it raises UnicodeEncodeError."""
    schema = contract.arrow_schema
    if not rows:
        return schema.empty_table()
    columns = zip(*rows, strict=True)
    arrays = [_array(values, column.type, stats) for values, column in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _array(values: tuple, type_: pa.DataType, stats: FlattenStats | None) -> pa.Array:
    try:
        return pa.array(values, type=type_)
    except UnicodeEncodeError:
        if stats is None or not pa.types.is_string(type_):
            raise
    repaired = [_SURROGATE.sub("\ufffd", value) if isinstance(value, str) else value for value in values]
    stats.text_invalid += sum(new != old for new, old in zip(repaired, values, strict=True))
    return pa.array(repaired, type=type_)


def _lossless_json(record: dict) -> bytes:
    """Compact JSON of a record as UTF-8, lossless (see raw_rows)."""
    text = json.dumps(record, ensure_ascii=False, separators=_COMPACT)
    if not text.isascii() and _SURROGATE.search(text):
        return json.dumps(record, separators=_COMPACT).encode()
    return text.encode()


def _fast_json(record: dict) -> bytes:
    """orjson's compact JSON of a record; what `_lossless_json` gives when orjson cannot write it."""
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:
        return _lossless_json(record)


def _rows_with_unicode_escapes(data: bytes, texts: Sequence) -> set[int]:
    """Indexes of the JSON `texts` (joined: `data`) holding a `\\u` escape. Exact: in JSON a backslash only
    occurs in a string, where it starts a two-character escape, so the scan steps over each escape."""
    rows, ends, at = set(), None, data.find(b"\\")
    while at != -1:
        if data[at + 1] == 0x75:  # "u"
            ends = ends or list(accumulate(map(len, texts)))
            rows.add(bisect_right(ends, at))
        at = data.find(b"\\", at + 2)
    return rows


def _unescaped_json(text: bytes) -> bytes:
    """A record's JSON text re-encoded as `raw_rows` encodes the record it parses to (`\\u` escapes of
    non-ASCII become the characters; a lone surrogate stays escaped)."""
    record, orjson_safe = parse_page_body(text)
    return _fast_json(record) if orjson_safe else _lossless_json(record)


def _string_array(texts: Sequence, data: bytes | None = None) -> pa.Array:
    """A string array of UTF-8 texts (bytes-like), built from one joined buffer (no Python str per text);
    `data`: the texts already joined."""
    offsets = pa.array([0, *accumulate(map(len, texts))], pa.int32())
    data = b"".join(texts) if data is None else data
    return pa.StringArray.from_buffers(len(texts), offsets.buffers()[1], pa.py_buffer(data))


def _with_fetched_at(records: Iterable[Any], fetched_at: Iterable[datetime] | datetime) -> Iterator[tuple]:
    """Pair each record with its fetched_at in UTC; one datetime applies to every record."""
    if isinstance(fetched_at, datetime):
        yield from zip(records, repeat(_utc(fetched_at, "fetched_at")))
        return
    fetched_iter = iter(fetched_at)
    for index, record in enumerate(records):
        fetched = next(fetched_iter, _MISSING)
        if fetched is _MISSING:
            raise FlattenError(f"fetched_at has fewer values than records ({index}); pass one per record")
        yield record, _utc(fetched, f"fetched_at[{index}]")
    if next(fetched_iter, _MISSING) is not _MISSING:
        raise FlattenError("fetched_at has more values than records; pass one per record")


def _utc(value: Any, name: str) -> datetime:
    """A timezone-aware datetime as a naive UTC datetime (see _naive_utc)."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise FlattenError(
            f"{name} must be a timezone-aware datetime such as datetime.now(timezone.utc); "
            f"got {'a naive datetime' if isinstance(value, datetime) else type(value).__name__}"
        )
    return _naive_utc(value)


def _naive_utc(value: datetime) -> datetime:
    """An aware datetime as naive UTC wall time. Arrow stores a naive datetime given for a
    timestamp(tz="UTC") column as that UTC wall time (no host time zone involved), about 6x faster
    than converting aware datetimes; the tables' values are aware UTC timestamps either way."""
    return value.astimezone(UTC).replace(tzinfo=None)


def system_zone(system_timezone: str) -> ZoneInfo:
    """The ZoneInfo of an IANA name; raises FlattenError naming ``system_timezone`` and the fix otherwise."""
    try:
        return ZoneInfo(system_timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):  # OSError: a folder such as "Europe"
        raise FlattenError(
            f"system_timezone {system_timezone!r} is not an IANA time zone name; pass the CustomerGauge "
            "system's time zone (Sending step of a Campaign in Campaign Suite), e.g. 'Europe/Amsterdam'"
        ) from None


def _parse_record_json(text: Any, index: int) -> Any:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise FlattenError(f"raw row {index}: record_json is not valid JSON; {_RAW_HINT}") from None


def _record_number(record: Any, index: int) -> int:
    if not isinstance(record, dict):
        raise FlattenError(f"record {index} is a {type(record).__name__}, not a JSON object; {_RAW_HINT}")
    number = record.get("number_customergauge")
    if isinstance(number, bool) or not isinstance(number, int):
        raise FlattenError(
            f"record {index} has no integer number_customergauge (got {type(number).__name__}); "
            f"every record needs its id, so the batch is refused: {_RAW_HINT}"
        )
    if number not in _INT64:
        raise FlattenError(
            f"record {index}: number_customergauge {number} is outside the int64 range the lake stores; "
            f"the batch is refused: {_RAW_HINT}"
        )
    return number


def _object(record: dict, name: str, number: int) -> dict:
    """The nested object `name` of a record; {} when missing or null."""
    value = record.get(name)
    if value is None:
        return _NO_OBJECT
    if isinstance(value, dict):
        return value
    raise FlattenError(
        f"record number_customergauge={number}: {name!r} must be an object or null, "
        f"got {type(value).__name__}; {_RAW_HINT}"
    )


def _list(value: Any, path: str, number: int) -> list:
    """A list field's value; [] when missing or null."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise FlattenError(
        f"record number_customergauge={number}: {path!r} must be a list or null, "
        f"got {type(value).__name__}; {_RAW_HINT}"
    )


def _items(record: dict, name: str, number: int) -> list[dict]:
    """The items of the list `name` ([] when missing or null); each item must be an object."""
    items = _list(record.get(name), name, number)
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise FlattenError(
                f"record number_customergauge={number}: '{name}[{position}]' must be an object, "
                f"got {type(item).__name__}; {_RAW_HINT}"
            )
    return items


def _is_item_list(value: Any) -> bool:
    """Whether ``value`` is what ``_items`` reads without raising: null, or a list of objects."""
    return value is None or isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _extra_json(item: dict, list_name: str, unknown: set[str]) -> str | None:
    """Compact JSON of the item's keys the contract does not know (sorted), or None; adds them to
    ``unknown`` as "<list>[].<key>"."""
    extra = item.keys() - ITEM_KEYS[list_name]
    if not extra:
        return None
    unknown.update(f"{list_name}[].{key}" for key in extra)
    return json.dumps({key: item[key] for key in sorted(extra)}, ensure_ascii=False, separators=_COMPACT)


def _text(value: Any) -> str | None:
    """A string as is; None as None; anything else as compact JSON text (123 -> "123")."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=_COMPACT)


def _number_in_text(text: str) -> float | None:
    """The number in a numeric string such as "7", " 7.5 " or "1e1" (around it: what str.strip() strips,
    e.g. U+3000 or U+001C, which float() alone would refuse); None for other text."""
    stripped = text.strip()
    if _NUMBER_TEXT.fullmatch(stripped):
        return float(stripped)
    return None


def _nps_score(value: Any) -> int | None:
    """0..10 from an int, an integral float or a numeric string; None otherwise (booleans included)."""
    number = _answer_number(value)
    if number is None or not number.is_integer() or not 0 <= number <= 10:
        return None
    return int(number)


def _answer_number(answer: Any) -> float | None:
    """A question answer as a finite float when it is a number or a numeric string; else None."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, str):
        answer = _number_in_text(answer)
    if not isinstance(answer, (int, float)):
        return None
    try:
        number = float(answer)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _flag(value: Any) -> bool | None:
    """A boolean from true/false or 1/0; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def _utc_instant(text: Any, zone: ZoneInfo) -> datetime | None:
    """A 'YYYY-MM-DD HH:MM:SS' local time in `zone` as a naive UTC datetime; None when not such a date."""
    if not isinstance(text, str) or not _DATE_TEXT.fullmatch(text):
        return None
    try:
        local = datetime.fromisoformat(text)
        return _naive_utc(local.replace(tzinfo=zone))
    except (ValueError, OverflowError):
        return None


# --- Arrow-native flattening (flatten_raw) ----------------------------------------------------------
#
# Plain records -- every contract key typed as in the vendor example (text as JSON strings,
# number_customergauge and nps integers, follow_up.requested a boolean, lists of objects), no unknown key,
# valid JSON on one line -- are parsed together by pyarrow.json with an explicit schema and flattened
# column-wise. pyarrow.json refuses a part holding any other record (a wrong JSON type, an unknown or
# duplicate key, a lone surrogate, NaN, ...); refused parts are split until the odd records are found.
# Records likely to hold a non-string value in a text field (ids sent as numbers, list or object answers)
# are first re-encoded with that value as its `_text` (see _with_text_values), which the per-record rules
# turn into the same rows, so they are plain too. Odd records, and plain ones whose value the Arrow kernels
# could get differently (no id, a null list item, a date in a DST gap, outside 1900..2036 or shaped but
# unusual), go through the per-record rules above, from their original text; their rows are then put back
# in record order. The result equals the per-record rules' on every input (test_flatten_fast_path.py).

_TYPES = {
    "number_customergauge": pa.int64(),
    "nps": pa.int64(),
    "follow_up.requested": pa.bool_(),
    "selected_drivers[].secondary": pa.list_(pa.string()),
}


def _plain_field(path: str, key: str) -> pa.Field:
    return pa.field(key, _TYPES.get(path, pa.string()))


def _plain_key(key: str) -> pa.Field:
    if key in OBJECT_KEYS:
        return pa.field(key, pa.struct([_plain_field(f"{key}.{name}", name) for name in sorted(OBJECT_KEYS[key])]))
    if key in ITEM_KEYS:
        item = pa.struct([_plain_field(f"{key}[].{name}", name) for name in sorted(ITEM_KEYS[key])])
        return pa.field(key, pa.list_(item))
    return _plain_field(key, key)


_PLAIN_SCHEMA = pa.schema([_plain_key(key) for key in sorted(RECORD_KEYS)])
_PLAIN_NULL_ROW = pa.table([pa.nulls(1, f.type) for f in _PLAIN_SCHEMA], schema=_PLAIN_SCHEMA)
_PLAIN_PARSE = pa_json.ParseOptions(explicit_schema=_PLAIN_SCHEMA, unexpected_field_behavior="error")
_TEXT_KEYS = sorted(
    {f.name for f in _PLAIN_SCHEMA if f.type == pa.string()}
    | {c.name for f in _PLAIN_SCHEMA if pa.types.is_struct(f.type) for c in f.type if c.type == pa.string()}
    | {c.name for f in _PLAIN_SCHEMA if pa.types.is_list(f.type) for c in f.type.value_type if c.type == pa.string()}
)
# A text key followed by a number, true/false, a list or an object: what odd records most often hold (ids
# sent as numbers, structured answers). Only a hint: a key inside a string value can match it too.
_LIKELY_ODD = '"(?:' + "|".join(_TEXT_KEYS) + r')":[-0-9tf\[{]'
# The fields whose per-record rule is `_text(value)` (`answer`: also `_answer_number`, the same for a value
# and its `_text`), by holder: the record ("") and each nested object and list item. Dates are not: their
# rule reads only strings.
_TEXT_FIELDS = {
    "": frozenset(f.name for f in _PLAIN_SCHEMA if f.type == pa.string()) - set(DATE_FIELDS),
    **{
        name: frozenset(c.name for c in _PLAIN_SCHEMA.field(name).type if c.type == pa.string()) for name in OBJECT_KEYS
    },
    **{
        name: frozenset(c.name for c in _PLAIN_SCHEMA.field(name).type.value_type if c.type == pa.string())
        for name in ITEM_KEYS
    },
}
_BLOCK_BYTES = 1 << 20
_PY_SPACE = "".join(chr(code) for code in range(0x10000) if chr(code).isspace())  # what str.strip() strips
_ARROW_NUMBER_TEXT = r"^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"  # _NUMBER_TEXT.fullmatch in RE2
_ARROW_DATE_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"  # _DATE_TEXT.fullmatch in RE2
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"  # also how Arrow casts a timestamp[s] to text
_ZERO_DATE = "0000-00-00 00:00:00"
# Dates read by Arrow: there zoneinfo and Arrow read the same tz files; after 2037 zoneinfo uses the
# files' rule string, which Arrow does not.
_ARROW_YEARS = (1900, 2036)


def _flatten_raw_per_record(
    raw: pa.Table | pa.RecordBatch, system_timezone: str, optional_lists: frozenset[str] = frozenset()
) -> FlatTables:
    """flatten_raw by the per-record rules only: the reference the Arrow path equals (``optional_lists``: as
    ``_flatten_raw_arrow``)."""
    texts = raw.column("record_json").to_pylist()
    records = (_parse_record_json(text, index) for index, text in enumerate(texts))
    fetched_at = raw.column("fetched_at").to_pylist()
    return _flatten_each(_Flattener(system_zone(system_timezone), optional_lists), records, fetched_at)


def _flatten_raw_arrow(
    raw: pa.Table | pa.RecordBatch, system_timezone: str, optional_lists: frozenset[str] = frozenset()
) -> FlatTables:
    """flatten_raw: plain records column-wise with Arrow, the others by the per-record rules (see above).
    ``optional_lists``: list keys whose value of another shape is dropped from its record and counted in
    ``unread_fields`` rather than refused (flatten_non_responses); such a record is never plain (pyarrow.json
    refuses it), so the per-record rules decide."""
    texts, fetched = _one_chunk(raw.column("record_json")), _one_chunk(raw.column("fetched_at"))
    if not _arrow_can_read(texts, fetched):
        return _flatten_raw_per_record(raw, system_timezone, optional_lists)
    zone = system_zone(system_timezone)
    fetched = fetched.cast(TIMESTAMP_UTC)
    usable = pc.and_(pc.and_(pc.starts_with(texts, "{"), pc.ends_with(texts, "}")), fetched.is_valid())
    odd = ~_mask(usable)
    try:
        table = _parse_plain(_plain_texts(texts, odd), odd)
        parts, stats = _plain_parts(table, odd, fetched, zone.key)
    except pa.ArrowException:  # e.g. a zone Arrow's time zone database lacks: Arrow reads no record
        return _flatten_raw_per_record(raw, system_timezone, optional_lists)
    slow, owners = _per_record_parts(texts, fetched, np.flatnonzero(odd), _Flattener(zone, optional_lists))
    stats.merge(slow.stats)
    tables = {
        name: _in_record_order([*parts[name], (slow.tables[name], owners[name])], TABLES[name].arrow_schema)
        for name in FLAT_TABLE_NAMES
    }
    return FlatTables(tables=tables, stats=stats)


def _one_chunk(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if not isinstance(column, pa.ChunkedArray):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _mask(values: pa.Array) -> np.ndarray:
    """A boolean array as a numpy mask, null as False."""
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _arrow_can_read(texts: pa.Array, fetched: pa.Array) -> bool:
    """Whether the columns are as the sync writes them: record_json text (UTF-8, ``_raw_columns`` checked it),
    fetched_at microsecond timestamps with a zone in Python's date range. Otherwise the per-record path reads
    (and refuses) them."""
    timestamps = pa.types.is_timestamp(fetched.type) and fetched.type.unit == "us" and fetched.type.tz is not None
    if texts.type != pa.string() or not timestamps:
        return False
    years = pc.min_max(pc.year(fetched.cast(TIMESTAMP_UTC))).as_py()
    return years["min"] is None or (years["min"] > 1 and years["max"] < 9999)


def _plain_texts(texts: pa.Array, odd: np.ndarray) -> pa.Array:
    """The texts to parse: those likely to hold a non-string text value (_LIKELY_ODD) re-encoded by
    _with_text_values; one it cannot re-encode is set in `odd`."""
    hinted = np.flatnonzero(_mask(pc.match_substring_regex(texts, _LIKELY_ODD)) & ~odd)
    if not len(hinted):
        return texts
    encoded = [_with_text_values(text) for text in texts.take(pa.array(hinted)).to_pylist()]
    done = np.array([text is not None for text in encoded])
    odd[hinted[~done]] = True
    replaced = np.zeros(len(texts), bool)
    replaced[hinted[done]] = True
    return pc.replace_with_mask(texts, pa.array(replaced), pa.array([t for t in encoded if t], pa.string()))


def _with_text_values(text: str) -> str | None:
    """The record `text` as compact JSON with each non-string value of a text field (_TEXT_FIELDS) replaced
    by its `_text` (123 -> "123", ["a"] -> '["a"]'): the per-record rules give the same rows and stats for
    both. None when `text` is not a JSON object or the
    result would still not be plain (NaN or Infinity; a lone surrogate)."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for name, keys in _TEXT_FIELDS.items():
        holder = record.get(name) if name else record
        for item in holder if isinstance(holder, list) else [holder]:
            if not isinstance(item, dict):
                continue
            for key in keys & item.keys():
                if not isinstance(item[key], str):
                    item[key] = _text(item[key])
    try:
        encoded = json.dumps(record, ensure_ascii=False, separators=_COMPACT, allow_nan=False)
    except ValueError:
        return None
    return None if not encoded.isascii() and _SURROGATE.search(encoded) else encoded


def _parse_plain(texts: pa.Array, odd: np.ndarray) -> pa.Table:
    """Parse every text as a plain record: one row per text, all null where `odd` is set (those texts are
    not read). A part pyarrow.json refuses is split in halves down to single records; a refused record is
    set in `odd`."""
    offset_bits = np.concatenate([np.zeros(texts.offset, bool), ~odd])  # validity bitmap: odd texts null
    validity = pa.py_buffer(np.packbits(offset_bits, bitorder="little"))
    plain = pa.Array.from_buffers(pa.string(), len(texts), [validity, *texts.buffers()[1:]], offset=texts.offset)
    tables = []
    pending = [(0, len(texts))]
    while pending:
        start, stop = pending.pop()
        table = _read_plain(plain.slice(start, stop - start)) if stop > start else None
        if table is not None:
            tables.append(table)
        elif stop - start == 1:
            odd[start] = True
            tables.append(_PLAIN_NULL_ROW)
        elif stop > start:
            middle = (start + stop) // 2
            pending += [(middle, stop), (start, middle)]
    return pa.concat_tables(tables).combine_chunks() if tables else _PLAIN_SCHEMA.empty_table()


def _read_plain(texts: pa.Array) -> pa.Table | None:
    """The texts as one table of _PLAIN_SCHEMA (a null text reads as {}), or None when pyarrow.json refuses
    one of them or a text does not give exactly one row (one holding a line break outside strings gives more
    or is refused)."""
    lines = pc.binary_join_element_wise(texts, "", "\n", null_handling="replace", null_replacement="{}")
    lengths = pc.binary_length(lines)  # each text followed by "\n", in one new buffer
    data = lines.buffers()[2].slice(0, pc.sum(lengths).as_py())
    block = max(_BLOCK_BYTES, 2 * pc.max(lengths).as_py())  # a block holds any whole record
    try:
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(block_size=block),
            parse_options=_PLAIN_PARSE,
        )
    except pa.ArrowInvalid:
        return None
    return table if table.num_rows == len(texts) else None


def _plain_parts(table: pa.Table, odd: np.ndarray, fetched: pa.Array, zone: str) -> tuple[dict, FlattenStats]:
    """Rows of the plain records (one `table` row per batch row; odd rows are not plain): per table a list of
    parts (table, batch row of each table row), and their stats. Sets in `odd` the rows left to the
    per-record rules here: no id, a null list item, a date _utc_dates leaves."""
    dates = {name: _utc_dates(_col(table, name), zone) for name in DATE_FIELDS}
    odd |= table.column("number_customergauge").is_null().to_numpy(zero_copy_only=False)
    for _, _, date_odd in dates.values():
        odd |= date_odd
    for name in ITEM_KEYS:
        items, parents, _ = _explode(_col(table, name))
        odd[parents[items.is_null().to_numpy(zero_copy_only=False)]] = True
    keep = pa.array(~odd)
    table, rows = table.filter(keep), np.flatnonzero(~odd)
    invalid_dates = sum(int(invalid[~odd].sum()) for _, invalid, _ in dates.values())
    numbers, fetched = _col(table, "number_customergauge"), fetched.filter(keep)

    def part(name: str, parents: np.ndarray, **columns: pa.Array) -> tuple[pa.Table, np.ndarray]:
        """Table `name` of the given columns plus each row's record id and fetched_at; other columns null
        (extra_json: plain items have no unknown key)."""
        index = pa.array(parents, pa.int64())
        given = {"number_customergauge": numbers.take(index), "fetched_at": fetched.take(index), **columns}
        contract = TABLES[name]
        arrays = [given.get(c.name, pa.nulls(len(parents), c.type)) for c in contract.columns]
        return pa.Table.from_arrays(arrays, schema=contract.arrow_schema), rows[parents]

    def items(name: str) -> tuple[Callable[[str], pa.Array], np.ndarray, pa.Array]:
        values, parents, positions = _explode(_col(table, name))
        return (lambda key: pc.struct_field(values, key)), parents, pa.array(positions, pa.int32())

    nps = _col(table, "nps")
    valid_nps = pc.and_(pc.greater_equal(nps, 0), pc.less_equal(nps, 10))
    responses = {c.name: _col(table, c.source[0]) for c in TABLES["responses"].columns if c.source}
    responses |= {name: values.filter(keep) for name, (values, _, _) in dates.items()}
    responses["nps"] = pc.if_else(valid_nps, nps, pa.scalar(None, pa.int64())).cast(pa.int8())
    parts = {name: [] for name in FLAT_TABLE_NAMES}
    parts["responses"].append(part("responses", np.arange(len(rows)), **responses))
    parts["response_drivers"].append(_selected_driver_part(items("selected_drivers"), part))
    key, parents, positions = items("drivers")
    parts["response_drivers"].append(
        part(
            "response_drivers",
            parents,
            driver_position=positions,
            primary_driver=key("label"),
            driver_source=_repeat("drivers", len(parents)),
        )
    )
    key, parents, positions = items("tags")
    parts["response_tags"].append(
        part(
            "response_tags",
            parents,
            tag_position=positions,
            label=key("label"),
            tag_type=key("type"),
            sentiment=key("sentiment"),
        )
    )
    key, parents, positions = items("questions")
    parts["response_questions"].append(
        part(
            "response_questions",
            parents,
            question_position=positions,
            title=key("title"),
            answer=key("answer"),
            answer_number=_answer_numbers(key("answer")),
        )
    )
    for origin in ("properties", "custom_fields"):
        key, parents, positions = items(origin)
        parts["response_properties"].append(
            part(
                "response_properties",
                parents,
                property_position=positions,
                field=key("field"),
                reference=key("reference"),
                property_origin=_repeat(origin, len(parents)),
            )
        )
    nps_invalid = len(rows) - int(pc.sum(pc.fill_null(valid_nps, True)).as_py() or 0)
    stats = FlattenStats(records=len(rows), nps_invalid=nps_invalid, dates_invalid=invalid_dates)
    return parts, stats


def _selected_driver_part(items, part) -> tuple[pa.Table, np.ndarray]:
    """response_drivers rows of selected_drivers: one per secondary of each item, one with null secondary
    for an item without (see _driver_rows)."""
    key, item_parents, item_positions = items
    secondary = key("secondary")
    counts = pc.fill_null(pc.list_value_length(secondary), 0).to_numpy(zero_copy_only=False)
    row_item = np.repeat(np.arange(len(counts)), np.maximum(counts, 1))
    has = counts[row_item] > 0
    values, _, positions = _explode(secondary)
    index = np.zeros(len(row_item), np.int64)
    index[has] = np.arange(len(values))
    row_item_index = pa.array(row_item, pa.int64())
    return part(
        "response_drivers",
        item_parents[row_item],
        driver_position=item_positions.take(row_item_index),
        primary_driver=key("primary").take(row_item_index),
        secondary_position=pa.array(positions[index] if len(values) else index, pa.int32(), mask=~has),
        secondary_driver=values.take(pa.array(index, mask=~has)),
        driver_source=_repeat("selected_drivers", len(row_item)),
    )


def _repeat(text: str, count: int) -> pa.Array:
    return pa.repeat(pa.scalar(text, pa.string()), count)


def _answer_numbers(answers: pa.Array) -> pa.Array:
    """_answer_number of string answers: the number of a numeric text, surrounded by what str.strip()
    strips; null for other text and for numbers beyond a double (float() gives inf)."""
    number_text = pc.utf8_trim(answers, characters=_PY_SPACE)
    numeric = pc.match_substring_regex(number_text, _ARROW_NUMBER_TEXT)
    numbers = pc.cast(pc.if_else(numeric, number_text, pa.scalar(None, pa.string())), pa.float64())
    return pc.if_else(pc.is_finite(numbers), numbers, pa.scalar(None, pa.float64()))


def _per_record_parts(
    texts: pa.Array, fetched: pa.Array, rows: np.ndarray, flattener: "_Flattener"
) -> tuple[FlatTables, dict]:
    """The rows at `rows` by the per-record rules of `flattener` (a new one), in order, raising as they do;
    with the record row of each table row, per table."""
    index = pa.array(rows, pa.int64())
    owners = {name: [] for name in FLAT_TABLE_NAMES}
    for row, text, stamp in zip(rows, texts.take(index).to_pylist(), fetched.take(index).to_pylist(), strict=True):
        record = _parse_record_json(text, int(row))
        before = {name: len(flattener.rows[name]) for name in FLAT_TABLE_NAMES}
        flattener.add(int(row), record, _utc(stamp, f"fetched_at[{row}]"))
        for name in FLAT_TABLE_NAMES:
            owners[name].extend(repeat(int(row), len(flattener.rows[name]) - before[name]))
    return flattener.result(), {name: np.array(rows_, np.int64) for name, rows_ in owners.items()}


def _in_record_order(parts: list[tuple[pa.Table, np.ndarray]], schema: pa.Schema) -> pa.Table:
    """The parts' rows in record order (a stable sort on the record row keeps each record's row order)."""
    parts = [(table, owners) for table, owners in parts if table.num_rows]
    if not parts:
        return schema.empty_table()
    table = pa.concat_tables([table for table, _ in parts])
    if len(parts) == 1:
        return table
    return table.take(pa.array(np.argsort(np.concatenate([owners for _, owners in parts]), kind="stable")))


def _col(table: pa.Table, path: str) -> pa.Array:
    """The parsed values at `path` ("key" or "object.key"); null where the object is missing or null."""
    key, _, name = path.partition(".")
    column = _one_chunk(table.column(key))
    return pc.struct_field(column, name) if name else column


def _explode(lists: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The items of a list array in order, with each item's list index and its position in its list."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    parents = np.repeat(np.arange(len(lists)), lengths)
    positions = np.arange(len(parents)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return pc.list_flatten(lists), parents, positions


def _utc_dates(text: pa.Array, zone: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Dates as _utc_instant reads them: (UTC values, invalid mask, mask of values left to _utc_instant).

    Arrow reads a date when it is shaped, parses and formats back to the same text (so 02-30 or second 60,
    which strptime carries over, are never read), lies in _ARROW_YEARS and exists in `zone`; an ambiguous
    local time takes the earliest instant, as zoneinfo's fold=0. A DST-gap time (fold=0 takes the offset
    before the gap; Arrow has no such option) and any other shaped text but the zero date are left."""
    present = text.is_valid().to_numpy(zero_copy_only=False)
    shaped = _mask(pc.match_substring_regex(text, _ARROW_DATE_TEXT))
    invalid = present & (~shaped | _mask(pc.equal(text, _ZERO_DATE)))
    local = pc.strptime(text, format=_DATE_FORMAT, unit="s", error_is_null=True)
    years = pc.year(local)
    in_years = pc.and_(pc.greater_equal(years, _ARROW_YEARS[0]), pc.less_equal(years, _ARROW_YEARS[1]))
    read = shaped & _mask(
        pc.and_(pc.equal(pc.cast(local, pa.string()), text), in_years)
    )  # formats back as _DATE_FORMAT
    local = local.cast(pa.timestamp("us"))
    utc = pc.assume_timezone(local, timezone=zone, ambiguous="earliest", nonexistent="earliest")
    read &= _mask(pc.equal(pc.local_timestamp(utc), local))
    values = pc.if_else(pa.array(read), utc.cast(TIMESTAMP_UTC), pa.scalar(None, TIMESTAMP_UTC))
    return values, invalid, present & ~invalid & ~read
