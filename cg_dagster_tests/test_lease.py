"""The lake's leases (lib/lease.py) on their own: one holder, a waiter that names the holder and gives up
with the setting in its error, and a holder's death that frees the lease at once."""

import logging
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from cg_dagster.lib import lease as lease_module
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.lease import FileLease, LeaseTimeoutError

SETTING = "lease_wait_seconds (run config) or CG_LEASE_WAIT_SECONDS"


def test_a_waiter_gives_up_naming_the_holder_and_the_setting(tmp_path):
    lake = Lake(tmp_path / "lake")
    with lake.lease("sync").hold("run-A", wait_seconds=0, setting=SETTING) as holder:
        assert holder["run_id"] == "run-A" and holder["pid"] == os.getpid()
        assert lake.lease("sync").holder() == holder
        with pytest.raises(LeaseTimeoutError) as raised:
            with lake.lease("sync").hold("run-B", wait_seconds=0.2, setting=SETTING, poll_seconds=0.05):
                pytest.fail("two holders at once")
        with lake.lease("current").hold("run-B", wait_seconds=0, setting=SETTING):
            pass  # another lease of the same lake is independent
    message = str(raised.value)
    assert f"for the sync lease ({lake.root / '_state' / 'sync.lease'})" in message
    assert f"held by run run-A (pid {os.getpid()} on " in message and f"since {holder['since']}" in message
    assert SETTING in message
    assert lake.lease("sync").holder() is None  # released: the holder record goes with it
    with lake.lease("sync").hold("run-B", wait_seconds=0, setting=SETTING) as holder_b:
        assert holder_b["run_id"] == "run-B"


def test_a_waiter_logs_the_holder_then_takes_the_lease_when_it_is_released(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cg_dagster.lease")
    lake = Lake(tmp_path / "lake")
    waiting, taken = threading.Event(), []

    class Watch(logging.Handler):
        def emit(self, record):
            if "waiting for the sync lease" in record.getMessage():
                waiting.set()

    watch = Watch()
    logging.getLogger("cg_dagster.lease").addHandler(watch)
    try:
        first = lake.lease("sync")
        hold = first.hold("run-first", wait_seconds=0, setting=SETTING)
        hold.__enter__()

        def second():
            with lake.lease("sync").hold("run-second", wait_seconds=60, setting=SETTING, poll_seconds=0.05) as me:
                taken.append(me)

        thread = threading.Thread(target=second)
        thread.start()
        assert waiting.wait(30)
        assert taken == []
        hold.__exit__(None, None, None)
        thread.join(30)
    finally:
        logging.getLogger("cg_dagster.lease").removeHandler(watch)
    assert [me["run_id"] for me in taken] == ["run-second"]
    [waited] = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert "held by run run-first (pid" in waited
    assert any(r.getMessage() == "took the sync lease after waiting" for r in caplog.records)


HOLDER = """
import sys, time
from cg_dagster.lib.lease import FileLease
with FileLease("sync", sys.argv[1]).hold("run-killed", wait_seconds=0, setting="x"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_the_lease_of_a_process_killed_with_sigkill_is_free_at_once(tmp_path):
    path = tmp_path / "_state" / "sync.lease"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "held\n"
        lease = FileLease("sync", path)
        assert lease.holder()["pid"] == process.pid
        assert not lease.try_acquire({"run_id": "too-early"})
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    # No wait, no expiry, no daemon: the kernel dropped the dead process's lock.
    assert lease.try_acquire({"run_id": "next"})
    assert lease.holder() == {"run_id": "next"}
    lease.release()


@pytest.mark.parametrize(
    "record, shown",
    [
        ('{"run_id": "x"}', "held by run x (pid ? on ?) since ?"),
        ("[1,2]", "held by a job that has not recorded itself yet"),
        ('"text"', "held by a job that has not recorded itself yet"),
        ('{"run_id":1,"pid":2,"host":3,"since":4}', "held by run 1 (pid 2 on 3) since 4"),
    ],
)
def test_a_holder_record_of_another_shape_is_described_not_a_crash(tmp_path, record, shown):
    lake = Lake(tmp_path / "lake")
    with lake.lease("sync").hold("run-A", wait_seconds=0, setting=SETTING):
        (lake.root / "_state" / "sync.lease.json").write_text(record)  # before: KeyError / TypeError
        with pytest.raises(LeaseTimeoutError, match=r"\): " + re.escape(shown) + r"\. If that job"):
            with lake.lease("sync").hold("run-B", wait_seconds=0.1, setting=SETTING, poll_seconds=0.05):
                pytest.fail("two holders at once")


def test_a_release_leaves_the_record_of_the_holder_that_replaced_it(tmp_path):
    lake = Lake(tmp_path / "lake")
    a = lake.lease("sync")
    with a.hold("run-A", wait_seconds=0, setting=SETTING):
        (lake.root / "_state" / "sync.lease").unlink()
        c = lake.lease("sync")
        assert c.try_acquire({"run_id": "run-C", "pid": 1, "host": "h", "since": "t"})
    # run-A's release left run-C's record in place (before: deleted it, hiding the live holder from waiters)
    assert lake.lease("sync").holder()["run_id"] == "run-C"
    c.release()
    assert lake.lease("sync").holder() is None


def test_a_lock_taken_on_a_lease_file_replaced_meanwhile_is_taken_again_on_the_new_file(tmp_path, monkeypatch):
    lake = Lake(tmp_path / "lake")
    path = lake.root / "_state" / "sync.lease"
    real_flock, calls = lease_module.fcntl.flock, []

    def flock_after_replacement(handle, operation):
        if not calls:  # between our open() and flock(): another process deleted and re-created the file
            path.unlink()
            path.touch()
        calls.append(operation)
        return real_flock(handle, operation)

    monkeypatch.setattr(lease_module.fcntl, "flock", flock_after_replacement)
    lease = lake.lease("sync")
    assert lease.try_acquire({"run_id": "run-A", "pid": 1, "host": "h", "since": "t"})
    assert len(calls) == 2  # the lock on the replaced file was dropped and taken again on the new one
    assert os.fstat(lease._handle.fileno()).st_ino == path.stat().st_ino
    lease.release()
