"""Client for the CustomerGauge v7 sync API (``GET /v7/rest/sync/responses`` and
``/v7/rest/sync/non-responses``), by concern:

- ``errors``: every error raised (``CustomerGaugeError`` and its kinds);
- ``params``: regions and base URLs, ``Period``, ``SyncParams`` (the query of a sync), argument checks;
- ``auth``: the OAuth2 client-credentials token request and the per-process token cache;
- ``transport``: HTTP (urllib3 retry with a capped Retry-After, body deadline, no redirects, scrubbed errors);
- ``pages``: ``Page``, reading page bodies (msgspec split, orjson / json), repeated-page detection;
- ``client``: ``CustomerGaugeClient`` and its paging (the next page prefetched in a worker thread).

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

from cg_dagster.lib.client.auth import clear_token_cache
from cg_dagster.lib.client.client import CustomerGaugeClient
from cg_dagster.lib.client.errors import (
    CustomerGaugeAPIError,
    CustomerGaugeAuthError,
    CustomerGaugeBodyError,
    CustomerGaugeConfigError,
    CustomerGaugeConnectionError,
    CustomerGaugeCursorError,
    CustomerGaugeError,
    CustomerGaugeRedirectError,
)
from cg_dagster.lib.client.pages import Page, parse_page_body, split_page_body
from cg_dagster.lib.client.params import (
    MAX_PER_PAGE,
    PERIOD_FIELDS,
    REGIONS,
    SYNC_ENDPOINTS,
    WITH_VALUES,
    Period,
    SyncParams,
    default_base_urls,
    validate_base_url,
)
from cg_dagster.lib.client.transport import MAX_RETRY_AFTER

__all__ = [
    "MAX_PER_PAGE",
    "MAX_RETRY_AFTER",
    "PERIOD_FIELDS",
    "REGIONS",
    "SYNC_ENDPOINTS",
    "WITH_VALUES",
    "CustomerGaugeAPIError",
    "CustomerGaugeAuthError",
    "CustomerGaugeBodyError",
    "CustomerGaugeClient",
    "CustomerGaugeConfigError",
    "CustomerGaugeConnectionError",
    "CustomerGaugeCursorError",
    "CustomerGaugeError",
    "CustomerGaugeRedirectError",
    "Page",
    "Period",
    "SyncParams",
    "clear_token_cache",
    "default_base_urls",
    "parse_page_body",
    "split_page_body",
    "validate_base_url",
]
