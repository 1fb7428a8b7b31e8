"""The flattened tables of one raw partition, written to the lake. No Dagster import.

Per stream (lib/lake.py ``Stream``): raw_responses -> the five response tables (``flatten_raw``),
raw_non_responses -> ``non_responses`` and ``non_response_properties`` (``flatten_non_responses``).

The raw file is streamed in batches of RAW_BATCH_ROWS rows through ``flatten_raw`` into one Parquet file
per table, each written atomically (``Lake.parquet_writer``). Idempotent: running it again for the same
partition rewrites the same five files from the same raw file. A sync can hand its rows over as it writes
them instead (``FlattenAsSynced``): the same batches through the same functions, published under the same
lease and checks only when the raw file is still the one those rows were committed in.

A partition's flattened files are newer than its raw file. When they are not (a run killed between the raw
commit and the flattening, a raw file rewritten or restored since), ``stale_partitions`` finds it and the
current tables' update flattens it again first (assets.py), so no raw partition is left out of ``current``: one
another run is flattening right then (its lease held past ``CG_LEASE_WAIT_SECONDS``) is left to that run, whose
files the next update merges (assets.py ``_flatten_stale``).

Two flattenings of one partition (a replay launched while the partition's run flattens, the current update's
re-flattening beside a run's) take turns: each holds the partition's flattening lease (``flatten_lease``) from
before it reads the raw file until all its files are published, so a later flattening starts after an earlier
one ended and reads the raw file as it is then; the older raw file's rows can never be published last. Before
releasing the lease the flattening looks at the raw file again and flattens it again if a replay replaced it
meanwhile (that replay's own flattening may never run: killed), so the files it leaves are of the raw file
that was there when it published them; a raw file committed after that is newer than them, which is what
``stale_partitions`` compares (modification times from one listing per table: the hourly cost does not grow
with reads of every partition; times too close to order, as S3's whole seconds make them, are settled once by
the footers below). One lease per partition, not per stream: backfills and the current update
flatten different partitions at once; a released lease leaves no file (lib/lease.py).

On object storage the lease can be lost by a run paused past its TTL; the writes are fenced besides: under the
lease, before reading the raw file, the flattening looks at each target's ETag (``Lake.look``), and each file is
published only if it is still that object (lib/storage.py, "Fencing"). A run that lost fails with
``PreconditionFailed`` (``LeaseLostError``) naming what it had published, and leaves the newer run's files.
Each flat file records in its footer (``FLATTENED_FROM_KEY``) the raw file and the version it was flattened
from (``Lake.look``: local, size and mtime_ns; S3, size and ETag), for audits and ``stale_partitions``.
"""

import collections
import contextlib
import ctypes
import json
import logging
import os
import platform
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cg_dagster.lib.flatten import FlattenError, FlattenStats, flatten_non_responses, flatten_raw
from cg_dagster.lib.lake import (
    RESPONSES,
    Lake,
    LakeError,
    Stream,
    partition_file_stem,
    partition_key_of,
    read_parquet_metadata,
)
from cg_dagster.lib.lease import Lease
from cg_dagster.lib.schemas import TABLES
from cg_dagster.lib.storage import PreconditionFailed
from cg_dagster.settings import LEASE_WAIT_SECONDS

log = logging.getLogger("cg_dagster.tables")

RAW_BATCH_ROWS = 2_500  # 5,000: 35 MB more at the peak, no faster; 1,000: 50% slower
FLATTEN_THREADS = 2  # batches flattened at once (pyarrow.json, Arrow compute and Parquet release the GIL)
FLATTEN_AHEAD_BATCHES = 4  # FlattenAsSynced: batches handed over, not yet written (8: 5 MB more at the peak)
RAW_COLUMNS = ("record_json", "fetched_at")
"""The raw columns ``flatten_raw`` reads; the others are not read from the file."""
SAME_TIME_NS = 1_000_000_000  # modification times closer than this do not order two writes (S3: whole seconds)
FLATTENED_FROM_KEY = b"cg_dagster.flattened_from"
"""Footer key of a flat file: JSON ``{"raw_file": "<raw table>/<stem>.parquet", "raw_version": <Lake.look>}``."""
DICTIONARY_COLUMNS = frozenset(
    {
        "status",
        "language",
        "locale",
        "account_name",
        "primary_driver",
        "secondary_driver",
        "driver_source",
        "label",
        "tag_type",
        "sentiment",
        "title",
        "field",
        "reference",
        "property_origin",
        "fetched_at",
    }
)
"""Flat columns with few distinct values (codes, driver and tag labels, question titles, property names and
values, one fetch time per page), written with a Parquet dictionary. The others (ids, names, e-mail
addresses, comments, dates) have about one value per row: a dictionary would only cost write time."""


@dataclass
class KeyFacts:
    """What the partition checks need to know of the flat rows written, gathered batch by batch as they are
    written (``add``), so no check reads a flat file back: memory is 16 bytes per response, nothing per
    child row.

    - key_table: the stream's key table (``responses``, or ``non_responses``), one row per record;
    - numbers, fetched_at: the key table's number_customergauge (int64) and fetched_at (int64 us), in file order;
    - nps_out_of_range: ``responses`` rows whose nps is below 0 or above 10 (0 for a table without nps);
    - loose_children: {child table: its numbers that are in no key table row of their own batch}, in file
      order (empty unless the tables disagree): ``orphans`` judges them against the whole partition.
    """

    key_table: str = RESPONSES.flat_tables[0]
    numbers: list[np.ndarray] = field(default_factory=list)
    fetched_at: list[np.ndarray] = field(default_factory=list)
    nps_out_of_range: int = 0
    loose_children: dict[str, list[pa.Array]] = field(default_factory=dict)

    def add(self, tables: dict[str, pa.Table]) -> None:
        """Take the facts of one batch's flat tables ({table name: table with its contract schema})."""
        keys = tables[self.key_table]
        numbers = keys["number_customergauge"].combine_chunks()
        self.numbers.append(numbers.to_numpy())
        self.fetched_at.append(keys["fetched_at"].cast(pa.int64()).to_numpy())
        if "nps" in keys.column_names:
            nps = keys["nps"]
            self.nps_out_of_range += pc.sum(pc.or_(pc.less(nps, 0), pc.greater(nps, 10))).as_py() or 0
        for name in (name for name in tables if name != self.key_table):
            children = tables[name]["number_customergauge"]
            loose = children.filter(pc.invert(pc.is_in(children, value_set=numbers)))
            self.loose_children.setdefault(name, []).extend(loose.chunks)

    def responses_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(number_customergauge, fetched_at as int64 us) of every ``responses`` row, in file order."""
        return np.concatenate([np.empty(0, np.int64), *self.numbers]), np.concatenate(
            [np.empty(0, np.int64), *self.fetched_at]
        )

    def orphans(self, table: str) -> pa.Array:
        """The distinct numbers of ``table``'s rows that are in no ``responses`` row of the partition, in
        order of first appearance."""
        loose = pa.chunked_array(self.loose_children.get(table, []), pa.int64())
        if len(loose):
            loose = loose.filter(pc.invert(pc.is_in(loose, value_set=pa.array(self.responses_keys()[0]))))
        return pc.unique(loose)


@dataclass(frozen=True)
class FlattenedPartition:
    """What ``flatten_partition`` wrote: per table its row count and file path, the flattening stats, the
    facts the partition checks judge (``KeyFacts``), and ``along_sync``: True when the files are those
    flattened while the sync wrote the raw file (``FlattenAsSynced``), False when the raw file was read."""

    rows: dict[str, int]
    paths: dict[str, Path]
    stats: FlattenStats
    facts: KeyFacts
    along_sync: bool = False

    @classmethod
    def of(cls, writers: dict, stats: FlattenStats, facts: KeyFacts, along_sync: bool = False) -> "FlattenedPartition":
        """What ``writers`` ({table: committed ``AtomicParquetWriter``}) wrote, with its stats and facts."""
        rows = {name: writer.rows for name, writer in writers.items()}
        paths = {name: writer.target for name, writer in writers.items()}
        return cls(rows=rows, paths=paths, stats=stats, facts=facts, along_sync=along_sync)


def flatten_lease(lake: Lake, partition_key: str, stream: Stream = RESPONSES) -> Lease:
    """The flattening lease of one partition of ``stream``: ``_state/flatten-<raw table>-<stem>.lease``
    (``Lake.lease``: a ``flock`` locally, an object with a TTL on S3; removed on release).

    Raises:
        LakeError: as ``Lake.lease`` (lake not writable, a store without conditional writes).
    """
    return lake.lease(f"flatten-{stream.raw_table}-{partition_file_stem(partition_key)}")


def flatten_partition(
    lake: Lake,
    partition_key: str,
    *,
    system_timezone: str = "UTC",
    stream: Stream = RESPONSES,
    run_id: str = "(no run id)",
    wait_seconds: float | None = None,
    along: "FlattenAsSynced | None" = None,
) -> FlattenedPartition:
    """Write ``<table>/<partition>.parquet`` for each of ``stream.flat_tables`` (the five response tables, or
    ``non_responses`` and ``non_response_properties``) from ``<stream.raw_table>/<partition>.parquet``, holding
    the partition's ``flatten_lease`` (module docstring: why, and the fencing on object storage).

    ``run_id`` names the holder in the lease record (what a waiting run logs); ``wait_seconds`` is how long to
    wait for another flattening of the partition (default ``CG_LEASE_WAIT_SECONDS``, as the sync lease). The
    raw file is flattened again, under the same lease, when it was replaced while it was flattened.

    ``along``: the flattening of the rows the sync just wrote (``FlattenAsSynced``). When the raw file is still
    the version it flattened, its files are published, after the same checks, instead of reading the raw file
    again; otherwise (a replay committed since, a batch it could not flatten) the raw file is flattened.

    FLATTEN_THREADS batches of RAW_BATCH_ROWS raw rows (RAW_COLUMNS only) are flattened at once, in threads,
    while the flat rows of the batch before them are written in file order, so memory holds FLATTEN_THREADS
    batches and their flat rows, plus ``KeyFacts``' 16 bytes per response. The raw file is read without
    pre-buffering (pyarrow's pre-buffer keeps every row group's column chunks read so far until the reader ends:
    memory grows with the file), and freed memory goes back to the system before the first batch and after each
    (``_free_unused_memory``). Every file has exactly its table's declared schema, even when empty.

    Never replaces a key table (``responses``, ``non_responses``) file with one of fewer rows unless the raw
    file's manifest records a
    ``full_refresh`` (a replay keeps every committed row, so fewer rows mean a raw file emptied or cut by hand).

    Raises:
        FileNotFoundError: the partition has no raw file.
        FlattenError: a raw row cannot be flattened (see ``flatten_raw``; the message names the raw file and
            the rows of the batch, and the row in the batch); no file is replaced.
        LeaseTimeoutError: another flattening of the partition held the lease longer than ``wait_seconds``;
            nothing was read or written.
        PreconditionFailed: object storage: another run published one of the files after this run looked at it
            (this run lost its lease; ``LeaseLostError`` when it knows); names the files this run had published
            before (the others are the other run's) and the fix. Nothing else is written.
        LakeError: the raw file is unreadable, it holds fewer rows than the key table's file it would
            replace (names both files and the fix; no file is replaced), or the lake cannot be written.
        CustomerGaugeConfigError: ``wait_seconds`` is None and ``CG_LEASE_WAIT_SECONDS`` is malformed.
        ValueError: ``along`` was made for another ``Lake`` object than ``lake``.
    """
    if along is not None and along.lake is not lake:
        raise ValueError("along writes through another Lake than lake, whose leases would not guard its writes")
    wait = LEASE_WAIT_SECONDS.integer(minimum=0) if wait_seconds is None else wait_seconds
    raw_path = lake.partition_path(stream.raw_table, partition_key)
    with flatten_lease(lake, partition_key, stream).hold(run_id, wait_seconds=wait, setting=LEASE_WAIT_SECONDS.name):
        while True:
            for name in stream.flat_tables:  # object storage: publish only over the files as they are now
                lake.look(lake.partition_path(name, partition_key))
            version = lake.look(raw_path)
            if version is None:
                raise FileNotFoundError(f"no {stream.raw_table} file for partition {partition_key}: {raw_path}")
            done = along.publish(version) if along is not None else None
            along = None  # another pass (the raw file replaced meanwhile) reads the file
            if done is None:
                done = _flatten(lake, partition_key, system_timezone, stream, version)
            if lake.look(raw_path) == version:
                return done
            log.warning("%s was replaced while it was flattened: flattening it again", raw_path)


def _flatten(lake: Lake, partition_key: str, system_timezone: str, stream: Stream, version: str) -> FlattenedPartition:
    """One pass of ``flatten_partition`` over the raw file at ``version`` (``Lake.look``), under the lease."""
    raw_path = lake.partition_path(stream.raw_table, partition_key)
    read_parquet_metadata(raw_path)  # a clear LakeError for a damaged file
    raw = lake.parquet_file(raw_path, pre_buffer=False)
    _free_unused_memory()  # what the sync step freed
    key_table = stream.flat_tables[0]
    stats, facts = FlattenStats(), KeyFacts(key_table)
    with contextlib.ExitStack() as stack:
        writers = _flat_writers(stack, lake, partition_key, stream)
        _stamp(writers, stream, raw_path, version)
        pool = ThreadPoolExecutor(FLATTEN_THREADS, thread_name_prefix="flatten")
        stack.callback(pool.shutdown, cancel_futures=True)  # on an error, batches not started are dropped
        batches = raw.iter_batches(batch_size=RAW_BATCH_ROWS, columns=list(RAW_COLUMNS))
        flatten = flatten_raw if stream == RESPONSES else flatten_non_responses  # into stream.flat_tables
        for count, future in _in_flight(pool, flatten, batches, system_timezone):
            try:
                flat = future.result()
            except FlattenError as error:
                rows = f"rows {stats.records}..{stats.records + count - 1}"
                raise FlattenError(f"{stream.raw_table} file {raw_path.name}, {rows}: {error}") from None
            _write_batch(flat, writers, stats, facts)
            del flat
            _free_unused_memory()
        _refuse_to_shrink(lake, stream, partition_key, writers[key_table].rows)
        _publish(writers, stream, partition_key)
    _free_unused_memory()
    return FlattenedPartition.of(writers, stats, facts)


def _flat_writers(stack: contextlib.ExitStack, lake: Lake, partition_key: str, stream: Stream) -> dict:
    """An ``AtomicParquetWriter`` per flat table of ``stream`` for the partition, each with its table's schema
    and dictionary columns, entered on ``stack`` (leaving it drops the uncommitted)."""
    return {
        name: stack.enter_context(
            lake.parquet_writer(
                lake.partition_path(name, partition_key),
                TABLES[name].arrow_schema,
                use_dictionary=[c for c in TABLES[name].arrow_schema.names if c in DICTIONARY_COLUMNS],
            )
        )
        for name in stream.flat_tables
    }


def _write_batch(flat, writers: dict, stats: FlattenStats, facts: KeyFacts) -> None:
    """Write one batch's ``FlatTables`` to ``writers`` (one per table) and add its stats and facts."""
    stats.merge(flat.stats)
    facts.add(flat.tables)
    for name, writer in writers.items():
        writer.write(flat.tables[name])


def _stamp(writers: dict, stream: Stream, raw_path: Path, version: str) -> None:
    """Put ``FLATTENED_FROM_KEY`` (the raw file and its ``version``) in each writer's footer: a key of the
    Parquet footer, not of the Arrow schema stored in it, whichever way the file was flattened."""
    origin = {"raw_file": f"{stream.raw_table}/{raw_path.name}", "raw_version": version}
    for writer in writers.values():
        writer.set_metadata({FLATTENED_FROM_KEY: json.dumps(origin).encode()})


def _refuse_to_shrink(lake: Lake, stream: Stream, partition_key: str, rows: int) -> None:
    """Raise LakeError when the key table's new file of ``rows`` rows would replace one of more rows, unless the raw
    file's manifest records a ``full_refresh`` (``flatten_partition``; called under the flattening lease)."""
    raw_path = lake.partition_path(stream.raw_table, partition_key)
    key_path = lake.partition_path(stream.flat_tables[0], partition_key)
    before = read_parquet_metadata(key_path).num_rows if lake.exists(key_path) else 0
    if rows < before and not ((manifest := lake.read_manifest(raw_path)) and manifest.full_refresh):
        raise LakeError(
            f"{str(raw_path)!r} holds {rows} rows but {str(key_path)!r} holds {before} "
            "flattened from it before: flattening it would lose records, so nothing was replaced. Restore "
            f"the raw file from a backup, or run {stream.raw_table} for this partition with full_refresh: true"
        )


class FlattenAsSynced:
    """Flattens a partition's raw rows while the sync writes them (``sync_partition(flattening=...)``) into
    temporary files of the stream's flat tables, so that flattening overlaps the sync instead of reading the
    raw file again after it; ``flatten_partition(along=...)`` publishes them.

    Each raw row group the sync writes is handed over (``add``) and cut into batches of RAW_BATCH_ROWS rows,
    flattened in FLATTEN_THREADS threads and written in file order, as ``flatten_partition`` does with the file;
    after its commit the sync gives the raw file's version (``synced``). Publishing (``publish``) happens under
    the partition's flattening lease, after the same shrink check, with the same footer, each write fenced on the
    target as it is then (object storage), only when the raw file is still that version and every batch was
    flattened; otherwise ``flatten_partition`` flattens the raw file as it is, so the files are always those
    flattening the raw file gives (a batch that cannot be flattened fails there, with the same error).

    Use it as a context manager around the sync and the publish: leaving it drops what was not published
    (temporary files, opened with the first rows; batches not started). A sync that wrote no rows (an empty
    window, a skipped partition) leaves the flattening of its empty file to ``flatten_partition``. Memory: at
    most FLATTEN_AHEAD_BATCHES raw batches and their flat rows (the add waits for the oldest beyond that), plus
    ``KeyFacts``.
    """

    def __init__(self, lake: Lake, partition_key: str, *, system_timezone: str = "UTC", stream: Stream = RESPONSES):
        self.version: str | None = None
        """The raw file's version (``Lake.look``) whose rows were handed over: set by ``synced``."""
        self.failure: Exception | None = None
        """Why the rows handed over are not flattened (a batch's FlattenError, a write error): the file is read."""
        self.lake = lake
        """The ``Lake`` its files are written through: the sync and ``flatten_partition`` take this one, so that
        the leases they hold guard its writes (``Lake.check_leases``)."""
        self._partition_key, self._stream, self._timezone = partition_key, stream, system_timezone
        self._flatten = flatten_raw if stream == RESPONSES else flatten_non_responses
        self._stats, self._facts = FlattenStats(), KeyFacts(stream.flat_tables[0])
        self._pending: collections.deque[tuple[int, Future]] = collections.deque()
        self._stack = contextlib.ExitStack()
        self._writers: dict = {}
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> "FlattenAsSynced":
        self._pool = ThreadPoolExecutor(FLATTEN_THREADS, thread_name_prefix="flatten")
        self._stack.callback(self._pool.shutdown, cancel_futures=True)
        return self

    def __exit__(self, *exc_info) -> None:
        self._pending.clear()
        self._stack.close()
        _free_unused_memory()

    def add(self, raw: pa.Table) -> None:
        """Flatten the rows of ``raw`` (a raw table's rows, RAW_COLUMNS at least) after those handed over before.
        Never raises: a failure is kept in ``failure`` and the rest is not flattened."""
        if self.failure is not None:
            return
        try:
            if not self._writers:  # opened with the first rows: a sync that fails before writes nothing here
                self._writers = _flat_writers(self._stack, self.lake, self._partition_key, self._stream)
            raw = raw.select(list(RAW_COLUMNS))
            for offset in range(
                0, raw.num_rows, RAW_BATCH_ROWS
            ):  # slices, not copies: flatten_raw copies in its thread
                batch = raw.slice(offset, RAW_BATCH_ROWS)
                future = self._pool.submit(self._flatten, batch, system_timezone=self._timezone)
                self._pending.append((batch.num_rows, future))
            self._write_flattened(keep=FLATTEN_AHEAD_BATCHES)
        except Exception as error:  # flatten_partition reads the file instead, and raises there
            self._fail(error)

    def synced(self, version: str | None) -> None:
        """The rows handed over are those of the raw file at ``version`` (``Lake.look`` under the commit lock)."""
        self.version = version

    def publish(self, version: str) -> "FlattenedPartition | None":
        """Under the partition's flattening lease (``flatten_partition``): publish the flat files if the raw file
        is at ``version``, the one handed over, and every batch was flattened; None otherwise (nothing written).

        Raises:
            LakeError: as ``flatten_partition``: the key table's file would be replaced by one of fewer rows.
            PreconditionFailed: as ``flatten_partition`` (object storage, another run published meanwhile).
        """
        if self.version != version or self.failure is not None or not self._writers:
            if self.failure is not None:
                why = f"the rows synced were not flattened: {self.failure}"
            elif self.version is None or not self._writers:
                why = "the sync committed no rows through it"
            else:
                why = "replaced since the sync"
            log.info(
                "%s partition %s: flattening it from the file (%s)", self._stream.raw_table, self._partition_key, why
            )
            return None
        try:
            self._write_flattened(keep=0)
        except Exception as error:  # flattened from the file, which raises the same error
            self._fail(error)
            return self.publish(version)
        raw_path = self.lake.partition_path(self._stream.raw_table, self._partition_key)
        key_table = self._stream.flat_tables[0]
        _refuse_to_shrink(self.lake, self._stream, self._partition_key, self._writers[key_table].rows)
        _stamp(self._writers, self._stream, raw_path, version)
        for writer in self._writers.values():
            writer.fence()
        _publish(self._writers, self._stream, self._partition_key)
        return FlattenedPartition.of(self._writers, self._stats, self._facts, along_sync=True)

    def _write_flattened(self, keep: int) -> None:
        """Write the flattened batches in order: each one done, and any beyond the newest ``keep`` (waited for)."""
        while self._pending and (len(self._pending) > keep or self._pending[0][1].done()):
            _write_batch(self._pending.popleft()[1].result(), self._writers, self._stats, self._facts)
            _free_unused_memory()

    def _fail(self, error: Exception) -> None:
        if not isinstance(error, FlattenError):
            log.warning(
                "flattening %s partition %s along the sync stopped: %r",
                self._stream.raw_table,
                self._partition_key,
                error,
            )
        self.failure = error
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()


def _publish(writers: dict, stream: Stream, partition_key: str) -> None:
    """Commit each writer in turn. Raises ``PreconditionFailed`` (its own kind: ``LeaseLostError`` stays one)
    naming the tables published before a refused one, and the fix."""
    published = []
    try:
        for name, writer in writers.items():
            writer.commit()
            published.append(name)
    except PreconditionFailed as error:
        done = (
            f"this run had published {', '.join(published)} from the raw file it read, the others are the other "
            f"run's: materialize {', '.join(stream.flat_tables)} for this partition again (flattened from the "
            "raw file, no API request) to make them one flattening's"
            if published
            else "nothing was published (the files there are left as they are)"
        )
        raise type(error)(
            f"flattening {stream.raw_table} partition {partition_key} was refused, another run flattened it "
            f"after this one took its lease (was this run paused past CG_LEASE_TTL_SECONDS?): {error}. {done}"
        ) from None


def _in_flight(
    pool: ThreadPoolExecutor, flatten, batches: Iterable[pa.RecordBatch], system_timezone: str
) -> Iterator[tuple[int, Future]]:
    """``(rows of the batch, future of its FlatTables by ``flatten``)`` for each batch, in order: each batch is
    handed to
    ``pool`` as soon as fewer than FLATTEN_THREADS are being flattened, so the caller writes one batch while
    the next are flattened."""
    pending = collections.deque()
    for batch in batches:
        pending.append((batch.num_rows, pool.submit(flatten, batch, system_timezone=system_timezone)))
        if len(pending) == FLATTEN_THREADS:
            yield pending.popleft()
    yield from pending


def stale_partitions(lake: Lake, stream: Stream = RESPONSES) -> list[str]:
    """Keys of the partitions whose raw file (of ``stream``) is newer than one of its flattened files, or lacks
    one (modification times: a flattening publishes its files after reading the raw file, and reads it again if
    it was replaced meanwhile: module docstring). Costs one listing per table.

    Modification times less than SAME_TIME_NS apart do not tell which write came last (object stores keep
    whole seconds): for those partitions the footers of the flat files in question (``FLATTENED_FROM_KEY``)
    say which raw version they are of, and each is read once: the raw versions found flattened that way are
    kept in ``_state/<raw table>.flattened.json`` and trusted while the raw file keeps that version. So the
    hourly cost stays a listing per table plus the footers of the partitions flattened since. Call it holding
    the lake's "current" lease (as ``current_tables`` does): the record's only writer."""
    listed = {name: lake.stats(lake.table_dir(name)) for name in (stream.raw_table, *stream.flat_tables)}  # one each
    record_name = f"{stream.raw_table}.flattened.json"
    trusted = (lake.read_state(record_name) or {}).get("flattened", {})
    stale, flattened = [], {}
    for raw_name, raw in sorted(listed[stream.raw_table].items()):
        flats = [(name, listed[name].get(raw_name)) for name in stream.flat_tables]
        if any(flat is None or flat.mtime_ns < raw.mtime_ns for _, flat in flats):
            stale.append(partition_key_of(raw_name.removesuffix(".parquet")))
            continue
        unclear = [name for name, flat in flats if flat.mtime_ns - raw.mtime_ns < SAME_TIME_NS]
        if not unclear:
            continue
        if trusted.get(raw_name) != raw.version and any(
            _flattened_from(lake.table_dir(name) / raw_name) != raw.version for name in unclear
        ):
            stale.append(partition_key_of(raw_name.removesuffix(".parquet")))
            continue
        flattened[raw_name] = raw.version
    if flattened != trusted:
        lake.write_state(record_name, {"flattened": flattened})
    return stale


def _flattened_from(path) -> str | None:
    """The raw version a flat file's footer says it was flattened from (None: a file written before footers
    said so, or one that cannot be read: flattening it again repairs both)."""
    try:
        footer = read_parquet_metadata(path).metadata or {}
    except (FileNotFoundError, LakeError):
        return None
    return json.loads(footer[FLATTENED_FROM_KEY])["raw_version"] if FLATTENED_FROM_KEY in footer else None


def use_jemalloc_pool() -> None:
    """Make jemalloc Arrow's pool for this process, unless ARROW_DEFAULT_MEMORY_POOL chooses one.

    A process-wide choice, so the code location makes it (``cg_dagster.definitions``), not this module's
    import. jemalloc's ``release_unused()`` (after each batch) purges the freed memory of every thread; the
    default mimalloc pool's purges only the calling thread's and keeps what the reading and parsing threads
    freed: 50 MB more at the peak of a 500k-record run, the same speed (the benchmark's CLI run). A pyarrow
    built without jemalloc keeps its default.

    jemalloc has one arena (``cg_dagster/__init__.py`` sets ``JE_ARROW_MALLOC_CONF``, which jemalloc reads when
    pyarrow is imported): with its default, four per core, it kept pages in each arena the flattening threads
    had used, and a 500k-record flattening followed by the current tables peaked 35 MB higher (330 MB, not 365
    MB, in one process), at the same speed.
    """
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        with contextlib.suppress(NotImplementedError):
            pa.set_memory_pool(pa.jemalloc_memory_pool())


def _free_unused_memory() -> None:
    """Give the memory freed so far back to the system: Arrow's pool's (jemalloc: every thread's arenas) and
    what Python, NumPy and the HTTP client freed in glibc malloc's heaps (``malloc_trim``; malloc would keep it
    for reuse). Flattening along the sync holds page buffers while later pages are allocated, and without the
    trim a 500k-record run's heaps kept 25-30 MB of free memory at its end (``mallinfo2``: in-use flat at about
    45 MB, free growing from 9 to 36 MB). pyarrow's ``system_memory_pool().release_unused()`` did not trim
    (pyarrow 26: the same growth when called every 0.1 s; ``malloc_trim`` then: none). No measurable cost at
    one call per batch; nothing to trim without glibc."""
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim if platform.libc_ver()[0] == "glibc" else None
