"""Registers the suite's fixtures and settings; helpers live in the fixture modules (_fixtures_*.py)."""

import os
import time

import pytest

from cg_dagster.lib import client as client_module
from cg_dagster_tests._fixtures_s3 import lake_root, s3_root, s3_server  # noqa: F401 - fixtures, for every module
from cg_dagster_tests._fixtures_sandbox import sandbox  # noqa: F401 - the fixture, for every test module


def pytest_configure(config):
    """The whole suite runs with the host in a non-UTC zone (DST included): the host's zone must never leak
    into a date, a partition or a cursor. Subprocesses (dagster CLI runs) inherit it. The tests' partition
    keys are in 2026-11, so the partitions start there (whatever DAGSTER_HOME records)."""
    os.environ["CG_PARTITIONS_START"] = "2026-11-01"
    os.environ["TZ"] = "America/New_York"
    time.tzset()


@pytest.fixture(autouse=True)
def _fresh_token_cache():
    """Tokens are cached per process; every test starts without one."""
    client_module.clear_token_cache()
    yield
    client_module.clear_token_cache()
