"""Pages of the sync API: the ``Page`` a caller gets, reading a page body (msgspec's split into record texts,
else orjson or ``json``, always to what ``json.loads`` gives), the cursor of a page, and the detection of a
page that repeats the one before it.

Sources: "vendor page" /work/shared/reference/customergauge-get-responses-api.txt (body shape, cursor),
"api-notes.md" /work/shared/reference/api-notes.md (a cursor never goes back or becomes null).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Optional

import msgspec
import orjson
import pyarrow as pa

from cg_dagster.lib.client.errors import BodyProblem, CustomerGaugeCursorError
from cg_dagster.lib.client.params import is_int

_DIGITS_ONLY = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))  # bytes.translate table
_LONG_DIGIT_RUN = b"0" * 19  # 19 digits: the shortest integer that can fall outside int64 / uint64
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Page:
    """One non-empty page of the sync API.

    - ``number``: 1-based page number within one ``iter_pages`` call.
    - ``cursor_sent``: the cursor parameter of this request (None on the first page of an initial load).
    - ``cursor_next``: the cursor to resume from after this page; always an int > cursor_sent.
    - ``record_json`` and ``numbers``: for a body ``split_page_body`` reads (every record an object with an
      int64 number_customergauge, valid UTF-8, JSON as strict as ``json.loads``), each record's JSON text as
      received with the whitespace between tokens removed (bytes-like ``msgspec.Raw``, UTF-8), and its
      number_customergauge; both None for any other body.
    - ``records``: the body's "data" list as parsed (dicts shaped like the vendor page's example), equal
      value for value to what ``json.loads`` gives (see ``parse_page_body``); decoded from ``record_json`` on
      first use when that is set (the sync never asks for it then).
    - ``orjson_safe``: True when orjson parsed ``records``, so every value in them round-trips through
      ``orjson.dumps`` losslessly; False when the standard library parsed them (or orjson could not write
      them back): encode such records with ``json``.
    """

    number: int
    cursor_sent: Optional[int]
    cursor_next: int
    record_json: Optional[list[msgspec.Raw]] = field(default=None, repr=False)
    numbers: Optional[list[int]] = field(default=None, repr=False)
    decoded: Optional[tuple[list[dict], bool]] = field(default=None, repr=False)  # (records, orjson_safe)

    @cached_property
    def _parsed(self) -> tuple[list[dict], bool]:
        if self.decoded is not None:
            return self.decoded
        return parse_page_body(b"[" + b",".join(self.record_json) + b"]")

    @property
    def records(self) -> list[dict]:
        return self._parsed[0]

    @property
    def orjson_safe(self) -> bool:
        return self._parsed[1]


def next_cursor(cursor: object, number: int, cursor_sent: Optional[int]) -> int:
    """Return ``next`` of a non-empty page's "cursor" value, or raise CustomerGaugeCursorError (api-notes.md: a
    stored cursor must never become null or smaller, and a page must not loop)."""
    value = cursor.get("next") if isinstance(cursor, dict) else None
    if is_int(value) and (cursor_sent is None or value > cursor_sent) and value < 2**63:
        return value
    received = repr(value) if isinstance(cursor, dict) and "next" in cursor else "no cursor.next"
    raise CustomerGaugeCursorError(
        f"page {number} (cursor sent: {cursor_sent}) has records but cursor.next is {received}; "
        "it must be an integer greater than the cursor sent (and below 2**63, the lake's int64): refusing to "
        "loop, go backwards or store a cursor the lake cannot hold"
    )


def _record_numbers(records: list[dict]) -> frozenset:
    """The integer number_customergauge values of a page's records (others are left to the flattening)."""
    return frozenset(n for record in records if is_int(n := record.get("number_customergauge")))


PageKey = tuple[int, Optional[int], int, frozenset, Sequence]
"""page number, cursor sent, cursor next, record numbers, the records' texts (bytes or ``msgspec.Raw``)"""


def page_key(page: Page) -> PageKey:
    """What ``check_not_repeated`` compares of a page: its record numbers (a set) and its records' texts (as
    received, or the decoded records' ``repr``; compared as a set, only when the numbers match, so a normal
    page costs no hashing of its texts)."""
    if page.record_json is not None:
        numbers, texts = frozenset(page.numbers), page.record_json
    else:
        numbers, texts = _record_numbers(page.records), [repr(record).encode() for record in page.records]
    return page.number, page.cursor_sent, page.cursor_next, numbers, texts


def check_not_repeated(page: PageKey, previous: Optional[PageKey]) -> None:
    """Raise CustomerGaugeCursorError when a page holds the same records as the page before it, identical in
    content: a server that repeats records under a growing cursor would otherwise be paged forever. A page
    with the same responses where one changed (updated upstream and moved to the end between two requests)
    is new data, not a repeat."""
    numbers = page[3]
    if previous is None or not numbers or numbers != previous[3] or _texts(page) != _texts(previous):
        return
    raise CustomerGaugeCursorError(
        "page {} (cursor sent: {}, next: {}) holds the same {} records (number_customergauge) as page {} "
        "(cursor sent: {}, next: {}): the API repeats records under a growing cursor; stopping instead of "
        "paging forever".format(*page[:3], len(numbers), *previous[:3])
    )


def _texts(page: PageKey) -> frozenset[bytes]:
    return frozenset(bytes(text) for text in page[4])  # msgspec.Raw is a buffer, not hashable


def check_page_body(body: object) -> dict:
    """Return a ``{"data": [dict, ...], ...}`` body; anything else is a BodyProblem (vendor page shape)."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise BodyProblem('the body is not a JSON object with a "data" list')
    if not all(isinstance(record, dict) for record in body["data"]):
        raise BodyProblem('the "data" list holds something other than JSON objects')
    return body


def parse_json(raw: bytes) -> object:
    """``json.loads(raw)``; a body it cannot parse (or nested too deep) is a BodyProblem."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter allows
        raise BodyProblem(f"the body is not valid JSON ({len(raw)} bytes)") from None


def parse_page_body(raw: bytes) -> tuple[object, bool]:
    """Parse a JSON body to exactly what ``json.loads(raw)`` gives; return ``(value, orjson_safe)``.

    orjson (about twice as fast) parses the body unless it could differ from the standard library:
    orjson refuses lone surrogate escapes ("\\ud800"), NaN / Infinity, numbers beyond a double (1e400), a
    byte order mark and UTF-16/32, which ``json`` accepts; it silently turns integers outside int64 / uint64
    into floats (so a body holding any run of 19 or more digits, even in a string, goes to ``json``); and
    it reads nesting that ``json`` refuses (RecursionError) but ``orjson.dumps`` cannot write back (deeper
    than 254: such a body goes to ``json`` too). ``orjson_safe`` is True when orjson parsed the body.
    Raises BodyProblem for a body ``json`` cannot parse.
    """
    if raw.translate(_DIGITS_ONLY).find(_LONG_DIGIT_RUN) == -1:
        try:
            value = orjson.loads(raw)
            orjson.dumps(value)
            return value, True
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass
    return parse_json(raw), False


class _SplitBody(msgspec.Struct):
    data: list[msgspec.Raw]
    cursor: Any = None


class _Numbered(msgspec.Struct):
    number_customergauge: int


class _NumberedBody(msgspec.Struct):
    data: list[_Numbered]


_SPLIT = msgspec.json.Decoder(_SplitBody)
_NUMBERED = msgspec.json.Decoder(_NumberedBody)


def split_page_body(raw: bytes) -> Optional[tuple[list[msgspec.Raw], list[int], object]]:
    """Read a page body without decoding its records: ``(record texts, numbers, cursor)``, or None.

    For a JSON object whose "data" is a list of objects, each with an integer number_customergauge in the
    int64 range (the last one if the key is repeated, as ``json.loads`` reads it), returns each record's JSON
    text as received but with the whitespace between tokens removed (strings, numbers and escapes are kept
    byte for byte; ``msgspec.Raw`` views of one compacted copy of the body: bytes-like, ``bytes(text)`` copies
    one), each record's number_customergauge (ints), and the body's "cursor" value decoded (None when absent).
    msgspec (well kept; about 10x faster than decoding the records with orjson) reads it.
    Returns None, and ``parse_page_body`` reads the body instead, for anything else: another shape, a record
    without a valid id, bytes that are not UTF-8, or JSON that msgspec refuses although ``json.loads`` may
    read it (NaN, Infinity, lone surrogate escapes, a byte order mark, nesting deeper than msgspec allows).
    msgspec refuses all JSON that ``json.loads`` refuses, so a text returned here always parses to the
    record ``json.loads`` gives (test_client_split.py).
    """
    try:
        compact = msgspec.json.format(raw, indent=-1)
        split = _SPLIT.decode(compact)
        numbers = [record.number_customergauge for record in _NUMBERED.decode(compact).data]
    except (msgspec.MsgspecError, RecursionError):
        return None
    if numbers and (min(numbers) < _INT64_MIN or max(numbers) > _INT64_MAX) or not _is_utf8(compact):
        return None
    return split.data, numbers, split.cursor


def _is_utf8(raw: bytes) -> bool:
    """True when ``raw`` is valid UTF-8 (Arrow's validation: msgspec does not check skipped strings)."""
    offsets = pa.array([0, len(raw)], pa.int64()).buffers()[1]
    try:
        pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(raw)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


@dataclass(frozen=True)
class PageBody:
    """A page body as read: the "cursor" value, and the records as ``split_page_body``'s texts and numbers
    or else as ``parse_page_body``'s (records, orjson_safe)."""

    cursor: object
    record_json: Optional[list[msgspec.Raw]] = None
    numbers: Optional[list[int]] = None
    decoded: Optional[tuple[list[dict], bool]] = None
