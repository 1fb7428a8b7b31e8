"""The sandbox the Dagster and lake tests sync from: the ``sandbox`` fixture (registered in conftest.py),
Dagster resources bound to it, and its ground truth as current tables to compare a lake with."""

import datetime as dt

import pytest

from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource
from cg_dagster.lib.flatten import flatten_records
from cg_dagster.lib.schemas import CURRENT_TABLES, TABLES
from cg_dagster.sandbox import SandboxServer

SANDBOX_ID, SANDBOX_SECRET = "test-client", "test-secret-do-not-log"


@pytest.fixture
def sandbox():
    """A sandbox with 350 deterministic records on a free loopback port."""
    with SandboxServer(seed=11, records=350, client_id=SANDBOX_ID, client_secret=SANDBOX_SECRET) as server:
        yield server


def make_resources(sandbox: SandboxServer, lake_root, **overrides) -> dict:
    """Dagster resources bound to ``sandbox`` and a lake at ``lake_root``; fast retries for tests."""
    settings = dict(
        client_id=SANDBOX_ID,
        client_secret=SANDBOX_SECRET,
        api_base_url=sandbox.base_url,
        auth_base_url=sandbox.base_url,
        per_page=100,
        backoff_factor=0.01,
    )
    settings.update(overrides)
    lake = LakeResource(root=str(lake_root), system_timezone=settings.get("system_timezone", "UTC"))
    return {"customergauge": CustomerGaugeResource(**settings), "lake": lake}


def expected_current(sandbox: SandboxServer, system_timezone: str = "UTC") -> dict:
    """The sandbox's ground truth flattened: {table: list of row dicts without fetched_at, in key order}."""
    flat = flatten_records(
        sandbox.records(), fetched_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), system_timezone=system_timezone
    )
    return {name: _rows(flat.tables[name], TABLES[name].key) for name in CURRENT_TABLES}


def read_current(lake) -> dict:
    """The lake's current tables: {table: list of row dicts without fetched_at, in key order}."""
    return {name: _rows(lake.read_table(lake.current_path(name)), TABLES[name].key) for name in CURRENT_TABLES}


def _rows(table, key) -> list[dict]:
    rows = table.drop_columns(["fetched_at"]).to_pylist()
    return sorted(rows, key=lambda row: tuple((row[k] is None, row[k] if row[k] is not None else 0) for k in key))


def assert_current_matches_sandbox(lake, sandbox: SandboxServer) -> None:
    """Every current table equals the sandbox's ground truth, cell for cell (fetched_at aside)."""
    actual, expected = read_current(lake), expected_current(sandbox)
    for name in expected:
        assert len(actual[name]) == len(expected[name]), name
        for got, want in zip(actual[name], expected[name]):
            assert got == want, (name, got, want)
