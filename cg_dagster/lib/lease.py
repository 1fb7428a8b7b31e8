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

    ``flock`` locks belong to an open file, so two holders in one process exclude each other too. A lock
    taken on a lease file that was deleted or replaced meanwhile (by hand) locks nothing anyone else sees:
    ``try_acquire`` then retries on the file now at ``path``. ``release`` removes the holder record only while
    it is still this holder's. Not for network file systems whose ``flock`` is not shared between machines.
    """

    def __init__(self, name: str, path: Path):
        super().__init__(name, str(path))
        self.path = Path(path)
        self.holder_path = self.path.with_name(self.path.name + ".json")
        self._handle = None
        self._holder: dict | None = None

    def try_acquire(self, holder: dict) -> bool:
        if self._handle is not None:
            raise RuntimeError(f"the {self.name} lease ({self.path}) is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+")  # noqa: SIM115 - kept open while held
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            if _same_file(handle, self.path):
                break
            handle.close()  # locked a file deleted or replaced after we opened it: lock the one at path now
        self._handle, self._holder = handle, holder
        try:
            tmp = self.holder_path.with_name(f".{self.holder_path.name}.{uuid.uuid4().hex}")
            tmp.write_text(json.dumps(holder) + "\n", encoding="utf-8")
            os.replace(tmp, self.holder_path)
        except BaseException:
            self.release()
            raise
        return True

    def holder(self) -> dict | None:
        """The holder record, or None when it is missing or not a JSON object (written by hand)."""
        try:
            record = json.loads(self.holder_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def release(self) -> None:
        if self.holder() == self._holder:  # another holder (of a lease file replaced by hand) keeps its record
            self.holder_path.unlink(missing_ok=True)
        handle, self._handle = self._handle, None
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _same_file(handle, path: Path) -> bool:
    """True when the open ``handle`` is the file now at ``path`` (same inode and device)."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (mine.st_ino, mine.st_dev) == (here.st_ino, here.st_dev)


def _describe(holder: dict | None) -> str:
    if not holder:
        return "held by a job that has not recorded itself yet"
    fields = {key: holder.get(key, "?") for key in ("run_id", "pid", "host", "since")}
    return "held by run {run_id} (pid {pid} on {host}) since {since}".format(**fields)
