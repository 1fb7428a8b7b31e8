"""The lake on object storage (issue 9, items 1 and 2): what the sync, replay, fault and current-table modules
(run on a local lake and on ``s3://`` through ``lake_root``) do not show: the storage layer, commits by
conditional writes racing, the lease by an object with an expiry and its takeover after ``kill -9``, the
README's DuckDB query, and the fencing of a writer that lost its lease (moto's S3 server on loopback)."""

import collections
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from cg_dagster.lib import lease as lease_module
from cg_dagster.lib.client import CustomerGaugeClient, SyncParams
from cg_dagster.lib.current import CURRENT_TABLES, update_current
from cg_dagster.lib.flatten import FLAT_TABLE_NAMES
from cg_dagster.lib.lake import CursorConflictError, HeadCursor, Lake, LakeError
from cg_dagster.lib.lease import LeaseLostError, ObjectLease
from cg_dagster.lib.storage import PreconditionFailed
from cg_dagster.lib.sync import sync_partition
from cg_dagster.sandbox import SandboxFaults
from cg_dagster_tests._fixtures_runs import (
    NO_LOOKBACK,
    PROJECT,
    cli_env,
    dagster_home,
    kill_after_pages,
    numbers,
    raw_metadata,
    raw_numbers,
    run,
    start_materialize,
)
from cg_dagster_tests._fixtures_s3 import DUMMY_CREDENTIALS
from cg_dagster_tests._fixtures_sandbox import (
    SANDBOX_ID,
    SANDBOX_SECRET,
    assert_current_matches_sandbox,
    make_resources,
    read_current,
)
from cg_dagster_tests._fixtures_sync import PausingClient

P1, P2, P3 = "2026-11-01-10:00", "2026-11-01-11:00", "2026-11-01-12:00"
CLI_TIMEOUT = 90
pytestmark = pytest.mark.slow


def assert_exactly_once(lake: Lake, sandbox, resent=()) -> None:
    """Every sandbox response in exactly one cursor-pass row of the raw partitions (read through the lake)."""
    found = []
    for path in lake.partition_files("raw_responses"):
        table = lake.read_table(path, columns=["number_customergauge", "sync_pass"]).to_pylist()
        found += [row["number_customergauge"] for row in table if row["sync_pass"] == "cursor"]
    got, want = collections.Counter(found), collections.Counter(numbers(sandbox.records()) + list(resent))
    assert got == want, {"missing": want - got, "extra": got - want}


def assert_complete_files(lake: Lake) -> None:
    """Every table folder holds complete Parquet files only (a readable footer each) and ``_tmp/`` nothing."""
    for table in ("raw_responses", *FLAT_TABLE_NAMES):
        for path in lake.partition_files(table):
            lake.parquet_file(path).metadata  # noqa: B018 - raises on a partial file
    for name in CURRENT_TABLES:
        assert lake.files(lake.current_path(name)), name
    assert lake.files(lake.root / "_tmp", "") == []


def client_for(sandbox) -> CustomerGaugeClient:
    return CustomerGaugeClient(
        client_id=SANDBOX_ID, client_secret=SANDBOX_SECRET, api_base_url=sandbox.base_url,
        auth_base_url=sandbox.base_url, backoff_factor=0.01,
    )  # fmt: skip


# ---- the storage layer -------------------------------------------------------------------------------------


def test_moto_honours_the_s3_preconditions_the_commit_and_lease_rest_on(s3_root):
    lake = Lake(s3_root)
    storage, path = lake.storage, lake.root / "_state" / "probe.json"
    first = storage.put_if(path, b"1", None)  # If-None-Match: *
    with pytest.raises(PreconditionFailed):
        storage.put_if(path, b"2", None)
    second = storage.put_if(path, b"3", first)  # If-Match
    with pytest.raises(PreconditionFailed):
        storage.put_if(path, b"4", first)  # stale ETag
    assert storage.read_versioned(path) == (b"3", second)
    with pytest.raises(PreconditionFailed):
        storage.delete_if(path, first)
    storage.delete_if(path, second)
    assert storage.read_versioned(path) is None
    with pytest.raises(PreconditionFailed):
        storage.put_if(path, b"5", second)  # If-Match on a deleted object


def test_the_root_chooses_the_storage_and_shows_no_secret(s3_root, tmp_path):
    lake = Lake(s3_root)
    assert repr(lake) == f"Lake({s3_root!r})" and str(lake.partition_path("responses", P1)).startswith(s3_root + "/")
    assert DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in repr(lake) + repr(vars(lake.storage))
    assert not Lake(tmp_path).storage.remote and Lake(tmp_path).root == tmp_path
    with pytest.raises(LakeError, match=r"needs the Python package 'adlfs' .*pip install adlfs"):
        Lake("abfs://container/lake")
    with pytest.raises(LakeError, match=r"ftp:// is not a supported store; set CG_LAKE_ROOT"):
        Lake("ftp://host/lake")
    with pytest.raises(LakeError, match=r"not writable .*set CG_LAKE_ROOT to a bucket and prefix these credentials"):
        Lake("s3://no-such-bucket-cg/lake").ensure_writable()


def test_an_aborted_write_leaves_no_object_and_a_committed_one_appears_whole(s3_root):
    lake = Lake(s3_root)
    target = lake.partition_path("responses", P1)
    table = pa.table({"number_customergauge": pa.array(range(20_000), pa.int64())})
    with lake.parquet_writer(target, table.schema) as writer:
        writer.write(table)  # no commit: an exception in the block, say
    assert not lake.exists(target)
    lake.write_table(target, table)
    assert lake.read_table(target).equals(table)


# ---- commits by conditional writes ---------------------------------------------------------------------------


def test_of_two_commits_from_the_same_head_the_second_fails_with_cursor_conflict(s3_root):
    first, second = Lake(s3_root), Lake(s3_root)
    assert first.read_head() is None and second.read_head() is None
    first.write_head(HeadCursor(cursor=10, partition_key=P1, run_id="a", committed_at="2026-11-01T10:05:00+00:00"))
    with pytest.raises(CursorConflictError, match="written by another sync after this run read it"):
        second.write_head(HeadCursor(cursor=11, partition_key=P1, run_id="b", committed_at="2026-11-01T10:05:01+00:00"))
    assert Lake(s3_root).read_head().run_id == "a"
    head = second.read_head()  # read again: now it may write, If-Match that head
    second.write_head(HeadCursor(cursor=12, partition_key=P2, run_id="b", committed_at="2026-11-01T11:05:00+00:00"))
    with pytest.raises(CursorConflictError):
        first.write_head(head)  # first's ETag is of its own write, which second replaced
    assert Lake(s3_root).read_head().cursor == 12


def test_two_syncs_racing_to_commit_one_wins_the_other_fails_clean(sandbox, lake_root):
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        appended = numbers(sandbox.append_records(40))
        paged, resume, outcome = threading.Event(), threading.Event(), {}
        client = PausingClient(
            paged=paged, resume=resume, client_id=SANDBOX_ID, client_secret=SANDBOX_SECRET,
            api_base_url=sandbox.base_url, auth_base_url=sandbox.base_url, backoff_factor=0.01,
        )  # fmt: skip

        def slow_sync():
            try:
                sync_partition(client, SyncParams(per_page=20), Lake(lake_root), partition_key=P2, run_id="slow-P2")
            except Exception as exc:  # noqa: BLE001 - the assertion below names what was expected
                outcome["error"] = exc

        thread = threading.Thread(target=slow_sync)
        thread.start()
        assert paged.wait(30)
        run(instance, resources, P3)  # commits while the P2 sync is between its pages
        head_p3 = lake.read_head()
        resume.set()
        thread.join(30)
        client.close()
    assert isinstance(outcome.get("error"), CursorConflictError), outcome
    assert "head cursor moved during this run" in str(outcome["error"])
    assert lake.read_head() == head_p3 and head_p3.partition_key == P3 and head_p3.cursor == sandbox.last_cursor
    assert not lake.exists(lake.partition_path("raw_responses", P2))
    assert not lake.exists(lake.manifest_path(lake.partition_path("raw_responses", P2)))
    assert raw_numbers(lake, P3) == appended
    assert_exactly_once(lake, sandbox)
    assert_complete_files(lake)
    assert_current_matches_sandbox(lake, sandbox)


# ---- the lease -------------------------------------------------------------------------------------------------


def test_an_object_lease_is_exclusive_renewed_released_only_by_its_holder_and_taken_over_after_expiry(s3_root):
    lake = Lake(s3_root)
    lake.ensure_writable()
    path = lake.root / "_state" / "sync.lease"
    holder = ObjectLease("sync", path, lake.storage, ttl_seconds=3)
    assert holder.try_acquire({"run_id": "a"})
    first = holder.holder()["expires"]
    assert not ObjectLease("sync", path, lake.storage, ttl_seconds=3).try_acquire({"run_id": "b"})
    deadline = time.monotonic() + 10
    while holder.holder()["expires"] == first:  # the heartbeat (every ttl / 3) pushes the expiry on
        assert time.monotonic() < deadline, "the lease was not renewed"
        time.sleep(0.1)
    holder.release()
    assert holder.holder() is None

    # A holder that died: its record stays with a past expiry, and the next taker replaces it If-Match.
    lake.storage.put_if(path, b'{"run_id": "dead", "expires": 1}', None)
    taker = ObjectLease("sync", path, lake.storage, ttl_seconds=3)
    assert taker.try_acquire({"run_id": "c"}) and taker.holder()["run_id"] == "c"
    # Another job took it over while this one stalled: release leaves the new holder's record.
    lake.storage.put_if(path, b'{"run_id": "d", "expires": 9e9}', lake.storage.read_versioned(path)[1])
    taker.release()
    assert taker.holder()["run_id"] == "d"


def test_a_run_killed_mid_sync_is_followed_by_a_new_one_that_takes_the_lease(
    sandbox, lake_root, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("CG_LEASE_TTL_SECONDS", "3")
    lake = Lake(lake_root)
    sandbox.faults = SandboxFaults(latency=0.2)
    home = dagster_home(tmp_path)
    process = start_materialize(cli_env(sandbox, lake, home, per_page=50), P1)
    kill_after_pages(process, sandbox, 2, timeout=CLI_TIMEOUT)
    assert lake.read_head() is None and not lake.exists(lake.partition_path("raw_responses", P1))
    assert lake.lease("sync").holder()["run_id"]  # the killed run's record is still there
    sandbox.faults = SandboxFaults()
    with caplog.at_level(logging.WARNING, logger="cg_dagster.lease"), dg.instance_for_test() as instance:
        meta = raw_metadata(run(instance, make_resources(sandbox, lake_root), P1))
    assert meta["sync_mode"] == "sync" and meta["dagster/row_count"] == len(sandbox.records())
    took_over = [r for r in caplog.records if "took over the sync lease" in r.getMessage()]
    assert len(took_over) == (1 if lake.storage.remote else 0)  # a local flock died with its process
    assert lake.lease("sync").holder() is None or not lake.storage.remote
    assert_exactly_once(lake, sandbox)
    lake.sweep_tmp(older_than_seconds=0)  # the killed run's temporary file on a local lake (swept a day later)
    assert_complete_files(lake)
    assert_current_matches_sandbox(lake, sandbox)


# ---- tables, quarantine, the README's query ------------------------------------------------------------------


def test_full_and_incremental_sync_exactly_once_with_the_readme_duckdb_query(sandbox, lake_root, caplog):
    resources = make_resources(sandbox, lake_root)
    lake = Lake(lake_root)
    with caplog.at_level(logging.DEBUG), dg.instance_for_test() as instance:
        first = run(instance, resources, P1)
        appended = numbers(sandbox.append_records(37))
        sandbox.reset_log()
        second = raw_metadata(run(instance, resources, P2))
        uris = [e.materialization.metadata["dagster/uri"].value for e in first.get_asset_materialization_events()]
    assert second["sync_mode"] == "sync" and second["dagster/row_count"] == 37 and raw_numbers(lake, P2) == appended
    assert all(uri.startswith(lake_root) if lake.storage.remote else uri.startswith("file://") for uri in uris)
    assert_exactly_once(lake, sandbox)
    assert_complete_files(lake)
    assert_current_matches_sandbox(lake, sandbox)
    assert DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in caplog.text + "".join(uris)

    con = duckdb.connect()
    if lake.storage.remote:  # README: DuckDB reads s3:// through the fsspec filesystem registered on it
        import fsspec

        con.register_filesystem(fsspec.filesystem("s3"))
    responses = f"read_parquet('{lake_root}/current/responses/*.parquet', union_by_name = true)"
    got = con.sql(f"select nps, count(*) from {responses} group by nps order by nps").fetchall()
    want = collections.Counter(record.get("nps") for record in sandbox.records())
    assert dict(got) == dict(want)


def test_flattened_and_current_tables_are_equal_on_a_local_and_an_s3_lake(sandbox, tmp_path, s3_root):
    lakes = {"local": Lake(tmp_path / "lake"), "s3": Lake(s3_root)}
    for lake in lakes.values():
        sandbox.reset_log()
        with dg.instance_for_test() as instance:
            run(instance, make_resources(sandbox, lake.root if not lake.storage.remote else s3_root), P1)
    for table in FLAT_TABLE_NAMES:
        local, remote = (
            lake.read_table(lake.partition_path(table, P1)).drop_columns(["fetched_at"]) for lake in lakes.values()
        )
        assert local.equals(remote), table
    assert read_current(lakes["local"]) == read_current(lakes["s3"])


def test_the_group_materializes_with_cg_lake_root_on_s3(sandbox, s3_root, tmp_path):
    """``dagster asset materialize`` of the whole group, as an operator runs it, with CG_LAKE_ROOT=s3://..."""
    lake = Lake(s3_root)
    env = cli_env(sandbox, lake, dagster_home(tmp_path), per_page=100)
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "cg_dagster.definitions",
        "--select", "group:customergauge", "--partition", P1, "--config-json", json.dumps(NO_LOOKBACK),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in done.stdout + done.stderr
    assert lake.read_head().partition_key == P1
    assert_exactly_once(lake, sandbox)
    assert_current_matches_sandbox(lake, sandbox)


# ---- fencing: a writer that lost its lease cannot overwrite what another committed ----------------------------


def pause_past_the_ttl(lake: Lake) -> None:
    """What a pause longer than CG_LEASE_TTL_SECONDS does to the leases ``lake`` holds, without waiting: their
    heartbeat stops and their records in the store expire, so another run takes them over. The paused run's own
    view stays "held" (it was paused right after checking its leases): only the conditional writes stop it."""
    for lease in list(lake._leases):
        if lease._etag is not None:
            lease._stop.set()
            lease._heartbeat.join()
            expired = json.dumps({**lease._record, "expires": 1}).encode()
            lake.storage.put_if(lease.path, expired, lease._etag)


@pytest.mark.parametrize("mode", ["sync", "replay"])
def test_a_run_paused_past_its_lease_cannot_overwrite_the_commit_of_the_run_that_took_over(sandbox, s3_root, mode):
    lake, resources = Lake(s3_root), make_resources(sandbox, s3_root)
    partition = P2 if mode == "sync" else P1
    raw = lake.partition_path("raw_responses", partition)
    paused, outcome = Lake(s3_root), {}
    # sync: paused right after assert_head (the reviewer's case); replay: right after its last lease check
    hooked = "assert_head" if mode == "sync" else "check_leases"
    original = getattr(paused, hooked)

    def then_another_run_commits(*args, **kwargs):
        original(*args, **kwargs)
        if "other" not in outcome:
            pause_past_the_ttl(paused)
            outcome["appended"] = numbers(sandbox.append_records(30)) if mode == "sync" else []
            outcome["other"] = run(instance, resources, partition)

    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        if mode == "sync":
            sandbox.append_records(20)  # what the paused run syncs; the run that takes over syncs 30 more
        setattr(paused, hooked, then_another_run_commits)
        with pytest.raises(CursorConflictError, match=r"the raw file .* was not written: .*Nothing was committed"):
            sync_partition(client_for(sandbox), SyncParams(per_page=20), paused, partition_key=partition, run_id="A")
        other = outcome["other"]
        head = lake.read_head()
        manifest = lake.read_manifest(raw)
        sidecar = json.loads(lake.storage.read_bytes(lake.manifest_path(raw)))
        assert manifest.run_id == sidecar["run_id"] == other.run_id and manifest.mode == mode
        assert lake.read_table(raw).num_rows == manifest.rows
        if mode == "sync":
            assert manifest.rows == 50 and raw_numbers(lake, P2) == numbers(sandbox.records())[-50:]
            assert head.run_id == other.run_id and head.cursor == sandbox.last_cursor
        else:
            assert manifest.rows == len(sandbox.records()) and head.partition_key == P1
        appended = numbers(sandbox.append_records(10))
        run(instance, resources, P3)
    assert raw_numbers(lake, P3) == appended and lake.read_head().cursor == sandbox.last_cursor
    assert_exactly_once(lake, sandbox)
    assert_complete_files(lake)
    assert_current_matches_sandbox(lake, sandbox)


def test_of_two_writers_of_one_object_the_first_to_commit_wins_and_the_other_is_refused(s3_root):
    lake = Lake(s3_root)
    target = lake.partition_path("responses", P1)
    first, second = (pa.table({"number_customergauge": pa.array([n], pa.int64())}) for n in (1, 2))
    with lake.parquet_writer(target, first.schema) as early, lake.parquet_writer(target, second.schema) as late:
        early.write(first)
        late.write(second)
        late.commit()  # the later-opened writer commits first
        with pytest.raises(PreconditionFailed, match="precondition failed"):
            early.commit()
    assert lake.read_table(target).equals(second)
    assert list(lake.scratch_dir("uploads").iterdir()) == []  # every local file removed, committed or not
    lake.write_table(target, first)  # a writer that opens now sees the object as it is and replaces it
    assert lake.read_table(target).equals(first)


def test_a_delete_removes_only_the_object_as_this_lake_saw_it(s3_root):
    stale, other = Lake(s3_root), Lake(s3_root)
    target = stale.current_path("responses") / "0000000000000100000.parquet"  # a range file another run wrote
    one, two = (pa.table({"number_customergauge": pa.array([n], pa.int64())}) for n in (1, 2))
    stale.write_table(target, one)
    assert stale.files(stale.current_path("responses")) == [target]  # the stale run lists it ...
    other.write_table(target, two)  # ... another run rewrites it after taking over ...
    with pytest.raises(PreconditionFailed, match="delete_object"):
        stale.delete(target)  # ... so the stale run's clean-up is refused
    assert other.read_table(target).equals(two)
    other.delete(target)
    assert not other.exists(target)
    Lake(s3_root).delete(target)  # no object: nothing to do


def test_a_file_deleted_by_hand_is_expected_absent_once_a_listing_no_longer_shows_it(s3_root):
    lake = Lake(s3_root)
    folder = lake.current_path("responses")
    target = folder / "0000000000000000000.parquet"
    one, two = (pa.table({"number_customergauge": pa.array([n], pa.int64())}) for n in (1, 2))
    lake.write_table(target, one)
    assert lake.files(folder) == [target]
    target.unlink()  # by hand, not through the lake
    with pytest.raises(PreconditionFailed, match="HTTP 404"):
        lake.write_table(target, two)  # If-Match the ETag it listed: the object is gone
    assert lake.files(folder) == []  # listed again: now it expects no object there
    lake.write_table(target, two)
    assert lake.read_table(target).equals(two)


def test_a_lake_whose_lease_was_lost_deletes_nothing(s3_root, monkeypatch):
    lake = Lake(s3_root)
    lake.quarantine(P1, "responses_nps_in_range", {"out_of_range": 1})

    def lost():
        raise LeaseLostError("the current lease was lost")

    monkeypatch.setattr(lake, "check_leases", lost)
    with pytest.raises(LeaseLostError):
        lake.release(P1, "responses_nps_in_range")
    assert Lake(s3_root).quarantined() == {"2026-11-01-1000": ["responses_nps_in_range"]}


def test_upload_files_a_killed_writer_left_are_swept_after_a_day(s3_root):
    lake = Lake(s3_root)
    uploads = lake.scratch_dir("uploads")
    uploads.mkdir(parents=True, exist_ok=True)
    old, fresh = uploads / "responses__a.parquet.1.tmp", uploads / "responses__a.parquet.2.tmp"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * 86_400,) * 2)
    assert lake.sweep_tmp() == [old.name]
    assert sorted(path.name for path in uploads.iterdir()) == [fresh.name]
    fresh.unlink()


def test_a_current_update_racing_another_is_refused_and_the_next_equals_a_full_rebuild(sandbox, s3_root):
    lake, resources = Lake(s3_root), make_resources(sandbox, s3_root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        sandbox.append_records(20)
        run(instance, resources, P2)
    lake.quarantine(P2, "responses_nps_in_range", {"out_of_range": 1})
    state = lake.storage.read_bytes(lake.root / "_state" / "current.json")
    stale, raced = Lake(s3_root), {}
    original = stale.check_leases

    def another_update_first():
        if not raced:  # the stale update is about to upload its first range file
            raced["update"] = update_current(Lake(s3_root))
        original()

    stale.check_leases = another_update_first
    with pytest.raises(PreconditionFailed, match=r"current/.*precondition failed"):
        update_current(stale)
    assert raced["update"].mode == "rebuild"
    assert lake.storage.read_bytes(lake.root / "_state" / "current.json") != state  # the other update's record
    assert json.loads(lake.storage.read_bytes(lake.root / "_state" / "current.json"))["partitions"].keys() == {
        "2026-11-01-1000"
    }
    lake.release(P2, "responses_nps_in_range")
    assert update_current(Lake(s3_root)).mode == "merge"
    assert_current_matches_sandbox(lake, sandbox)
    incremental = read_current(lake)
    update_current(lake, full_rebuild=True)
    assert read_current(lake) == incremental


def test_a_head_write_retried_after_its_first_attempt_succeeded_is_a_success_not_a_conflict(s3_root):
    lake = Lake(s3_root)
    assert lake.read_head() is None
    head = HeadCursor(cursor=10, partition_key=P1, run_id="a", committed_at="2026-11-01T10:05:00+00:00")
    # The first PUT landed but its response was lost: botocore's retry then finds the object (HTTP 412).
    path = lake.root / "_state" / "raw_responses.cursor.json"
    Lake(s3_root).storage.write_bytes(path, json.dumps(dataclasses.asdict(head)).encode())
    lake.write_head(head)
    assert Lake(s3_root).read_head() == head
    other = Lake(s3_root)
    other.read_head()
    Lake(s3_root).write_head(dataclasses.replace(head, cursor=11))
    with pytest.raises(CursorConflictError, match="this run's head was not written"):
        other.write_head(head)  # not its own head there now: a conflict
    assert Lake(s3_root).read_head().cursor == 11


def test_a_lease_taken_over_or_expired_is_lost_and_the_lake_then_refuses_every_write(s3_root, monkeypatch):
    monkeypatch.setenv("CG_LEASE_TTL_SECONDS", "3")
    lake = Lake(s3_root)
    lease = lake.lease("sync")
    with lease.hold("a", wait_seconds=0, setting="") as me:
        assert not lease.lost
        lake.check_leases()
        later = time.time() + 4  # the process was paused past the TTL: no renewal in time
        with monkeypatch.context() as patch:
            patch.setattr(lease_module, "time", type("Clock", (), {"time": lambda: later}))
            assert lease.lost
        assert not lease.lost
        stored = lake.storage.read_versioned(lease.path)
        lake.storage.put_if(lease.path, json.dumps({"run_id": "b", "expires": 9e9}).encode(), stored[1])
        deadline = time.monotonic() + 10
        while not lease.lost:  # the next heartbeat (every ttl / 3) finds the lease taken over
            assert time.monotonic() < deadline, "the heartbeat did not notice the takeover"
            time.sleep(0.1)
        with pytest.raises(LeaseLostError, match=r"lost the sync lease .*CG_LEASE_TTL_SECONDS"):
            lake.write_state("lookback.json", {"run_id": me["run_id"]})
        with pytest.raises(LeaseLostError):
            lake.write_table(lake.partition_path("responses", P1), pa.table({"number_customergauge": [1]}))
    assert lake.read_state("lookback.json") is None and not lake.exists(lake.partition_path("responses", P1))
    assert lease.holder()["run_id"] == "b"  # released If-Match its own ETag: the taker's record stays
