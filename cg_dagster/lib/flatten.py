"""Flattening: CustomerGauge sync records in, Arrow tables out.

Pure code: no I/O, no Dagster. A record is one item of the `data` list of a
`GET /v7/rest/sync/responses` page, as decoded by `json.loads` (shape: vendor page example, plus the
variants in api-notes.md). Every output table has exactly `TABLES[name].arrow_schema` (schemas.py).

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
"""

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from itertools import repeat
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa

from cg_dagster.lib.schemas import ITEM_KEYS, OBJECT_KEYS, RECORD_KEYS, TABLES, TableContract

FLAT_TABLE_NAMES = (
    "responses",
    "response_drivers",
    "response_tags",
    "response_questions",
    "response_properties",
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
_RAW_HINT = "check the API response (the raw_responses table keeps each record as received)"


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
      Their values are still kept in the raw_responses table.
    """

    records: int = 0
    nps_invalid: int = 0
    dates_invalid: int = 0
    text_invalid: int = 0
    follow_up_invalid: int = 0
    unknown_fields: set[str] = field(default_factory=set)

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


@dataclass
class FlatTables:
    """The five flat tables of a batch of records (keys: FLAT_TABLE_NAMES) and the batch's stats."""

    tables: dict[str, pa.Table]
    stats: FlattenStats


def raw_rows(
    records: Iterable[dict],
    *,
    fetched_at: Iterable[datetime] | datetime,
    cursor_sent: int | None,
    sync_pass: str,
) -> pa.Table:
    """Build raw_responses rows (one per record, in order) for records fetched on one page.

    `fetched_at`: a timezone-aware datetime for all records, or one per record; stored in UTC.
    `cursor_sent`: the cursor parameter sent for the page (None when none was sent).
    `sync_pass`: "cursor" or "lookback".
    `record_json` is `json.dumps(record, ensure_ascii=False, separators=(",", ":"))`: lossless (a record
    holding a lone surrogate, which UTF-8 cannot store, is dumped with `ensure_ascii=True` instead: still
    lossless, `json.loads` gives the same record back).

    Returns a table with exactly `TABLES["raw_responses"].arrow_schema`.
    Raises FlattenError for a record that is not an object or has no integer `number_customergauge`
    (message names the record's index in `records`; a record without its id must fail the sync, never be
    dropped), a naive or missing `fetched_at`, a bad `cursor_sent` or an unknown `sync_pass`.
    """
    if sync_pass not in SYNC_PASSES:
        raise FlattenError(f"sync_pass must be one of {SYNC_PASSES}, got {sync_pass!r}")
    if cursor_sent is not None and (isinstance(cursor_sent, bool) or not isinstance(cursor_sent, int)):
        raise FlattenError(
            "cursor_sent must be the integer cursor sent for the page, or None; "
            f"got {type(cursor_sent).__name__}"
        )
    rows = []
    for index, (record, fetched) in enumerate(_with_fetched_at(records, fetched_at)):
        number = _record_number(record, index)
        rows.append((number, fetched, sync_pass, cursor_sent, _lossless_json(record)))
    return _to_table(TABLES["raw_responses"], rows)


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
    flattener = _Flattener(system_zone(system_timezone))
    for index, (record, fetched) in enumerate(_with_fetched_at(records, fetched_at)):
        flattener.add(index, record, fetched)
    return flattener.result()


def flatten_raw(raw: pa.Table | pa.RecordBatch, *, system_timezone: str = "UTC") -> FlatTables:
    """Flatten raw_responses rows: parses each `record_json` and uses the row's `fetched_at`.

    `raw` needs the columns `record_json` (string) and `fetched_at` (timestamp with time zone); other
    columns are ignored. Same result and errors as `flatten_records`, plus FlattenError when a column
    is missing or a `record_json` is not valid JSON (names the row index, never the content).
    """
    for name in ("record_json", "fetched_at"):
        if name not in raw.schema.names:
            raise FlattenError(
                f"raw table has no {name!r} column; pass a table with TABLES['raw_responses'].arrow_schema"
            )
    texts = raw.column("record_json").to_pylist()
    records = (_parse_record_json(text, index) for index, text in enumerate(texts))
    fetched_at = raw.column("fetched_at").to_pylist()
    return flatten_records(records, fetched_at=fetched_at, system_timezone=system_timezone)


class _Flattener:
    """Accumulates the rows (tuples in schema column order) of the five flat tables, record by record.
    Datetimes in rows are naive UTC (see _naive_utc)."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.stats = FlattenStats()
        self.rows: dict[str, list[tuple]] = {name: [] for name in FLAT_TABLE_NAMES}

    def add(self, index: int, record: Any, fetched_at: datetime) -> None:
        number = _record_number(record, index)
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
            rows.append(
                (number, position, primary, secondary_position, secondary_driver, source, extra, fetched_at)
            )
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


def _lossless_json(record: dict) -> str:
    """Compact JSON of a record, readable as UTF-8 (see raw_rows)."""
    text = json.dumps(record, ensure_ascii=False, separators=_COMPACT)
    if not text.isascii() and _SURROGATE.search(text):
        return json.dumps(record, separators=_COMPACT)
    return text


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
    return value.astimezone(timezone.utc).replace(tzinfo=None)


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
    """The number in a numeric string such as "7", " 7.5 " or "1e1"; None for other text."""
    if _NUMBER_TEXT.fullmatch(text.strip()):
        return float(text)
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
