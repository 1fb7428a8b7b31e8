"""The errors of the CustomerGauge client. Every error the package raises is a ``CustomerGaugeError``; each
message names what failed and how to fix it, and never holds the client secret or an access token."""

from typing import Optional


class CustomerGaugeError(Exception):
    """Base class of every error raised by the client package."""


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


class BodyProblem(Exception):
    """Internal: a body that may be fine when requested again (see ``Transport.retry_body``)."""
