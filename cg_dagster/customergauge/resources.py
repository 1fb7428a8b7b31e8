"""The Dagster resource that wraps the CustomerGauge v7 sync API client."""

from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from cg_dagster.lib.client import (
    REGIONS,
    WITH_VALUES,
    CustomerGaugeClient,
    CustomerGaugeConfigError,
    Period,
    SyncParams,
    default_base_urls,
    validate_base_url,
)
from cg_dagster.lib.flatten import FlattenError, system_zone
from cg_dagster.lib.lake import Lake
from cg_dagster.settings import PER_PAGE


class CustomerGaugeResource(dg.ConfigurableResource):
    """CustomerGauge v7 sync API settings and a client factory.

    Bound in ``cg_dagster.definitions`` from the environment (``CUSTOMERGAUGE_*``, cg_dagster/settings.py), or per
    account from the accounts file (``accounts.py``: credentials from the variables it names; resource key
    ``customergauge_<account>``). ``per_page`` unset reads ``CUSTOMERGAUGE_PER_PAGE`` when a sync starts, not at
    load. Every setting is
    validated by ``validate()`` before a sync sends its first request; a bad one raises
    ``CustomerGaugeConfigError`` naming the setting and the fix. ``repr()`` masks the client secret.

    Hosts (api-notes.md): ``https://api.{region}.customergauge.com`` and
    ``https://auth.{region}.customergauge.com``; ``api_base_url`` / ``auth_base_url`` override them (the
    sandbox, a proxy). Plain ``http`` is refused unless the host is loopback.
    """

    region: str = Field(default="eu", description="CustomerGauge region: eu, us or au.")
    client_id: str = Field(description="OAuth2 client id of the Connected App.")
    client_secret: str = Field(description="OAuth2 client secret of the Connected App (never logged).")
    per_page: Optional[int] = Field(
        default=None, description="Responses per page, 1..1000 (vendor page); unset: CUSTOMERGAUGE_PER_PAGE, else 1000."
    )
    with_: list[str] = Field(
        default=list(WITH_VALUES),
        description="with[] expansions: any of selected_drivers, tags, questions, properties.",
    )
    filter: Optional[str] = Field(default=None, description="Outbound filter reference (vendor page 'filter').")
    api_base_url: Optional[str] = Field(default=None, description="Override of https://api.{region}.customergauge.com.")
    auth_base_url: Optional[str] = Field(
        default=None, description="Override of https://auth.{region}.customergauge.com."
    )
    system_timezone: str = Field(
        default="UTC",
        description="IANA time zone of the CustomerGauge system; the API's dates carry no zone (vendor page).",
    )
    timeout_seconds: float = Field(
        default=60.0,
        description="Seconds to connect and for each read of every HTTP request; a whole body must arrive "
        "within 3x this.",
    )
    max_retries: int = Field(default=5, description="Retries of 429/5xx/connection errors per request.")
    backoff_factor: float = Field(default=1.0, description="Exponential backoff factor between retries, seconds.")

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "client_secret" and value else value)

    def base_urls(self) -> tuple[str, str]:
        """``(api_base_url, auth_base_url)`` after defaults and validation.

        Raises:
            CustomerGaugeConfigError: unknown region, or a URL that is not https (http only on loopback).
        """
        if self.region not in REGIONS:
            raise CustomerGaugeConfigError(
                f"region {self.region!r} is unknown: set CUSTOMERGAUGE_REGION to one of {', '.join(REGIONS)}"
            )
        default_api, default_auth = default_base_urls(self.region)
        return (
            validate_base_url(self.api_base_url or default_api, "api_base_url (CUSTOMERGAUGE_API_BASE_URL)"),
            validate_base_url(self.auth_base_url or default_auth, "auth_base_url (CUSTOMERGAUGE_AUTH_BASE_URL)"),
        )

    def sync_params(self, period: Period | None = None) -> SyncParams:
        """The query parameters every page of a sync sends (validated ``SyncParams``).

        Raises:
            CustomerGaugeConfigError: per_page outside 1..1000 (or CUSTOMERGAUGE_PER_PAGE not a whole number),
                unknown with[] value, bad period.
        """
        per_page = PER_PAGE.integer() if self.per_page is None else self.per_page
        return SyncParams(per_page=per_page, with_=tuple(self.with_), filter=self.filter, period=period)

    def validate(self) -> None:
        """Check every setting without sending a request.

        Raises:
            CustomerGaugeConfigError: naming the first bad setting and how to fix it.
        """
        if not self.client_id.strip():
            raise CustomerGaugeConfigError(
                "client_id is empty: set CUSTOMERGAUGE_CLIENT_ID (or, with CG_ACCOUNTS_FILE, the variable the "
                "account's client_id_env names) to the Connected App's id"
            )
        if not self.client_secret.strip():
            raise CustomerGaugeConfigError(
                "client_secret is empty: set CUSTOMERGAUGE_CLIENT_SECRET (or, with CG_ACCOUNTS_FILE, the variable "
                "the account's client_secret_env names) to the Connected App's secret"
            )
        self.base_urls()
        self.sync_params()
        try:
            system_zone(self.system_timezone)
        except FlattenError:
            raise CustomerGaugeConfigError(
                f"system_timezone {self.system_timezone!r} is not an IANA time zone: set "
                "CUSTOMERGAUGE_SYSTEM_TIMEZONE to a name such as Europe/Amsterdam (see the Sending step of a "
                "campaign in CustomerGauge)"
            ) from None
        for name in ("timeout_seconds", "backoff_factor"):
            if getattr(self, name) <= 0:
                raise CustomerGaugeConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise CustomerGaugeConfigError(f"max_retries must be >= 0, got {self.max_retries}")

    def get_client(self) -> CustomerGaugeClient:
        """A new client (validated settings). Tokens are cached per process inside the client module.

        Raises:
            CustomerGaugeConfigError: as ``validate()``.
        """
        self.validate()
        api_base_url, auth_base_url = self.base_urls()
        return CustomerGaugeClient(
            client_id=self.client_id,
            client_secret=self.client_secret,
            api_base_url=api_base_url,
            auth_base_url=auth_base_url,
            timeout=self.timeout_seconds,
            max_retries=self.max_retries,
            backoff_factor=self.backoff_factor,
        )


class LakeResource(dg.ConfigurableResource):
    """Where the Parquet lake lives: a local folder (``CG_LAKE_ROOT``, default ``./lake``), and the time zone
    its flattened dates are converted from."""

    root: str = Field(default="lake", description="Lake root folder; relative paths resolve against the cwd.")
    system_timezone: str = Field(
        default="UTC",
        description="IANA time zone of the CustomerGauge system (CUSTOMERGAUGE_SYSTEM_TIMEZONE), for flattening "
        "a partition again when the current tables are updated (no API credentials needed).",
    )

    def get_lake(self) -> Lake:
        """The ``Lake`` at ``root`` made absolute (so ``dagster/uri`` metadata is a full ``file://`` URI)."""
        return Lake(
            self.root if "://" in self.root else Path(self.root).expanduser().resolve()
        )  # s3://: lib/storage.py
