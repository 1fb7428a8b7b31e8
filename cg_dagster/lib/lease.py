"""Leases: one holder at a time for a long job on the lake (a sync, a rebuild of the current tables, the
flattening of one partition: lib/tables.py).

No Dagster import. A lease is held for the whole job, and the holder's death releases it, so a job killed
outright (``kill -9``, out of memory, a restarted VM) never stalls the next one: nothing but the holder's
own process keeps it. A job that finds the lease held waits without using the CPU (one non-blocking try
every ``poll_seconds``), logs who holds it and since when, and gives up with ``LeaseTimeoutError`` after
``wait_seconds``.

The lease only keeps two jobs from doing the same work at once; correctness does not rest on it: the
sync's commit is a compare-and-set of the head cursor (``Lake.assert_head``), which also refuses a sync
that ran without the lease.

``Lease`` is the interface; ``FileLease`` the local-lake implementation (``Lake.lease``). On object storage
(lib/storage.py), where no lock dies with its process, ``ObjectLease`` holds an object created with
``If-None-Match: *``, renewed by a heartbeat with ``If-Match`` and taken over once its expiry has passed.
Both remove their files on release (one lease per partition flattened would otherwise leave thousands); only
a holder killed outright leaves its file, which the next holder of that lease takes and removes.
"""

import abc
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from cg_dagster.lib.storage import PreconditionFailed
from cg_dagster.settings import LEASE_TTL_SECONDS

log = logging.getLogger("cg_dagster.lease")

POLL_SECONDS = 1.0


class LeaseTimeoutError(RuntimeError):
    """A lease stayed held by another job for longer than the caller would wait. Nothing was done."""


class LeaseLostError(PreconditionFailed):
    """The holder of an object lease lost it (its expiry passed without a renewal, or another job took it
    over) before a write; the write was not made (``Lease.check``)."""


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
    it is still this holder's, and the lease file, while still locked, only when it is still the one at
    ``path``: no one else can lock it then, and a waiter that opened it before the removal finds it replaced
    and retries on the new file. Not for network file systems whose ``flock`` is not shared between machines.
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
        if _same_file(handle, self.path):  # ours, still locked: nobody else can hold it (class docstring)
            self.path.unlink()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class ObjectLease(Lease):
    """A lease on object storage: the object ``path`` (e.g. ``_state/sync.lease``) holding the holder record
    and ``expires`` (Unix seconds, the holder's clock: hosts must keep NTP time to well under the TTL).

    * take: create the object with ``If-None-Match: *`` (one of two racing creators wins: HTTP 412);
    * keep: a heartbeat thread rewrites it every ``ttl_seconds / 3`` with a later expiry, ``If-Match`` the ETag
      of its last write, so a holder alive and reachable never expires;
    * take over: a lease whose ``expires`` has passed (its holder died: ``kill -9``, lost machine) is
      replaced ``If-Match`` the ETag read, so of two takers one wins;
    * release: deleted ``If-Match`` our ETag: a lease another holder took over after ours expired stays his.

    A holder that stalls past its expiry (a paused VM) may lose the lease to a taker: once its expiry passed
    without a renewal, or a renewal found the lease taken over (HTTP 412), ``lost`` is set for good, the
    heartbeat stops and logs an error, and ``check`` raises ``LeaseLostError`` (``Lake`` checks before every
    write). Correctness does not rest on the lease: every lake write on S3 is conditional (lib/storage.py).
    ``storage`` is the lake's ``ObjectStorage`` (``read_versioned``, ``put_if``, ``delete_if``).
    ``ttl_seconds`` defaults to ``CG_LEASE_TTL_SECONDS`` (120).

    Raises (on construction):
        CustomerGaugeConfigError: ``CG_LEASE_TTL_SECONDS`` is not a number of seconds from 3 to a day.
    """

    def __init__(self, name: str, path, storage, ttl_seconds: float | None = None):
        super().__init__(name, str(path))
        self.path, self.storage = path, storage
        self.ttl = ttl_seconds if ttl_seconds is not None else lease_ttl_seconds()
        self._etag: str | None = None
        self._record: dict | None = None
        self._lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def try_acquire(self, holder: dict) -> bool:
        if self._etag is not None:
            raise RuntimeError(f"the {self.name} lease ({self.location}) is already held by this object")
        record = {**holder, "expires": time.time() + self.ttl}
        body = json.dumps(record).encode()
        try:
            etag = self.storage.put_if(self.path, body, None)
        except PreconditionFailed:
            current = self.storage.read_versioned(self.path)
            if current is None or not _expired(current[0]):
                return False  # held (or released a moment ago: the next try takes it)
            try:
                etag = self.storage.put_if(self.path, body, current[1])
            except PreconditionFailed:
                return False  # another taker was first, or the holder renewed just now
            log.warning(
                "took over the %s lease (%s) from a holder that let it expire: %s",
                self.name,
                self.location,
                _describe(_parse(current[0])),
            )
        self._etag, self._record, self._lost = etag, record, False
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._renew, name=f"lease-{self.name}", daemon=True)
        self._heartbeat.start()
        return True

    def holder(self) -> dict | None:
        """The holder record (with ``expires``), or None when there is no lease object or it is not JSON."""
        current = self.storage.read_versioned(self.path)
        return _parse(current[0]) if current else None

    @property
    def lost(self) -> bool:
        """True while held if a renewal found the lease taken over or its expiry passed without a renewal."""
        return self._etag is not None and (self._lost or time.time() >= self._record["expires"])

    def check(self) -> None:
        """Raise ``LeaseLostError`` (naming the lease and the fix) when ``lost``. (A ``FileLease`` cannot be
        lost: the kernel keeps a ``flock`` as long as its process lives.)"""
        if self.lost:
            raise LeaseLostError(
                f"lost the {self.name} lease ({self.location}): its expiry passed without a renewal (this process "
                f"was paused or cut off for longer than CG_LEASE_TTL_SECONDS, {self.ttl:g} s) or another job took "
                "it over, so this run writes nothing more; run it again"
            )

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._lock:
            etag, self._etag = self._etag, None
        if etag is not None:
            with contextlib.suppress(PreconditionFailed):  # taken over meanwhile: the record is the new holder's
                self.storage.delete_if(self.path, etag)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with self._lock:
                if self._etag is None:
                    return
                if self.lost:  # paused past the expiry: another job may hold it now, even if it is free again
                    self._lost = True
                    log.error("lost the %s lease (%s): it expired before a renewal", self.name, self.location)
                    return
                record = {**self._record, "expires": time.time() + self.ttl}
                try:
                    self._etag = self.storage.put_if(self.path, json.dumps(record).encode(), self._etag)
                except PreconditionFailed:
                    self._lost = True
                    log.error("lost the %s lease (%s): taken over after it expired", self.name, self.location)
                    return
                except Exception as error:  # noqa: BLE001 - a network blip: the next beat retries, before expiry
                    log.warning("could not renew the %s lease (%s): %s", self.name, self.location, error)
                    continue
                self._record = record


def lease_ttl_seconds() -> float:
    """``CG_LEASE_TTL_SECONDS`` (default 120): how long an object-storage lease outlives its last heartbeat.

    Raises:
        CustomerGaugeConfigError: the setting is not a number of seconds from 3 to a day; names it and the fix.
    """
    ttl = LEASE_TTL_SECONDS.number(above=0, maximum=86_400)
    if ttl < 3:
        raise LEASE_TTL_SECONDS.error(LEASE_TTL_SECONDS.text())
    return ttl


def _parse(body: bytes) -> dict | None:
    try:
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _expired(body: bytes) -> bool:
    """True when the lease record's ``expires`` has passed, or it holds none (not written by a holder)."""
    expires = (_parse(body) or {}).get("expires")
    return not isinstance(expires, int | float) or expires < time.time()


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
