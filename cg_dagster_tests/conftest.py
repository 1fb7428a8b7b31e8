"""Shared fixtures: a sandbox API over real HTTP, resources pointed at it, a lake in a temp folder."""

import pytest

from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource
from cg_dagster.lib import client as client_module
from cg_dagster.sandbox import SandboxServer

SANDBOX_ID, SANDBOX_SECRET = "test-client", "test-secret-do-not-log"


@pytest.fixture(autouse=True)
def _fresh_token_cache():
    """Tokens are cached per process; every test starts without one."""
    client_module.clear_token_cache()
    yield
    client_module.clear_token_cache()


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
    return {"customergauge": CustomerGaugeResource(**settings), "lake": LakeResource(root=str(lake_root))}
