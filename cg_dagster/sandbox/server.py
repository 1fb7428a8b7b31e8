"""A local HTTP stand-in for CustomerGauge's v7 sync API (token endpoint, responses and non-responses endpoints).

Contract sources: the vendor page (endpoint, parameters, example body, 401 body) and api-notes.md (token
response shape, 400 ``invalid_client``, Laravel 422/429 bodies, 504 from a gateway, empty-page cursor
variants, ``drivers`` instead of ``selected_drivers``). Faults are switched on with ``SandboxFaults``.

The non-responses endpoint (api-notes.md: "pages the same way") is served like the responses endpoint, from
its own records in its own cursor order (sandbox/data.py ``as_non_response``); ``with[]``, ``filter`` and
``period[...]`` apply as far as a non-response has the fields (no ``date_survey_response``: a period on it
matches none).

Control endpoints, NOT part of the vendor API, serve the demo and the tests (no auth):
``POST /_sandbox/append?count=N[&endpoint=non-responses]``, ``POST /_sandbox/convert?count=N`` (the N oldest
non-responses not yet converted answer: each becomes a response, appended to the responses, same
number_customergauge; it stays a non-response too) and ``GET /_sandbox/stats``.
"""

import copy
import json
import re
import secrets
import sys
import threading
import time
import traceback
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from cg_dagster import settings
from cg_dagster.sandbox.data import EXPANSIONS, RecordGenerator, as_non_response, as_response

TOKEN_PATH = "/oauth2/token"
RESPONSES_PATH = "/v7/rest/sync/responses"
NON_RESPONSES_PATH = "/v7/rest/sync/non-responses"
ENDPOINTS = {RESPONSES_PATH: "responses", NON_RESPONSES_PATH: "non-responses"}  # path -> endpoint name
APPEND_PATH = "/_sandbox/append"
CONVERT_PATH = "/_sandbox/convert"
STATS_PATH = "/_sandbox/stats"

DEFAULT_PER_PAGE = 1000
"""Page size when ``per_page`` is absent: not on the vendor page, which pages with 1000 and allows 1..1000."""
MAX_PER_PAGE = 1000
MAX_APPEND = 100_000
CLIENT_ID, CLIENT_SECRET = "sandbox-client", "sandbox-secret"  # the credentials it accepts unless told others


def project_env(base_url: str, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> dict[str, str]:
    """The environment variables that point cg_dagster at a sandbox at ``base_url`` (``http://host:port``):
    its credentials and both base URLs (names from cg_dagster/settings.py). Merge it into a process's
    environment; ``CG_LAKE_ROOT`` and the rest are the caller's."""
    return {
        settings.CLIENT_ID.name: client_id,
        settings.CLIENT_SECRET.name: client_secret,
        settings.API_BASE_URL.name: base_url,
        settings.AUTH_BASE_URL.name: base_url,
    }


PERIOD_FIELDS = ("date_creation", "date_order", "date_sent", "date_survey_response")
PERIOD_KEYS = ("field", "start", "end")
FAIL_STATUSES = (500, 502, 503, 504)
EMPTY_NEXT_MODES = ("same", "null", "absent", "no_cursor")
FILTERS = {
    "sandbox-nl": lambda record: _segment(record, "Country") == "NL",
    "sandbox-responses": lambda record: record["status"] == "response",
}
"""Outbound filter references the sandbox knows, and which records they keep."""
REDACTED = "<redacted>"


@dataclass
class SandboxFaults:
    """Faults the sandbox injects; mutable while the server runs.

    Faults apply to the responses endpoint only (the non-responses endpoint is served by the same code). The
    ``*_every`` counters count GET requests to /v7/rest/sync/responses only, 1-based (with
    ``fail_every=3`` requests 3, 6, 9 fail); 0 switches a fault off. When several match the same request
    only the first applies, in this order: fail, rate_limit, drop_body, truncate_json. 5xx and 429 are
    answered before the token is checked (as a gateway or throttle would); drop_body and truncate_json
    only spoil 200 answers. Raises ValueError for an unknown ``fail_status`` or ``empty_next``.

    - ``retry_after_value``: sent verbatim as the 429's ``Retry-After`` (e.g. "0.5", "1m0s", "-1", an HTTP
      date, "" or garbage) instead of ``retry_after``; None uses ``retry_after``. ValueError for CR or LF.
    - ``redirect_to``: every responses request is answered 302 with this ``Location`` (verbatim), before the
      token is checked, as a proxy or a moved host would; None: off. ValueError if it holds CR or LF.
    - ``repeat_page_after``: after N non-empty pages, every further responses request is answered with the
      records of page N again under a growing cursor (``cursor.next`` = cursor sent + 1), as a broken
      server would; 0: off. Pages count from the start or the last ``reset_log()``.
    """

    fail_every: int = 0
    fail_status: int = 503
    rate_limit_every: int = 0
    retry_after: int | None = 1
    token_ttl: int = 3600
    omit_expires_in: bool = False
    latency: float = 0.0
    drop_body_every: int = 0
    truncate_json_every: int = 0
    empty_next: str = "same"
    legacy_drivers: bool = False
    retry_after_value: str | None = None
    redirect_to: str | None = None
    repeat_page_after: int = 0

    def __post_init__(self):
        if self.fail_status not in FAIL_STATUSES:
            raise ValueError(f"fail_status must be one of {FAIL_STATUSES}, got {self.fail_status}")
        if self.empty_next not in EMPTY_NEXT_MODES:
            raise ValueError(f"empty_next must be one of {EMPTY_NEXT_MODES}, got {self.empty_next!r}")
        for name in ("retry_after_value", "redirect_to"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or "\r" in value or "\n" in value):
                raise ValueError(f"{name} must be text without CR or LF (a header value) or None, got {value!r}")
        if not isinstance(self.repeat_page_after, int) or self.repeat_page_after < 0:
            raise ValueError(f"repeat_page_after must be an integer >= 0, got {self.repeat_page_after!r}")


@dataclass(frozen=True)
class RequestLogEntry:
    """One HTTP request the sandbox answered.

    ``query``: decoded (key, value) pairs in the order sent, repeated keys kept. ``authorization``: the
    Authorization header as sent (kept for tests that check token reuse; hidden from repr).
    ``form``: the form fields of a token POST with ``client_secret`` replaced by "<redacted>", else None.
    """

    method: str
    path: str
    query: list[tuple[str, str]]
    status: int
    authorization: str | None = field(repr=False)
    form: dict | None


@dataclass(frozen=True)
class ResponsesQuery:
    """Validated parameters of a sync request (names as on the vendor page)."""

    per_page: int = DEFAULT_PER_PAGE
    cursor: int | None = None
    expansions: frozenset = frozenset()
    number_customergauge: int | None = None
    filter: str | None = None
    period: tuple[str, str, str] | None = None  # (field, start "YYYY-MM-DD", end "YYYY-MM-DD")


class QueryInvalid(Exception):
    """Bad query parameters; ``errors`` maps each bad field to Laravel-style messages (for the 422 body)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("invalid query parameters: " + ", ".join(errors))
        self.errors = errors


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    drop_body: bool = False  # announce the full length, write half, close the connection


class _RecordIndex:
    """The published records of one sync endpoint in cursor order (``_pos``), with their positions and a
    lookup by number_customergauge. Not locked: the sandbox calls it holding its lock."""

    def __init__(self):
        self.records: list[dict] = []
        self.positions: list[int] = []
        self.by_number: dict[int, dict] = {}

    def publish_at_end(self, record: dict) -> None:
        self.records.append(record)
        self.positions.append(record["_pos"])
        self.by_number[record["number_customergauge"]] = record

    def unpublish(self, record: dict) -> None:
        index = bisect_right(self.positions, record["_pos"]) - 1
        del self.records[index]
        del self.positions[index]
        del self.by_number[record["number_customergauge"]]

    def replace(self, old: dict, new: dict) -> None:
        """Put ``new`` in the place of ``old`` (same position and number)."""
        self.records[bisect_right(self.positions, old["_pos"]) - 1] = new
        self.by_number[new["number_customergauge"]] = new

    def find(self, number_customergauge: int) -> dict:
        try:
            return self.by_number[number_customergauge]
        except KeyError:
            raise KeyError(f"no record with number_customergauge={number_customergauge}") from None


class SandboxServer:
    """CustomerGauge-compatible HTTP server on a loopback port, serving records from ``generate_records``.

    ``base_url`` serves /oauth2/token, /v7/rest/sync/responses and /v7/rest/sync/non-responses. Records
    are kept in cursor order and never mutated once published (changes replace them), so pages are served
    without copying. ``non_responses`` (None: a third of ``records``) non-responses are generated from
    their own seeded generator, so the responses are the same whatever their count.
    ``base_date`` (None = 2026-11-01) and ``verbose`` (log each request to stderr) are extras beyond the
    brief. ``client_secret`` never appears in the repr or the request log.
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        records: int = 2500,
        non_responses: int | None = None,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: SandboxFaults | None = None,
        start_key: int = 1000,
        base_date: date | None = None,
        verbose: bool = False,
    ):
        self.faults = faults if faults is not None else SandboxFaults()
        self.requests_log: list[RequestLogEntry] = []
        self.token_requests = 0
        self.verbose = verbose
        self._client_id = client_id
        self._client_secret = client_secret
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._generator = RecordGenerator(seed, start_key=start_key, base_date=base_date)
        # non-responses, and the answers of converted ones: generators of their own (seeded from ``seed``)
        self._non_response_generator = RecordGenerator(seed + 1, start_key=start_key, base_date=base_date)
        self._answers = RecordGenerator(seed + 2, start_key=start_key, base_date=base_date)
        self._index = {name: _RecordIndex() for name in ENDPOINTS.values()}
        self._responses_index = self._index["responses"]
        self._converted: set[int] = set()  # number_customergauge of the non-responses converted
        self._tokens: dict[str, float] = {}  # access token -> expiry (time.monotonic())
        self._responses_count = 0
        self._pages_served = 0  # non-empty pages since start or reset_log (SandboxFaults.repeat_page_after)
        self._last_rows: bytes | None = None  # rows of the last page served, kept for repeat_page_after
        self._row_cache: dict[tuple, tuple[dict, bytes]] = {}  # see _row_json
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for record in self._generator.next_records(records):
            self._responses_index.publish_at_end(record)
        self._append_non_responses(records // 3 if non_responses is None else non_responses)

    def __repr__(self) -> str:
        state = self.base_url if self._httpd else "not started"
        return f"SandboxServer({state}, records={len(self._responses_index.records)}, client_id={self._client_id!r})"

    # --- lifecycle ----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server; RuntimeError before ``start()``."""
        if self._httpd is None:
            raise RuntimeError("SandboxServer is not started: call start() or use it in a with-block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def project_env(self) -> dict[str, str]:
        """``project_env`` for this running server and its credentials."""
        return project_env(self.base_url, self._client_id, self._client_secret)

    def start(self) -> "SandboxServer":
        """Bind and serve in a daemon thread; returns self. OSError if the port is taken."""
        if self._httpd is not None:
            return self
        httpd = ThreadingHTTPServer((self._host, self._port), _Handler)
        httpd.daemon_threads = True
        httpd.sandbox = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="cg-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- data changes (ground truth for tests) -------------------------------------------------------

    def append_records(self, n: int) -> list[dict]:
        """Add ``n`` new responses after the last cursor position; return them (API shape, copies)."""
        with self._lock:
            new = self._generator.next_records(n)
            for record in new:
                self._responses_index.publish_at_end(record)
        return [_public_copy(record) for record in new]

    def append_non_responses(self, n: int) -> list[dict]:
        """Add ``n`` new non-responses after the last non-responses position; return them (API shape, copies)."""
        with self._lock:
            new = self._append_non_responses(n)
        return [_public_copy(record) for record in new]

    def _append_non_responses(self, n: int) -> list[dict]:
        new = [as_non_response(record) for record in self._non_response_generator.next_records(n)]
        for record in new:
            self._index["non-responses"].publish_at_end(record)
        return new

    def convert_non_responses(self, n: int) -> list[dict]:
        """Let the ``n`` oldest non-responses not converted before answer: each becomes a response (same
        number_customergauge, an answer from the answers' generator, ``data.as_response``) appended after
        the last responses position, as upstream would send a late answer; it stays a non-response too.
        Returns the new responses (API shape, copies). ValueError if fewer than ``n`` are left."""
        with self._lock:
            waiting = [
                r for r in self._index["non-responses"].records if r["number_customergauge"] not in self._converted
            ]
            if not 0 <= n <= len(waiting):
                raise ValueError(f"count must be from 0 to {len(waiting)} (the non-responses not converted), got {n}")
            new = []
            for record, answer in zip(waiting[:n], self._answers.next_records(n), strict=True):
                response = as_response(record, answer, self._generator.allocate_position())
                self._responses_index.publish_at_end(response)
                self._converted.add(record["number_customergauge"])
                new.append(response)
        return [_public_copy(record) for record in new]

    def update_record(self, number_customergauge: int, changes: dict, *, move_to_end: bool = False) -> dict:
        """Deep-merge ``changes`` into a record (nested dicts merge, other values replace); return it.

        ``move_to_end=True`` also gives it a new, higher position, so a forward cursor sees it again.
        KeyError for an unknown number_customergauge; ValueError if ``changes`` is not a dict or tries
        to change ``number_customergauge`` or ``_pos``.
        """
        if not isinstance(changes, dict):
            raise ValueError(f"changes must be a dict of fields to change, got {type(changes).__name__}")
        if "number_customergauge" in changes or "_pos" in changes:
            raise ValueError("changes may not set number_customergauge or _pos; delete and append instead")
        with self._lock:
            old = self._responses_index.find(number_customergauge)
            new = copy.deepcopy(old)
            _deep_merge(new, copy.deepcopy(changes))
            if move_to_end:
                self._responses_index.unpublish(old)
                new["_pos"] = self._generator.allocate_position()
                self._responses_index.publish_at_end(new)
            else:
                self._responses_index.replace(old, new)
        return _public_copy(new)

    def anonymise_record(self, number_customergauge: int) -> dict:
        """GDPR-anonymise a record in place (same position): names and comment.original become
        "Anonymised"; email, phone and comment.translation become null. Returns it; KeyError if unknown."""
        return self.update_record(
            number_customergauge,
            {
                "contact": {"first_name": "Anonymised", "last_name": "Anonymised"},
                "email": None,
                "phone": None,
                "comment": {"original": "Anonymised", "translation": None},
            },
        )

    def delete_record(self, number_customergauge: int) -> None:
        """Remove a record; KeyError if number_customergauge is unknown."""
        with self._lock:
            self._responses_index.unpublish(self._responses_index.find(number_customergauge))

    def records(self, endpoint: str = "responses") -> list[dict]:
        """Current records of ``endpoint`` ("responses" or "non-responses") in cursor order, with every
        expansion and without ``_pos`` (deep copies), i.e. what paging with every with[] would return."""
        with self._lock:
            current = list(self._index[endpoint].records)
        return [_public_copy(record) for record in current]

    @property
    def last_cursor(self) -> int | None:
        """Internal position of the last response (what cursor.next is after the last page); None if empty."""
        with self._lock:
            positions = self._responses_index.positions
            return positions[-1] if positions else None

    def reset_log(self) -> None:
        """Empty ``requests_log`` and zero ``token_requests``, the fault counter and the page counter."""
        with self._lock:
            self.requests_log.clear()
            self.token_requests = 0
            self._responses_count = 0
            self._pages_served = 0
            self._last_rows = None

    # --- HTTP handling (called from the handler threads) ---------------------------------------------

    def _handle(
        self, method: str, path: str, query: list[tuple[str, str]], authorization: str | None, body: bytes
    ) -> _Reply:
        form = None
        if path == TOKEN_PATH and method == "POST":
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            reply = self._token(form)
        elif path in ENDPOINTS and method == "GET":
            reply = self._responses(query, authorization, self._index[ENDPOINTS[path]])
        elif path == APPEND_PATH and method == "POST":
            reply = self._append(query)
        elif path == CONVERT_PATH and method == "POST":
            reply = self._convert(query)
        elif path == STATS_PATH and method == "GET":
            reply = self._stats()
        elif path in (TOKEN_PATH, *ENDPOINTS, APPEND_PATH, CONVERT_PATH, STATS_PATH):
            reply = _json_reply(405, {"message": "Method Not Allowed."})
        else:
            reply = _json_reply(404, {"message": "Not Found."})
        if form is not None and "client_secret" in form:
            form["client_secret"] = REDACTED
        with self._lock:
            self.requests_log.append(RequestLogEntry(method, path, query, reply.status, authorization, form))
        return reply

    def _token(self, form: dict) -> _Reply:
        if form.get("grant_type") != "client_credentials":
            return _json_reply(400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != self._client_id or form.get("client_secret") != self._client_secret:
            return _json_reply(400, {"error": "invalid_client"})
        ttl = self.faults.token_ttl
        token = secrets.token_hex(20)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
            self.token_requests += 1
        payload = {"access_token": token, "token_type": "Bearer", "expires_in": ttl}
        if self.faults.omit_expires_in:
            del payload["expires_in"]
        return _json_reply(200, payload)

    def _token_valid(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._lock:
            expiry = self._tokens.get(token.strip())
        return expiry is not None and time.monotonic() < expiry

    def _responses(self, query: list[tuple[str, str]], authorization: str | None, index: _RecordIndex) -> _Reply:
        """A page of either sync endpoint, from ``index``'s records (faults: the responses endpoint only)."""
        responses = index is self._responses_index
        faults = self.faults if responses else SandboxFaults(empty_next=self.faults.empty_next, latency=0.0)
        with self._lock:
            self._responses_count += responses
            fault = _fault_for(self._responses_count, faults) if responses else None
        if fault == "fail":
            return _server_error(faults.fail_status)
        if fault == "rate_limit":
            retry_after = faults.retry_after if faults.retry_after_value is None else faults.retry_after_value
            headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
            return _json_reply(429, {"message": "Too Many Attempts."}, headers)
        if faults.redirect_to is not None:
            return _Reply(302, b"", headers={"Location": faults.redirect_to})
        if not self._token_valid(authorization):
            return _json_reply(401, {"message": "Unauthenticated."})
        try:
            parsed = parse_responses_query(query, legacy_drivers=faults.legacy_drivers)
        except QueryInvalid as invalid:
            return _json_reply(422, {"message": "The given data was invalid.", "errors": invalid.errors})
        reply = self._page_reply(parsed, faults, index)
        if fault == "drop_body":
            reply.drop_body = True
        elif fault == "truncate_json":
            reply.body = reply.body[: len(reply.body) // 2]
        return reply

    def _page_reply(self, query: ResponsesQuery, faults: SandboxFaults, index: _RecordIndex) -> _Reply:
        with self._lock:
            repeat = faults.repeat_page_after and self._pages_served >= faults.repeat_page_after
            rows = self._last_rows if repeat else None
        if rows is not None:
            return _page(rows, (query.cursor or 0) + 1)
        page = self._select(query, index)
        if not page:
            same = query.cursor if query.cursor is not None else 0
            return _json_reply(200, _empty_page(faults.empty_next, same))
        rows = b",".join(self._row_json(record, query.expansions, faults.legacy_drivers) for record in page)
        if index is self._responses_index:  # repeat_page_after counts responses pages
            with self._lock:
                self._pages_served += 1
                self._last_rows = rows if faults.repeat_page_after else None
        return _page(rows, page[-1]["_pos"])

    def _row_json(self, record: dict, expansions: frozenset, legacy_drivers: bool) -> bytes:
        """UTF-8 JSON of one rendered record, cached per (number, expansions, legacy_drivers).

        Encoding 1000 records per request costs ~20 ms; the cache keeps pages fast. An entry is valid
        only for the very record object it was made from (records are replaced, never mutated).
        """
        key = (record["number_customergauge"], expansions, legacy_drivers)
        cached = self._row_cache.get(key)
        if cached is not None and cached[0] is record:
            return cached[1]
        row = _render(record, expansions, legacy_drivers)
        encoded = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._row_cache[key] = (record, encoded)
        return encoded

    def _select(self, query: ResponsesQuery, index: _RecordIndex) -> list[dict]:
        keep = _record_filter(query)
        with self._lock:
            if query.number_customergauge is not None:
                found = index.by_number.get(query.number_customergauge)
                candidates = [found] if found is not None else []
                start = 0
            else:
                candidates = index.records
                start = 0 if query.cursor is None else bisect_right(index.positions, query.cursor)
            page = []
            for index in range(start, len(candidates)):
                record = candidates[index]
                if keep(record):
                    page.append(record)
                    if len(page) == query.per_page:
                        break
        return page

    def _append(self, query: list[tuple[str, str]]) -> _Reply:
        params = dict(query)
        endpoint = params.get("endpoint", "responses")
        errors = {} if endpoint in ENDPOINTS.values() else {"endpoint": ["The selected endpoint is invalid."]}
        count = _count_param(params, errors, MAX_APPEND)
        if errors:
            return _json_reply(422, {"message": "The given data was invalid.", "errors": errors})
        new = self.append_records(count) if endpoint == "responses" else self.append_non_responses(count)
        return _json_reply(200, {"appended": count, "numbers": [r["number_customergauge"] for r in new]})

    def _convert(self, query: list[tuple[str, str]]) -> _Reply:
        errors: dict[str, list[str]] = {}
        with self._lock:
            waiting = len(self._index["non-responses"].records) - len(self._converted)
        count = _count_param(dict(query), errors, waiting)
        if errors:
            return _json_reply(422, {"message": "The given data was invalid.", "errors": errors})
        new = self.convert_non_responses(count)
        return _json_reply(200, {"converted": count, "numbers": [r["number_customergauge"] for r in new]})

    def _stats(self) -> _Reply:
        with self._lock:
            count, non_responses = len(self._responses_index.records), self._index["non-responses"].records
            last_non_response = non_responses[-1]["_pos"] if non_responses else None
        return _json_reply(
            200,
            {
                "records": count,
                "last_cursor": self.last_cursor,
                "non_responses": len(non_responses),
                "non_responses_last_cursor": last_non_response,
            },
        )


# --- query validation (Laravel style) ---------------------------------------------------------------


def _count_param(params: dict, errors: dict, high: int) -> int | None:
    """The required ``count`` of a control request, 1..``high``; a Laravel-style message in ``errors`` else."""
    count = _integer_param(params, "count", errors, low=1, high=high)
    if count is None and not errors:
        errors["count"] = ["The count field is required."]
    return count


def parse_responses_query(pairs: list[tuple[str, str]], *, legacy_drivers: bool = False) -> ResponsesQuery:
    """Validate the responses endpoint's query parameters (vendor page) like Laravel would.

    ``pairs``: decoded (key, value) pairs. Repeated scalar keys: the last wins (PHP). Empty values count
    as absent (Laravel turns "" into null). Unknown keys are ignored. Integers and dates take ASCII digits
    only (PHP). ``with[]``, ``with[0]`` or ``with[name]`` values (errors keyed ``with.<index or name>``) must
    be selected_drivers, tags, questions or properties (``drivers`` too when ``legacy_drivers``). Raises
    QueryInvalid with one message list per bad field.
    """
    scalars: dict[str, str] = {}
    with_values: list[tuple[str, str]] = []  # (PHP array key, value): with[] -> 0, 1, ...; with[x] -> x
    for key, value in pairs:
        if match := re.fullmatch(r"with\[([^\]]*)\]", key):
            with_values.append((match.group(1) or str(len(with_values)), value))
        elif value != "":
            scalars[key] = value
    errors: dict[str, list[str]] = {}
    per_page = _integer_param(scalars, "per_page", errors, low=1, high=MAX_PER_PAGE)
    parsed = ResponsesQuery(
        per_page=DEFAULT_PER_PAGE if per_page is None else per_page,
        cursor=_integer_param(scalars, "cursor", errors),
        expansions=_expansions_param(scalars, with_values, errors, legacy_drivers),
        number_customergauge=_integer_param(scalars, "number_customergauge", errors),
        filter=_filter_param(scalars, errors),
        period=_period_param(scalars, errors),
    )
    if errors:
        raise QueryInvalid(errors)
    return parsed


def _integer_param(
    params: dict, name: str, errors: dict, low: int | None = None, high: int | None = None
) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    label = name.replace("_", " ")
    if not re.fullmatch(r"[+-]?\d+", value.strip(), re.ASCII):  # PHP integers: ASCII digits only
        errors[name] = [f"The {label} must be an integer."]
        return None
    number = int(value)
    if low is not None and not low <= number <= high:
        errors[name] = [f"The {label} must be between {low} and {high}."]
        return None
    return number


def _expansions_param(scalars: dict, with_values: list[str], errors: dict, legacy_drivers: bool) -> frozenset:
    if "with" in scalars:
        errors["with"] = ["The with must be an array."]
    allowed = set(EXPANSIONS) | ({"drivers"} if legacy_drivers else set())
    for index, value in with_values:
        if value not in allowed:
            errors[f"with.{index}"] = [f"The selected with.{index} is invalid."]
    return frozenset("selected_drivers" if value == "drivers" else value for _, value in with_values)


def _filter_param(scalars: dict, errors: dict) -> str | None:
    reference = scalars.get("filter")
    if reference is not None and reference not in FILTERS:
        errors["filter"] = ["The selected filter is invalid."]
    return reference


def _period_param(scalars: dict, errors: dict) -> tuple[str, str, str] | None:
    given = {key: scalars.get(f"period[{key}]") for key in PERIOD_KEYS}
    if all(value is None for value in given.values()):
        return None
    for key in PERIOD_KEYS:
        if given[key] is None:
            others = " / ".join(f"period.{other}" for other in PERIOD_KEYS if other != key)
            errors[f"period.{key}"] = [f"The period.{key} field is required when {others} is present."]
    if given["field"] is not None and given["field"] not in PERIOD_FIELDS:
        errors["period.field"] = ["The selected period.field is invalid."]
    for key in ("start", "end"):
        if given[key] is not None and not _is_ymd(given[key]):
            errors[f"period.{key}"] = [f"The period.{key} does not match the format Y-m-d."]
    if "period.start" not in errors and "period.end" not in errors and given["end"] < given["start"]:
        errors["period.end"] = ["The period.end must be a date after or equal to period.start."]
    if any(key.startswith("period.") for key in errors):
        return None
    return given["field"], given["start"], given["end"]


def _is_ymd(value: str) -> bool:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value, re.ASCII):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return True


# --- records to JSON --------------------------------------------------------------------------------


def _record_filter(query: ResponsesQuery):
    """Predicate for cursor, filter and period (number_customergauge is looked up, not scanned)."""
    outbound = FILTERS.get(query.filter, lambda record: True)
    cursor = query.cursor

    def keep(record: dict) -> bool:
        if cursor is not None and record["_pos"] <= cursor:
            return False
        if query.period is not None:
            field_name, start, end = query.period
            day = (record.get(field_name) or "")[:10]  # a non-response has no date_survey_response
            if not start <= day <= end:
                return False
        return outbound(record)

    return keep


def _render(record: dict, expansions: frozenset, legacy_drivers: bool) -> dict:
    """The record as sent: no ``_pos``, only the expansions asked for (shallow; records are immutable)."""
    row = {}
    for key, value in record.items():
        if key == "_pos" or (key in EXPANSIONS and key not in expansions):
            continue
        if key == "selected_drivers" and legacy_drivers:
            row["drivers"] = [{"label": driver["primary"]} for driver in value]
        else:
            row[key] = value
    return row


def _page(rows: bytes, cursor_next: int) -> _Reply:
    return _Reply(200, b'{"data":[' + rows + b'],"cursor":{"next":%d}}' % cursor_next)


def _empty_page(mode: str, same: int) -> dict:
    if mode == "same":
        return {"data": [], "cursor": {"next": same}}
    if mode == "null":
        return {"data": [], "cursor": {"next": None}}
    if mode == "absent":
        return {"data": [], "cursor": {}}
    return {"data": []}


def _segment(record: dict, field_name: str):
    for segment in record["properties"]:
        if segment["field"] == field_name:
            return segment["reference"]
    return None


def _public_copy(record: dict) -> dict:
    return copy.deepcopy({key: value for key, value in record.items() if key != "_pos"})


def _deep_merge(target: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def _fault_for(count: int, faults: SandboxFaults) -> str | None:
    for name, every in (
        ("fail", faults.fail_every),
        ("rate_limit", faults.rate_limit_every),
        ("drop_body", faults.drop_body_every),
        ("truncate_json", faults.truncate_json_every),
    ):
        if every and count % every == 0:
            return name
    return None


def _json_reply(status: int, payload: dict, headers: dict | None = None) -> _Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Reply(status, body, headers=headers or {})


def _server_error(status: int) -> _Reply:
    if status == 504:
        return _Reply(504, b"Gateway Time-out", content_type="text/plain")
    return _json_reply(status, {"message": "Server Error"})


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP/1.1 (keep-alive) layer: parse, delegate to ``SandboxServer._handle``, write the reply."""

    protocol_version = "HTTP/1.1"
    server_version = "cg-sandbox"
    disable_nagle_algorithm = True  # headers and body go out as separate writes; avoid 40 ms ACK stalls

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def _serve(self, method: str) -> None:
        sandbox = self.server.sandbox
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            reply = sandbox._handle(
                method, url.path, parse_qsl(url.query, keep_blank_values=True), self.headers.get("Authorization"), body
            )
        except Exception:
            traceback.print_exc(file=sys.stderr)
            reply = _server_error(500)
        if sandbox.faults.latency and url.path != NON_RESPONSES_PATH:  # faults: the responses endpoint only
            time.sleep(sandbox.faults.latency)
        self._write(reply)

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.drop_body:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply.body[: len(reply.body) // 2] if reply.drop_body else reply.body)

    def log_message(self, format, *args):
        if self.server.sandbox.verbose:
            super().log_message(format, *args)
