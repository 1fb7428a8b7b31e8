"""Fault injection (issue 3, "Exactly-once lake"): real Dagster runs against the sandbox over real HTTP.

Every case ends with the lake's current tables equal to the sandbox's ground truth cell for cell, every
response exactly once in the cursor-pass rows of the raw partitions, and nothing but complete .parquet
files in the table folders.
"""

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._serdes import serialize_value

from cg_dagster.lib.client import CustomerGaugeAPIError, CustomerGaugeClient, SyncParams
from cg_dagster.lib.lake import CursorConflictError, Lake
from cg_dagster.lib.sync import sync_partition
from cg_dagster.sandbox import SandboxFaults
from cg_dagster_tests._fixtures_runs import (
    assert_lake_correct,
    PROJECT,
    RAW_OP,
    assert_exactly_once,
    assert_only_complete_files,
    cli_env,
    dagster_home,
    failure_text,
    numbers,
    raw_metadata,
    raw_numbers,
    responses_statuses,
    run,
    sent_cursors,
    start_materialize,
)
from cg_dagster_tests.conftest import (
    SANDBOX_ID,
    SANDBOX_SECRET,
    assert_current_matches_sandbox,
    make_resources,
    read_current,
)

P1, P2, P3 = "2026-11-01-10:00", "2026-11-01-11:00", "2026-11-01-12:00"
TABLES = ("raw_responses", "responses", "response_drivers", "response_tags", "response_questions", "response_properties")
CLI_TIMEOUT = 60  # seconds; a `dagster asset materialize` of this size takes about 4 s


def sync_twice_under(sandbox, tmp_path, faults: SandboxFaults, **resource_overrides) -> Lake:
    """Initial load (P1), 30 appended responses, incremental sync (P2), all with ``faults`` on; then the
    end-of-case checks. Returns the lake."""
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root, **resource_overrides)
    sandbox.faults = faults
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        appended = numbers(sandbox.append_records(30))
        run(instance, resources, P2)
    assert raw_numbers(lake, P2) == appended
    assert lake.read_head().cursor == sandbox.last_cursor
    assert_lake_correct(lake, sandbox)
    return lake


# ---- 1-4: transient faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("every, status", [(2, 500), (3, 502), (2, 503), (3, 504)])
def test_5xx_every_k_requests_completes_exactly_once(sandbox, tmp_path, every, status):
    sync_twice_under(sandbox, tmp_path, SandboxFaults(fail_every=every, fail_status=status))
    assert responses_statuses(sandbox).count(status) >= 3


@pytest.mark.parametrize("retry_after", [1, None])
def test_429_with_and_without_retry_after_completes(sandbox, tmp_path, retry_after):
    sync_twice_under(sandbox, tmp_path, SandboxFaults(rate_limit_every=4, retry_after=retry_after))
    assert responses_statuses(sandbox).count(429) >= 1


@pytest.mark.parametrize(
    "faults, expect_401",
    [
        pytest.param(SandboxFaults(token_ttl=1, latency=0.2), False, id="short-ttl-refreshed-before-expiry"),
        pytest.param(SandboxFaults(token_ttl=1, omit_expires_in=True, latency=0.2), True, id="expiry-unknown-401"),
    ],
)
def test_token_expiring_mid_sync_completes(sandbox, tmp_path, faults, expect_401):
    sync_twice_under(sandbox, tmp_path, faults, per_page=50)
    assert sandbox.token_requests >= 2
    if expect_401:  # the client assumed 3600 s, the token died after 1 s: a 401, one refresh, same page again
        assert 401 in responses_statuses(sandbox)


@pytest.mark.parametrize(
    "faults", [SandboxFaults(drop_body_every=3), SandboxFaults(truncate_json_every=3)], ids=["dropped", "truncated"]
)
def test_broken_bodies_are_requested_again(sandbox, tmp_path, faults):
    sync_twice_under(sandbox, tmp_path, faults)
    assert len(responses_statuses(sandbox)) >= 9  # 5 + 2 pages (with empty ones), and the broken ones again


# ---- 5: the empty last page ------------------------------------------------------------------------------


@pytest.mark.parametrize("empty_next", ["same", "null", "absent", "no_cursor"])
def test_empty_last_page_variants_keep_the_cursor(sandbox, tmp_path, empty_next):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    sandbox.faults = SandboxFaults(empty_next=empty_next)
    last_real = sandbox.last_cursor
    with dg.instance_for_test() as instance:
        assert raw_metadata(run(instance, resources, P1))["cursor"] == last_real
        assert lake.read_head().cursor == last_real
        appended = numbers(sandbox.append_records(30))
        sandbox.reset_log()
        run(instance, resources, P2)
    assert sent_cursors(sandbox) == [str(last_real), str(sandbox.last_cursor)]  # resumed; one page, one empty
    assert raw_numbers(lake, P2) == appended
    assert lake.read_head().cursor == sandbox.last_cursor
    assert_lake_correct(lake, sandbox)


# ---- 6: persistent failure -------------------------------------------------------------------------------


def test_persistent_failure_commits_nothing_and_the_same_partition_syncs_later(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root, max_retries=1)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        head = lake.read_head()
        appended = numbers(sandbox.append_records(40))
        sandbox.faults = SandboxFaults(fail_every=1, fail_status=503)
        failed = run(instance, resources, P2, raise_on_error=False)
        assert not failed.success
        assert "answered 503" in failure_text(failed)
        assert lake.read_head() == head
        assert [t for t in TABLES if lake.partition_path(t, P2).exists()] == []
        assert_only_complete_files(lake)

        sandbox.faults = SandboxFaults()
        meta = raw_metadata(run(instance, resources, P2))
    assert meta["sync_mode"] == "sync" and meta["cursor_start"] == head.cursor
    assert raw_numbers(lake, P2) == appended
    assert_lake_correct(lake, sandbox)


# ---- 7: kill -9 mid-sync ---------------------------------------------------------------------------------


def test_a_run_killed_mid_sync_commits_nothing_and_a_rerun_completes(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    sandbox.faults = SandboxFaults(latency=0.2)
    process = start_materialize(cli_env(sandbox, lake, dagster_home(tmp_path), per_page=50), P1)
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while responses_statuses(sandbox).count(200) < 2:
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the subprocess served no pages in time"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=CLI_TIMEOUT)
    assert process.returncode == -signal.SIGKILL
    assert 2 <= responses_statuses(sandbox).count(200) < 8  # killed mid-sync: 350 records need 7 pages + 1 empty
    assert lake.read_head() is None
    assert not lake.partition_path("raw_responses", P1).exists()
    leftovers = tuple(path.name for path in (lake.root / "_tmp").iterdir())
    assert all(name.startswith("raw_responses__2026-11-01-1000.parquet.") for name in leftovers)
    assert_only_complete_files(lake, tmp_leftovers=leftovers)

    # Rerun on another instance: the killed run stays STARTED in the first DAGSTER_HOME and holds its pool
    # slot there until the daemon ends it (see test_the_daemon_frees_the_pool_slot_of_a_killed_run...).
    sandbox.faults = SandboxFaults()
    with dg.instance_for_test() as instance:
        meta = raw_metadata(run(instance, make_resources(sandbox, lake.root), P1))
    assert meta["sync_mode"] == "sync" and meta["cursor_start"] is None
    assert raw_numbers(lake, P1) == numbers(sandbox.records())
    assert_exactly_once(lake, sandbox)
    assert_only_complete_files(lake)  # the rerun's write of the same target removed the leftover
    assert_current_matches_sandbox(lake, sandbox)


# ---- 8: wiped DAGSTER_HOME -------------------------------------------------------------------------------


def test_a_new_dagster_instance_resumes_from_the_lake_cursor(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance_a:
        committed = raw_metadata(run(instance_a, resources, P1))["cursor"]
    appended = numbers(sandbox.append_records(25))
    sandbox.reset_log()
    with dg.instance_for_test() as instance_b:
        assert instance_b.get_latest_materialization_event(dg.AssetKey(["customergauge", "raw_responses"])) is None
        meta = raw_metadata(run(instance_b, resources, P2))
    assert meta["cursor_start"] == committed
    assert sent_cursors(sandbox)[0] == str(committed)  # resumed, no reload
    assert raw_numbers(lake, P2) == appended
    assert_lake_correct(lake, sandbox)


# ---- 9: overlapping runs ---------------------------------------------------------------------------------


class PausingClient(CustomerGaugeClient):
    """A real client that stops after its first page until ``resume`` is set (the overlap made certain)."""

    def __init__(self, *, paged: threading.Event, resume: threading.Event, **settings):
        super().__init__(**settings)
        self._paged, self._resume = paged, resume

    def iter_pages(self, params, cursor=None, *, max_pages=None):
        for page in super().iter_pages(params, cursor, max_pages=max_pages):
            yield page
            self._paged.set()
            assert self._resume.wait(30)


def test_the_commit_refuses_when_another_sync_moved_the_head(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        appended = numbers(sandbox.append_records(40))
        sandbox.faults = SandboxFaults(latency=0.05)
        paged, resume, outcome = threading.Event(), threading.Event(), {}
        client = PausingClient(
            paged=paged, resume=resume, client_id=SANDBOX_ID, client_secret=SANDBOX_SECRET,
            api_base_url=sandbox.base_url, auth_base_url=sandbox.base_url, backoff_factor=0.01,
        )  # fmt: skip

        def slow_sync():
            try:
                sync_partition(client, SyncParams(per_page=20), lake, partition_key=P2, run_id="slow-P2")
            except Exception as exc:  # noqa: BLE001 - the assertion below names what was expected
                outcome["error"] = exc

        thread = threading.Thread(target=slow_sync)
        thread.start()
        assert paged.wait(30)
        run(instance, resources, P3)  # completes while the P2 sync is between its pages
        head_p3 = lake.read_head()
        resume.set()
        thread.join(30)
        client.close()
    assert isinstance(outcome.get("error"), CursorConflictError), outcome
    assert "head cursor moved during this run" in str(outcome["error"])
    assert lake.read_head() == head_p3 and head_p3.partition_key == P3 and head_p3.cursor == sandbox.last_cursor
    assert not lake.partition_path("raw_responses", P2).exists()
    assert raw_numbers(lake, P3) == appended
    assert_lake_correct(lake, sandbox)


def test_two_overlapping_dagster_processes_sync_one_at_a_time(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    sandbox.faults = SandboxFaults(latency=0.05)
    env = cli_env(sandbox, lake, dagster_home(tmp_path), per_page=50)
    processes = [start_materialize(env, partition) for partition in (P1, P2)]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=CLI_TIMEOUT)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert [p.returncode for p in processes] == [0, 0], [out[-3000:] for out in outputs]
    # Each process has its own token: the pages of one sync never interleave with the other's.
    tokens = [e.authorization for e in sandbox.requests_log if e.path.endswith("/responses")]
    runs = [token for i, token in enumerate(tokens) if i == 0 or tokens[i - 1] != token]
    assert len(runs) == len(set(runs)), runs
    # Whichever ran first loaded everything; the other found nothing new (P2 first: P1 is then skipped).
    assert lake.read_head().cursor == sandbox.last_cursor
    sandbox.faults = SandboxFaults()
    with dg.instance_for_test() as instance:
        for partition in (P1, P2):
            run(instance, make_resources(sandbox, lake.root), partition)  # replays: flatten + current
    assert_lake_correct(lake, sandbox)


# ---- 10: upstream changes --------------------------------------------------------------------------------


def in_window(record: dict, start: str = "2026-09-28", end: str = "2026-11-02") -> bool:
    return start <= (record.get("date_survey_response") or "")[:10] <= end


def test_the_trailing_reread_catches_changed_anonymised_and_late_responses(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    records = sandbox.records()
    changed = next(r for r in records if in_window(r) and r["status"] == "response" and r["nps"] != 3)
    anonymised = next(r for r in records if in_window(r) and r is not changed and r["contact"]["first_name"] != "Anonymised")
    late = next(r for r in records if r["status"] == "partial")
    moved = next(r for r in records if not in_window(r) and r["nps"] != 0)
    with dg.instance_for_test() as instance:
        run(instance, resources, "2026-11-01-01:00", run_config={})  # hour 1: no re-read
        sandbox.update_record(changed["number_customergauge"], {"nps": 3})
        sandbox.anonymise_record(anonymised["number_customergauge"])
        sandbox.update_record(
            late["number_customergauge"], {"status": "response", "date_survey_response": "2026-11-01 09:30:00", "nps": 9}
        )
        meta = raw_metadata(run(instance, resources, "2026-11-02-02:00", run_config={}))  # lookback_hour 2 (default)
        assert meta["lookback"] == {"field": "date_survey_response", "start": "2026-09-28", "end": "2026-11-02"}
        reread = set(raw_numbers(lake, "2026-11-02-02:00", "lookback"))
        assert {changed["number_customergauge"], anonymised["number_customergauge"], late["number_customergauge"]} <= reread
        assert_current_matches_sandbox(lake, sandbox)

        sandbox.update_record(moved["number_customergauge"], {"nps": 0}, move_to_end=True)
        run(instance, resources, "2026-11-02-03:00", run_config={})
    assert raw_numbers(lake, "2026-11-02-03:00") == [moved["number_customergauge"]]
    current = {row["number_customergauge"]: row for row in read_current(lake)["responses"]}
    assert current[changed["number_customergauge"]]["nps"] == 3
    assert current[anonymised["number_customergauge"]]["contact_first_name"] == "Anonymised"
    assert (current[late["number_customergauge"]]["status"], current[late["number_customergauge"]]["nps"]) == ("response", 9)
    assert current[moved["number_customergauge"]]["nps"] == 0
    assert_exactly_once(lake, sandbox, resent=(moved["number_customergauge"],))
    assert_only_complete_files(lake)
    assert_current_matches_sandbox(lake, sandbox)


# ---- 11: secrets -----------------------------------------------------------------------------------------


def test_no_secret_or_token_in_logs_files_reprs_or_errors(sandbox, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root, per_page=50, max_retries=2)
    sandbox.faults = SandboxFaults(fail_every=3, token_ttl=1, omit_expires_in=True, latency=0.2)
    texts = [repr(resources["customergauge"]), str(resources["customergauge"])]
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        assert {401, 503} <= set(responses_statuses(sandbox))
        sandbox.faults = SandboxFaults(fail_every=1)
        failed = run(instance, resources, P2, raise_on_error=False)
        assert not failed.success
        texts.append(failure_text(failed))
        for record in instance.get_runs():
            texts.append(serialize_value(record))
            texts += [serialize_value(entry) for entry in instance.all_logs(record.run_id)]
    with contextlib.closing(resources["customergauge"].get_client()) as client:
        with pytest.raises(CustomerGaugeAPIError) as raised:
            list(client.iter_pages(SyncParams(per_page=50)))
    texts += [str(raised.value), repr(raised.value), repr(client), caplog.text]
    tokens = {e.authorization.split()[-1] for e in sandbox.requests_log if e.authorization}
    assert len(tokens) >= 2 and sandbox.token_requests == len(tokens)
    everything = "\n".join(texts)
    assert RAW_OP in everything  # the logs were really collected
    for secret in (SANDBOX_SECRET, *tokens):
        assert secret not in everything
    for path in lake.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (SANDBOX_SECRET, *tokens):
                assert secret.encode() not in data, path


# ---- 12: configuration errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource_overrides, raw_config, lake_under_a_file, expected",
    [
        ({"per_page": 0}, {}, False, "per_page"),
        ({"per_page": 1001}, {}, False, "per_page"),
        ({"region": "eu-west"}, {}, False, "region"),
        ({"with_": ["drivers"]}, {}, False, "with_ holds the unknown value 'drivers'"),
        ({"api_base_url": "http://api.example.com"}, {}, False, "api_base_url"),
        ({"client_id": ""}, {}, False, "client_id"),
        ({"client_secret": ""}, {}, False, "client_secret"),
        ({"system_timezone": "Mars/Olympus_Mons"}, {}, False, "system_timezone"),
        ({}, {"lookback_hour": 24}, False, "lookback_hour"),
        ({}, {"lookback_field": "date_modified"}, False, "lookback_field"),
        ({}, {}, True, "CG_LAKE_ROOT"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_configuration_errors_fail_before_any_request_with_nothing_written(
    sandbox, tmp_path, resource_overrides, raw_config, lake_under_a_file, expected
):
    parent = tmp_path / "a-file" if lake_under_a_file else tmp_path
    if lake_under_a_file:
        parent.write_text("not a folder")
    lake = Lake(parent / "lake")
    resources = make_resources(sandbox, lake.root, **resource_overrides)
    config = {"ops": {RAW_OP: {"config": raw_config}}}
    with dg.instance_for_test() as instance:
        result = run(instance, resources, P1, run_config=config, raise_on_error=False)
    assert not result.success
    assert expected in failure_text(result)
    assert sandbox.requests_log == []
    if lake_under_a_file:
        assert parent.read_text() == "not a folder"
    else:
        assert not lake.root.exists()


def test_the_daemon_frees_the_pool_slot_of_a_killed_run_and_the_next_run_syncs(sandbox, tmp_path):
    """The shipped run_monitoring settings with shorter times: a run killed with kill -9 stays STARTED holding
    the sync pool's slot; the daemon ends it at max_runtime_seconds and frees the slot; the next
    `dagster asset materialize` on the same DAGSTER_HOME then runs and loads everything exactly once."""
    lake = Lake(tmp_path / "lake")
    home = dagster_home(tmp_path)
    shipped = yaml.safe_load((PROJECT / "dagster.yaml").read_text())
    assert shipped["run_monitoring"]["enabled"] and shipped["run_monitoring"]["max_runtime_seconds"] > 0
    fast = {**shipped["run_monitoring"], "max_runtime_seconds": 3, "cancel_timeout_seconds": 1,
            "free_slots_after_run_end_seconds": 1, "poll_interval_seconds": 1}  # fmt: skip
    (home / "dagster.yaml").write_text(yaml.safe_dump({**shipped, "run_monitoring": fast}))
    env = cli_env(sandbox, lake, home, per_page=50)
    sandbox.faults = SandboxFaults(latency=0.3)
    killed = start_materialize(env, P1)
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while responses_statuses(sandbox).count(200) < 1:
            assert killed.poll() is None and time.monotonic() < deadline, "the run served no page"
            time.sleep(0.05)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.communicate(timeout=CLI_TIMEOUT)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [dead] = instance.get_runs()
        assert dead.status == dg.DagsterRunStatus.STARTED
        assert instance.event_log_storage.get_concurrency_info("customergauge_sync").claimed_slots

    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "cg_dagster.definitions"],
        env=env, cwd=PROJECT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                status = instance.get_run_by_id(dead.run_id).status
                claimed = instance.event_log_storage.get_concurrency_info("customergauge_sync").claimed_slots
            if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED) and not claimed:
                break
            assert time.monotonic() < deadline, f"the daemon did not free the slot: run {status}, claimed {claimed}"
            time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=30)

    sandbox.faults = SandboxFaults()
    rerun = start_materialize(env, P1)
    output = rerun.communicate(timeout=CLI_TIMEOUT)[0]
    assert rerun.returncode == 0, output[-3000:]
    assert raw_numbers(lake, P1) == numbers(sandbox.records())
    assert_exactly_once(lake, sandbox)
