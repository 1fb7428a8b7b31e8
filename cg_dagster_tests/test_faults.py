"""Fault injection (issue 3, "Exactly-once lake"): real Dagster runs against the sandbox over real HTTP.

Every case ends with the lake's current tables equal to the sandbox's ground truth cell for cell, every
response exactly once in the cursor-pass rows of the raw partitions, and nothing but complete .parquet
files in the table folders.
"""

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster._serdes import serialize_value

from cg_dagster.customergauge.assets import RAW_KEY, current_tables
from cg_dagster.lib.client import CustomerGaugeAPIError, SyncParams
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.schemas import TABLES
from cg_dagster.sandbox import SandboxFaults
from cg_dagster_tests._fixtures_runs import (
    RAW_OP,
    assert_exactly_once,
    assert_lake_correct,
    assert_only_complete_files,
    cli_env,
    dagster_home,
    failure_text,
    kill_after_pages,
    numbers,
    raw_metadata,
    raw_numbers,
    responses_statuses,
    run,
    sent_cursors,
    start_materialize,
)
from cg_dagster_tests._fixtures_sandbox import (
    SANDBOX_SECRET,
    assert_current_matches_sandbox,
    make_resources,
    read_current,
)

pytestmark = pytest.mark.slow  # Dagster runs of the asset group (run.py test --fast skips them)

P1, P2, P3 = "2026-11-01-10:00", "2026-11-01-11:00", "2026-11-01-12:00"
CLI_TIMEOUT = 60  # seconds; a `dagster asset materialize` of this size takes about 4 s


def sync_twice_under(sandbox, lake_root, faults: SandboxFaults, **resource_overrides) -> Lake:
    """Initial load (P1), 30 appended responses, incremental sync (P2), all with ``faults`` on, into the lake at
    ``lake_root``; then the end-of-case checks. Returns the lake."""
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root, **resource_overrides)
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
# The API's faults (1-5) are the client's to absorb, whatever the store: they run on a local lake only. What a
# store changes (commits, a crash between data and head, replays, leases) runs on both, below and in
# test_sync*.py, test_current*.py.


@pytest.mark.parametrize("every, status", [(2, 500), (3, 502), (2, 503), (3, 504)])
def test_5xx_every_k_requests_completes_exactly_once(sandbox, tmp_path, every, status):
    sync_twice_under(sandbox, str(tmp_path), SandboxFaults(fail_every=every, fail_status=status))
    assert responses_statuses(sandbox).count(status) >= 3


@pytest.mark.parametrize("retry_after", [1, None])
def test_429_with_and_without_retry_after_completes(sandbox, tmp_path, retry_after):
    sync_twice_under(sandbox, str(tmp_path), SandboxFaults(rate_limit_every=4, retry_after=retry_after))
    assert responses_statuses(sandbox).count(429) >= 1


@pytest.mark.parametrize(
    "faults, expect_401",
    [
        pytest.param(SandboxFaults(token_ttl=1, latency=0.2), False, id="short-ttl-refreshed-before-expiry"),
        pytest.param(SandboxFaults(token_ttl=1, omit_expires_in=True, latency=0.2), True, id="expiry-unknown-401"),
    ],
)
def test_token_expiring_mid_sync_completes(sandbox, tmp_path, faults, expect_401):
    sync_twice_under(sandbox, str(tmp_path), faults, per_page=50)
    assert sandbox.token_requests >= 2
    if expect_401:  # the client assumed 3600 s, the token died after 1 s: a 401, one refresh, same page again
        assert 401 in responses_statuses(sandbox)


@pytest.mark.parametrize(
    "faults", [SandboxFaults(drop_body_every=3), SandboxFaults(truncate_json_every=3)], ids=["dropped", "truncated"]
)
def test_broken_bodies_are_requested_again(sandbox, tmp_path, faults):
    sync_twice_under(sandbox, str(tmp_path), faults)
    assert len(responses_statuses(sandbox)) >= 9  # 5 + 2 pages (with empty ones), and the broken ones again


# ---- 5: the empty last page ------------------------------------------------------------------------------


@pytest.mark.parametrize("empty_next", ["same", "null", "absent", "no_cursor"])
def test_empty_last_page_variants_keep_the_cursor(sandbox, tmp_path, empty_next):
    lake = Lake(tmp_path)
    resources = make_resources(sandbox, str(tmp_path))
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


def test_persistent_failure_commits_nothing_and_the_same_partition_syncs_later(sandbox, lake_root):
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root, max_retries=1)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        head = lake.read_head()
        appended = numbers(sandbox.append_records(40))
        sandbox.faults = SandboxFaults(fail_every=1, fail_status=503)
        failed = run(instance, resources, P2, raise_on_error=False)
        assert not failed.success
        assert "answered 503" in failure_text(failed)
        assert lake.read_head() == head
        assert [t for t in TABLES if lake.exists(lake.partition_path(t, P2))] == []
        assert_only_complete_files(lake)

        sandbox.faults = SandboxFaults()
        meta = raw_metadata(run(instance, resources, P2))
    assert meta["sync_mode"] == "sync" and meta["cursor_start"] == head.cursor
    assert raw_numbers(lake, P2) == appended
    assert_lake_correct(lake, sandbox)


# ---- 7: kill -9 mid-sync ---------------------------------------------------------------------------------


def test_a_run_killed_mid_sync_commits_nothing_and_a_rerun_completes(sandbox, tmp_path):
    """Local: the flock dies with the killed process. On S3 the lease's takeover: test_object_storage.py."""
    lake = Lake(tmp_path / "lake")
    sandbox.faults = SandboxFaults(latency=0.2)
    home = dagster_home(tmp_path)
    env = cli_env(sandbox, lake, home, per_page=50)
    process = start_materialize(env, P1)
    kill_after_pages(process, sandbox, 2, timeout=CLI_TIMEOUT)
    assert process.returncode == -signal.SIGKILL
    assert 2 <= responses_statuses(sandbox).count(200) < 8  # killed mid-sync: 350 records need 7 pages + 1 empty
    assert lake.read_head() is None
    assert not lake.partition_path("raw_responses", P1).exists()
    leftovers = tuple(path.name for path in (lake.root / "_tmp").iterdir())
    assert all(name.startswith("raw_responses__2026-11-01-1000.parquet.") for name in leftovers)
    assert_only_complete_files(lake, tmp_leftovers=leftovers)

    # Rerun on the SAME DAGSTER_HOME with no daemon: the killed run stays STARTED there, but its sync lease
    # died with its process, so the rerun syncs at once (and finishes well within CLI_TIMEOUT).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [killed] = instance.get_runs()
        assert killed.status == dg.DagsterRunStatus.STARTED
    sandbox.faults = SandboxFaults()
    rerun = start_materialize(env, P1)
    output = rerun.communicate(timeout=CLI_TIMEOUT)[0]
    assert rerun.returncode == 0, output[-3000:]
    assert "waiting for the sync lease" not in output
    assert raw_numbers(lake, P1) == numbers(sandbox.records())
    assert_exactly_once(lake, sandbox)
    # the killed run's temporary file stays until the daily sweep (a write never removes another's: it may be live)
    assert_only_complete_files(lake, tmp_leftovers=leftovers)
    assert sorted(lake.sweep_tmp(older_than_seconds=0)) == sorted(leftovers)
    assert_only_complete_files(lake)
    with dg.instance_for_test() as instance:
        assert raw_metadata(run(instance, make_resources(sandbox, lake.root), P1))["sync_mode"] == "replay"
    assert_current_matches_sandbox(lake, sandbox)


# ---- 8: wiped DAGSTER_HOME -------------------------------------------------------------------------------


def test_a_new_dagster_instance_resumes_from_the_lake_cursor(sandbox, lake_root):
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root)
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


# ---- 9: overlapping runs (two syncs racing to commit: test_object_storage.py, local and S3) -----------------


def run_messages(home: Path, partition: str) -> tuple[str | None, list[str]]:
    """(run id, messages of its event log) of the newest run of ``partition`` in DAGSTER_HOME ``home``."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = [r for r in instance.get_runs() if r.tags.get("dagster/partition") == partition]
        if not runs:
            return None, []
        return runs[0].run_id, [entry.user_message for entry in instance.all_logs(runs[0].run_id)]


def wait_until(condition, process: subprocess.Popen, what: str):
    """Poll ``condition`` until it returns something truthy (returned); fail if ``process`` ends first."""
    deadline = time.monotonic() + CLI_TIMEOUT
    while not (found := condition()):
        assert process.poll() is None, f"{what}: the process ended\n" + process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return found


def cpu_seconds(process: subprocess.Popen) -> float:
    """User + system CPU time of ``process`` and its children so far."""
    tree = psutil.Process(process.pid)
    total = 0.0
    for member in (tree, *tree.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            total += times.user + times.system
    return total


def test_a_sync_waits_idle_for_a_live_sync_naming_it_then_gives_up_or_goes_on_from_its_head(
    sandbox, lake_root, tmp_path
):
    """Three `dagster asset materialize` processes on one DAGSTER_HOME (the shipped dagster.yaml). While the
    first syncs P1, a second run of P2 with a 2 s wait gives up with the timeout error, and a third waits
    without using the CPU; the wait, naming the first run, is in their run logs (lib logger captured by the
    instance). Once the first commits, the third syncs P2 from the new head: nothing twice, nothing lost."""
    lake = Lake(lake_root)
    home = dagster_home(tmp_path)
    env = cli_env(sandbox, lake, home, per_page=5)
    sandbox.faults = SandboxFaults(latency=1.0)  # 71 slow pages: the first sync outlives the checks below
    first = start_materialize(env, P1)
    processes = [first]
    try:
        wait_until(lambda: responses_statuses(sandbox).count(200), first, "the first sync served no page")
        first_id = run_messages(home, P1)[0]

        short_wait = {"ops": {RAW_OP: {"config": {"lookback_hour": -1, "lease_wait_seconds": 2}}}}
        impatient = start_materialize(env, P2, short_wait)
        processes.append(impatient)
        output = impatient.communicate(timeout=CLI_TIMEOUT)[0]
        assert impatient.returncode != 0
        lease_file = lake.root / "_state" / "sync.lease"
        assert f"gave up after waiting 2 s for the sync lease ({lease_file}): held by run {first_id} (pid " in output
        assert "raise lease_wait_seconds (run config of raw_responses) or CG_LEASE_WAIT_SECONDS" in output
        impatient_id, impatient_log = run_messages(home, P2)
        assert any("waiting for the sync lease" in m and f"held by run {first_id}" in m for m in impatient_log)

        patient = start_materialize(env, P2)
        processes.append(patient)

        def logged_wait():
            run_id, messages = run_messages(home, P2)
            return run_id != impatient_id and any("waiting for the sync lease" in m for m in messages)

        wait_until(logged_wait, patient, "the waiting run logged no wait")
        time.sleep(1)  # let Dagster's log-capture helper processes finish starting
        before, started = cpu_seconds(patient), time.monotonic()
        time.sleep(3)
        used, window = cpu_seconds(patient) - before, time.monotonic() - started
        assert used < 0.25 * window, f"the waiting run used {used:.2f} s of CPU in {window:.1f} s"
        assert first.poll() is None and lake.read_head() is None  # the first is still syncing, nothing committed
        sandbox.faults = SandboxFaults()
        outputs = [process.communicate(timeout=CLI_TIMEOUT)[0] for process in (first, patient)]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert [first.returncode, patient.returncode] == [0, 0], [out[-3000:] for out in outputs]
    # One token per process that synced (the impatient one never asked for one); pages never interleaved.
    tokens = [e.authorization for e in sandbox.requests_log if e.path.endswith("/responses")]
    assert len(set(tokens)) == sandbox.token_requests == 2
    assert tokens == sorted(tokens, key=tokens.index) and tokens[0] != tokens[-1]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [p2] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_KEY, asset_partitions=[P2]), limit=1
        ).records
    p2_meta = {key: value.value for key, value in p2.asset_materialization.metadata.items()}
    assert p2_meta["sync_mode"] == "sync" and p2_meta["cursor_start"] == sandbox.last_cursor == lake.read_head().cursor
    assert raw_numbers(lake, P1) == numbers(sandbox.records()) and raw_numbers(lake, P2) == []
    with dg.instance_for_test() as instance:
        for partition in (P1, P2):
            run(instance, make_resources(sandbox, lake_root), partition)  # replays: flatten + current
    assert_lake_correct(lake, sandbox)


def test_a_rebuild_of_the_current_tables_waits_for_the_one_running(sandbox, lake_root, monkeypatch):
    lake = Lake(lake_root)
    monkeypatch.setenv("CG_LEASE_WAIT_SECONDS", "0")
    with lake.lease("current").hold("rebuilding-run", wait_seconds=0, setting="-"), dg.instance_for_test() as instance:
        result = dg.materialize(
            [current_tables], instance=instance, resources=make_resources(sandbox, lake.root), raise_on_error=False
        )
    assert not result.success
    error = failure_text(result)
    assert "gave up after waiting 0 s for the current lease" in error and "held by run rebuilding-run (pid" in error
    assert "raise CG_LEASE_WAIT_SECONDS" in error
    assert not lake.exists(lake.root / "current")


# ---- 10: upstream changes --------------------------------------------------------------------------------


def in_window(record: dict, start: str = "2026-09-28", end: str = "2026-11-02") -> bool:
    return start <= (record.get("date_survey_response") or "")[:10] <= end


def test_the_trailing_reread_catches_changed_anonymised_and_late_responses(sandbox, lake_root):
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root)
    records = sandbox.records()
    changed = next(r for r in records if in_window(r) and r["status"] == "response" and r["nps"] != 3)
    anonymised = next(
        r for r in records if in_window(r) and r is not changed and r["contact"]["first_name"] != "Anonymised"
    )
    late = next(r for r in records if r["status"] == "partial")
    moved = next(r for r in records if not in_window(r) and r["nps"] != 0)
    with dg.instance_for_test() as instance:
        run(instance, resources, "2026-11-01-01:00", run_config={})  # hour 1: no re-read
        sandbox.update_record(changed["number_customergauge"], {"nps": 3})
        sandbox.anonymise_record(anonymised["number_customergauge"])
        sandbox.update_record(
            late["number_customergauge"],
            {"status": "response", "date_survey_response": "2026-11-01 09:30:00", "nps": 9},
        )
        meta = raw_metadata(run(instance, resources, "2026-11-02-02:00", run_config={}))  # lookback_hour 2 (default)
        assert meta["lookback"] == {"field": "date_survey_response", "start": "2026-09-28", "end": "2026-11-02"}
        reread = set(raw_numbers(lake, "2026-11-02-02:00", "lookback"))
        assert {
            changed["number_customergauge"],
            anonymised["number_customergauge"],
            late["number_customergauge"],
        } <= reread
        assert_current_matches_sandbox(lake, sandbox)

        sandbox.update_record(moved["number_customergauge"], {"nps": 0}, move_to_end=True)
        run(instance, resources, "2026-11-02-03:00", run_config={})
    assert raw_numbers(lake, "2026-11-02-03:00") == [moved["number_customergauge"]]
    current = {row["number_customergauge"]: row for row in read_current(lake)["responses"]}
    assert current[changed["number_customergauge"]]["nps"] == 3
    assert current[anonymised["number_customergauge"]]["contact_first_name"] == "Anonymised"
    assert (current[late["number_customergauge"]]["status"], current[late["number_customergauge"]]["nps"]) == (
        "response",
        9,
    )
    assert current[moved["number_customergauge"]]["nps"] == 0
    assert_exactly_once(lake, sandbox, resent=(moved["number_customergauge"],))
    assert_only_complete_files(lake)
    assert_current_matches_sandbox(lake, sandbox)


# ---- 11: secrets -----------------------------------------------------------------------------------------


def test_no_secret_or_token_in_logs_files_reprs_or_errors(sandbox, lake_root, caplog):
    caplog.set_level(logging.DEBUG)
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root, per_page=50, max_retries=2)
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
        if lake.exists(path) and not path.is_dir():
            data = lake.storage.read_bytes(path)
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
    sandbox, lake_root, tmp_path, resource_overrides, raw_config, lake_under_a_file, expected
):
    parent = tmp_path / "a-file"
    if lake_under_a_file:
        if "://" in lake_root:
            pytest.skip("a lake root under a file is a local file system's case")
        parent.write_text("not a folder")
        lake_root = parent / "lake"
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root, **resource_overrides)
    config = {"ops": {RAW_OP: {"config": raw_config}}}
    with dg.instance_for_test() as instance:
        result = run(instance, resources, P1, run_config=config, raise_on_error=False)
    assert not result.success
    assert expected in failure_text(result)
    assert sandbox.requests_log == []
    if lake_under_a_file:
        assert parent.read_text() == "not a folder"
    else:
        assert not lake.exists(lake.root)
