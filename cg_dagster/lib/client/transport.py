"""HTTP for the CustomerGauge client: one ``requests`` session per client with urllib3's retry of 429/5xx
and connection errors (``Retry-After`` honoured up to a cap), no redirect ever followed, a deadline for
each whole body, re-requests of a body that broke, and errors scrubbed of the token and the secret.

Sources: "api-notes.md" /work/shared/reference/api-notes.md (429 with or without Retry-After, 504 on slow
pages, Laravel error bodies).
"""

import email.utils
import json
import logging
import re
import time
from collections.abc import Iterator
from http.client import IncompleteRead
from typing import Callable, Optional, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cg_dagster.lib.client.errors import (
    BodyProblem,
    CustomerGaugeAPIError,
    CustomerGaugeBodyError,
    CustomerGaugeConnectionError,
)

logger = logging.getLogger("cg_dagster.client")

RETRY_STATUSES = (429, 500, 502, 503, 504)  # api-notes.md: 429 rate limit, 504 gateway on slow pages
MAX_BACKOFF = 120.0  # seconds; the same cap as urllib3's Retry.DEFAULT_BACKOFF_MAX
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is cut to this (see _CappedRetry)
ERROR_TEXT_LIMIT = 200  # characters of a non-JSON error body quoted in an exception message
BODY_DEADLINE_FACTOR = 3  # a whole body must arrive within this many times the request timeout

_RETRY_AFTER_SECONDS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*", re.ASCII)
_T = TypeVar("_T")


class Transport:
    """The HTTP side of one client.

    - ``timeout``: seconds for connecting and for each read; a whole body must arrive within
      BODY_DEADLINE_FACTOR times this (``read_body``).
    - ``max_retries`` / ``backoff_factor``: urllib3 retries of RETRY_STATUSES and connection errors, and
      as many re-requests of a broken body (``retry_body``).
    - ``secret``: a value that must never appear in an error (the client secret); also redacted from API
      messages, with the access token of the request.
    """

    def __init__(self, *, timeout: float, max_retries: int, backoff_factor: float, user_agent: str, secret: str):
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_factor = float(backoff_factor)
        self._secret = secret
        retry = _CappedRetry(
            total=max_retries,
            backoff_factor=self.backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # every method: the token POST is safe to repeat too
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.session = _NoRedirectSession()
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})

    def close(self) -> None:
        """Close the session."""
        self.session.close()

    def request(self, method: str, url: str, setting: str, **kwargs) -> requests.Response:
        """Send one request (urllib3 retries included) with a streamed body; ``kwargs`` go to requests
        (``allow_redirects=False`` always: see ``_NoRedirectSession``). A connection-level failure becomes
        CustomerGaugeConnectionError naming ``setting`` (the base URL's setting), never the request itself."""
        try:
            return self.session.request(method, url, timeout=self.timeout, stream=True, **kwargs)
        except requests.exceptions.RequestException as exc:
            parts = urlsplit(url)
            raise CustomerGaugeConnectionError(
                f"{method} {parts.path} on {parts.netloc} got no answer after {self.max_retries} "
                f"retries: {type(exc).__name__}; check the network and {setting}"
            ) from _scrubbed(exc)

    def read_body(self, response: requests.Response) -> bytes:
        """Read a streamed body; a body that breaks mid-read, or trickles in for longer than
        BODY_DEADLINE_FACTOR * ``timeout`` seconds in all (the timeout of requests bounds each read only), is a
        BodyProblem. Always closes the response."""
        deadline = time.monotonic() + BODY_DEADLINE_FACTOR * self.timeout
        chunks = []
        try:
            # read1: whatever has arrived, at most 256 KiB (read() would wait for all 256 KiB).
            while chunk := response.raw.read1(256 * 1024, decode_content=True):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise BodyProblem(f"the body took longer than {BODY_DEADLINE_FACTOR * self.timeout:g} s to arrive")
            return b"".join(chunks)
        except (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ConnectionError,
            urllib3.exceptions.HTTPError,  # ProtocolError, ReadTimeoutError, DecodeError, ...
            IncompleteRead,
            OSError,
        ) as exc:
            raise BodyProblem(f"the body broke while being read ({type(exc).__name__})") from None
        finally:
            response.close()

    def retry_body(self, what: str, fetch: Callable[[], _T]) -> _T:
        """Call ``fetch`` again (same request) while it raises BodyProblem, at most max_retries more
        times, sleeping like urllib3's backoff; then raise CustomerGaugeBodyError."""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(backoff_seconds(self.backoff_factor, attempt))
            try:
                return fetch()
            except BodyProblem as exc:
                problem = str(exc)
                logger.warning("%s: %s (attempt %d of %d)", what, problem, attempt + 1, self.max_retries + 1)
        raise CustomerGaugeBodyError(f"{what}: {problem}, on all {self.max_retries + 1} attempts")

    def api_error(
        self, method: str, path: str, response: requests.Response, raw: bytes, token: Optional[str]
    ) -> CustomerGaugeAPIError:
        """The error for a non-2xx answer to ``method path`` (``path`` as shown: no host, no query string),
        with the token and the secret redacted should the body echo them."""
        message = redact(redact(api_message(response, raw), token), self._secret)
        return CustomerGaugeAPIError(method, path, response.status_code, message)


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
                response.status,
                response.headers.get("Retry-After", "")[:50],
            )
            return None


class _NoRedirectSession(requests.Session):
    """A session that never follows a redirect nor prepares the request one would lead to: requests does that
    for ``Response.next`` even with ``allow_redirects=False``, and raises a bare ValueError on a malformed
    Location (``http://[::1``); the client raises CustomerGaugeRedirectError for every redirect itself."""

    def resolve_redirects(self, *args, **kwargs) -> Iterator[requests.Response]:
        return iter(())


def redact(text: Optional[str], secret: Optional[str]) -> Optional[str]:
    """``text`` with every occurrence of ``secret`` replaced by "[redacted]" (an API may echo it)."""
    return text.replace(secret, "[redacted]") if text and secret else text


def redirect_text(method: str, response: requests.Response, what: str) -> str:
    """ "GET <from> was redirected (302) to <to>: ..." with scheme, host and path only: a query string or
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


def backoff_seconds(backoff_factor: float, attempt: int) -> float:
    """Sleep before re-request number ``attempt`` (1-based), as urllib3's Retry.get_backoff_time:
    0 for the first, then backoff_factor * 2 ** (attempt - 1), at most MAX_BACKOFF."""
    if attempt <= 1:
        return 0.0
    return min(MAX_BACKOFF, backoff_factor * 2 ** (attempt - 1))


def api_message(response: requests.Response, raw: bytes) -> Optional[str]:
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


def _scrubbed(exc: requests.exceptions.RequestException) -> requests.exceptions.RequestException:
    """Drop the request (its headers hold the token, a token POST's body the secret) and response from a
    requests exception before chaining it."""
    exc.request = None
    exc.response = None
    return exc
