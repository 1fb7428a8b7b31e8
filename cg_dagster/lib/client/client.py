"""The CustomerGauge v7 sync API client: ``CustomerGaugeClient.iter_pages`` pages a sync endpoint (``GET
/v7/rest/sync/responses`` or ``/v7/rest/sync/non-responses``, ``SyncParams.endpoint``) from a cursor,
fetching the next page in a worker thread while the caller holds the current one.

Source: "vendor page" /work/shared/reference/customergauge-get-responses-api.txt.
"""

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Optional
from urllib.parse import urlsplit

import requests

from cg_dagster.lib.client import auth
from cg_dagster.lib.client.errors import (
    CustomerGaugeAuthError,
    CustomerGaugeConfigError,
    CustomerGaugeRedirectError,
)
from cg_dagster.lib.client.pages import (
    Page,
    PageBody,
    PageKey,
    check_not_repeated,
    check_page_body,
    next_cursor,
    page_key,
    parse_page_body,
    split_page_body,
)
from cg_dagster.lib.client.params import SyncParams, is_int, require_number, require_text, validate_base_url
from cg_dagster.lib.client.transport import Transport, redact, redirect_text

logger = logging.getLogger("cg_dagster.client")

API_SETTING = "api_base_url (CUSTOMERGAUGE_API_BASE_URL)"


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
        require_text(client_id, "client_id", "the Client ID of your CustomerGauge Connected App")
        require_text(client_secret, "client_secret", "the Client Secret of your CustomerGauge Connected App")
        require_text(user_agent, "user_agent", "e.g. cg_dagster/0.1")
        require_number(timeout, "timeout", minimum=0, strict=True)
        require_number(backoff_factor, "backoff_factor", minimum=0, strict=False)
        if not is_int(max_retries) or max_retries < 0:
            raise CustomerGaugeConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.api_base_url = validate_base_url(api_base_url, "api_base_url")
        self.auth_base_url = validate_base_url(auth_base_url, "auth_base_url")
        self.client_id = client_id
        self._client_secret = client_secret
        self._cache_key = auth.cache_key(self.auth_base_url, client_id, client_secret)
        self._transport = Transport(
            timeout=timeout,
            max_retries=max_retries,
            backoff_factor=backoff_factor,
            user_agent=user_agent,
            secret=client_secret,
        )

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
        self._transport.close()

    # ---- paging

    def iter_pages(
        self, params: SyncParams, cursor: Optional[int] = None, *, max_pages: Optional[int] = None
    ) -> Iterator[Page]:
        """Yield the non-empty pages from ``cursor`` (None: from the first record) until the API answers an
        empty "data" list (vendor page), or after ``max_pages`` non-empty pages.

        Each page is requested from ``params.path`` (the endpoint) with ``params.query(cursor)``, so only
        the cursor changes between pages.
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
        if cursor is not None and not is_int(cursor):
            raise CustomerGaugeConfigError(
                f"cursor must be an integer returned by the API (vendor page) or None, got {cursor!r}"
            )
        if max_pages is not None and (not is_int(max_pages) or max_pages < 1):
            raise CustomerGaugeConfigError(f"max_pages must be a positive integer or None, got {max_pages!r}")
        return self._pages(params, cursor, max_pages)

    def _pages(self, params: SyncParams, cursor: Optional[int], max_pages: Optional[int]) -> Iterator[Page]:
        previous = None  # the PageKey of the page yielded last
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cg-page-prefetch") as worker:
            pending = worker.submit(self._fetch_page, params, cursor, 1)
            try:
                while pending is not None:
                    fetched = pending.result()  # the worker's exception, if any, is raised here
                    if fetched is None:
                        return
                    page, key = fetched
                    check_not_repeated(key, previous)
                    pending = None
                    if max_pages is None or page.number < max_pages:
                        pending = worker.submit(self._fetch_page, params, page.cursor_next, page.number + 1)
                    yield page
                    previous = key
            finally:
                if pending is not None:
                    pending.cancel()  # not started: never sent; in flight: the with-block waits for it

    def _fetch_page(self, params: SyncParams, cursor: Optional[int], number: int) -> Optional[tuple[Page, PageKey]]:
        """Request and parse page ``number`` (worker thread): (the Page, its ``page_key``), or None for the
        empty last page."""
        query = params.query(cursor)
        body = self._transport.retry_body(f"page {number}", lambda: self._get_page_body(params.path, query))
        count = len(body.record_json if body.record_json is not None else body.decoded[0])
        if not count:
            logger.debug("empty page after cursor %s: sync finished after %d page(s)", cursor, number - 1)
            return None
        cursor_next = next_cursor(body.cursor, number, cursor)
        logger.debug("page %d: cursor sent %s, %d records, next %s", number, cursor, count, cursor_next)
        page = Page(number, cursor, cursor_next, body.record_json, body.numbers, body.decoded)
        return page, page_key(page)

    def _get_page_body(self, path: str, query: list[tuple[str, str]]) -> PageBody:
        """One GET of the sync endpoint at ``path``, with one token refresh on a 401, read by ``split_page_body``,
        or by ``parse_page_body`` when that cannot."""
        token = self.access_token()
        response = self._get_page(path, query, token)
        if response.status_code == 401:
            self._transport.read_body(response)
            logger.info("API answered 401; fetching a new access token and repeating the request once")
            self._forget_token(token)
            token = self.access_token()
            response = self._get_page(path, query, token)
            if response.status_code == 401:
                self._transport.read_body(response)
                raise CustomerGaugeAuthError(
                    f"GET {self._path(path)} answered 401 Unauthenticated even with a fresh "
                    "access token: check that the Connected App may use the sync API"
                )
        raw = self._transport.read_body(response)
        if not response.ok:
            raise self._transport.api_error("GET", self._path(path), response, raw, token)
        split = split_page_body(raw)
        if split is not None:
            return PageBody(cursor=split[2], record_json=split[0], numbers=split[1])
        body, orjson_safe = parse_page_body(raw)
        body = check_page_body(body)
        return PageBody(cursor=body.get("cursor"), decoded=(body["data"], orjson_safe))

    def _get_page(self, path: str, query: list[tuple[str, str]], token: str) -> requests.Response:
        """GET the sync endpoint at ``path`` with the token; a redirect is not followed (requests would drop the
        token, or hand it to another origin) but raised as CustomerGaugeRedirectError."""
        headers = {"Authorization": f"Bearer {token}"}
        response = self._transport.request(
            "GET",
            self.api_base_url + path,
            API_SETTING,
            params=query,
            headers=headers,
            allow_redirects=False,
        )
        if 300 <= response.status_code < 400:
            response.close()
            raise CustomerGaugeRedirectError(
                redact(redirect_text("GET", response, "the access token"), token) + f"; check {API_SETTING}"
            )
        return response

    def _path(self, path: str) -> str:
        """An endpoint's path as shown in errors: the base URL's path prefix, no host or query."""
        return urlsplit(self.api_base_url).path + path

    # ---- token

    def access_token(self) -> str:
        """Return the process-wide cached access token, fetching a new one when it has less than 60 s left
        (see ``auth.access_token``). For tests and diagnostics; never log the value."""
        return auth.access_token(self._cache_key, self._fetch_token)

    def _forget_token(self, token: str) -> None:
        auth.forget_token(self._cache_key, token)

    def _fetch_token(self) -> "auth._CachedToken":
        return self._transport.retry_body(
            "token request",
            lambda: auth.fetch_token(self._transport, self.auth_base_url, self.client_id, self._client_secret),
        )
