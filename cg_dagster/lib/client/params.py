"""Settings and query parameters of the CustomerGauge client: regions and base URLs, ``Period`` and
``SyncParams`` (every query parameter of a sync but the cursor), and the checks of the client's own
arguments. Each check raises ``CustomerGaugeConfigError`` naming the setting and the fix.

Sources: "vendor page" /work/shared/reference/customergauge-get-responses-api.txt, "api-notes.md"
/work/shared/reference/api-notes.md.
"""

import datetime
import ipaddress
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from cg_dagster.lib.client.errors import CustomerGaugeConfigError

REGIONS = ("eu", "us", "au")  # api-notes.md
WITH_VALUES = ("selected_drivers", "tags", "questions", "properties")  # vendor page
PERIOD_FIELDS = ("date_creation", "date_order", "date_sent", "date_survey_response")  # vendor page
MAX_PER_PAGE = 1000  # vendor page: "Number from 1 to 1000"

_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # one DNS label
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


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


def is_int(value: object) -> bool:
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


SYNC_ENDPOINTS = {
    "responses": "/v7/rest/sync/responses",  # vendor page
    "non-responses": "/v7/rest/sync/non-responses",  # api-notes.md: pages the same way as responses
}
"""The sync endpoints by name: ``SyncParams.endpoint`` -> path under the API base URL."""


@dataclass(frozen=True)
class SyncParams:
    """Which sync endpoint to page, and every query parameter sent on every page except the cursor (vendor
    page; api-notes.md says all of them must be repeated, unchanged, on every page).

    - ``endpoint``: a key of SYNC_ENDPOINTS, "responses" or "non-responses" (same paging, same parameters).
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
    endpoint: str = "responses"

    def __post_init__(self):
        if self.endpoint not in SYNC_ENDPOINTS:
            raise CustomerGaugeConfigError(
                f"endpoint must be one of {', '.join(map(repr, SYNC_ENDPOINTS))} (the sync endpoints), "
                f"got {self.endpoint!r}"
            )
        if not is_int(self.per_page) or not 1 <= self.per_page <= MAX_PER_PAGE:
            raise CustomerGaugeConfigError(
                f"per_page must be an integer from 1 to {MAX_PER_PAGE} (vendor page), got {self.per_page!r}"
            )
        object.__setattr__(self, "with_", _check_with(self.with_))
        if self.number_customergauge is not None and not (
            is_int(self.number_customergauge) and self.number_customergauge > 0
        ):
            raise CustomerGaugeConfigError(
                f"number_customergauge must be a positive integer (a CGID) or None, got {self.number_customergauge!r}"
            )
        if self.filter is not None and (not isinstance(self.filter, str) or not self.filter.strip()):
            raise CustomerGaugeConfigError(
                f"filter must be the reference of an Outbound filter (vendor page) or None, got {self.filter!r}"
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

    @property
    def path(self) -> str:
        """The endpoint's path, e.g. ``/v7/rest/sync/non-responses``."""
        return SYNC_ENDPOINTS[self.endpoint]


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
                f"with_ holds the unknown value {value!r}{hint}: allowed are {', '.join(WITH_VALUES)} (vendor page)"
            )
    if len(set(values)) != len(values):
        raise CustomerGaugeConfigError(f"with_ must not repeat a value, got {tuple(values)!r}: drop the duplicates")
    return tuple(values)


def require_text(value: object, setting: str, fix: str) -> None:
    """Raise CustomerGaugeConfigError naming ``setting`` and ``fix`` unless ``value`` is a non-blank string."""
    if not isinstance(value, str) or not value.strip():
        raise CustomerGaugeConfigError(f"{setting} must be a non-empty string: set it to {fix}")


def require_number(value: object, setting: str, *, minimum: float, strict: bool) -> None:
    """Raise CustomerGaugeConfigError naming ``setting`` unless ``value`` is an int or float (not bool) above
    ``minimum`` (``strict``) or at least ``minimum``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        relation = ">" if strict else ">="
        raise CustomerGaugeConfigError(f"{setting} must be a number {relation} {minimum}, got {value!r}")
