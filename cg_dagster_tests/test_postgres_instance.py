"""The production instance (deploy/dagster.yaml) against a real PostgreSQL server, and the same queue on SQLite.

`dagster instance info` validates the file; a materialization of the group is stored in PostgreSQL; and with
the deployed layout (a code server from `dagster code-server start`, `dagster-daemon run` on
deploy/workspace.yaml) the daemon runs the hourly schedule's tick, the tag limit keeps a second sync run
queued while the first runs, and a sync run killed with SIGKILL is failed at once so the queued run starts,
takes the lake's sync lease without waiting and syncs.
"""

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    ScheduleInstigatorData,
    TickStatus,
)

from cg_dagster.customergauge.keys import RAW_KEY, SYNC_RUN_TAGS
from cg_dagster.customergauge.schedules import hourly_sync_job, hourly_sync_schedule
from cg_dagster.lib.lake import Lake
from cg_dagster.sandbox import SandboxFaults
from cg_dagster_tests import _fixtures_postgres
from cg_dagster_tests._fixtures_dev import free_port
from cg_dagster_tests._fixtures_runs import (
    NO_LOOKBACK,
    PROJECT,
    assert_exactly_once,
    assert_only_complete_files,
    cli_env,
    raw_metadata,
    run,
)
from cg_dagster_tests._fixtures_sandbox import assert_current_matches_sandbox, make_resources

DEPLOY = PROJECT / "deploy"
BIN = Path(sys.executable).parent
TIMEOUT = 180  # seconds for any one wait below; each normally takes a few seconds
QUEUE_PASS = "Priority sorting and checking tag concurrency limits for queued runs."
# one queued sync at a time per account: the tag's value is the account (AccountNames.sync_run_tags)
PER_ACCOUNT_LIMIT = {"key": "customergauge/sync", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
postgres, pg_env = _fixtures_postgres.postgres, _fixtures_postgres.pg_env  # the server's fixtures, used here


def deployed_config(storage: str) -> dict:
    """deploy/dagster.yaml as written ("postgres"), or with its storage left to the default ("sqlite")."""
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text(encoding="utf-8"))
    if storage == "sqlite":
        del config["storage"]
    return config


def make_home(tmp_path: Path, storage: str) -> Path:
    """A DAGSTER_HOME with the deployed dagster.yaml, its storage created once (before several processes
    open it). The DAGSTER_PG_* variables must be in this process's environment for "postgres". The daemon
    looks at the queue every second instead of every 5 s (Dagster's default), which only makes tests faster."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = deployed_config(storage)
    config["run_coordinator"]["config"] = {"dequeue_interval_seconds": 1}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
    return home


# ---- the file itself -----------------------------------------------------------------------------------


def test_the_deployed_queue_limits_the_tag_every_sync_job_run_carries():
    config = deployed_config("postgres")
    [limit] = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert limit == PER_ACCOUNT_LIMIT
    assert limit["key"] in SYNC_RUN_TAGS
    assert hourly_sync_job.tags.items() >= SYNC_RUN_TAGS.items()
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    # no secret and no address in the file: every connection setting comes from the environment
    assert config["storage"]["postgres"]["postgres_db"] == {
        **{
            field: {"env": f"DAGSTER_PG_{name}"}
            for field, name in [
                ("hostname", "HOST"),
                ("port", "PORT"),
                ("username", "USER"),
                ("password", "PASSWORD"),
                ("db_name", "DB"),
            ]
        },
        "scheme": "postgresql+psycopg2",
    }


def test_the_image_serves_the_code_location_the_workspace_names():
    """deploy/Dockerfile is not built here (no base images in CI): its text agrees with the project instead."""
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    dagster = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["dagster"]
    [workspace] = yaml.safe_load((DEPLOY / "workspace.yaml").read_text(encoding="utf-8"))["load_from"]
    command = json.loads(re.search(r"^CMD (\[.*?\])$", dockerfile, re.M | re.S).group(1).replace("\\\n", ""))
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-m") + 1] == dagster["module_name"]
    assert command[command.index("--location-name") + 1] == dagster["code_location_name"]
    assert workspace["grpc_server"]["location_name"] == dagster["code_location_name"]
    assert workspace["grpc_server"]["port"] == {"env": "DAGSTER_CODE_SERVER_PORT"}
    assert 'pip install --no-cache-dir ".[postgres]"' in dockerfile
    for line in re.findall(r"^COPY (.*)$", dockerfile, re.M):
        for source in line.split()[:-1]:
            assert (PROJECT / source).exists(), source
            assert f"!{source}" in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8"), source


@pytest.mark.slow
def test_dagster_instance_info_validates_the_deployed_config_on_postgres(pg_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), **pg_env)
    done = subprocess.run(
        [BIN / "dagster", "instance", "info"], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for name in (
        "run_storage: PostgresRunStorage",
        "event_log_storage: PostgresEventLogStorage",
        "schedule_storage: PostgresScheduleStorage",
        "class: DefaultRunLauncher",
        "- key: customergauge/sync\n      value:\n        applyLimitPerUniqueValue: true\n      limit: 1",
        "managed_python_loggers:\n  - cg_dagster",
    ):
        assert name in output, name
    # the schema is created and current on the server
    assert re.search(r"run_storage:\n    current: (\w+)\n    latest: \1\n", output), output
    assert pg_env["DAGSTER_PG_PASSWORD"] not in output

    # a variable left unset is named in the error, not a connection attempt with an empty password
    del env["DAGSTER_PG_PASSWORD"]
    done = subprocess.run(
        [BIN / "dagster", "instance", "info"], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode != 0
    assert "DAGSTER_PG_PASSWORD" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_materialization_of_the_group_is_stored_in_postgres(sandbox, pg_env, tmp_path, monkeypatch):
    for name, value in pg_env.items():
        monkeypatch.setenv(name, value)
    home = make_home(tmp_path, "postgres")
    lake = Lake(tmp_path / "lake")
    partition = "2026-11-02-10:00"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().run_queue_config.tag_concurrency_limits == [PER_ACCOUNT_LIMIT]
        result = run(instance, make_resources(sandbox, lake.root), partition)
        cursor = raw_metadata(result)["cursor"]
    assert cursor == lake.read_head().cursor
    assert_current_matches_sandbox(lake, sandbox)
    # a new instance on the same database (another process, another day) sees the run, its materializations
    # and its eight check results
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert "PostgresEventLogStorage" in type(instance.event_log_storage).__name__
        [stored] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_KEY, asset_partitions=[partition]), limit=5
        ).records
        assert stored.run_id == result.run_id
        assert stored.asset_materialization.metadata["cursor"].value == cursor
        checks = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        evaluations = [record.event_log_entry.dagster_event.event_specific_data for record in checks.records]
        assert len(evaluations) == 8 and all(evaluation.passed for evaluation in evaluations)
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS


# ---- the deployed layout: code server, daemon, queue --------------------------------------------------


def latest_tick(now: dt.datetime) -> dt.datetime:
    """The latest minute-5 tick of the hourly schedule at or before ``now`` (UTC)."""
    tick = now.replace(minute=5, second=0, microsecond=0)
    return tick if tick <= now else tick - dt.timedelta(hours=1)


def wait_for(what: str, condition, processes: dict[str, subprocess.Popen], logs: dict[str, Path]):
    """Poll ``condition`` until it returns a true value (returned), failing with ``what`` and the
    processes' log tails when one of them exits or TIMEOUT passes."""
    deadline = time.monotonic() + TIMEOUT
    while not (value := condition()):
        for name, process in processes.items():
            if process.poll() is not None:
                pytest.fail(
                    f"{name} exited ({process.returncode}) while waiting for {what}:\n" + logs[name].read_text()[-3000:]
                )
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {name}\n{logs[name].read_text()[-2000:]}" for name in processes)
            pytest.fail(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.2)
    return value


def start(command: list, env: dict, log: Path) -> subprocess.Popen:
    """``command`` in its own process group, output to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            command, env=env, cwd=PROJECT, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group started by ``start``; SIGKILL if it is still there after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def schedule_from(origin: GrpcServerCodeLocationOrigin, instance):
    """The hourly schedule as the daemon sees it through the code server, or None while it is loading."""
    try:
        location = origin.create_location(instance)
    except Exception:  # the server is still starting: connection refused, or its code not loaded yet
        return None
    with location:
        return location.get_repository("__repository__").get_schedule(hourly_sync_schedule.name)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["postgres", "sqlite"])
def test_the_daemon_runs_the_schedule_and_the_queue_holds_a_second_sync_until_a_killed_one_is_failed(
    storage, sandbox, tmp_path, monkeypatch, request
):
    pg = request.getfixturevalue("pg_env") if storage == "postgres" else {}
    for name, value in pg.items():
        monkeypatch.setenv(name, value)
    now = dt.datetime.now(dt.UTC)
    soon = now + dt.timedelta(seconds=90)  # the daemon's first pass comes within seconds of its start
    if latest_tick(soon) != latest_tick(now):  # a tick is due before it: let that tick pass first, so that
        time.sleep((latest_tick(soon) - now).total_seconds() + 5)  # exactly one tick falls in the window
    tick = latest_tick(dt.datetime.now(dt.UTC))
    partition = (tick - dt.timedelta(hours=1)).strftime("%Y-%m-%d-%H:00")  # the 10:05 tick syncs 09:00

    home = make_home(tmp_path, storage)
    lake = Lake(tmp_path / "lake")
    port = free_port()
    env = dict(
        cli_env(sandbox, lake, home, per_page=50),
        DAGSTER_CODE_SERVER_HOST="127.0.0.1",
        DAGSTER_CODE_SERVER_PORT=str(port),
        **pg,
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("code server", "daemon")}
    processes = {}
    sandbox.faults = SandboxFaults(latency=120)  # the first sync run hangs on its first request

    with contextlib.ExitStack() as cleanup, dg.DagsterInstance.from_config(str(home)) as instance:
        serve = f"code-server start -m cg_dagster.definitions -h 127.0.0.1 -p {port} --location-name cg_dagster"
        processes["code server"] = start([BIN / "dagster", *serve.split()], env, logs["code server"])
        cleanup.callback(stop, processes["code server"])
        origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=port, location_name="cg_dagster")
        schedule = wait_for("the code server", lambda: schedule_from(origin, instance), processes, logs)
        # The schedule has been running since just before the latest tick (as on a daemon that was down for
        # it): the daemon's first pass runs that tick, as it runs the latest missed tick after downtime.
        instance.add_instigator_state(
            InstigatorState(
                schedule.get_remote_origin(),
                InstigatorType.SCHEDULE,
                InstigatorStatus.DECLARED_IN_CODE,
                ScheduleInstigatorData(schedule.cron_schedule, start_timestamp=tick.timestamp() - 60),
            )
        )
        processes["daemon"] = start(
            [BIN / "dagster-daemon", "run", "-w", DEPLOY / "workspace.yaml"], env, logs["daemon"]
        )
        cleanup.callback(stop, processes["daemon"])

        def sync_holder():
            holder = lake.lease("sync").holder()
            return holder if holder and instance.get_run_by_id(holder["run_id"]) else None

        first = wait_for("the tick's run to take the sync lease", sync_holder, processes, logs)
        ticked = instance.get_run_by_id(first["run_id"])
        assert ticked.tags["dagster/schedule_name"] == hourly_sync_schedule.name
        assert ticked.tags["dagster/partition"] == partition
        assert ticked.tags.items() >= SYNC_RUN_TAGS.items()
        assert ticked.status == dg.DagsterRunStatus.STARTED
        [schedule_tick] = instance.get_ticks(schedule.get_remote_origin_id(), schedule.selector_id)
        assert schedule_tick.status == TickStatus.SUCCESS and schedule_tick.run_ids == [ticked.run_id]

        # A second sync of the same hour, launched as an operator would: queued behind the first.
        tags, config = json.dumps({"dagster/partition": partition}), json.dumps(NO_LOOKBACK)
        launch = ["job", "launch", "-w", DEPLOY / "workspace.yaml", "-j", hourly_sync_job.name]
        launched = subprocess.run(
            [BIN / "dagster", *launch, "--tags", tags, "--config-json", config],
            env=env, cwd=PROJECT, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
        [queued] = [r for r in instance.get_runs() if r.run_id != ticked.run_id]
        assert queued.tags.items() >= SYNC_RUN_TAGS.items()
        seen = len(logs["daemon"].read_text())

        def two_queue_passes() -> bool:
            """Two passes of the queue after the submission: had the first pass launched the run, the second
            would have found no queued run and said nothing. A run that leaves the queue fails at once."""
            status = instance.get_run_by_id(queued.run_id).status
            assert status == dg.DagsterRunStatus.QUEUED, f"the second sync run left the queue: {status}"
            return logs["daemon"].read_text()[seen:].count(QUEUE_PASS) >= 2

        wait_for("two passes of the run queue", two_queue_passes, processes, logs)
        assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.QUEUED
        assert instance.get_run_by_id(ticked.run_id).status == dg.DagsterRunStatus.STARTED
        assert lake.lease("sync").holder()["run_id"] == ticked.run_id

        # kill -9 the first run's process (the lease holder): the code server that started it fails the run,
        # the queue starts the second, and the second takes the lease at once.
        sandbox.faults = SandboxFaults()
        assert first["pid"] not in (processes["code server"].pid, processes["daemon"].pid)
        os.kill(first["pid"], signal.SIGKILL)
        done = wait_for(
            "the queued run to finish",
            lambda: (r := instance.get_run_by_id(queued.run_id)).is_finished and r,
            processes,
            logs,
        )
        assert instance.get_run_by_id(ticked.run_id).status == dg.DagsterRunStatus.FAILURE
        messages = [entry.message for entry in instance.all_logs(done.run_id)]
        assert done.status == dg.DagsterRunStatus.SUCCESS, "\n".join(messages)[-3000:]
        assert not [m for m in messages if "waiting for the sync lease" in m]

    assert lake.read_head() is not None
    assert_exactly_once(lake, sandbox)
    leftovers = tuple(path.name for path in (lake.root / "_tmp").iterdir()) if (lake.root / "_tmp").is_dir() else ()
    killed = r"(raw_responses|responses|response_[a-z]+)__.*\.parquet\..*"  # the killed step's, swept a day later
    assert all(re.fullmatch(killed, name) for name in leftovers), leftovers
    assert_only_complete_files(lake, tmp_leftovers=leftovers)
    assert_current_matches_sandbox(lake, sandbox)
