"""Helpers of the Dagster-run tests (test_assets.py, test_faults.py): runs, lake invariants, `dagster` subprocesses."""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc

from cg_dagster.customergauge.assets import current_tables, raw_responses
from cg_dagster.customergauge.keys import RAW_KEY, RAW_OP, raw_run_config  # noqa: F401 (RAW_OP: re-exported)
from cg_dagster.lib.lake import Lake
from cg_dagster.sandbox import SandboxServer
from cg_dagster_tests._fixtures_sandbox import assert_current_matches_sandbox

ASSETS = [raw_responses, current_tables]  # raw_responses' step writes the flattened tables too
NO_LOOKBACK = raw_run_config(lookback_hour=-1)
PROJECT = Path(__file__).resolve().parents[1]


def run(instance, resources, partition, run_config=NO_LOOKBACK, raise_on_error=True):
    """Materialize raw_responses, the flattened tables and the current tables for one partition."""
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        partition_key=partition,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def materialization(result, key: dg.AssetKey) -> dg.AssetMaterialization:
    """The run's one materialization of ``key``."""
    [mat] = [event.materialization for event in result.get_asset_materialization_events() if event.asset_key == key]
    return mat


def raw_metadata(result) -> dict:
    """Metadata values of the run's raw_responses materialization."""
    mat = materialization(result, RAW_KEY)
    return {key: value.value for key, value in mat.metadata.items()}


def failure_text(result) -> str:
    """Every step failure of a failed run, as text (message and cause chain)."""
    return "\n".join(event.event_specific_data.error.to_string() for event in result.get_step_failure_events())


def numbers(records: list[dict]) -> list[int]:
    return [record["number_customergauge"] for record in records]


def raw_numbers(lake: Lake, partition: str, sync_pass: str = "cursor") -> list[int]:
    """number_customergauge of one raw partition file's rows of ``sync_pass``, in file order."""
    table = lake.read_table(lake.partition_path("raw_responses", partition))
    return table.filter(pc.equal(table.column("sync_pass"), sync_pass)).column("number_customergauge").to_pylist()


def cursor_pass_numbers(lake: Lake) -> list[int]:
    """number_customergauge of every cursor-pass row in the union of raw partitions."""
    found = []
    for path in lake.partition_files("raw_responses"):
        table = lake.read_table(path, columns=["number_customergauge", "sync_pass"])
        found += table.filter(pc.equal(table.column("sync_pass"), "cursor")).column("number_customergauge").to_pylist()
    return found


def assert_exactly_once(lake: Lake, sandbox: SandboxServer, resent: tuple[int, ...] = ()) -> None:
    """Every response of the sandbox is in exactly one cursor-pass row of the lake (``resent``: numbers a
    forward cursor legitimately saw twice, i.e. records moved to a higher position upstream)."""
    got = collections.Counter(cursor_pass_numbers(lake))
    want = collections.Counter(numbers(sandbox.records()) + list(resent))
    assert got == want, {"missing": want - got, "extra": got - want}


def assert_only_complete_files(lake: Lake, tmp_leftovers: tuple[str, ...] = ()) -> None:
    """Table folders hold complete .parquet files only; ``_tmp/`` holds nothing but ``tmp_leftovers``
    (names of stray files a killed run leaves until ``Lake.sweep_tmp`` removes them a day later)."""
    for folder in lake.root.iterdir():
        if folder.name.startswith("_"):
            continue
        for path in folder.glob("*/*") if folder.name == "current" else folder.iterdir():  # current/<table>/<range>
            assert path.is_file() and path.suffix == ".parquet", path
            lake.parquet_file(path).metadata  # noqa: B018 - a complete file has a readable footer
    tmp = lake.scratch_dir("uploads") if lake.storage.remote else lake.root / "_tmp"  # S3: the upload files
    left = sorted(path.name for path in tmp.iterdir()) if tmp.is_dir() else []
    assert left == sorted(tmp_leftovers), left


def assert_lake_correct(lake: Lake, sandbox: SandboxServer) -> None:
    """The end-of-case checks of the fault suite: every response exactly once in the cursor-pass rows, only
    complete files in the table folders and nothing in ``_tmp/``, current tables equal to the sandbox's."""
    assert_exactly_once(lake, sandbox)
    assert_only_complete_files(lake)
    assert_current_matches_sandbox(lake, sandbox)


def responses_statuses(sandbox: SandboxServer) -> list[int]:
    """HTTP status of every request to the responses endpoint, in order."""
    return [entry.status for entry in sandbox.requests_log if entry.path.endswith("/responses")]


def sent_cursors(sandbox: SandboxServer) -> list[str | None]:
    """The cursor parameter of every request to the responses endpoint, in order (None: none sent)."""
    return [dict(entry.query).get("cursor") for entry in sandbox.requests_log if entry.path.endswith("/responses")]


# ---- `dagster asset materialize` subprocesses ------------------------------------------------------------


def dagster_home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME holding the project's dagster.yaml, its storage created once (two processes creating a
    fresh SQLite schema at the same time race: 'table secondary_indexes already exists')."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    instance.get_runs(limit=1)
    instance.dispose()
    return home


def cli_env(sandbox: SandboxServer, lake: Lake, home: Path, per_page: int) -> dict:
    """Environment of a `dagster` subprocess pointed at ``sandbox`` and ``lake``."""
    return dict(
        os.environ,
        **sandbox.project_env(),
        CUSTOMERGAUGE_PER_PAGE=str(per_page),
        CG_LAKE_ROOT=str(lake.root),
        DAGSTER_HOME=str(home),
    )


def start_materialize(env: dict, partition: str, run_config: dict = NO_LOOKBACK) -> subprocess.Popen:
    """Start `dagster asset materialize` of raw_responses for one partition in its own process group."""
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "cg_dagster.definitions",
        "--select", "customergauge/raw_responses", "--partition", partition,
        "--config-json", json.dumps(run_config),
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=env, cwd=PROJECT, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def kill_after_pages(process: subprocess.Popen, sandbox: SandboxServer, pages: int, timeout: float) -> None:
    """SIGKILL the process group of ``process`` (``start_materialize``) once the sandbox has served ``pages``
    responses pages (HTTP 200), i.e. mid-sync; fails if it exits first or serves none in ``timeout`` seconds."""
    try:
        deadline = time.monotonic() + timeout
        while responses_statuses(sandbox).count(200) < pages:
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the subprocess served no pages in time"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=timeout)
