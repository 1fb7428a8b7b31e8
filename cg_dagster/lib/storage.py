"""Where the lake's bytes live: a local folder, or an object store through fsspec. No Dagster import.

``open_storage(root)`` chooses by the lake root (``CG_LAKE_ROOT``):

* a local path -> ``LocalStorage``: files appear whole by a write to ``_tmp/`` on the same file system, fsync
  and ``os.replace`` (atomic on POSIX); the commit lock and the leases are ``flock`` (lib/lease.py).
* ``s3://bucket/prefix`` (``s3fs``), and through the same code ``gs://`` (``gcsfs``) and ``abfs://``/``az://``
  (``adlfs``) -> ``ObjectStorage``: an object is written whole in one PUT (atomic: readers see the old object
  or the new one), so there is no ``_tmp/``; a file being written is a local file in ``scratch_dir`` until
  then. Credentials and endpoints come from the store's standard environment and
  config (for S3 the AWS variables and files, ``AWS_ENDPOINT_URL`` included, read by botocore): nothing
  secret is in the root, so ``str(root)`` (what reprs, logs and ``dagster/uri`` show) is ``s3://bucket/prefix``.

Paths are ``pathlib.Path`` (local) or ``upath.UPath`` (remote: the same pure-path API, ``str`` is the URL).
Every read, write, listing and delete of the lake goes through a ``Storage`` (``Lake`` delegates to it).

Commits and leases on object storage use the store's conditional writes, implemented for S3 (AWS documents
``If-None-Match: *`` and ``If-Match: <etag>`` on PutObject, and ``If-Match`` on DeleteObject; a failed
precondition is HTTP 412, a concurrent conditional write HTTP 409): ``put_if`` / ``delete_if`` /
``read_versioned``. Other stores read and write through fsspec but refuse a commit or a lease (``LakeError``
naming the store): their preconditions (GCS generations, Azure ETags) are not implemented here.

Fencing (S3): every write of a lake file is conditional on the object being as this ``ObjectStorage`` last
saw it (``seen``: the ETag it last read, listed or wrote, or "absent", also once a listing no longer shows it;
one it never looked at is looked at when a writer opens it). A writer that stalled past its lease (a paused VM)
and resumes after another run wrote the same object gets ``PreconditionFailed`` instead of overwriting it. A
write whose first attempt succeeded but whose response was lost, retried by botocore, fails its precondition the
same way: callers that can tell (``Lake.write_head``) re-read the object.
"""

import abc
import contextlib
import fcntl
import functools
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import fsspec.asyn
import pyarrow.fs as pafs
from upath import UPath

TMP_DIR = "_tmp"
PACKAGES = {  # fsspec protocol -> the package that implements it
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "az": "adlfs",
}
STORE_ALIASES = {"s3a": "s3", "gcs": "gs", "abfss": "abfs", "az": "abfs"}  # fsspec's other names of one store
CONDITIONAL_PROTOCOLS = ("s3", "s3a")  # stores whose conditional writes put_if / delete_if implement
# s3fs's own default for opened files is a "readahead" cache of 50 MB blocks: every read of a Parquet footer or
# column chunk (pyarrow, DuckDB) fetched and held up to 50 MB more. pyarrow and DuckDB ask for the byte ranges
# they need (pyarrow coalesces them), so each read is one ranged GET of exactly those bytes: a 200k-record CLI
# run of the raw, flattened and current tables peaked at 401 MB instead of 532 (local: 375; README, "Lake on
# object storage").
OPEN_OPTIONS = {"s3": {"default_cache_type": "none"}, "s3a": {"default_cache_type": "none"}}
CONFLICT_STATUSES = (409, 412)  # S3: 412 Precondition Failed, 409 ConditionalRequestConflict
MAX_PUT_BYTES = 5 * 2**30  # AWS S3 PutObject: "upload a single object up to 5 GB in size"


class LakeError(RuntimeError):
    """The lake cannot be used (root not writable, file unreadable). The message names the path and the fix."""


class PreconditionFailed(LakeError):
    """A conditional write or delete found the object changed (or present, or gone); nothing was written."""


@dataclass(frozen=True)
class FileStat:
    """Size in bytes, modification time (ns since the epoch; an object store's has whole seconds) and
    ``version``: a token that changes with every write (local: size and mtime_ns; S3: the ETag)."""

    size: int
    mtime_ns: int
    version: str


def open_storage(root: str | os.PathLike) -> "Storage":
    """The storage of a lake root: ``ObjectStorage`` for ``<protocol>://...`` (s3, gs, abfs, az), else
    ``LocalStorage`` of the path as given (``file://`` dropped).

    Raises:
        LakeError: the root names a protocol whose fsspec package is not installed (names the package), or
            one that is no object store fsspec knows.
    """
    text = os.fspath(root) if not isinstance(root, UPath) else str(root)
    protocol = text.split("://", 1)[0].lower() if "://" in text else None
    if protocol is not None:
        text = protocol + text[len(protocol) :]  # S3://b/p is s3://b/p (fsspec knows lower-case names only)
    if protocol is None or protocol == "file":
        return LocalStorage(Path(text.removeprefix("file://")))
    if protocol not in PACKAGES:
        raise LakeError(
            f"lake root {text!r}: {protocol}:// is not a supported store; set CG_LAKE_ROOT to a local folder or "
            "to s3://bucket/prefix (gs://, abfs:// also go through fsspec)"
        )
    try:
        # other processes write the lake: never list from a cache
        path = UPath(text, use_listings_cache=False, **OPEN_OPTIONS.get(protocol, {}))
        path.fs  # noqa: B018 - imports the store's package now, so a missing one is named here
    except ImportError:
        raise LakeError(
            f"lake root {text!r} needs the Python package {PACKAGES[protocol]!r} ({protocol}://): install it "
            f"(pip install {PACKAGES[protocol]}) or set CG_LAKE_ROOT to a local folder"
        ) from None
    return ObjectStorage(path)


def lake_identity(root: str) -> str:
    """Where the files of lake root ``root`` are, spelled one way per place: the scheme lower-cased and its
    fsspec aliases one name (``STORE_ALIASES``: s3a -> s3, gcs -> gs, abfss and az -> abfs), a local path
    (``file://`` dropped) absolute and resolved, no trailing ``/``. Two roots with one identity are one lake."""
    protocol, sep, rest = root.partition("://")
    if sep and protocol.lower() != "file":
        protocol = protocol.lower()
        return f"{STORE_ALIASES.get(protocol, protocol)}://{rest.rstrip('/')}"
    local = rest if sep else root
    return Path(local).expanduser().resolve().as_posix().rstrip("/")


class Storage(abc.ABC):
    """The operations a lake needs from where its files live. ``root`` is a ``Path`` or a ``UPath``."""

    remote: bool

    def __init__(self, root):
        self.root = root

    @abc.abstractmethod
    def exists(self, path) -> bool:
        """True when a file (or, remote, any object under the prefix) is at ``path``."""

    @abc.abstractmethod
    def stats(self, folder, suffix: str) -> dict[str, FileStat]:
        """{file name: its ``FileStat``} of the files directly in ``folder`` whose name ends with ``suffix``
        (one listing; {} when the folder does not exist)."""

    def files(self, folder, suffix: str = ".parquet") -> list:
        """Paths of the files directly in ``folder`` ending with ``suffix``, sorted by name."""
        return [folder / name for name in sorted(self.stats(folder, suffix))]

    @abc.abstractmethod
    def stat(self, path) -> FileStat | None:
        """The ``FileStat`` of the file at ``path`` now (one ``stat`` / request, no listing cache), None when
        there is none."""

    @abc.abstractmethod
    def folders(self, folder) -> list:
        """Paths of the sub-folders (remote: common prefixes) directly in ``folder``, sorted; [] when none."""

    @abc.abstractmethod
    def read_bytes(self, path) -> bytes:
        """The file's bytes. Raises FileNotFoundError when there is none."""

    @abc.abstractmethod
    def write_bytes(self, path, data: bytes) -> None:
        """Write ``data`` to ``path`` whole and durably: readers see the old content or the new, never a part.

        Raises:
            PreconditionFailed: object storage only: the object changed since this storage last saw it
                (module docstring, "Fencing"); nothing was written.
        """

    @abc.abstractmethod
    def delete(self, path) -> None:
        """Delete the file at ``path`` (no error when there is none)."""

    @abc.abstractmethod
    def open_atomic(self, target) -> "AtomicFile":
        """An ``AtomicFile`` whose bytes appear at ``target`` only on ``commit()``. Its ``sink`` is a local path.
        On object storage ``commit()`` raises ``PreconditionFailed`` (nothing written) when the object changed
        since this storage last saw it, or since this open when it never looked at it."""

    @abc.abstractmethod
    def arrow(self, path) -> tuple[str, pafs.FileSystem | None]:
        """(path, filesystem) for pyarrow's readers (``pq.read_metadata(p, filesystem=fs)`` and the like)."""

    @abc.abstractmethod
    def registered(self, con) -> contextlib.AbstractContextManager[None]:
        """Within the ``with`` block, ``str(path)`` of this lake's files is readable by the DuckDB connection
        ``con``; what it registered on ``con`` is unregistered on exit."""

    @abc.abstractmethod
    def scratch_dir(self, name: str) -> Path:
        """A local folder for spill files (DuckDB's temp_directory), the same for every run on this lake."""

    @abc.abstractmethod
    def probe(self) -> None:
        """Create what the lake needs and prove a file can be written there. Raises OSError otherwise."""

    def sweep_tmp(self, older_than_seconds: float) -> list[str]:
        """Delete temporary files a killed writer left, not modified for ``older_than_seconds``; their names."""
        return []


class AtomicFile:
    """Bytes written to ``sink`` (a local path, for pyarrow's writer) that appear at the target only on
    ``commit()``; ``abort()`` (idempotent, a no-op after commit) throws them away. ``fence()`` makes the
    commit conditional on the target as it is now instead of as it was at the open (object storage; a no-op
    locally): for a writer opened before its lease was taken, called under the lease."""

    def __init__(self, sink, commit, abort, fence=lambda: None):
        self.sink, self._commit, self._abort, self._done = sink, commit, abort, False
        self.fence = fence

    def commit(self) -> None:
        self._commit()
        self._done = True

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._abort()


class LocalStorage(Storage):
    """A lake in a local folder (see the module docstring)."""

    remote = False

    def exists(self, path) -> bool:
        return path.exists()

    def stats(self, folder, suffix: str) -> dict[str, FileStat]:
        found = {}
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(suffix):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.is_file():
                            found[entry.name] = _local_stat(entry.stat())
        return found

    def stat(self, path) -> FileStat | None:
        try:
            return _local_stat(os.stat(path))
        except FileNotFoundError:
            return None

    def folders(self, folder) -> list:
        return sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []

    def read_bytes(self, path) -> bytes:
        return path.read_bytes()

    def write_bytes(self, path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_path_for(path)
        tmp.write_bytes(data)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def delete(self, path) -> None:
        path.unlink(missing_ok=True)

    def tmp_path_for(self, target: Path) -> Path:
        """A fresh temporary path in ``_tmp/`` for ``target``. Another writer of the same target may be using
        its own at the same time, so none is removed here; ``sweep_tmp`` removes those a killed run left."""
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        return tmp_dir / f"{target.parent.name}__{target.name}.{uuid.uuid4().hex}.tmp"

    def open_atomic(self, target) -> AtomicFile:
        tmp = self.tmp_path_for(target)

        def commit():
            _fsync_file(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            _fsync_dir(target.parent)

        return AtomicFile(tmp, commit, lambda: tmp.unlink(missing_ok=True))

    def arrow(self, path) -> tuple[str, pafs.FileSystem | None]:
        return str(path), None

    @contextlib.contextmanager
    def registered(self, con) -> Iterator[None]:
        yield  # DuckDB reads local paths itself

    def scratch_dir(self, name: str) -> Path:
        return self.root / TMP_DIR / name

    def probe(self) -> None:
        for sub in ("_state", TMP_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        probe = self.root / TMP_DIR / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()

    @contextlib.contextmanager
    def flock(self) -> Iterator[None]:
        """Exclusive ``flock`` on ``_state/commit.lock`` (blocks until free; the kernel frees it with its holder)."""
        state = self.root / "_state"
        state.mkdir(parents=True, exist_ok=True)
        with open(state / "commit.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def sweep_tmp(self, older_than_seconds: float) -> list[str]:
        return sweep_folder(self.root / TMP_DIR, older_than_seconds)


class ObjectStorage(Storage):
    """A lake on an object store through fsspec (see the module docstring). ``root`` is a ``UPath``.

    ``seen``: {object path (``bucket/key``): its ETag, or None for absent} as this storage last read, listed,
    looked at (``look``) or wrote it; the precondition of its writes (module docstring, "Fencing").
    """

    remote = True

    def __init__(self, root: UPath):
        super().__init__(root)
        self.fs = root.fs
        self.protocol = root.protocol
        self.seen: dict[str, str | None] = {}

    def exists(self, path) -> bool:
        return self.fs.exists(path.path)

    def stats(self, folder, suffix: str) -> dict[str, FileStat]:
        try:
            listing = self.fs.ls(folder.path, detail=True)
        except FileNotFoundError:
            listing = []
        found = {}
        for info in listing:
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["type"] == "file" and name.endswith(suffix):
                found[name] = _object_stat(info)
                self.seen[info["name"]] = info.get("ETag")
        prefix = folder.path.rstrip("/") + "/"
        for key in [key for key in self.seen if key.startswith(prefix) and key.endswith(suffix)]:
            if "/" not in key[len(prefix) :] and key[len(prefix) :] not in found:
                self.seen[key] = None  # listed as gone (deleted by hand, say): a write then expects no object
        return found

    def stat(self, path) -> FileStat | None:
        """One HEAD request on S3 (recorded in ``seen``), else ``fs.info`` with the listing cache bypassed."""
        try:
            if self.protocol in CONDITIONAL_PROTOCOLS:
                bucket, key, _ = self.fs.split_path(path.path)
                head = self.fs.call_s3("head_object", Bucket=bucket, Key=key)
                info = {"size": head["ContentLength"], "LastModified": head["LastModified"], "ETag": head["ETag"]}
            else:
                self.fs.invalidate_cache(path.path)
                info = self.fs.info(path.path)
        except FileNotFoundError:
            if self.protocol in CONDITIONAL_PROTOCOLS:
                self.seen[path.path] = None
            return None
        if self.protocol in CONDITIONAL_PROTOCOLS:
            self.seen[path.path] = info["ETag"]
        return _object_stat(info)

    def folders(self, folder) -> list:
        try:
            listing = self.fs.ls(folder.path, detail=True)
        except FileNotFoundError:
            return []
        names = [info["name"].rstrip("/").rsplit("/", 1)[-1] for info in listing if info["type"] == "directory"]
        return [folder / name for name in sorted(names)]

    def read_bytes(self, path) -> bytes:
        if self.protocol not in CONDITIONAL_PROTOCOLS:
            return self.fs.cat_file(path.path)
        found = self.read_versioned(path)
        if found is None:
            raise FileNotFoundError(str(path))
        return found[0]

    def write_bytes(self, path, data: bytes) -> None:
        if self.protocol in CONDITIONAL_PROTOCOLS:
            self.put_if(path, data, self.expected(path))
        else:  # no preconditions here (module docstring): such a lake cannot commit
            self.fs.pipe_file(path.path, data)

    def delete(self, path) -> None:
        """S3: only the object as this storage saw it (``delete_if`` its ETag; nothing when it saw none), so a run
        that lost its lease cannot delete what another run wrote since (raises PreconditionFailed)."""
        if self.protocol in CONDITIONAL_PROTOCOLS:
            if (etag := self.expected(path)) is not None:
                self.delete_if(path, etag)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(path.path)
        self.seen[path.path] = None

    def sweep_tmp(self, older_than_seconds: float) -> list[str]:
        """Local upload files (``open_atomic``) that a killed writer left in ``scratch_dir("uploads")``."""
        return sweep_folder(self.scratch_dir("uploads"), older_than_seconds)

    def open_atomic(self, target) -> AtomicFile:
        """A local file in ``scratch_dir("uploads")``, uploaded on ``commit()`` in one PUT streamed from the file
        (memory does not grow with its size) on the condition ``expected(target)`` taken now (S3; other stores:
        ``fs.put_file``); the local file is removed either way. No upload is begun before ``commit()``, so a
        killed writer leaves no incomplete multipart upload in the bucket.

        Raises (on commit):
            PreconditionFailed: the object changed since this storage saw it; nothing was written.
            LakeError: the file is larger than one PUT takes (5 GB).
        """
        conditional = self.protocol in CONDITIONAL_PROTOCOLS
        expected = self.expected(target) if conditional else None
        folder = self.scratch_dir("uploads")
        folder.mkdir(parents=True, exist_ok=True)
        local = folder / f"{target.parent.name}__{target.name}.{uuid.uuid4().hex}.tmp"

        def commit():
            try:
                if (size := local.stat().st_size) > MAX_PUT_BYTES:
                    raise LakeError(
                        f"{str(target)!r}: {size} bytes is more than one S3 PUT takes (5 GB); nothing was written. "
                        "Sync shorter windows (more partitions) so that each file stays smaller"
                    )
                if not conditional:
                    self.fs.put_file(str(local), target.path)
                    return
                with open(local, "rb") as body:
                    self.put_if(target, body, expected)
            finally:
                local.unlink(missing_ok=True)

        def fence():
            nonlocal expected
            expected = self.look(target) if conditional else None

        return AtomicFile(local, commit, lambda: local.unlink(missing_ok=True), fence)

    def expected(self, path) -> str | None:
        """The ETag (None: absent) a write of ``path`` is conditional on: as last seen, else ``look(path)``."""
        return self.seen[path.path] if path.path in self.seen else self.look(path)

    def look(self, path) -> str | None:
        """The ETag of the object at ``path`` now (one HEAD), None when there is none; recorded in ``seen``.
        None without a request on a store without conditional writes (they are not used there)."""
        if self.protocol not in CONDITIONAL_PROTOCOLS:
            return None
        bucket, key, _ = self.fs.split_path(path.path)
        try:
            etag = self.fs.call_s3("head_object", Bucket=bucket, Key=key)["ETag"]
        except FileNotFoundError:
            etag = None
        self.seen[path.path] = etag
        return etag

    def arrow(self, path) -> tuple[str, pafs.FileSystem | None]:
        return arrow_location(path)

    @contextlib.contextmanager
    def registered(self, con) -> Iterator[None]:
        """Registers the fsspec filesystem on ``con`` and unregisters it on exit, so that the Python object is not
        still held by DuckDB when the interpreter exits (nanobind then prints "leaked" lines at exit)."""
        before = set(con.list_filesystems())
        con.register_filesystem(self.fs)
        try:
            yield
        finally:
            for name in set(con.list_filesystems()) - before:
                con.unregister_filesystem(name)

    def scratch_dir(self, name: str) -> Path:
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"cg_dagster-{digest}" / name

    def probe(self) -> None:
        probe = self.root / TMP_DIR / f".probe-{uuid.uuid4().hex}"
        try:
            self.fs.pipe_file(probe.path, b"")
            self.fs.rm_file(probe.path)
        except OSError:
            raise
        except Exception as error:  # e.g. botocore's NoCredentialsError: not an OSError
            raise OSError(str(error)) from None

    # ---- conditional writes (S3) ------------------------------------------------------------------

    def read_versioned(self, path) -> tuple[bytes, str] | None:
        """(bytes, ETag) of the object at ``path`` read in one GET (so the ETag is that of these bytes), or
        None when there is none."""
        bucket, key, _ = self.fs.split_path(path.path)

        async def get():
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with response["Body"] as body:
                return await body.read(), response["ETag"]

        try:
            found = fsspec.asyn.sync(self.fs.loop, get)
        except FileNotFoundError:
            found = None
        self.seen[path.path] = found[1] if found else None
        return found

    def put_if(self, path, data, etag: str | None) -> str:
        """Write ``data`` (bytes, or a binary file streamed from its start) at ``path`` in one PUT only if the
        object there still has ``etag`` (``If-Match``), or, with ``etag`` None, only if there is none
        (``If-None-Match: *``); return the new object's ETag (recorded in ``seen``).

        Raises:
            PreconditionFailed: the object changed, appeared or vanished (HTTP 412, 409, or 404 for If-Match).
            LakeError: the store has no conditional writes here (not S3).
        """
        self.require_conditional()
        bucket, key, _ = self.fs.split_path(path.path)
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        response = self._conditional("put_object", path, Bucket=bucket, Key=key, Body=data, **condition)
        self.seen[path.path] = response["ETag"]
        return response["ETag"]

    def delete_if(self, path, etag: str) -> None:
        """Delete the object at ``path`` only if it still has ``etag`` (``If-Match``).

        Raises:
            PreconditionFailed: it changed or is gone.
        """
        self.require_conditional()
        bucket, key, _ = self.fs.split_path(path.path)
        self._conditional("delete_object", path, Bucket=bucket, Key=key, IfMatch=etag)
        self.seen[path.path] = None

    def _conditional(self, method: str, path, **kwargs) -> dict:
        try:
            return self.fs.call_s3(method, **kwargs)
        except (OSError, ValueError) as error:
            status = _http_status(error)
            if status in CONFLICT_STATUSES or (status == 404 and "IfMatch" in kwargs):
                raise PreconditionFailed(f"{method} of {str(path)!r}: precondition failed (HTTP {status})") from None
            raise

    def require_conditional(self) -> None:
        """Raises LakeError naming the store unless ``put_if`` / ``delete_if`` work on it (S3)."""
        if self.protocol not in CONDITIONAL_PROTOCOLS:
            raise LakeError(
                f"lake root {str(self.root)!r}: commits and leases need the store's conditional writes, which this "
                f"project implements for s3:// only, not {self.protocol}://; use an S3 (or S3-compatible) bucket or a "
                "local folder for CG_LAKE_ROOT"
            )


def arrow_location(path) -> tuple[str, pafs.FileSystem | None]:
    """(path, filesystem) for pyarrow's readers of a lake file: a local path as is, a ``UPath`` through its
    fsspec filesystem (``pyarrow.fs.PyFileSystem(FSSpecHandler(fs))``)."""
    if isinstance(path, UPath):
        return path.path, _arrow_filesystem(path.fs)
    return str(path), None


@functools.cache
def _arrow_filesystem(fs) -> pafs.FileSystem:
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _local_stat(st: os.stat_result) -> FileStat:
    return FileStat(st.st_size, st.st_mtime_ns, f"{st.st_size}:{st.st_mtime_ns}")


def _object_stat(info: dict) -> FileStat:
    modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    mtime_ns = int(modified.timestamp() * 1_000_000_000) if modified is not None else 0
    version = info.get("ETag") or info.get("etag") or info.get("generation") or f"{info['size']}:{mtime_ns}"
    return FileStat(int(info["size"]), mtime_ns, f"{info['size']}:{str(version).strip(chr(34))}")


def _http_status(error: BaseException) -> int | None:
    """The HTTP status of a botocore error that s3fs translated (kept as the exception's cause)."""
    for exc in (error, error.__cause__, error.__context__):
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_folder(folder: Path, older_than_seconds: float) -> list[str]:
    """Delete the files directly in ``folder`` not modified for ``older_than_seconds``; returns their names."""
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than_seconds
    swept = []
    for path in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                swept.append(path.name)
    return swept
