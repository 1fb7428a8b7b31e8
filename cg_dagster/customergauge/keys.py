"""Dagster names of the CustomerGauge assets: group, asset keys, op names, the hourly job, resource keys and the
sync runs' tags, for the default account and for each account of an accounts file (``AccountNames``).

One home for them, imported by the assets, the checks, the schedule, the scripts and the tests. Table names
come from the table contract (``lib/schemas.py``). The module-level names (``RAW_KEY``, ``FLAT_KEYS``, ...) are
the default account's: the zero-configuration code location, whose keys have no account part.
"""

from dataclasses import dataclass
from typing import Optional

import dagster as dg

from cg_dagster.lib.schemas import (
    CURRENT_NON_RESPONSES,
    CURRENT_TABLES,
    FLAT_TABLE_NAMES,
    NON_RESPONSE_FLAT_TABLES,
    NON_RESPONSES_TABLE,
    RAW_NON_RESPONSES_TABLE,
    RAW_TABLE,
)

KEY_PREFIX = "customergauge"
# The tag key of every run of an hourly sync job (schedule ticks, backfills): deploy/dagster.yaml's run queue
# starts at most one run per value of it at a time (tag_concurrency_limits, applyLimitPerUniqueValue).
SYNC_TAG = "customergauge/sync"


@dataclass(frozen=True)
class AccountNames:
    """Every Dagster name of one account's asset group. ``account`` None is the default account (no accounts
    file): today's names, ``customergauge/raw_responses``, group ``customergauge``, job
    ``customergauge_hourly_sync``, resources ``customergauge`` and ``lake``. An account ``acme`` (a valid Dagster
    name, checked by ``accounts.py``) gets ``customergauge/acme/raw_responses``, group ``customergauge_acme``,
    job ``customergauge_acme_hourly_sync``, resources ``customergauge_acme`` and ``lake_acme``."""

    account: Optional[str] = None

    @property
    def _prefix(self) -> list[str]:
        return [KEY_PREFIX] if self.account is None else [KEY_PREFIX, self.account]

    def _suffix(self, name: str) -> str:
        return name if self.account is None else f"{name}_{self.account}"

    def key(self, name: str) -> dg.AssetKey:
        """The asset key of table ``name`` (``customergauge[/<account>]/<name>``)."""
        return dg.AssetKey([*self._prefix, name])

    @property
    def group(self) -> str:
        return self._suffix(KEY_PREFIX)

    @property
    def raw_key(self) -> dg.AssetKey:
        return self.key(RAW_TABLE)

    @property
    def flat_keys(self) -> dict[str, dg.AssetKey]:
        return {name: self.key(name) for name in FLAT_TABLE_NAMES}

    @property
    def current_keys(self) -> dict[str, dg.AssetKey]:
        return {name: self.key(f"current_{name}") for name in CURRENT_TABLES}

    @property
    def raw_non_responses_key(self) -> dg.AssetKey:
        return self.key(RAW_NON_RESPONSES_TABLE)

    @property
    def non_response_keys(self) -> dict[str, dg.AssetKey]:
        """{table: key} of the tables flattened from raw_non_responses (``non_responses`` first)."""
        return {name: self.key(name) for name in NON_RESPONSE_FLAT_TABLES}

    @property
    def current_non_response_keys(self) -> dict[str, dg.AssetKey]:
        """{table: key of its current table} for the non-responses' flat tables (``current_non_responses``
        first)."""
        return {name: self.key(f"current_{name}") for name in NON_RESPONSE_FLAT_TABLES}

    @property
    def non_responses_key(self) -> dg.AssetKey:
        return self.key(NON_RESPONSES_TABLE)

    @property
    def current_non_responses_key(self) -> dg.AssetKey:
        return self.key(CURRENT_NON_RESPONSES.name)

    @property
    def all_keys(self) -> list[dg.AssetKey]:
        """The group's sixteen asset keys, in lineage order."""
        return [
            self.raw_key,
            *self.flat_keys.values(),
            *self.current_keys.values(),
            self.raw_non_responses_key,
            *self.non_response_keys.values(),
            *self.current_non_response_keys.values(),
        ]

    def op(self, name: str) -> str:
        """The op (step) name of asset or multi-asset ``name``: ``customergauge[__<account>]__<name>``, as Dagster
        names an asset's op after its key. Run config of an op goes under ``ops.<op>.config``."""
        return "__".join([*self._prefix, name])

    @property
    def current_op(self) -> str:
        """Op name of the current response tables: ``current_tables`` for the default account (today's),
        ``op("current_tables")`` for an account."""
        return "current_tables" if self.account is None else self.op("current_tables")

    @property
    def job(self) -> str:
        return f"{self.group}_hourly_sync"

    @property
    def api_resource(self) -> str:
        """Resource key of the account's ``CustomerGaugeResource``."""
        return self._suffix("customergauge")

    @property
    def lake_resource(self) -> str:
        """Resource key of the account's ``LakeResource``."""
        return self._suffix("lake")

    @property
    def sync_run_tags(self) -> dict[str, str]:
        """Tags of every run of the account's hourly job: one queued sync per account (``SYNC_TAG``'s value is
        the account; ``true`` for the default account, today's tag)."""
        return {SYNC_TAG: self.account or "true"}

    def raw_run_config(self, *, non_responses: bool = False, **config) -> dict:
        """Run config of a run that materializes the account's ``raw_responses`` (and ``raw_non_responses``
        with ``non_responses``): ``config`` (fields of ``RawResponsesConfig``, e.g. ``lookback_hour=-1``) under
        ``ops.<op>.config`` of each."""
        tables = (RAW_TABLE, RAW_NON_RESPONSES_TABLE) if non_responses else (RAW_TABLE,)
        return {"ops": {self.op(table): {"config": config} for table in tables}}


DEFAULT = AccountNames()
GROUP = DEFAULT.group
RAW_KEY = DEFAULT.raw_key
FLAT_KEYS = DEFAULT.flat_keys
CURRENT_KEYS = DEFAULT.current_keys
RAW_OP = DEFAULT.op(RAW_TABLE)  # the op of raw_responses: run config goes under ops.<RAW_OP>.config
RAW_NON_RESPONSES_KEY = DEFAULT.raw_non_responses_key
NON_RESPONSES_KEY = DEFAULT.non_responses_key
CURRENT_NON_RESPONSES_KEY = DEFAULT.current_non_responses_key
RAW_NON_RESPONSES_OP = DEFAULT.op(RAW_NON_RESPONSES_TABLE)
SYNC_RUN_TAGS = DEFAULT.sync_run_tags
raw_run_config = DEFAULT.raw_run_config
