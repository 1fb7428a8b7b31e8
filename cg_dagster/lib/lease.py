"""Leases: one holder at a time for a long job on the lake (a sync, a rebuild of the current tables).

No Dagster import. A lease is held for the whole job, and the holder's death releases it, so a job killed
outright (``kill -9``, out of memory, a restarted VM) never stalls the next one: nothing but the holder's
own process keeps it. A job that finds the lease held waits without using the CPU (one non-blocking try
every ``poll_seconds``), logs who holds it and since when, and gives up with ``LeaseTimeoutError`` after
``wait_seconds``.

The lease only keeps two jobs from doing the same work at once; correctness does not rest on it: the
sync's commit is a compare-and-set of the head cursor (``Lake.assert_head``), which also refuses a sync
that ran without the lease.

``Lease`` is the interface; ``FileLease`` the local-lake implementation (``Lake.lease``). A lease for
object storage, where no lock dies with its process, implements the same three methods with an expiry, a
heartbeat and conditional writes (README, issue 9).
"""

import abc
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("cg_dagster.lease")

POLL_SECONDS = 1.0


class LeaseTimeoutError(RuntimeError):
    """A lease stayed held by another job for longer than the caller would wait. Nothing was done."""


class Lease(abc.ABC):
    """One holder at a time. Subclasses implement ``try_acquire``, ``holder`` and ``release``; ``hold``
    is the waiting loop every kind of lease shares."""

    def __init__(self, name: str, location: str):
        self.name = name  # e.g. "sync"
        self.location = location  # where it lives, for messages (a path, a URL)

    @abc.abstractmethod
    def try_acquire(self, holder: dict) -> bool:
        """Take the lease now if it is free and record ``holder``; False (without waiting) if it is held."""

    @abc.abstractmethod
    def holder(self) -> dict | None:
        """Who holds the lease as recorded by ``try_acquire`` (``run_id``, ``pid``, ``host``, ``since``),
        or None when unknown. May name a dead holder whose lease is already free."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lease up (called once, by the holder)."""

    @contextlib.contextmanager
    def hold(
        self, run_id: str, *, wait_seconds: float, setting: str, poll_seconds: float = POLL_SECONDS
    ) -> Iterator[dict]:
        """Hold the lease for the ``with`` block, waiting up to ``wait_seconds`` for it; yields the holder
        record written (``run_id``, ``pid``, ``host``, ``since``: ISO 8601 UTC).

        ``setting`` names how the caller's operator changes ``wait_seconds`` (it goes into the error).
        While waiting, logs a warning naming the holder each time the holder changes.

        Raises:
            LeaseTimeoutError: still held after ``wait_seconds``; the message names the holder and ``setting``.
        """
        me = {
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        deadline = time.monotonic() + wait_seconds
        announced, waited = None, False
        while not self.try_acquire(me):
            waited = True
            other = self.holder()
            if other != announced:
                log.warning("waiting for the %s lease (%s): %s", self.name, self.location, _describe(other))
                announced = other
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LeaseTimeoutError(
                    f"gave up after waiting {wait_seconds:g} s for the {self.name} lease ({self.location}): "
                    f"{_describe(self.holder())}. If that job is still running, let it finish or raise {setting}; "
                    "a job that died releases the lease with its process"
                )
            time.sleep(min(poll_seconds, remaining))
        if waited:
            log.warning("took the %s lease after waiting", self.name)
        try:
            yield me
        finally:
            self.release()


class FileLease(Lease):
    """A lease on a local file system: an exclusive ``flock`` on ``path``, which the kernel releases when
    the holding process dies in any way; the holder record is written beside it (``<path>.json``).

    ``flock`` locks belong to an open file, so two holders in one process exclude each other too. Not for
    network file systems whose ``flock`` is not shared between machines.
    """

    def __init__(self, name: str, path: Path):
        super().__init__(name, str(path))
        self.path = Path(path)
        self.holder_path = self.path.with_name(self.path.name + ".json")
        self._handle = None

    def try_acquire(self, holder: dict) -> bool:
        if self._handle is not None:
            raise RuntimeError(f"the {self.name} lease ({self.path}) is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - kept open while held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        try:
            tmp = self.holder_path.with_name(f".{self.holder_path.name}.{uuid.uuid4().hex}")
            tmp.write_text(json.dumps(holder) + "\n", encoding="utf-8")
            os.replace(tmp, self.holder_path)
        except BaseException:
            self.release()
            raise
        return True

    def holder(self) -> dict | None:
        try:
            return json.loads(self.holder_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def release(self) -> None:
        self.holder_path.unlink(missing_ok=True)
        handle, self._handle = self._handle, None
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _describe(holder: dict | None) -> str:
    if not holder:
        return "held by a job that has not recorded itself yet"
    return f"held by run {holder['run_id']} (pid {holder['pid']} on {holder['host']}) since {holder['since']}"
