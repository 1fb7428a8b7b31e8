"""Every environment variable of cg_dagster: its default, its parser and its error, in one place.

| variable | default | what it sets (where it is read) |
|---|---|---|
| `CUSTOMERGAUGE_REGION` | `eu` | API hosts' region: `eu`, `us`, `au` (resource) |
| `CUSTOMERGAUGE_CLIENT_ID` | required | Connected App client id (resource, `dg.EnvVar`) |
| `CUSTOMERGAUGE_CLIENT_SECRET` | required | Connected App secret, never logged (resource, `dg.EnvVar`) |
| `CUSTOMERGAUGE_API_BASE_URL` | `https://api.{region}.customergauge.com` | API host; http on loopback only (resource) |
| `CUSTOMERGAUGE_AUTH_BASE_URL` | `https://auth.{region}.customergauge.com` | token host (resource) |
| `CUSTOMERGAUGE_SYSTEM_TIMEZONE` | `UTC` | IANA zone of the API's dates, which carry none (resources) |
| `CUSTOMERGAUGE_PER_PAGE` | `1000` | records per page, 1..1000 (resource, when a sync starts) |
| `CG_LAKE_ROOT` | `lake`; `demo_lake` in `run.py dev` | the lake: a folder or `s3://bucket/prefix` (LakeResource) |
| `CG_ACCOUNTS_FILE` | unset: one account, from the variables above | YAML file listing several accounts (accounts.py) |
| `CG_PARTITIONS_START` | recorded in `$DAGSTER_HOME` | first hourly partition: a UTC day or hour (partitions.py) |
| `CG_FRESHNESS_HOURS` | `2` | hours without a materialization before an asset fails freshness |
| `CG_LOOKBACK_HOUR` | `2` | daily UTC hour of the trailing-window re-read, -1: off (run config) |
| `CG_LOOKBACK_DAYS` | `35` | days the daily re-read covers (run config) |
| `CG_LOOKBACK_FIELD` | `date_survey_response` | `period[field]` of the responses' re-read (run config) |
| `CG_NON_RESPONSES_LOOKBACK_FIELD` | `date_sent` | `period[field]` of the non-responses' re-read (run config) |
| `CG_LEASE_WAIT_SECONDS` | `1800` | wait for another run's sync, rebuild or flattening (run config, current_tables) |
| `CG_LEASE_TTL_SECONDS` | `120` | object-storage lease life after its last heartbeat, 3 s to a day (lib/lease.py) |
| `CG_DAGSTER_PORT` | `3000` | port of the UI of `run.py dev` (scripts/dev.py) |
| `CG_SANDBOX_PORT` | `8765` | port of the sandbox of `run.py dev` (scripts/dev.py) |
| `DAGSTER_HOME` | `./.dagster_home` (`run.py`) | the Dagster instance; holds the partition start record |

"resource" is `CustomerGaugeResource`, bound from the environment in `definitions.py`; "run config" is
`RawResponsesConfig` (assets.py), whose fields override the variables per run. The sandbox's environment
(credentials and base URLs pointing at it) is ``cg_dagster.sandbox.project_env``.

Values are read when used, so a malformed one fails the run that needs it with an error naming the variable
and the fix (``CustomerGaugeConfigError``), and never stops the code location from loading. The exceptions
are `CG_PARTITIONS_START`, `CG_FRESHNESS_HOURS` and `CG_ACCOUNTS_FILE`: they shape the asset definitions (the
partition grid, the freshness policy, the accounts) that Dagster builds when it loads the code, so a bad value
stops the load, with the same kind of error.

With `CG_ACCOUNTS_FILE` set, each account's region, credentials (by the names of its own variables), hosts,
time zone and lake come from the file (``cg_dagster/customergauge/accounts.py``), and `CUSTOMERGAUGE_REGION`,
`_CLIENT_ID`, `_CLIENT_SECRET`, `_API_BASE_URL`, `_AUTH_BASE_URL`, `_SYSTEM_TIMEZONE` and `CG_LAKE_ROOT` are not
read; every other variable applies to every account.

No Dagster import: ``cg_dagster/lib`` may use it.
"""

import datetime as dt
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from cg_dagster.lib.client.errors import CustomerGaugeConfigError

PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's hourly keys, e.g. 2026-11-29-09:00 (UTC)


@dataclass(frozen=True)
class Setting:
    """One environment variable: its ``name``, its ``default`` as text (None: no default) and, for errors,
    what is wrong with a bad value and the fix (``problem``, e.g. "must be a whole number of seconds, 0 or
    more, e.g. 1800")."""

    name: str
    default: Optional[str]
    problem: str

    def text(self, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
        """The value without surrounding blanks; ``default`` when unset or blank. ``environ`` defaults to
        ``os.environ``."""
        value = (os.environ if environ is None else environ).get(self.name, "").strip()
        return value or self.default

    def integer(
        self,
        environ: Optional[Mapping[str, str]] = None,
        *,
        minimum: Optional[int] = None,
        maximum: Optional[int] = None,
    ) -> int:
        """The value as an int, from ``minimum`` to ``maximum`` when given.

        Raises:
            CustomerGaugeConfigError: not a whole number (or out of range); names the variable and the fix.
        """
        text = self.text(environ)
        try:
            value = int(text, 10)
        except (TypeError, ValueError):
            value = None
        if value is None or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.error(text)
        return value

    def number(self, environ: Optional[Mapping[str, str]] = None, *, above: float, maximum: float) -> float:
        """The value as a float, above ``above`` and at most ``maximum`` (NaN and infinities refused).

        Raises:
            CustomerGaugeConfigError: names the variable and the fix.
        """
        text = self.text(environ)
        try:
            value = float(text)
        except (TypeError, ValueError):
            value = math.nan
        if not above < value <= maximum:
            raise self.error(text)
        return value

    def error(self, text: Optional[str], source: Optional[str] = None) -> CustomerGaugeConfigError:
        """The error for a malformed value: ``<source>='<text>' <problem>``; ``source`` defaults to the
        variable's name (another source: a file holding the value)."""
        unset = f", or unset it (default {self.default})" if self.default is not None else ""
        return CustomerGaugeConfigError(f"{source or self.name}={text!r} {self.problem}{unset}")


REGION = Setting("CUSTOMERGAUGE_REGION", "eu", "must be eu, us or au (the region of your CustomerGauge system)")
CLIENT_ID = Setting("CUSTOMERGAUGE_CLIENT_ID", None, "must be the Client ID of your Connected App")
CLIENT_SECRET = Setting("CUSTOMERGAUGE_CLIENT_SECRET", None, "must be the Client Secret of your Connected App")
API_BASE_URL = Setting("CUSTOMERGAUGE_API_BASE_URL", None, "must be an https URL: https://api.eu.customergauge.com")
AUTH_BASE_URL = Setting("CUSTOMERGAUGE_AUTH_BASE_URL", None, "must be an https URL: https://auth.eu.customergauge.com")
SYSTEM_TIMEZONE = Setting("CUSTOMERGAUGE_SYSTEM_TIMEZONE", "UTC", "must be an IANA time zone, e.g. Europe/Amsterdam")
PER_PAGE = Setting("CUSTOMERGAUGE_PER_PAGE", "1000", "must be an integer from 1 to 1000 (vendor page)")
LAKE_ROOT = Setting("CG_LAKE_ROOT", "lake", "must be the lake's folder, e.g. /data/customergauge")
ACCOUNTS_FILE = Setting("CG_ACCOUNTS_FILE", None, "must be the path of the accounts file (YAML)")
PARTITIONS_START = Setting(
    "CG_PARTITIONS_START",
    None,
    "is not the start of an hourly partition: give a UTC day (2026-11-29) or hour (2026-11-29-09:00)",
)
FRESHNESS_HOURS = Setting("CG_FRESHNESS_HOURS", "2", "must be a number of hours from 0 to 8784, e.g. 2")
LOOKBACK_HOUR = Setting("CG_LOOKBACK_HOUR", "2", "must be a whole number: an hour 0..23, or -1 to turn the re-read off")
LOOKBACK_DAYS = Setting("CG_LOOKBACK_DAYS", "35", "must be a whole number of days, e.g. 35")
LOOKBACK_FIELD = Setting(
    "CG_LOOKBACK_FIELD", "date_survey_response", "must be a period field: date_survey_response, ..."
)
NON_RESPONSES_LOOKBACK_FIELD = Setting(
    "CG_NON_RESPONSES_LOOKBACK_FIELD", "date_sent", "must be a period field a non-response carries: date_sent, ..."
)
LEASE_WAIT_SECONDS = Setting("CG_LEASE_WAIT_SECONDS", "1800", "must be a whole number of seconds, 0 or more, e.g. 1800")
LEASE_TTL_SECONDS = Setting("CG_LEASE_TTL_SECONDS", "120", "must be a number of seconds from 3 to 86400, e.g. 120")
DAGSTER_PORT = Setting("CG_DAGSTER_PORT", "3000", "is not a TCP port: set a number from 1 to 65535")
SANDBOX_PORT = Setting("CG_SANDBOX_PORT", "8765", "is not a TCP port: set a number from 1 to 65535")


def setting_names() -> frozenset[str]:
    """The names of the environment variables declared above (every ``Setting`` of this module)."""
    return frozenset(value.name for value in globals().values() if isinstance(value, Setting))


def parse_partitions_start(text: str, source: str = PARTITIONS_START.name) -> str:
    """The partition key (``PARTITION_KEY_FORMAT``) of a start given as ``YYYY-MM-DD`` (00:00 UTC) or
    ``YYYY-MM-DD-HH:00``.

    Raises:
        CustomerGaugeConfigError: anything else, or a start not on a whole hour; the message names ``source``
            (the variable, or the file that recorded the start).
    """
    value = text.strip()
    for fmt in ("%Y-%m-%d", PARTITION_KEY_FORMAT):
        try:
            start = dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
        if start.minute == 0:
            return start.strftime(PARTITION_KEY_FORMAT)
    raise PARTITIONS_START.error(text, source)
