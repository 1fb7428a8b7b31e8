"""The accounts file (``CG_ACCOUNTS_FILE``): several CustomerGauge accounts in one code location.

A YAML file with one key, ``accounts``, a list of accounts (a list, not a mapping by name: YAML keeps the last
of two equal keys without a word, so a duplicated name would vanish instead of being refused)::

    accounts:
      - name: emea                          # the account's part of every Dagster name (keys.AccountNames)
        region: eu                          # eu, us or au
        client_id_env: EMEA_CLIENT_ID    # NAMES of the variables holding the Connected App's id and secret,
        client_secret_env: EMEA_CLIENT_SECRET   # never the values: they are read when a run needs them
        lake_root: s3://bucket/customergauge/emea  # its own lake: cursors, leases and tables apart
        system_timezone: Europe/Amsterdam   # optional, default UTC
        api_base_url: https://...           # optional overrides of the region's hosts (http on loopback only)
        auth_base_url: https://...

Everything the file holds is checked when the code location loads (the file shapes the definitions, as
``CG_PARTITIONS_START`` does): a malformed file stops the load with ``CustomerGaugeConfigError`` naming the file,
the account, the field and the fix. The credentials are not read then: a variable unset or wrong fails only its
account's runs. No error repeats a value given for a variable name or an unknown key, since that value may be
a secret pasted in the wrong place.
"""

import re
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Optional

import yaml

from cg_dagster.lib.client import REGIONS, CustomerGaugeConfigError, validate_base_url
from cg_dagster.lib.flatten import FlattenError, system_zone
from cg_dagster.lib.lake import GLOB_CHARACTERS
from cg_dagster.lib.storage import PACKAGES, lake_identity
from cg_dagster.settings import ACCOUNTS_FILE

NAME = re.compile(r"[A-Za-z0-9_]+")  # Dagster's rule for names (dagster/_core/definitions/utils.py VALID_NAME_REGEX)
# Environment variable names as POSIX's utilities use them (upper case, digits, _): a value pasted where a name
# belongs (a secret, mixed case) is refused at load, before Dagster's EnvVar could name it in an error.
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


@dataclass(frozen=True)
class Account:
    """One account of the accounts file, validated (``load_accounts``). ``lake_root`` as ``CG_LAKE_ROOT``: a
    folder (relative to the working directory) or ``s3://bucket/prefix``."""

    name: str
    region: str
    client_id_env: str
    client_secret_env: str
    lake_root: str
    system_timezone: str = "UTC"
    api_base_url: Optional[str] = None
    auth_base_url: Optional[str] = None


REQUIRED = tuple(field.name for field in fields(Account) if field.default is MISSING)
KNOWN = tuple(field.name for field in fields(Account))


def load_accounts(path: str) -> list[Account]:
    """The accounts listed in the YAML file at ``path``, in file order.

    Raises:
        CustomerGaugeConfigError: the file is missing or not YAML; ``accounts`` is missing, empty or not a list; a
            top-level or account key is unknown; a required field is missing or not text; a name is not a valid
            Dagster name part or is repeated; a region, time zone, base URL or variable name is malformed; two
            accounts share a lake root or one lies inside another's. The message names the file, the account and
            the field, and says how to fix it.
    """
    source = f"{path} ({ACCOUNTS_FILE.name})"
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise CustomerGaugeConfigError(
            f"{source}: cannot be read ({error.strerror}): set {ACCOUNTS_FILE.name} to the accounts file, or unset it "
            "for the single account of the CUSTOMERGAUGE_* variables"
        ) from None
    except yaml.YAMLError as error:
        raise CustomerGaugeConfigError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("accounts"), list) or not document["accounts"]:
        raise CustomerGaugeConfigError(
            f"{source}: must hold a non-empty list 'accounts:' of accounts (name, region, client_id_env, "
            "client_secret_env, lake_root): see the README, 'Several accounts'"
        )
    extra = sorted(map(str, set(document) - {"accounts"}))
    if extra:
        raise CustomerGaugeConfigError(f"{source}: unknown top-level keys {extra}: only 'accounts' is read")
    accounts = [_account(source, index, entry) for index, entry in enumerate(document["accounts"])]
    _check_apart(source, accounts)
    return accounts


def _account(source: str, index: int, entry) -> Account:
    """Account number ``index`` of the file, validated field by field."""
    where = f"{source}: accounts[{index}]"
    if not isinstance(entry, dict):
        raise CustomerGaugeConfigError(f"{where} must be a mapping of {', '.join(KNOWN)}")
    if isinstance(entry.get("name"), str) and entry["name"].strip():
        where = f"{source}: account {entry['name']!r} (accounts[{index}])"
    unknown = sorted(map(str, set(entry) - set(KNOWN)))
    if unknown:
        raise CustomerGaugeConfigError(
            f"{where}: unknown keys {unknown}; the known ones are {', '.join(KNOWN)} (credentials are given by the "
            "names of their variables, client_id_env and client_secret_env, never by value)"
        )
    values = {}
    for field in KNOWN:
        value = entry.get(field)
        if value is not None and not isinstance(value, str):
            raise CustomerGaugeConfigError(f"{where}: {field} is not text: {_HINTS[field]}")
        if value and value.strip():
            values[field] = value.strip()
        elif field in REQUIRED:  # absent, null or blank (a blank lake_root would be the working directory)
            raise CustomerGaugeConfigError(f"{where}: {field} is missing: {_HINTS[field]}")
    account = Account(**values)
    if not NAME.fullmatch(account.name):
        raise CustomerGaugeConfigError(f"{where}: name {account.name!r} is not a valid Dagster name: {_HINTS['name']}")
    for field in ("client_id_env", "client_secret_env"):
        if not ENV_NAME.fullmatch(getattr(account, field)):  # the value is not repeated: it may be the secret itself
            raise CustomerGaugeConfigError(f"{where}: {field} is not an environment variable name: {_HINTS[field]}")
    if glob := sorted(GLOB_CHARACTERS.intersection(account.lake_root)):
        raise CustomerGaugeConfigError(
            f"{where}: lake_root {account.lake_root!r} holds {' '.join(glob)}, which DuckDB reads as a glob: "
            "give a path without * ? [ ] { }"
        )
    store = account.lake_root.partition("://")[0].lower() if "://" in account.lake_root else "file"
    if store not in (*PACKAGES, "file"):
        raise CustomerGaugeConfigError(
            f"{where}: lake_root {account.lake_root!r}: {store}:// is not a supported store: {_HINTS['lake_root']}"
        )
    if account.region not in REGIONS:
        raise CustomerGaugeConfigError(f"{where}: region {account.region!r} is unknown: {_HINTS['region']}")
    try:
        system_zone(account.system_timezone)
        for field in ("api_base_url", "auth_base_url"):
            if getattr(account, field) is not None:
                validate_base_url(getattr(account, field), f"{field} of account {account.name!r}")
    except FlattenError:
        zone = account.system_timezone
        raise CustomerGaugeConfigError(
            f"{where}: system_timezone {zone!r} is not an IANA time zone: {_HINTS['system_timezone']}"
        ) from None
    except CustomerGaugeConfigError as error:
        raise CustomerGaugeConfigError(f"{where}: {error}") from None
    return account


_HINTS = {
    "name": "give letters, digits and _ only (it becomes part of asset keys, job, schedule and resource names), "
    "e.g. emea",
    "region": f"give one of {', '.join(REGIONS)}, the region of the account's CustomerGauge system",
    "client_id_env": "give the NAME of the environment variable that holds the Connected App's client id, in "
    "upper case, digits and _, e.g. EMEA_CLIENT_ID",
    "client_secret_env": "give the NAME of the environment variable that holds the Connected App's client secret, "
    "in upper case, digits and _, e.g. EMEA_CLIENT_SECRET (never the secret itself)",
    "lake_root": "give the account's own lake, a folder or s3://bucket/prefix",
    "system_timezone": "give the IANA zone of the account's CustomerGauge system, e.g. Europe/Amsterdam, or leave it "
    "out for UTC",
    "api_base_url": "give an https URL, or leave it out for the region's host",
    "auth_base_url": "give an https URL, or leave it out for the region's host",
}


def _check_apart(source: str, accounts: list[Account]) -> None:
    """Refuse a repeated name, and two accounts whose lakes are the same or nested (their cursors, leases and
    tables would mix)."""
    seen: dict[str, Account] = {}
    for account in accounts:
        if account.name in seen:
            raise CustomerGaugeConfigError(
                f"{source}: account name {account.name!r} is listed twice: give each its own"
            )
        seen[account.name] = account
    roots = [(lake_identity(account.lake_root), account) for account in accounts]
    for i, (root, account) in enumerate(roots):
        for other_root, other in roots[i + 1 :]:
            if root == other_root or root.startswith(other_root + "/") or other_root.startswith(root + "/"):
                raise CustomerGaugeConfigError(
                    f"{source}: accounts {account.name!r} and {other.name!r} share a lake ({account.lake_root!r} and "
                    f"{other.lake_root!r}): give each account a lake_root of its own, neither inside the other, "
                    "so that their cursors, leases and tables stay apart"
                )
