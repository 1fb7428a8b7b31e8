"""The Parquet lake: where files go, how they are written atomically, and where the cursor is committed.

No Dagster import: the assets call this module, tests can use it alone. The root is a local folder or an
object store (``s3://bucket/prefix``): every file access goes through the root's ``Storage``
(lib/storage.py), so the code above this module is the same for both.

Layout under the lake root (``CG_LAKE_ROOT``, default ``./lake``)::

    <root>/<table>/<partition file stem>.parquet   one file per partition, e.g. responses/2026-11-29-0900.parquet
    <root>/current/<table>/<first id>.parquet      latest version of every response, one file per id range
                                                   (lib/current.py)
    <root>/_state/raw_responses.cursor.json        the committed head cursor (written after the data)
    <root>/_state/manifests/raw_responses/<stem>.json  sync manifest of a raw partition file (also in its footer)
    <root>/_state/commit.lock                      flock taken while a sync commits
    <root>/_state/sync.lease, current.lease        flock held for a whole sync / rebuild (lib/lease.py; holder in .json)
    <root>/_state/flatten-<raw table>-<stem>.lease held while that partition is flattened (lib/tables.py)
    <root>/_state/lookback.json                    the last completed trailing-window re-read (lib/lookback.py)
    <root>/_state/fetched_at.json                  the latest fetched_at committed (lib/sync.py)

Those names are of the responses stream. Each sync endpoint is a ``Stream`` with names of its own (head
cursor, lease, re-read record, fetch clock; its raw table names its manifest folder): the non-responses'
are ``raw_non_responses.cursor.json``, ``sync_non_responses.lease``, ``lookback_non_responses.json`` and
``fetched_at_non_responses.json``. The commit lock is shared (a commit holds it for milliseconds).
    <root>/_state/quarantine/<stem>/<check>.json   a blocking check failed on that partition: kept out of current
    <root>/_tmp/                                   files being written; renamed into place when complete (local)

Readers glob ``<root>/<table>/*.parquet``; nothing but complete files is ever there. ``_state`` and ``_tmp``
start with ``_`` so Spark and Hive skip them too.

Guarantees (see README, "Guarantees"):

* A file appears in a table folder only complete: it is written to ``_tmp/`` on the same file system,
  fsynced, then renamed over the target with ``os.replace`` (atomic on POSIX). Re-writing a partition
  replaces its file; a crash leaves the old file (or none) in place and a stray file in ``_tmp/`` that the
  next sync removes once it is a day old (``sweep_tmp``; a live writer's file is never removed). On object
  storage the file is written locally and uploaded whole to its key in one PUT on commit.
* A raw partition file's sync manifest (``SyncManifest``: the API range it holds) is written twice: in the
  file's Parquet footer, with the data, and then as a sidecar JSON in ``_state/manifests/``, which a tool
  that rewrites the data file (compaction, DuckDB ``COPY``, pandas) cannot drop. ``read_manifest`` and
  ``write_manifest`` are its only readers and writers.
* The head cursor is committed after the data it covers, under the commit lock, and only if the head
  is still the one the sync started from (compare-and-swap): two overlapping syncs cannot both commit.
  Local: an exclusive ``flock``. Object storage: the lock is an ``ObjectLease`` on ``_state/commit.lock``, and
  the head is written with ``If-Match`` the ETag of the head last read (``If-None-Match: *`` when there was
  none), so a head that moved since fails the write (HTTP 412) even when the lock's holder outlived its TTL.
* Object storage (S3): no writer overwrites what another committed. Every write of a file (raw, manifest,
  flattened, current, ``_state/*.json``) is conditional on the object being as this ``Lake`` last saw it
  (lib/storage.py, "Fencing"), and is refused (``PreconditionFailed``, nothing written) otherwise; before each
  write, a lease this ``Lake`` holds that was lost (``ObjectLease.lost``) refuses it too (``LeaseLostError``).
"""

import contextlib
import datetime as dt
import json
import os
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cg_dagster.lib.lease import FileLease, Lease, LeaseLostError, ObjectLease
from cg_dagster.lib.schemas import FLAT_TABLE_NAMES, NON_RESPONSE_FLAT_TABLES, RAW_NON_RESPONSES_TABLE, RAW_TABLE
from cg_dagster.lib.storage import FileStat, LakeError, PreconditionFailed, arrow_location, open_storage

STATE_DIR = "_state"
CURRENT_DIR = "current"
QUARANTINE_DIR = "quarantine"
MANIFEST_DIR = "manifests"
MANIFEST_FOOTER_KEY = b"cg_dagster.sync"


GLOB_CHARACTERS = frozenset("*?[]{}")  # DuckDB expands these in every path it reads (lib/current.py)
UNREADABLE_FIX = (
    "restore it from a backup, or run raw_responses (raw_non_responses for a non-responses file) for this "
    "partition with full_refresh: true (which "
    "replaces it with everything the API returns from the start)"
)


def read_parquet_metadata(path, fix: str = UNREADABLE_FIX) -> pq.FileMetaData:
    """The Parquet footer of a lake file (row count, schema, key/value metadata); ``path`` local or remote.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        LakeError: the file is not readable Parquet (truncated, zero bytes, another format); names it and ``fix``.
    """
    with naming_unreadable(path, fix):
        where, filesystem = arrow_location(path)
        return pq.read_metadata(where, filesystem=filesystem)


@contextlib.contextmanager
def naming_unreadable(path, fix: str = UNREADABLE_FIX) -> Iterator[None]:
    """Raise an error of Arrow reading lake file ``path`` (truncated, zero bytes, another format) as a LakeError
    naming the file and ``fix``: Arrow's own message does not name it. FileNotFoundError passes as it is."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise LakeError(f"{str(path)!r} is not a readable Parquet file ({exc}): {fix}") from None


@dataclass(frozen=True)
class Stream:
    """One sync endpoint's names: ``endpoint`` (``SyncParams.endpoint``, lib/client/params.py), ``raw_table``
    (its raw table, which also names the manifests' folder), ``flat_tables`` (the tables flattened from it, its
    key table first: one row per raw row, proof a partition was synced), and its files in ``_state/``:
    ``head_file`` (the committed head cursor), ``lease`` (``Lake.lease`` name: one sync of this stream at a time),
    ``lookback_state`` (the last trailing-window re-read, lib/lookback.py) and ``fetched_at_state`` (the fetch
    clock, lib/sync.py). Streams share nothing but the commit lock, so their syncs run independently."""

    endpoint: str
    raw_table: str
    flat_tables: tuple[str, ...]
    head_file: str
    lease: str
    lookback_state: str
    fetched_at_state: str


# The responses' names are those of lakes written before streams existed: existing lakes keep working.
RESPONSES = Stream(
    "responses",
    RAW_TABLE,
    FLAT_TABLE_NAMES,
    "raw_responses.cursor.json",
    "sync",
    "lookback.json",
    "fetched_at.json",
)
NON_RESPONSES = Stream(
    "non-responses",
    RAW_NON_RESPONSES_TABLE,
    NON_RESPONSE_FLAT_TABLES,
    "raw_non_responses.cursor.json",
    "sync_non_responses",
    "lookback_non_responses.json",
    "fetched_at_non_responses.json",
)
STREAMS = (RESPONSES, NON_RESPONSES)


class CursorConflictError(LakeError):
    """The head cursor moved while a sync was running: another sync committed first. Nothing was committed."""


@dataclass(frozen=True)
class HeadCursor:
    """The committed head of the sync: the cursor the next sync resumes from.

    ``cursor`` is the integer cursor returned by the API (vendor page: "The cursor is an integer"), or None
    when an initial load found no data. ``partition_key`` is the Dagster partition of the sync that
    committed it; partitions older than it that were never synced are written empty.
    """

    cursor: int | None
    partition_key: str
    run_id: str
    committed_at: str  # ISO 8601, UTC

    @classmethod
    def from_json(cls, text: str) -> "HeadCursor":
        data = json.loads(text)
        return cls(
            cursor=data["cursor"],
            partition_key=data["partition_key"],
            run_id=data["run_id"],
            committed_at=data["committed_at"],
        )


@dataclass(frozen=True)
class SyncManifest:
    """The manifest of a raw partition file: which API range the sync wrote into it, and how.

    ``mode`` is "sync" (paged from the head), "replay" (re-fetched its recorded range) or "skipped" (written
    empty: the window passed without a sync). ``cursor_start`` is the cursor sent on the first page (None:
    from the beginning); ``cursor_end`` the cursor after the last non-empty page (equal to ``cursor_start``
    when nothing new came); cursors are the API's integers (vendor page: "The cursor is an integer").
    ``pages``/``rows`` count the cursor pass; ``lookback`` ({"field", "start", "end"} of the period re-read)
    and ``lookback_pages``/``lookback_rows`` the trailing-window re-read; ``kept_rows`` the committed rows a
    replay carried over because the API no longer returned them. ``per_page``, ``with_`` and ``filter`` are
    the request parameters a replay sends again.

    Stored as JSON (``to_json``) in the sidecar ``_state/manifests/<table>/<stem>.json`` and in the data
    file's footer under ``MANIFEST_FOOTER_KEY``; read and written only by ``Lake.read_manifest`` /
    ``Lake.write_manifest`` and ``footer``.
    """

    mode: str  # "sync" | "replay" | "skipped"
    partition_key: str
    run_id: str
    cursor_start: int | None
    cursor_end: int | None
    pages: int
    rows: int
    per_page: int
    with_: tuple[str, ...]
    filter: str | None
    lookback: dict | None = None
    lookback_pages: int = 0
    lookback_rows: int = 0
    reason: str | None = None
    full_refresh: bool = False
    kept_rows: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def footer(self) -> dict[bytes, bytes]:
        """The Parquet footer key/value pair that carries this manifest in the data file."""
        return {MANIFEST_FOOTER_KEY: self.to_json().encode()}

    @classmethod
    def from_json(cls, text: str | bytes) -> "SyncManifest":
        """Parse ``to_json``'s output. Raises ValueError, KeyError or TypeError when it is not a manifest."""
        data = json.loads(text)
        data["with_"] = tuple(data["with_"])
        return cls(**data)


def partition_file_stem(partition_key: str) -> str:
    """File stem for a partition key: ``2026-11-29-09:00`` -> ``2026-11-29-0900`` (no colon: Hadoop-safe)."""
    return partition_key.replace(":", "")


def partition_key_of(stem: str) -> str:
    """The partition key of a file stem, ``partition_file_stem`` undone: ``2026-11-29-0900`` -> ``2026-11-29-09:00``."""
    return f"{stem[:-2]}:{stem[-2:]}"


class Lake:
    """A lake rooted at ``root``: a local path, or ``s3://bucket/prefix`` (lib/storage.py; ``gs://``, ``abfs://``
    read and write but cannot commit). Cheap to construct; creates folders only when writing. ``root`` is a
    ``Path`` or a ``UPath``; its ``str`` holds no secret.

    Raises (on construction):
        LakeError: the root's store is unknown or its fsspec package is not installed (names it).
    """

    def __init__(self, root: str | os.PathLike):
        self.storage = open_storage(root)
        self.root = self.storage.root
        self._leases: weakref.WeakSet[ObjectLease] = weakref.WeakSet()  # from ``lease()``: checked before each write

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    # ---- paths -------------------------------------------------------------------------------------

    def table_dir(self, table: str) -> Path:
        return self.root / table

    def partition_path(self, table: str, partition_key: str) -> Path:
        """``<root>/<table>/<stem>.parquet`` for one partition of a table."""
        return self.table_dir(table) / f"{partition_file_stem(partition_key)}.parquet"

    def current_path(self, table: str) -> Path:
        """``<root>/current/<table>``: the folder of the table's range files (lib/current.py)."""
        return self.root / CURRENT_DIR / table

    def partition_files(self, table: str) -> list[Path]:
        """Every committed partition file of ``table``, sorted by name (= by partition)."""
        return self.storage.files(self.table_dir(table))

    # ---- file access (through the root's Storage, lib/storage.py) ----------------------------------

    def exists(self, path) -> bool:
        """True when there is a file at ``path``."""
        return self.storage.exists(path)

    def files(self, folder, suffix: str = ".parquet") -> list:
        """The files directly in ``folder`` whose name ends with ``suffix``, sorted by name ([] without the folder)."""
        return self.storage.files(folder, suffix)

    def stats(self, folder, suffix: str = ".parquet") -> dict[str, FileStat]:
        """{name: ``FileStat`` (size, mtime_ns, version)} of those files, in one listing."""
        return self.storage.stats(folder, suffix)

    def look(self, path) -> str | None:
        """The ``FileStat.version`` of the file at ``path`` now (``stats`` gives the same token from a listing),
        changed by every write of it (local: size and mtime_ns, one ``stat``; object storage: size and ETag, one
        HEAD), or None when there is none. On object storage it is also what this ``Lake``'s next write or delete
        of ``path`` is conditional on (lib/storage.py, "Fencing")."""
        found = self.storage.stat(path)
        return found.version if found else None

    def delete(self, path) -> None:
        """Delete the file at ``path`` (no error when there is none).

        Raises:
            LeaseLostError: a lease this object holds was lost (``check_leases``); nothing was deleted.
            PreconditionFailed: object storage: the object changed since this lake saw it; nothing was deleted.
        """
        self.check_leases()
        self.storage.delete(path)

    def parquet_file(self, path, **options) -> pq.ParquetFile:
        """``pq.ParquetFile`` of a lake file (``options`` as pyarrow's, e.g. ``pre_buffer=False``)."""
        where, filesystem = self.storage.arrow(path)
        return pq.ParquetFile(where, filesystem=filesystem, **options)

    def read_table(self, path, **options) -> pa.Table:
        """``pq.read_table`` of a lake file (``options``: columns, filters, schema ...)."""
        where, filesystem = self.storage.arrow(path)
        return pq.read_table(where, filesystem=filesystem, **options)

    def registered(self, con) -> contextlib.AbstractContextManager[None]:
        """Within the ``with`` block, the DuckDB connection ``con`` reads ``str(path)`` of this lake's files (an
        fsspec filesystem registered on it for object storage, unregistered on exit; nothing for a local lake)."""
        return self.storage.registered(con)

    def scratch_dir(self, name: str) -> Path:
        """A local folder for spill files of this lake (``_tmp/<name>`` of a local lake)."""
        return self.storage.scratch_dir(name)

    # ---- checks ------------------------------------------------------------------------------------

    def ensure_writable(self) -> None:
        """Create the root's folders and prove a file can be written there.

        Raises:
            LakeError: naming the root and ``CG_LAKE_ROOT`` when the folder cannot be created or written,
                or its path holds a glob character (``*?[]{}``), which DuckDB would expand when it reads files.
        """
        if glob := sorted(GLOB_CHARACTERS.intersection(str(self.root))):
            raise LakeError(
                f"lake root {str(self.root)!r} holds {' '.join(glob)}, which DuckDB reads as a glob (it would read "
                "other folders' files into the current tables); set CG_LAKE_ROOT to a path without * ? [ ] { }"
            )
        try:
            self.storage.probe()
        except OSError as exc:
            where = (
                "a bucket and prefix these credentials can write (AWS_* variables or ~/.aws; AWS_ENDPOINT_URL for "
                "an S3-compatible store)"
                if self.storage.remote
                else "a folder this process can create and write"
            )
            raise LakeError(
                f"lake root {str(self.root)!r} is not writable ({exc.strerror or exc}); set CG_LAKE_ROOT to {where}"
            ) from None

    def sweep_tmp(self, older_than_seconds: float = 86_400) -> list[str]:
        """Delete temporary files not modified for ``older_than_seconds`` (default a day: left by killed runs; no
        write takes that long): ``_tmp/`` of a local lake, the local upload files of an object-storage lake
        (``Storage.scratch_dir("uploads")``). Returns their names."""
        return self.storage.sweep_tmp(older_than_seconds)

    # ---- atomic Parquet writes ---------------------------------------------------------------------

    @contextlib.contextmanager
    def parquet_writer(
        self,
        target: Path,
        schema: pa.Schema,
        key_value_metadata: dict[bytes, bytes] | None = None,
        use_dictionary: bool | list[str] = True,
    ) -> Iterator["AtomicParquetWriter"]:
        """Open a streaming Parquet writer whose file appears at ``target`` only when ``commit()`` is called.

        Usage::

            with lake.parquet_writer(path, schema) as w:
                w.write(table)        # any number of times; memory stays one batch
                w.commit()            # fsync + atomic rename; without it the temporary file is deleted

        ``use_dictionary``: the columns written with a Parquet dictionary (``pq.ParquetWriter``'s option).

        Raises:
            LakeError: if the temporary folder cannot be written.
        """
        writer = AtomicParquetWriter(self, target, schema, key_value_metadata, use_dictionary)
        try:
            yield writer
        finally:
            writer.abort()

    def write_table(self, target: Path, table: pa.Table, key_value_metadata: dict[bytes, bytes] | None = None) -> None:
        """Write a whole Arrow table to ``target`` atomically (see ``parquet_writer``)."""
        with self.parquet_writer(target, table.schema, key_value_metadata) as writer:
            writer.write(table)
            writer.commit()

    # ---- head cursor -------------------------------------------------------------------------------

    def read_head(self, stream: Stream = RESPONSES) -> HeadCursor | None:
        """The committed head cursor of ``stream``, or None when this lake never committed a sync of it.

        Raises:
            LakeError: if the cursor file exists but is not valid JSON of the expected shape.
        """
        path = self.root / STATE_DIR / stream.head_file
        try:
            text = self.storage.read_bytes(path)  # object storage: its ETag is what write_head expects
        except FileNotFoundError:
            return None
        try:
            return HeadCursor.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise LakeError(
                f"cursor file {str(path)!r} is corrupt ({exc!r}); restore it or run {stream.raw_table} with "
                "full_refresh: true"
            ) from None

    @contextlib.contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Held for the duration of a commit; blocks until free. Local: an exclusive ``flock`` on
        ``_state/commit.lock``. Object storage: an ``ObjectLease`` on that object (a dead holder's expires after
        ``CG_LEASE_TTL_SECONDS``); the head write is conditional besides (``write_head``)."""
        if not self.storage.remote:
            with self.storage.flock():
                yield
            return
        lock = self.lease("commit", self.root / STATE_DIR / "commit.lock")
        with lock.hold(f"commit-{uuid.uuid4().hex[:12]}", wait_seconds=float("inf"), setting="", poll_seconds=0.2):
            yield

    def assert_head(
        self, expected: HeadCursor | None, *, unreadable_ok: bool = False, stream: Stream = RESPONSES
    ) -> None:
        """Check that the committed head of ``stream`` is still ``expected`` (call it holding ``commit_lock()``).
        ``unreadable_ok``: a corrupt cursor file counts as absent (a ``full_refresh`` that replaces it).

        Raises:
            CursorConflictError: the head moved (another sync committed meanwhile); names both heads.
            LakeError: the cursor file is corrupt and not ``unreadable_ok``.
        """
        try:
            current = self.read_head(stream)
        except LakeError:
            if not unreadable_ok:
                raise
            current = None
        if current != expected:
            raise CursorConflictError(
                f"the head cursor moved during this run: it was {_describe(expected)} when the sync started "
                f"and is now {_describe(current)} (another sync of {stream.raw_table} committed first). Nothing "
                "was committed; run again to sync from the new head"
            )

    def write_head(self, head: HeadCursor, stream: Stream = RESPONSES) -> None:
        """Write the head cursor file of ``stream`` atomically. Call it holding ``commit_lock()``, after the data
        is in place.

        On object storage the write is conditional on the head this object last read (``read_head``,
        ``assert_head``): ``If-Match`` its ETag, or ``If-None-Match: *`` when there was none. A refused write
        whose head now is exactly ``head`` succeeded: botocore retried a PUT whose response was lost.

        Raises:
            CursorConflictError: the head changed since it was read (HTTP 412/409); the head was not written.
            LeaseLostError: a lease this object holds was lost (``check_leases``); nothing was written.
        """
        path = self.root / STATE_DIR / stream.head_file
        try:
            self._write_json(path, asdict(head))
        except LeaseLostError:
            raise
        except PreconditionFailed:
            if self.read_head(stream) == head:
                return
            raise CursorConflictError(
                f"the head cursor {str(path)!r} was written by another sync after this run read it (its conditional "
                "write failed), so this run's head was not written; run again to sync from the new head"
            ) from None

    def read_state(self, name: str) -> dict | None:
        """``_state/<name>`` as JSON (e.g. ``lookback.json``, lib/lookback.py), or None when absent.

        Raises:
            LakeError: the file is not JSON; names it and the fix.
        """
        path = self.root / STATE_DIR / name
        try:
            return json.loads(self.storage.read_bytes(path))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise LakeError(f"state file {str(path)!r} is corrupt ({exc}); delete or restore it") from None

    def write_state(self, name: str, data: dict) -> None:
        """Write ``_state/<name>`` atomically; with a commit, call it holding ``commit_lock()``."""
        self._write_json(self.root / STATE_DIR / name, data)

    def lease(self, name: str, path=None) -> Lease:
        """The lease ``name`` ("sync", "current", a ``Stream.lease``) of this lake, at ``_state/<name>.lease``
        (or ``path``)
        (lib/lease.py): local, a ``flock`` released when its holder's process dies; object storage, an
        ``ObjectLease`` (conditional writes, heartbeat, taken over after ``CG_LEASE_TTL_SECONDS``).

        Raises:
            LakeError: the lake is not writable (``ensure_writable``), its store has no conditional writes
                (not S3), or ``CG_LEASE_TTL_SECONDS`` is invalid.
        """
        self.ensure_writable()
        path = path or self.root / STATE_DIR / f"{name}.lease"
        if not self.storage.remote:
            return FileLease(name, path)
        self.storage.require_conditional()
        lease = ObjectLease(name, path, self.storage)
        self._leases.add(lease)
        return lease

    def check_leases(self) -> None:
        """Called before every write: raises ``LeaseLostError`` (nothing written) if a lease of this lake
        (``lease()``: the sync or current lease, the commit lock) was lost while held (``ObjectLease.lost``)."""
        for lease in list(self._leases):
            lease.check()

    def _write_json(self, path, data: dict) -> None:
        """Write ``data`` as JSON to ``path`` atomically and durably (local: temporary file, fsync, rename;
        object storage: conditional, see the module docstring).

        Raises:
            PreconditionFailed: object storage: the object changed since this ``Lake`` saw it, or a lease was lost.
        """
        self.check_leases()
        self.storage.write_bytes(path, _json_bytes(data))

    # ---- quarantine ----------------------------------------------------------------------------------

    def quarantine(self, partition_key: str, check_name: str, detail: dict) -> None:
        """Mark a partition as failing ``check_name`` (``_state/quarantine/<stem>/<check>.json``, atomic).
        The current tables leave quarantined partitions out until every marker is released."""
        path = self.root / STATE_DIR / QUARANTINE_DIR / partition_file_stem(partition_key) / f"{check_name}.json"
        self._write_json(path, {"partition_key": partition_key, "check": check_name, **detail})

    def release(self, partition_key: str, check_name: str) -> None:
        """Remove the marker of ``check_name`` on a partition (no-op when there is none)."""
        folder = self.root / STATE_DIR / QUARANTINE_DIR / partition_file_stem(partition_key)
        self.delete(folder / f"{check_name}.json")
        if not self.storage.remote:  # object stores have no folders
            with contextlib.suppress(OSError):
                folder.rmdir()  # only once empty

    def quarantined(self) -> dict[str, list[str]]:
        """Quarantined partition file stems -> names of the checks that failed there."""
        folders = self.storage.folders(self.root / STATE_DIR / QUARANTINE_DIR)
        found = {folder.name: [p.stem for p in self.storage.files(folder, ".json")] for folder in folders}
        return {stem: checks for stem, checks in found.items() if checks}

    # ---- reading -----------------------------------------------------------------------------------

    def manifest_dir(self, table: str) -> Path:
        """``_state/manifests/<table>/``: the sidecar manifests of a table's partition files."""
        return self.root / STATE_DIR / MANIFEST_DIR / table

    def manifest_path(self, data_path: Path) -> Path:
        """The sidecar of a partition file: ``<table>/<stem>.parquet`` -> ``_state/manifests/<table>/<stem>.json``."""
        return self.manifest_dir(data_path.parent.name) / f"{data_path.stem}.json"

    def write_manifest(self, data_path: Path, manifest: SyncManifest) -> None:
        """Write the sidecar of ``data_path`` atomically. Call it holding ``commit_lock()``, after the data
        file (with ``manifest.footer()``) is in place and before the head write, so that a crash in between
        leaves a footer ``read_manifest`` prefers and ``sync.recover_lost_head`` completes."""
        self._write_json(self.manifest_path(data_path), asdict(manifest))

    def read_manifest(self, data_path: Path) -> SyncManifest | None:
        """The manifest of a raw partition file, or None when neither its footer nor its sidecar holds one.

        The footer, when the file still has it, wins: it was written with these rows. It differs from the
        sidecar only after a commit died between its data rename and its sidecar write (or when an older copy
        of the file was restored), and it alone serves lakes written before sidecars existed. A file a tool
        rewrote has lost its footer: its sidecar is used. A sidecar whose data file was deleted is returned too.

        Raises:
            LakeError: the data file is not readable Parquet, or the footer or the sidecar is not a valid
                manifest; names the path and the fix.
        """
        exists = self.exists(data_path)
        text = (read_parquet_metadata(data_path).metadata or {}).get(MANIFEST_FOOTER_KEY) if exists else None
        where = f"the footer of {str(data_path)!r}"
        sidecar = self.manifest_path(data_path)
        if text is not None and self.storage.remote:
            self.storage.look(sidecar)  # so that write_manifest is conditional on the sidecar as it is now
        if text is None:
            where = repr(str(sidecar))
            try:
                text = self.storage.read_bytes(sidecar)
            except FileNotFoundError:
                return None
        try:
            return SyncManifest.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise LakeError(f"the sync manifest in {where} is corrupt ({exc!r}): {UNREADABLE_FIX}") from None


class AtomicParquetWriter:
    """Streams Arrow tables into a temporary Parquet file and renames it over the target on ``commit()``.

    Use through ``Lake.parquet_writer``. ``rows`` counts rows written so far.
    """

    def __init__(
        self,
        lake: Lake,
        target: Path,
        schema: pa.Schema,
        key_value_metadata: dict[bytes, bytes] | None,
        use_dictionary: bool | list[str] = True,
    ):
        self.target = target
        self.rows = 0
        self._lake = lake
        self._file = lake.storage.open_atomic(target)
        if key_value_metadata:
            schema = schema.with_metadata({**(schema.metadata or {}), **key_value_metadata})
        self._schema = schema
        try:
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
                self._file.sink, schema, compression="zstd", use_dictionary=use_dictionary
            )
        except BaseException:
            self._file.abort()
            raise

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        """Append rows; ``table`` must have the writer's schema (field names, types, nullability)."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows:
            self._writer.write_table(table.replace_schema_metadata(self._schema.metadata))
            self.rows += table.num_rows

    def set_metadata(self, key_value_metadata: dict[bytes, bytes]) -> None:
        """Add key-value metadata to the footer (allowed until commit: the footer is written last)."""
        self._writer.add_key_value_metadata({k.decode(): v.decode() for k, v in key_value_metadata.items()})

    def fence(self) -> None:
        """Make ``commit()`` conditional on the target as it is now (object storage: one HEAD; locally a
        no-op), not as it was when the writer opened: call it under the lease that orders the target's writers,
        for a writer opened before that lease was taken (lib/tables.py ``FlattenAsSynced``)."""
        self._file.fence()

    def commit(self) -> None:
        """Close the file and put it at the target whole (local: fsync and rename; the target folder is
        created. Object storage: one PUT, on the condition that the object is as when the writer opened).

        Raises:
            PreconditionFailed: object storage: the target changed since the writer opened (another run wrote
                it), or a lease of the lake was lost (``Lake.check_leases``); nothing was written.
        """
        self._writer.close()
        self._writer = None
        self._lake.check_leases()
        self._file.commit()

    def abort(self) -> None:
        """Drop the temporary file (the upload) unless committed (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._file.abort()


def utc_now() -> dt.datetime:
    """Current time, timezone-aware UTC, microsecond precision."""
    return dt.datetime.now(dt.timezone.utc)


def _describe(head: HeadCursor | None) -> str:
    if head is None:
        return "absent (no sync committed)"
    return f"{head.cursor} (partition {head.partition_key}, run {head.run_id})"


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()
