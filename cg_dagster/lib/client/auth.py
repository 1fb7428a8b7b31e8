"""OAuth2 for the CustomerGauge client: the client-credentials token request and the per-process token cache.

Source: "vendor page" /work/shared/reference/customergauge-get-responses-api.txt (``POST /oauth2/token``,
``grant_type=client_credentials``), "api-notes.md" /work/shared/reference/api-notes.md (tokens live an
hour, ``expires_in`` is optional, a refused secret answers ``invalid_client``). The token and the secret are
never logged, echoed in an error or shown in a repr.
"""

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from cg_dagster.lib.client.errors import CustomerGaugeAuthError, CustomerGaugeRedirectError
from cg_dagster.lib.client.pages import parse_json
from cg_dagster.lib.client.transport import Transport, redact, redirect_text

logger = logging.getLogger("cg_dagster.client")

TOKEN_PATH = "/oauth2/token"  # vendor page
DEFAULT_TOKEN_LIFETIME = 3600.0  # seconds; api-notes.md: tokens live 1 hour, expires_in is optional
TOKEN_REFRESH_MARGIN = 60.0  # seconds of lifetime left below which a cached token is refreshed
AUTH_SETTING = "auth_base_url (CUSTOMERGAUGE_AUTH_BASE_URL)"

_TOKEN_TEXT = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_OAUTH_ERROR_CODE = re.compile(r"[a-z_]{1,50}")  # RFC 6749 5.2 codes: invalid_client, invalid_grant, ...


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


def cache_key(auth_base_url: str, client_id: str, client_secret: str) -> tuple[str, str, str]:
    """The token cache's key of one Connected App: ``(auth_base_url, client_id, sha256 of the secret)``."""
    return auth_base_url, client_id, hashlib.sha256(client_secret.encode()).hexdigest()


def access_token(key: tuple[str, str, str], fetch: Callable[[], _CachedToken]) -> str:
    """The cached access token of ``key``; ``fetch()`` gets a new one when there is none or it has less than
    the refresh margin left (``_is_fresh``). Held under one process-wide lock, so clients sharing a key
    fetch once."""
    with _token_lock:
        cached = _token_cache.get(key)
        if cached is None or not _is_fresh(cached):
            cached = fetch()
            _token_cache[key] = cached
        return cached.access_token


def forget_token(key: tuple[str, str, str], token: str) -> None:
    """Drop ``token`` from the cache unless another client already replaced it."""
    with _token_lock:
        cached = _token_cache.get(key)
        if cached is not None and cached.access_token == token:
            del _token_cache[key]


def fetch_token(transport: Transport, auth_base_url: str, client_id: str, client_secret: str) -> _CachedToken:
    """POST the client credentials to ``auth_base_url`` + TOKEN_PATH (vendor page) and return the new token.

    Raises CustomerGaugeAuthError (credentials refused, no usable access_token), CustomerGaugeRedirectError,
    CustomerGaugeAPIError (another non-2xx status), CustomerGaugeConnectionError, and BodyProblem for a body
    that broke or is not JSON (``Transport.retry_body`` requests it again).
    """
    logger.info("fetching an access token from %s for client_id %s", auth_base_url, client_id)
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
    path = urlsplit(auth_base_url).path + TOKEN_PATH
    # Never follow a redirect with the client secret in the body (it could lead to another origin).
    response = transport.request("POST", auth_base_url + TOKEN_PATH, AUTH_SETTING, data=form, allow_redirects=False)
    raw = transport.read_body(response)
    if 300 <= response.status_code < 400:
        raise CustomerGaugeRedirectError(
            redact(redirect_text("POST", response, "the client secret"), client_secret) + f"; check {AUTH_SETTING}"
        )
    if response.status_code in (400, 401):
        raise CustomerGaugeAuthError(
            f"token endpoint refused the client credentials ({response.status_code} "
            f"{_oauth_error_code(raw)}): check client_id / client_secret"
        )
    if not response.ok:
        raise transport.api_error("POST", path, response, raw, None)
    body = parse_json(raw)
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise CustomerGaugeAuthError(f"POST {path} answered {response.status_code} without an access_token")
    if not _TOKEN_TEXT.fullmatch(token):  # RFC 6750 b64token; the value is never echoed
        raise CustomerGaugeAuthError(
            f"POST {path} answered {response.status_code} with an access_token that is "
            "not a bearer token (RFC 6750: letters, digits and -._~+/ only, then '=' padding)"
        )
    lifetime = _token_lifetime(body)
    return _CachedToken(access_token=token, lifetime=lifetime, expires_at=_clock() + lifetime)


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
