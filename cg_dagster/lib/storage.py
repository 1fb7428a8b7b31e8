"""Where the lake's bytes live: a local folder, or an object store through fsspec. No Dagster import.

``open_storage(root)`` chooses by the lake root (``CG_LAKE_ROOT``):

* a local path -> ``LocalStorage``: files appear whole by a write to ``_tmp/`` on the same file system, fsync
  and ``os.replace`` (atomic on POSIX); the commit lock and the leases are ``flock`` (lib/lease.py).
* ``s3://bucket/prefix`` (``s3fs``), and through the same code ``gs://`` (``gcsfs``) and ``abfs://``/``az://``
  (``adlfs``) -> ``ObjectStorage``: an object is written whole (a PUT, or a multipart upload completed at
  commit, is atomic: readers see the old object or the new one), so there is no ``_tmp/``; a writer that
  aborts discards its upload. Credentials and endpoints come from the store's standard environment and
  config (for S3 the AWS variables and files, ``AWS_ENDPOINT_URL`` included, read by botocore): nothing
  secret is in the root, so ``str(root)`` (what reprs, logs and ``dagster/uri`` show) is ``s3://bucket/prefix``.

Paths are ``pathlib.Path`` (local) or ``upath.UPath`` (remote: the same pure-path API, ``str`` is the URL).
Every read, write, listing and delete of the lake goes through a ``Storage`` (``Lake`` delegates to it).

Commits and leases on object storage use the store's conditional writes, implemented for S3 (AWS documents
``If-None-Match: *`` and ``If-Match: <etag>`` on PutObject, and ``If-Match`` on DeleteObject; a failed
precondition is HTTP 412, a concurrent conditional write HTTP 409): ``put_if`` / ``delete_if`` /
``read_versioned``. Other stores read and write through fsspec but refuse a commit or a lease (``LakeError``
naming the store): their preconditions (GCS generations, Azure ETags) are not implemented here.
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
CONDITIONAL_PROTOCOLS = ("s3", "s3a")  # stores whose conditional writes put_if / delete_if implement
CONFLICT_STATUSES = (409, 412)  # S3: 412 Precondition Failed, 409 ConditionalRequestConflict


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
    if protocol is None or protocol == "file":
        return LocalStorage(Path(text.removeprefix("file://")))
    if protocol not in PACKAGES:
        raise LakeError(
            f"lake root {text!r}: {protocol}:// is not a supported store; set CG_LAKE_ROOT to a local folder or "
            "to s3://bucket/prefix (gs://, abfs:// also go through fsspec)"
        )
    try:
        path = UPath(text, use_listings_cache=False)  # other processes write the lake: never list from a cache
        path.fs  # noqa: B018 - imports the store's package now, so a missing one is named here
    except ImportError:
        raise LakeError(
            f"lake root {text!r} needs the Python package {PACKAGES[protocol]!r} ({protocol}://): install it "
            f"(pip install {PACKAGES[protocol]}) or set CG_LAKE_ROOT to a local folder"
        ) from None
    return ObjectStorage(path)


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
    def folders(self, folder) -> list:
        """Paths of the sub-folders (remote: common prefixes) directly in ``folder``, sorted; [] when none."""

    @abc.abstractmethod
    def read_bytes(self, path) -> bytes:
        """The file's bytes. Raises FileNotFoundError when there is none."""

    @abc.abstractmethod
    def write_bytes(self, path, data: bytes) -> None:
        """Write ``data`` to ``path`` whole and durably: readers see the old content or the new, never a part."""

    @abc.abstractmethod
    def delete(self, path) -> None:
        """Delete the file at ``path`` (no error when there is none)."""

    @abc.abstractmethod
    def open_atomic(self, target) -> "AtomicFile":
        """An ``AtomicFile`` whose bytes appear at ``target`` only on ``commit()``."""

    @abc.abstractmethod
    def arrow(self, path) -> tuple[str, pafs.FileSystem | None]:
        """(path, filesystem) for pyarrow's readers (``pq.read_metadata(p, filesystem=fs)`` and the like)."""

    @abc.abstractmethod
    def register(self, con) -> None:
        """Make ``str(path)`` of this lake's files readable by the DuckDB connection ``con``."""

    @abc.abstractmethod
    def scratch_dir(self, name: str) -> Path:
        """A local folder for spill files (DuckDB's temp_directory), the same for every run on this lake."""

    @abc.abstractmethod
    def probe(self) -> None:
        """Create what the lake needs and prove a file can be written there. Raises OSError otherwise."""

    def sweep_tmp(self, older_than_seconds: float) -> list[str]:
        """Delete temporary files a killed writer left (only local lakes have them); returns their names."""
        return []


class AtomicFile:
    """Bytes written to ``sink`` (a path or a binary file object for pyarrow's writer) that appear at the
    target only on ``commit()``; ``abort()`` (idempotent, a no-op after commit) throws them away."""

    def __init__(self, sink, commit, abort):
        self.sink, self._commit, self._abort, self._done = sink, commit, abort, False

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
                            st = entry.stat()
                            found[entry.name] = FileStat(st.st_size, st.st_mtime_ns, f"{st.st_size}:{st.st_mtime_ns}")
        return found

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

    def register(self, con) -> None:
        pass  # DuckDB reads local paths itself

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
        tmp_dir = self.root / TMP_DIR
        if not tmp_dir.is_dir():
            return []
        cutoff = time.time() - older_than_seconds
        swept = []
        for path in tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    swept.append(path.name)
        return swept


class ObjectStorage(Storage):
    """A lake on an object store through fsspec (see the module docstring). ``root`` is a ``UPath``."""

    remote = True

    def __init__(self, root: UPath):
        super().__init__(root)
        self.fs = root.fs
        self.protocol = root.protocol

    def exists(self, path) -> bool:
        return self.fs.exists(path.path)

    def stats(self, folder, suffix: str) -> dict[str, FileStat]:
        try:
            listing = self.fs.ls(folder.path, detail=True)
        except FileNotFoundError:
            return {}
        found = {}
        for info in listing:
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["type"] == "file" and name.endswith(suffix):
                found[name] = _object_stat(info)
        return found

    def folders(self, folder) -> list:
        try:
            listing = self.fs.ls(folder.path, detail=True)
        except FileNotFoundError:
            return []
        names = [info["name"].rstrip("/").rsplit("/", 1)[-1] for info in listing if info["type"] == "directory"]
        return [folder / name for name in sorted(names)]

    def read_bytes(self, path) -> bytes:
        return self.fs.cat_file(path.path)

    def write_bytes(self, path, data: bytes) -> None:
        self.fs.pipe_file(path.path, data)

    def delete(self, path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path.path)

    def open_atomic(self, target) -> AtomicFile:
        handle = self.fs.open(target.path, "wb")

        def abort():
            handle.discard()  # aborts a multipart upload begun; a small file was never sent
            handle.closed = True  # so that neither close() nor the garbage collector uploads it

        return AtomicFile(handle, handle.close, abort)

    def arrow(self, path) -> tuple[str, pafs.FileSystem | None]:
        return arrow_location(path)

    def register(self, con) -> None:
        con.register_filesystem(self.fs)

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
            return fsspec.asyn.sync(self.fs.loop, get)
        except FileNotFoundError:
            return None

    def put_if(self, path, data: bytes, etag: str | None) -> str:
        """Write ``data`` at ``path`` only if the object there still has ``etag`` (``If-Match``), or, with
        ``etag`` None, only if there is none (``If-None-Match: *``); return the new object's ETag.

        Raises:
            PreconditionFailed: the object changed, appeared or vanished (HTTP 412, 409, or 404 for If-Match).
            LakeError: the store has no conditional writes here (not S3).
        """
        self.require_conditional()
        bucket, key, _ = self.fs.split_path(path.path)
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        response = self._conditional("put_object", path, Bucket=bucket, Key=key, Body=data, **condition)
        return response["ETag"]

    def delete_if(self, path, etag: str) -> None:
        """Delete the object at ``path`` only if it still has ``etag`` (``If-Match``).

        Raises:
            PreconditionFailed: it changed or is gone.
        """
        self.require_conditional()
        bucket, key, _ = self.fs.split_path(path.path)
        self._conditional("delete_object", path, Bucket=bucket, Key=key, IfMatch=etag)

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
