"""The README's CLI block ("Without the UI") runs as written, on the sandbox: `dg launch` syncs the last
complete hour, `dg check defs` loads the definitions, `dagster job backfill` queues one run per partition."""

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster._core.instance.ref import InstanceRef

from cg_dagster.lib.lake import Lake

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
BIN = f"{Path(sys.executable).parent}/"  # the README's .venv/bin/: the environment running the tests


def readme_commands() -> list[str]:
    """The commands of the README's bash block that follows "Without the UI", continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"Without the UI .*?```bash\n(.*?)```", text, re.DOTALL).group(1)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def hours_ago(*backs: int) -> list[list[str]]:
    """The partition keys ``backs`` hours before now, and before a minute from now (a test can cross an hour)."""
    now = dt.datetime.now(dt.UTC)
    return [
        [(t - dt.timedelta(hours=h)).strftime("%Y-%m-%d-%H:00") for h in backs]
        for t in (now, now + dt.timedelta(minutes=5))
    ]


@pytest.mark.slow
def test_the_readme_cli_block_runs_as_written(sandbox, tmp_path):
    commands = readme_commands()
    assert commands[:2] == ["export DAGSTER_HOME=$PWD/.dagster_home_prod", "python3 run.py init"]
    home = tmp_path / "dagster_home"  # what `run.py init` prepares, in a temporary folder
    home.mkdir()
    (home / "dagster.yaml").symlink_to(PROJECT / "dagster.yaml")
    lake = Lake(tmp_path / "lake")
    env = {
        "PATH": "/usr/bin:/bin",
        "TZ": "America/New_York",
        "DAGSTER_HOME": str(home),
        "CG_LAKE_ROOT": str(lake.root),
        "CG_PARTITIONS_START": "2026-11-01",
        **sandbox.project_env(),
    }
    launch, check, backfill = commands[2:]
    synced = {keys[0] for keys in hours_ago(1)}
    backfilled = hours_ago(3, 2)
    outputs = {}
    for command in (launch, check, backfill):
        assert command.startswith(".venv/bin/")
        done = subprocess.run(
            ["bash", "-c", command.replace(".venv/bin/", BIN, 1)],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs[command] = done.stdout + done.stderr
    assert "All definitions loaded successfully." in outputs[check]
    [raw_file] = list((lake.root / "raw_responses").glob("*.parquet"))
    assert raw_file in {lake.partition_path("raw_responses", key) for key in synced}
    assert pq.read_metadata(raw_file).num_rows == len(sandbox.records()) == 350
    assert all(any(lake.current_path(name).rglob("*.parquet")) for name in ("responses", "response_tags"))
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        [materialization] = instance.fetch_materializations(
            dg.AssetKey(["customergauge", "raw_responses"]), limit=5
        ).records
        assert materialization.partition_key in synced
        [backfill] = instance.get_backfills()
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
    # queued, one run per partition, until a daemon runs them (the README says so)
    assert sorted(backfill.partition_names) in backfilled
    assert sorted(run.tags["dagster/partition"] for run in runs) == sorted(backfill.partition_names)
    assert {run.status for run in runs} == {dg.DagsterRunStatus.QUEUED}
