"""Client for the CustomerGauge v7 sync API (``GET /v7/rest/sync/responses``).

No Dagster import: usable and testable alone. Sources of the API facts used here:

- "vendor page": /work/shared/reference/customergauge-get-responses-api.txt
- "api-notes.md": /work/shared/reference/api-notes.md

Typical use::

    client = CustomerGaugeClient(client_id=..., client_secret=..., api_base_url=..., auth_base_url=...)
    with client:
        for page in client.iter_pages(SyncParams(per_page=1000), cursor=stored_cursor):
            write(page.records)  # meanwhile the next page is being fetched
            stored_cursor = page.cursor_next

Secrets (client secret, access token) never appear in logs, exception messages or reprs.
"""

import datetime
import email.utils
import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from http.client import IncompleteRead
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import urljoin, urlsplit

import msgspec
import orjson
import pyarrow as pa
import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

logger = logging.getLogger("cg_dagster.client")

REGIONS = ("eu", "us", "au")  # api-notes.md
WITH_VALUES = ("selected_drivers", "tags", "questions", "properties")  # vendor page
PERIOD_FIELDS = ("date_creation", "date_order", "date_sent", "date_survey_response")  # vendor page

RESPONSES_PATH = "/v7/rest/sync/responses"  # vendor page
TOKEN_PATH = "/oauth2/token"  # vendor page
MAX_PER_PAGE = 1000  # vendor page: "Number from 1 to 1000"
DEFAULT_TOKEN_LIFETIME = 3600.0  # seconds; api-notes.md: tokens live 1 hour, expires_in is optional
TOKEN_REFRESH_MARGIN = 60.0  # seconds of lifetime left below which a cached token is refreshed
RETRY_STATUSES = (429, 500, 502, 503, 504)  # api-notes.md: 429 rate limit, 504 gateway on slow pages
MAX_BACKOFF = 120.0  # seconds; the same cap as urllib3's Retry.DEFAULT_BACKOFF_MAX
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is cut to this (see _CappedRetry)
ERROR_TEXT_LIMIT = 200  # characters of a non-JSON error body quoted in an exception message

_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------------
# Errors


class CustomerGaugeError(Exception):
    """Base class of every error raised by this module."""


class CustomerGaugeConfigError(CustomerGaugeError, ValueError):
    """A setting is invalid. The message names the setting and how to fix it."""


class CustomerGaugeAuthError(CustomerGaugeError):
    """The token endpoint refused the client credentials, or the API answered 401 after a token refresh."""


class CustomerGaugeAPIError(CustomerGaugeError):
    """The API answered a non-2xx status (after retries).

    Attributes: ``status`` (HTTP status, int), ``path`` (URL path, no host or query string),
    ``api_message`` (the API's own message, Laravel ``errors`` flattened in; None when the body had none).
    """

    def __init__(self, method: str, path: str, status: int, api_message: Optional[str]):
        self.status = status
        self.path = path
        self.api_message = api_message
        text = f"{method} {path} answered {status}"
        super().__init__(f"{text}: {api_message}" if api_message else f"{text} with an empty body")


class CustomerGaugeConnectionError(CustomerGaugeError):
    """No HTTP answer at all (connection refused, timeout, ...) after the urllib3 retries."""


class CustomerGaugeCursorError(CustomerGaugeError):
    """A non-empty page's ``cursor.next`` is missing, not an integer, or not past the cursor sent; or a page
    holds the same records (number_customergauge) as the page before it, under a growing cursor."""


class CustomerGaugeRedirectError(CustomerGaugeError):
    """The API answered a request with a redirect (3xx), which is never followed: the request carries the
    access token (data) or the client secret (token POST)."""


class CustomerGaugeBodyError(CustomerGaugeError):
    """A body broke while being read, or was not the expected JSON shape, on every attempt."""


class _BodyProblem(Exception):
    """Internal: a body that may be fine when requested again (see ``_retry_body``)."""


# --------------------------------------------------------------------------------------------------
# Settings


def default_base_urls(region: str) -> tuple[str, str]:
    """Return ``(api_base_url, auth_base_url)`` for a CustomerGauge region (api-notes.md).

    ``region`` is one of REGIONS ("eu", "us", "au"). Raises CustomerGaugeConfigError otherwise.
    """
    if region not in REGIONS:
        raise CustomerGaugeConfigError(
            f"region must be one of {', '.join(REGIONS)}, got {region!r}: "
            "use the region of your CustomerGauge system (api-notes.md)"
        )
    return f"https://api.{region}.customergauge.com", f"https://auth.{region}.customergauge.com"


def validate_base_url(url: str, setting: str) -> str:
    """Check a base URL and return it without a trailing "/".

    https is accepted for any host; plain http only for loopback hosts (127.0.0.0/8, ::1, localhost),
    i.e. the local sandbox. A path prefix is allowed; a query string, fragment or user:password@ is not.
    Raises CustomerGaugeConfigError naming ``setting``. The URL is not echoed if it holds credentials.
    """
    if not isinstance(url, str) or not url.strip():
        raise CustomerGaugeConfigError(f"{setting} must be a URL like https://api.eu.customergauge.com")
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise CustomerGaugeConfigError(f"{setting} is not a valid URL ({exc}), got {url!r}") from None
    if parts.username is not None or parts.password is not None:
        raise CustomerGaugeConfigError(f"{setting} must not hold user:password@; pass credentials separately")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CustomerGaugeConfigError(
            f"{setting} must be an absolute https:// URL, got {url!r}: e.g. https://api.eu.customergauge.com"
        )
    if parts.query or parts.fragment:
        raise CustomerGaugeConfigError(f"{setting} must not have a query string or fragment, got {url!r}")
    if port == 0 or not _HOST_NAME.fullmatch(parts.hostname) and not _is_ip(parts.hostname):
        raise CustomerGaugeConfigError(
            f"{setting} has an invalid host or port, got {url!r}: e.g. https://api.eu.customergauge.com"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise CustomerGaugeConfigError(
            f"{setting} uses plain http for the non-loopback host {parts.hostname!r}: use https "
            "(http is only allowed for 127.0.0.0/8, ::1 and localhost, i.e. the local sandbox)"
        )
    return url.strip().rstrip("/")


_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def _is_ip(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _is_int(value: object) -> bool:
    """True for int but not bool (bool is an int subclass)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Period:
    """The ``period[field]``, ``period[start]``, ``period[end]`` filter (vendor page).

    ``field`` is one of PERIOD_FIELDS; ``start`` and ``end`` are inclusive dates with start <= end
    (dates are in the CustomerGauge system's time zone, api-notes.md). Raises CustomerGaugeConfigError.
    """

    field: str
    start: datetime.date
    end: datetime.date

    def __post_init__(self):
        if self.field not in PERIOD_FIELDS:
            raise CustomerGaugeConfigError(
                f"period[field] must be one of {', '.join(PERIOD_FIELDS)}, got {self.field!r} (vendor page)"
            )
        for name, value in (("period[start]", self.start), ("period[end]", self.end)):
            if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
                raise CustomerGaugeConfigError(f"{name} must be a datetime.date, got {value!r}")
        if self.start > self.end:
            raise CustomerGaugeConfigError(
                f"period[start] {self.start.isoformat()} is after period[end] {self.end.isoformat()}: "
                "swap them or fix the dates"
            )

    @classmethod
    def from_strings(cls, field: Optional[str], start: Optional[str], end: Optional[str]) -> "Period | None":
        """Build a Period from config strings; return None when all three are None or "".

        Dates must be exactly YYYY-MM-DD (vendor page). Giving only some of the three raises
        CustomerGaugeConfigError naming the missing ones, as does a malformed date.
        """
        given = {"period[field]": field, "period[start]": start, "period[end]": end}
        missing = [name for name, value in given.items() if value is None or str(value).strip() == ""]
        if len(missing) == 3:
            return None
        if missing:
            raise CustomerGaugeConfigError(
                f"{' and '.join(missing)} missing: give all three of period[field], period[start] and "
                "period[end], or none of them"
            )
        return cls(field.strip(), _parse_date(start, "period[start]"), _parse_date(end, "period[end]"))


def _parse_date(text: str, setting: str) -> datetime.date:
    text = str(text).strip()
    if _DATE_PATTERN.fullmatch(text):
        try:
            return datetime.date.fromisoformat(text)
        except ValueError:
            pass
    raise CustomerGaugeConfigError(f"{setting} must be a date written YYYY-MM-DD (vendor page), got {text!r}")


@dataclass(frozen=True)
class SyncParams:
    """Every query parameter sent on every page except the cursor (vendor page; api-notes.md says all of
    them must be repeated, unchanged, on every page).

    - ``per_page``: records per page, 1..1000.
    - ``with_``: expansions to request, a subset of WITH_VALUES without duplicates; () requests none
      (records then carry no drivers, tags and topics, questions or properties/segments).
    - ``number_customergauge``: only this record (positive int) or None.
    - ``filter``: an Outbound filter reference (non-empty string) or None.
    - ``period``: a Period or None.

    Raises CustomerGaugeConfigError naming the field and the fix.
    """

    per_page: int = MAX_PER_PAGE
    with_: tuple[str, ...] = WITH_VALUES
    number_customergauge: Optional[int] = None
    filter: Optional[str] = None
    period: Optional[Period] = None

    def __post_init__(self):
        if not _is_int(self.per_page) or not 1 <= self.per_page <= MAX_PER_PAGE:
            raise CustomerGaugeConfigError(
                f"per_page must be an integer from 1 to {MAX_PER_PAGE} (vendor page), got {self.per_page!r}"
            )
        object.__setattr__(self, "with_", _check_with(self.with_))
        if self.number_customergauge is not None and not (
            _is_int(self.number_customergauge) and self.number_customergauge > 0
        ):
            raise CustomerGaugeConfigError(
                f"number_customergauge must be a positive integer (a CGID) or None, "
                f"got {self.number_customergauge!r}"
            )
        if self.filter is not None and (not isinstance(self.filter, str) or not self.filter.strip()):
            raise CustomerGaugeConfigError(
                "filter must be the reference of an Outbound filter (vendor page) or None, "
                f"got {self.filter!r}"
            )
        if self.period is not None and not isinstance(self.period, Period):
            raise CustomerGaugeConfigError(
                f"period must be a Period (see Period.from_strings) or None, got {self.period!r}"
            )

    def query(self, cursor: Optional[int]) -> list[tuple[str, str]]:
        """Return the query string pairs, in this order: per_page, cursor (unless None), with[] (one per
        value), number_customergauge, filter, period[field], period[start], period[end] (unset ones left out).
        """
        pairs = [("per_page", str(self.per_page))]
        if cursor is not None:
            pairs.append(("cursor", str(cursor)))
        pairs += [("with[]", value) for value in self.with_]
        if self.number_customergauge is not None:
            pairs.append(("number_customergauge", str(self.number_customergauge)))
        if self.filter is not None:
            pairs.append(("filter", self.filter))
        if self.period is not None:
            pairs.append(("period[field]", self.period.field))
            pairs.append(("period[start]", self.period.start.isoformat()))
            pairs.append(("period[end]", self.period.end.isoformat()))
        return pairs


def _check_with(values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, (tuple, list)):
        raise CustomerGaugeConfigError(
            f"with_ must be a tuple of values from {', '.join(WITH_VALUES)}, got {values!r}: "
            "e.g. ('selected_drivers', 'tags')"
        )
    for value in values:
        if value not in WITH_VALUES:
            hint = " (use 'selected_drivers')" if value == "drivers" else ""
            raise CustomerGaugeConfigError(
                f"with_ holds the unknown value {value!r}{hint}: allowed are {', '.join(WITH_VALUES)} "
                "(vendor page)"
            )
    if len(set(values)) != len(values):
        raise CustomerGaugeConfigError(
            f"with_ must not repeat a value, got {tuple(values)!r}: drop the duplicates"
        )
    return tuple(values)


# --------------------------------------------------------------------------------------------------
# Pages


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


def _next_cursor(cursor: object, number: int, cursor_sent: Optional[int]) -> int:
    """Return ``next`` of a non-empty page's "cursor" value, or raise CustomerGaugeCursorError (api-notes.md: a
    stored cursor must never become null or smaller, and a page must not loop)."""
    value = cursor.get("next") if isinstance(cursor, dict) else None
    if _is_int(value) and (cursor_sent is None or value > cursor_sent) and value < 2**63:
        return value
    received = repr(value) if isinstance(cursor, dict) and "next" in cursor else "no cursor.next"
    raise CustomerGaugeCursorError(
        f"page {number} (cursor sent: {cursor_sent}) has records but cursor.next is {received}; "
        "it must be an integer greater than the cursor sent (and below 2**63, the lake's int64): refusing to "
        "loop, go backwards or store a cursor the lake cannot hold"
    )


def _record_numbers(records: list[dict]) -> frozenset:
    """The integer number_customergauge values of a page's records (others are left to the flattening)."""
    return frozenset(n for record in records if _is_int(n := record.get("number_customergauge")))


_PageKey = tuple[int, Optional[int], int, frozenset, frozenset]
"""page number, cursor sent, cursor next, record numbers, digests of the records' texts"""


def _page_key(page: Page) -> _PageKey:
    """What ``_check_not_repeated`` compares of a page: its record numbers and a digest of each record (its
    text as received, or the decoded record's ``repr``), both as sets (order does not matter)."""
    if page.record_json is not None:
        numbers, texts = frozenset(page.numbers), page.record_json
    else:
        numbers, texts = _record_numbers(page.records), [repr(record).encode() for record in page.records]
    digests = frozenset(hashlib.blake2b(text, digest_size=16).digest() for text in texts)
    return page.number, page.cursor_sent, page.cursor_next, numbers, digests


def _check_not_repeated(page: _PageKey, previous: Optional[_PageKey]) -> None:
    """Raise CustomerGaugeCursorError when a page holds the same records as the page before it, identical in
    content: a server that repeats records under a growing cursor would otherwise be paged forever. A page
    with the same responses where one changed (updated upstream and moved to the end between two requests)
    is new data, not a repeat."""
    numbers = page[3]
    if previous is None or not numbers or page[3:] != previous[3:]:
        return
    raise CustomerGaugeCursorError(
        "page {} (cursor sent: {}, next: {}) holds the same {} records (number_customergauge) as page {} "
        "(cursor sent: {}, next: {}): the API repeats records under a growing cursor; stopping instead of "
        "paging forever".format(*page[:3], len(numbers), *previous[:3])
    )


def _check_page_body(body: object) -> dict:
    """Return a ``{"data": [dict, ...], ...}`` body; anything else is a _BodyProblem (vendor page shape)."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise _BodyProblem('the body is not a JSON object with a "data" list')
    if not all(isinstance(record, dict) for record in body["data"]):
        raise _BodyProblem('the "data" list holds something other than JSON objects')
    return body


# --------------------------------------------------------------------------------------------------
# Token cache (per process)


@dataclass
class _CachedToken:
    access_token: str = field(repr=False)
    lifetime: float  # seconds, expires_in of the token response (DEFAULT_TOKEN_LIFETIME if absent)
    expires_at: float  # _clock() value


_clock = time.monotonic  # tests replace it to move time forward
_token_cache: dict[tuple[str, str, str], _CachedToken] = {}
_token_lock = threading.Lock()


def clear_token_cache() -> None:
    """Forget every cached access token of this process (tests use it between cases)."""
    with _token_lock:
        _token_cache.clear()


def _is_fresh(token: _CachedToken) -> bool:
    """True while more than the refresh margin is left. The margin is 60 s, or half the lifetime for
    tokens living under 2 minutes, so that a short-lived token is not fetched again for every page."""
    margin = min(TOKEN_REFRESH_MARGIN, token.lifetime / 2)
    return token.expires_at - _clock() > margin


def _token_lifetime(body: dict) -> float:
    value = body.get("expires_in")
    if value is None:
        return DEFAULT_TOKEN_LIFETIME
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if seconds > 0:
        return seconds
    logger.warning("token response has an unusable expires_in; assuming %.0f s", DEFAULT_TOKEN_LIFETIME)
    return DEFAULT_TOKEN_LIFETIME


# --------------------------------------------------------------------------------------------------
# HTTP helpers


def _backoff_seconds(backoff_factor: float, attempt: int) -> float:
    """Sleep before re-request number ``attempt`` (1-based), as urllib3's Retry.get_backoff_time:
    0 for the first, then backoff_factor * 2 ** (attempt - 1), at most MAX_BACKOFF."""
    if attempt <= 1:
        return 0.0
    return min(MAX_BACKOFF, backoff_factor * 2 ** (attempt - 1))


def _api_message(response: requests.Response, raw: bytes) -> Optional[str]:
    """The API's message: JSON "message" plus Laravel "errors" flattened (api-notes.md), else the first
    ERROR_TEXT_LIMIT characters of the body; None for an empty body."""
    try:
        body = json.loads(raw)
    except ValueError:
        text = raw.decode(response.encoding or "utf-8", errors="replace").strip()
        return text[:ERROR_TEXT_LIMIT] or None
    if not isinstance(body, dict):
        return json.dumps(body, ensure_ascii=False)[:ERROR_TEXT_LIMIT]
    message = body.get("message") or body.get("error")
    details = _laravel_errors(body.get("errors"))
    if message and details:
        return f"{message} ({details})"
    return str(message or details or json.dumps(body, ensure_ascii=False)[:ERROR_TEXT_LIMIT])


def _laravel_errors(errors: object) -> str:
    """{"per_page": ["The per page must be..."]} -> "per_page: The per page must be...";
    several fields are joined with "; "."""
    if not isinstance(errors, dict):
        return ""
    parts = []
    for name, messages in errors.items():
        text = " ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
        parts.append(f"{name}: {text}")
    return "; ".join(parts)


BODY_DEADLINE_FACTOR = 3  # a whole body must arrive within this many times the request timeout


def _read_body(response: requests.Response, timeout: float) -> bytes:
    """Read a streamed body; a body that breaks mid-read, or trickles in for longer than
    BODY_DEADLINE_FACTOR * ``timeout`` seconds in all (the timeout of requests bounds each read only), is a
    _BodyProblem. Always closes the response."""
    deadline = time.monotonic() + BODY_DEADLINE_FACTOR * timeout
    chunks = []
    try:
        # read1: whatever has arrived, at most 256 KiB (read() would wait for all 256 KiB).
        while chunk := response.raw.read1(256 * 1024, decode_content=True):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise _BodyProblem(f"the body took longer than {BODY_DEADLINE_FACTOR * timeout:g} s to arrive")
        return b"".join(chunks)
    except (
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ConnectionError,
        urllib3.exceptions.HTTPError,  # ProtocolError, ReadTimeoutError, DecodeError, ...
        IncompleteRead,
        OSError,
    ) as exc:
        raise _BodyProblem(f"the body broke while being read ({type(exc).__name__})") from None
    finally:
        response.close()


def _parse_json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter allows
        raise _BodyProblem(f"the body is not valid JSON ({len(raw)} bytes)") from None


_DIGITS_ONLY = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))  # bytes.translate table
_LONG_DIGIT_RUN = b"0" * 19  # 19 digits: the shortest integer that can fall outside int64 / uint64


def parse_page_body(raw: bytes) -> tuple[object, bool]:
    """Parse a JSON body to exactly what ``json.loads(raw)`` gives; return ``(value, orjson_safe)``.

    orjson (about twice as fast) parses the body unless it could differ from the standard library:
    orjson refuses lone surrogate escapes ("\\ud800"), NaN / Infinity, numbers beyond a double (1e400), a
    byte order mark and UTF-16/32, which ``json`` accepts; it silently turns integers outside int64 / uint64
    into floats (so a body holding any run of 19 or more digits, even in a string, goes to ``json``); and
    it reads nesting that ``json`` refuses (RecursionError) but ``orjson.dumps`` cannot write back (deeper
    than 254: such a body goes to ``json`` too). ``orjson_safe`` is True when orjson parsed the body.
    Raises _BodyProblem for a body ``json`` cannot parse.
    """
    if raw.translate(_DIGITS_ONLY).find(_LONG_DIGIT_RUN) == -1:
        try:
            value = orjson.loads(raw)
            orjson.dumps(value)
            return value, True
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass
    return _parse_json(raw), False


class _SplitBody(msgspec.Struct):
    data: list[msgspec.Raw]
    cursor: Any = None


class _Numbered(msgspec.Struct):
    number_customergauge: int


class _NumberedBody(msgspec.Struct):
    data: list[_Numbered]


_SPLIT = msgspec.json.Decoder(_SplitBody)
_NUMBERED = msgspec.json.Decoder(_NumberedBody)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


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
class _PageBody:
    """A page body as read: the "cursor" value, and the records as ``split_page_body``'s texts and numbers
    or else as ``parse_page_body``'s (records, orjson_safe)."""

    cursor: object
    record_json: Optional[list[msgspec.Raw]] = None
    numbers: Optional[list[int]] = None
    decoded: Optional[tuple[list[dict], bool]] = None


def _scrubbed(exc: requests.exceptions.RequestException) -> requests.exceptions.RequestException:
    """Drop the request (its headers hold the token, a token POST's body the secret) and response from a
    requests exception before chaining it."""
    exc.request = None
    exc.response = None
    return exc


# --------------------------------------------------------------------------------------------------
# Client


_RETRY_AFTER_SECONDS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*", re.ASCII)


class _CappedRetry(Retry):
    """urllib3's Retry, honouring ``Retry-After`` up to MAX_RETRY_AFTER seconds.

    The API may answer 429 with or without Retry-After (api-notes.md). RFC 9110 allows whole seconds or an
    HTTP date; fractional seconds ("0.5") are honoured too. Any other value ("1m0s", "-1", "abc", empty)
    counts as no header: the exponential backoff applies (urllib3's own parser would raise and end the run).
    Waiting an hour on a long value would stall an hourly sync past its window; with the cap the run retries
    sooner, fails with the 429 once the retries are spent, commits nothing, and the next run resumes from
    the same cursor.
    """

    def parse_retry_after(self, retry_after: str) -> float:
        """Seconds to wait (0..MAX_RETRY_AFTER) for whole or fractional seconds or an HTTP date (a past date:
        0, i.e. the backoff). Raises urllib3's InvalidHeader, ValueError or OverflowError for other text,
        including a date no calendar has (``Mon, 32 Dec 2026 99:00:00 GMT``: ``email.utils.parsedate_to_datetime``
        refuses it where urllib3's reading would roll it into a later date)."""
        seconds = _RETRY_AFTER_SECONDS.fullmatch(retry_after)
        if not seconds:
            email.utils.parsedate_to_datetime(retry_after)  # ValueError for an impossible date (32 Dec, 99:00)
        return min(float(seconds[1]) if seconds else super().parse_retry_after(retry_after), MAX_RETRY_AFTER)

    def get_retry_after(self, response) -> Optional[float]:
        """The Retry-After of ``response`` in seconds, or None (backoff) when absent or unusable."""
        try:
            return super().get_retry_after(response)
        except (urllib3.exceptions.InvalidHeader, ValueError, OverflowError):
            logger.warning(
                "%d with an unusable Retry-After %r: waiting the exponential backoff instead",
                response.status, response.headers.get("Retry-After", "")[:50],
            )
            return None


class CustomerGaugeClient:
    """CustomerGauge v7 sync API client (OAuth2 client credentials, vendor page).

    - ``client_id`` / ``client_secret``: the Connected App's credentials (non-empty strings).
    - ``api_base_url`` / ``auth_base_url``: see ``default_base_urls`` and ``validate_base_url``.
    - ``timeout``: seconds for connecting and for each read, on every request; a whole response body must
      arrive within BODY_DEADLINE_FACTOR (3) times this, or it counts as a broken body and is requested again.
    - ``max_retries`` / ``backoff_factor``: urllib3 retries of 429/5xx and connection errors (Retry-After is
      honoured), and the same number of re-requests of a page whose body broke or was not the JSON shape.
    - ``user_agent``: the User-Agent header.

    Access tokens are cached per process (shared by all clients with the same auth_base_url, client_id
    and secret). Raises CustomerGaugeConfigError for bad settings. Use as a context manager or call close().
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_base_url: str,
        auth_base_url: str,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff_factor: float = 1.0,
        user_agent: str = "cg_dagster/0.1",
    ):
        _require_text(client_id, "client_id", "the Client ID of your CustomerGauge Connected App")
        _require_text(client_secret, "client_secret", "the Client Secret of your CustomerGauge Connected App")
        _require_text(user_agent, "user_agent", "e.g. cg_dagster/0.1")
        _require_number(timeout, "timeout", minimum=0, strict=True)
        _require_number(backoff_factor, "backoff_factor", minimum=0, strict=False)
        if not _is_int(max_retries) or max_retries < 0:
            raise CustomerGaugeConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.api_base_url = validate_base_url(api_base_url, "api_base_url")
        self.auth_base_url = validate_base_url(auth_base_url, "auth_base_url")
        self.client_id = client_id
        self._client_secret = client_secret
        self._timeout = float(timeout)
        self._max_retries = max_retries
        self._backoff_factor = float(backoff_factor)
        self._cache_key = (self.auth_base_url, client_id, hashlib.sha256(client_secret.encode()).hexdigest())
        self._session = self._new_session(user_agent)

    def __repr__(self) -> str:
        return (
            f"CustomerGaugeClient(api_base_url={self.api_base_url!r}, auth_base_url={self.auth_base_url!r}, "
            f"client_id={self.client_id!r})"
        )

    def __enter__(self) -> "CustomerGaugeClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session (the process token cache is kept)."""
        self._session.close()

    def _new_session(self, user_agent: str) -> requests.Session:
        retry = _CappedRetry(
            total=self._max_retries,
            backoff_factor=self._backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # every method: the token POST is safe to repeat too
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        session = _NoRedirectSession()
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
        return session

    # ---- paging

    def iter_pages(
        self, params: SyncParams, cursor: Optional[int] = None, *, max_pages: Optional[int] = None
    ) -> Iterator[Page]:
        """Yield the non-empty pages from ``cursor`` (None: from the first record) until the API answers an
        empty "data" list (vendor page), or after ``max_pages`` non-empty pages.

        Each page is requested with ``params.query(cursor)``, so only the cursor changes between pages.
        Nothing is requested before the first ``next()``. While the caller holds page n, page n+1 is fetched
        in a worker thread (never more than one page ahead, none past ``max_pages``), so waiting for the
        API overlaps the caller's work; pages are never accumulated. An error is raised at the page it
        belongs to, after the pages before it were yielded. Closing the generator (``break``, an exception in
        the caller, garbage collection) waits for the request in flight, if any, and sends no other.
        The empty last page is not yielded and its cursor is ignored, so the last Page's ``cursor_next`` is
        the cursor to store.
        Raises CustomerGaugeConfigError (bad arguments, at call time), CustomerGaugeCursorError (also for a
        page repeating the records of the one before), CustomerGaugeAPIError, CustomerGaugeAuthError,
        CustomerGaugeBodyError, CustomerGaugeConnectionError, CustomerGaugeRedirectError.
        """
        if not isinstance(params, SyncParams):
            raise CustomerGaugeConfigError(f"params must be a SyncParams, got {type(params).__name__}")
        if cursor is not None and not _is_int(cursor):
            raise CustomerGaugeConfigError(
                f"cursor must be an integer returned by the API (vendor page) or None, got {cursor!r}"
            )
        if max_pages is not None and (not _is_int(max_pages) or max_pages < 1):
            raise CustomerGaugeConfigError(f"max_pages must be a positive integer or None, got {max_pages!r}")
        return self._pages(params, cursor, max_pages)

    def _pages(self, params: SyncParams, cursor: Optional[int], max_pages: Optional[int]) -> Iterator[Page]:
        previous = None  # the _PageKey of the page yielded last
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cg-page-prefetch") as worker:
            pending = worker.submit(self._fetch_page, params, cursor, 1)
            try:
                while pending is not None:
                    fetched = pending.result()  # the worker's exception, if any, is raised here
                    if fetched is None:
                        return
                    page, key = fetched
                    _check_not_repeated(key, previous)
                    pending = None
                    if max_pages is None or page.number < max_pages:
                        pending = worker.submit(self._fetch_page, params, page.cursor_next, page.number + 1)
                    yield page
                    previous = key
            finally:
                if pending is not None:
                    pending.cancel()  # not started: never sent; in flight: the with-block waits for it

    def _fetch_page(
        self, params: SyncParams, cursor: Optional[int], number: int
    ) -> Optional[tuple[Page, _PageKey]]:
        """Request and parse page ``number`` (worker thread): (the Page, its ``_page_key``), or None for the
        empty last page."""
        query = params.query(cursor)
        body = self._retry_body(f"page {number}", lambda: self._get_page_body(query))
        count = len(body.record_json if body.record_json is not None else body.decoded[0])
        if not count:
            logger.debug("empty page after cursor %s: sync finished after %d page(s)", cursor, number - 1)
            return None
        cursor_next = _next_cursor(body.cursor, number, cursor)
        logger.debug("page %d: cursor sent %s, %d records, next %s", number, cursor, count, cursor_next)
        page = Page(number, cursor, cursor_next, body.record_json, body.numbers, body.decoded)
        return page, _page_key(page)

    def _get_page_body(self, query: list[tuple[str, str]]) -> "_PageBody":
        """One GET of the responses endpoint, with one token refresh on a 401, read by ``split_page_body``,
        or by ``parse_page_body`` when that cannot."""
        token = self.access_token()
        response = self._get_responses(query, token)
        if response.status_code == 401:
            _read_body(response, self._timeout)
            logger.info("API answered 401; fetching a new access token and repeating the request once")
            self._forget_token(token)
            token = self.access_token()
            response = self._get_responses(query, token)
            if response.status_code == 401:
                _read_body(response, self._timeout)
                raise CustomerGaugeAuthError(
                    f"GET {self._path(RESPONSES_PATH)} answered 401 Unauthenticated even with a fresh "
                    "access token: check that the Connected App may use the sync API"
                )
        raw = _read_body(response, self._timeout)
        if not response.ok:
            raise self._api_error("GET", RESPONSES_PATH, response, raw, token)
        split = split_page_body(raw)
        if split is not None:
            return _PageBody(cursor=split[2], record_json=split[0], numbers=split[1])
        body, orjson_safe = parse_page_body(raw)
        body = _check_page_body(body)
        return _PageBody(cursor=body.get("cursor"), decoded=(body["data"], orjson_safe))

    def _get_responses(self, query: list[tuple[str, str]], token: str) -> requests.Response:
        """GET the responses endpoint with the token; a redirect is not followed (requests would drop the
        token, or hand it to another origin) but raised as CustomerGaugeRedirectError."""
        headers = {"Authorization": f"Bearer {token}"}
        response = self._request("GET", RESPONSES_PATH, params=query, headers=headers, allow_redirects=False)
        if 300 <= response.status_code < 400:
            response.close()
            raise CustomerGaugeRedirectError(
                _redact(_redirect_text("GET", response, "the access token"), token)
                + "; check api_base_url (CUSTOMERGAUGE_API_BASE_URL)"
            )
        return response

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send one request (urllib3 retries included) with a streamed body; connection-level failures
        become CustomerGaugeConnectionError."""
        base = self.auth_base_url if path == TOKEN_PATH else self.api_base_url
        try:
            return self._session.request(method, base + path, timeout=self._timeout, stream=True, **kwargs)
        except requests.exceptions.RequestException as exc:
            setting = "auth_base_url (CUSTOMERGAUGE_AUTH_BASE_URL)" if path == TOKEN_PATH else "api_base_url (CUSTOMERGAUGE_API_BASE_URL)"
            raise CustomerGaugeConnectionError(
                f"{method} {self._path(path)} on {urlsplit(base).netloc} got no answer after {self._max_retries} "
                f"retries: {type(exc).__name__}; check the network and {setting}"
            ) from _scrubbed(exc)

    def _retry_body(self, what: str, fetch: Callable[[], _T]) -> _T:
        """Call ``fetch`` again (same request) while it raises _BodyProblem, at most max_retries more
        times, sleeping like urllib3's backoff; then raise CustomerGaugeBodyError."""
        for attempt in range(self._max_retries + 1):
            if attempt:
                time.sleep(_backoff_seconds(self._backoff_factor, attempt))
            try:
                return fetch()
            except _BodyProblem as exc:
                problem = str(exc)
                logger.warning("%s: %s (attempt %d of %d)", what, problem, attempt + 1, self._max_retries + 1)
        raise CustomerGaugeBodyError(f"{what}: {problem}, on all {self._max_retries + 1} attempts")

    def _path(self, path: str) -> str:
        base = self.auth_base_url if path == TOKEN_PATH else self.api_base_url
        return urlsplit(base).path + path

    def _api_error(
        self, method: str, path: str, response: requests.Response, raw: bytes, token: Optional[str]
    ) -> CustomerGaugeAPIError:
        """The error for a non-2xx answer, with the token and secret redacted should the body echo them."""
        message = _redact(_redact(_api_message(response, raw), token), self._client_secret)
        return CustomerGaugeAPIError(method, self._path(path), response.status_code, message)

    # ---- token

    def access_token(self) -> str:
        """Return the process-wide cached access token, fetching a new one when it has less than 60 s left
        (see ``_is_fresh``). For tests and diagnostics; never log the value."""
        with _token_lock:
            cached = _token_cache.get(self._cache_key)
            if cached is None or not _is_fresh(cached):
                cached = self._retry_body("token request", self._fetch_token)
                _token_cache[self._cache_key] = cached
            return cached.access_token

    def _forget_token(self, token: str) -> None:
        """Drop ``token`` from the cache unless another client already replaced it."""
        with _token_lock:
            cached = _token_cache.get(self._cache_key)
            if cached is not None and cached.access_token == token:
                del _token_cache[self._cache_key]

    def _fetch_token(self) -> _CachedToken:
        """POST the client credentials to the token endpoint (vendor page)."""
        logger.info("fetching an access token from %s for client_id %s", self.auth_base_url, self.client_id)
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
        }
        # Never follow a redirect with the client secret in the body (it could lead to another origin).
        response = self._request("POST", TOKEN_PATH, data=form, allow_redirects=False)
        raw = _read_body(response, self._timeout)
        if 300 <= response.status_code < 400:
            raise CustomerGaugeRedirectError(
                _redact(_redirect_text("POST", response, "the client secret"), self._client_secret)
                + "; check auth_base_url (CUSTOMERGAUGE_AUTH_BASE_URL)"
            )
        if response.status_code in (400, 401):
            raise CustomerGaugeAuthError(
                f"token endpoint refused the client credentials ({response.status_code} "
                f"{_oauth_error_code(raw)}): check client_id / client_secret"
            )
        if not response.ok:
            raise self._api_error("POST", TOKEN_PATH, response, raw, None)
        body = _parse_json(raw)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise CustomerGaugeAuthError(
                f"POST {self._path(TOKEN_PATH)} answered {response.status_code} without an access_token"
            )
        if not _TOKEN_TEXT.fullmatch(token):  # RFC 6750 b64token; the value is never echoed
            raise CustomerGaugeAuthError(
                f"POST {self._path(TOKEN_PATH)} answered {response.status_code} with an access_token that is "
                "not a bearer token (RFC 6750: letters, digits and -._~+/ only, then '=' padding)"
            )
        lifetime = _token_lifetime(body)
        return _CachedToken(access_token=token, lifetime=lifetime, expires_at=_clock() + lifetime)


class _NoRedirectSession(requests.Session):
    """A session that never follows a redirect nor prepares the request one would lead to: requests does that
    for ``Response.next`` even with ``allow_redirects=False``, and raises a bare ValueError on a malformed
    Location (``http://[::1``); the client raises CustomerGaugeRedirectError for every redirect itself."""

    def resolve_redirects(self, *args, **kwargs) -> Iterator[requests.Response]:
        return iter(())


def _redact(text: Optional[str], secret: Optional[str]) -> Optional[str]:
    """``text`` with every occurrence of ``secret`` replaced by "[redacted]" (an API may echo it)."""
    return text.replace(secret, "[redacted]") if text and secret else text


def _redirect_text(method: str, response: requests.Response, what: str) -> str:
    """"GET <from> was redirected (302) to <to>: ..." with scheme, host and path only: a query string or
    user:password@ may hold secrets. A relative Location is resolved against the request URL."""
    location = response.headers.get("Location")
    try:
        target = _address(urljoin(response.url, location)) if location else "nowhere (no Location header)"
    except ValueError:  # e.g. "http://[::1": urllib cannot split it; not echoed, it may hold a secret
        target = "a malformed address (Location header not a URL)"
    return (
        f"{method} {_address(response.url)} was redirected ({response.status_code}) to {target}: "
        f"redirects are not followed, so {what} is not sent on"
    )


def _address(url: str) -> str:
    """scheme://host:port/path of ``url`` (at most ERROR_TEXT_LIMIT characters), without user:password@,
    query string or fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return (f"{parts.scheme}://{host}{parts.path}" if parts.scheme else parts.path)[:ERROR_TEXT_LIMIT]


_TOKEN_TEXT = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_OAUTH_ERROR_CODE = re.compile(r"[a-z_]{1,50}")  # RFC 6749 5.2 codes: invalid_client, invalid_grant, ...


def _oauth_error_code(raw: bytes) -> str:
    """The OAuth2 "error" code of a refused token request (api-notes.md: likely "invalid_client"). Only a
    code shaped like RFC 6749's (lowercase letters and "_") is echoed, so a body cannot smuggle text."""
    try:
        body = json.loads(raw)
    except ValueError:
        return "no error code"
    code = body.get("error") if isinstance(body, dict) else None
    if isinstance(code, str) and _OAUTH_ERROR_CODE.fullmatch(code):
        return code
    return "no error code" if not code else "an unrecognised error code"


def _require_text(value: object, setting: str, fix: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise CustomerGaugeConfigError(f"{setting} must be a non-empty string: set it to {fix}")


def _require_number(value: object, setting: str, *, minimum: float, strict: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        relation = ">" if strict else ">="
        raise CustomerGaugeConfigError(f"{setting} must be a number {relation} {minimum}, got {value!r}")
