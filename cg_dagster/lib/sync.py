"""One sync window: page the API from the committed cursor into one raw Parquet file, then commit the cursor.

No Dagster import. The ``raw_responses`` and ``raw_non_responses`` assets call ``sync_partition`` and turn the
result into metadata. Each sync endpoint is a ``Stream`` (lib/lake.py): its raw table, head cursor, lease,
re-read record and fetch clock are its own, so everything below holds for each stream on its own.

The commit protocol (data first, cursor second):

1. Read the committed head cursor from the lake (``Lake.read_head``).
2. Stream every page into a temporary file (memory: the next page and one row group of RAW_ROW_GROUP_ROWS rows).
3. Under the lake's commit lock: check the head is unchanged, rename the file (its manifest in the footer)
   into place, write the manifest's sidecar (``Lake.write_manifest``), write the new head
   (then, if the sync re-read the trailing window or loaded everything, the re-read record: lib/lookback.py).

A run that fails anywhere before step 3 leaves the head and the lake as they were; the next run resumes from
the same head and fetches the same records again. On object storage each write of step 3 is conditional on
the object being as this run saw it (lib/storage.py, "Fencing"): a run that lost its lease while paused is
refused instead of overwriting another run's commit, with a ``CursorConflictError`` naming what it wrote
(``_publish``). Which partition a run writes decides what it does:

* ``sync``:    the partition was never synced and is not older than the head's partition -> page from the head.
* ``replay``:  the partition was synced before -> re-fetch its recorded range (from its start cursor up to
               its end cursor, same parameters) and rewrite its file with the latest versions; a response
               the range held keeps its committed row if the API no longer returns it; the head never moves.
* ``skipped``: the partition was never synced and is older than the head's partition -> its window passed
               without a sync; write an empty, schema-valid file that says why.
"""

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cg_dagster.lib.client import CustomerGaugeClient, Page, Period, SyncParams
from cg_dagster.lib.flatten import raw_rows, raw_rows_from_json
from cg_dagster.lib.lake import (
    RESPONSES,
    UNREADABLE_FIX,
    CursorConflictError,
    HeadCursor,
    Lake,
    LakeError,
    Stream,
    SyncManifest,
    partition_file_stem,
    read_parquet_metadata,
    utc_now,
)
from cg_dagster.lib.lookback import last_reread, record_reread
from cg_dagster.lib.schemas import RAW_TABLE, TABLES
from cg_dagster.lib.storage import PreconditionFailed

RAW_ROW_GROUP_ROWS = 10_000  # rows per Parquet row group of a raw file (~15 MB of sandbox JSON in memory)
RAW_DICTIONARY_COLUMNS = ["fetched_at", "sync_pass", "cursor_sent"]  # one value per page: a dictionary pays
PROGRESS_SECONDS = 10.0  # a long sync logs its progress about this often
log = logging.getLogger("cg_dagster.sync")
_clock = time.monotonic  # tests replace it to move time forward


@dataclass(frozen=True)
class SyncResult:
    """Outcome of ``sync_partition``: the manifest written with the file, the head before and after, the path."""

    manifest: SyncManifest
    head_before: HeadCursor | None
    head_after: HeadCursor | None
    path: Path

    @property
    def rows(self) -> int:
        return self.manifest.rows + self.manifest.lookback_rows

    def summary(self, endpoint: str) -> str:
        """What the run did, in one line for its log: ``<mode>: <n> <endpoint> fetched in <p> pages`` (both
        passes: the cursor pass and any trailing-window re-read), for a replay that kept committed rows the API
        no longer returns ``, <k> kept from the committed file``, then the cursor range; e.g. ``replay: 0
        responses fetched in 0 pages, 177 kept from the committed file (the API no longer returns them), cursor
        2500 -> 2677``."""
        record = self.manifest
        text = f"{record.mode}: {self.rows - record.kept_rows} {endpoint} fetched in "
        text += f"{record.pages + record.lookback_pages} pages"
        if record.kept_rows:
            text += f", {record.kept_rows} kept from the committed file (the API no longer returns them)"
        return f"{text}, cursor {record.cursor_start} -> {record.cursor_end}"


def sync_partition(
    client: CustomerGaugeClient,
    params: SyncParams,
    lake: Lake,
    *,
    partition_key: str,
    run_id: str,
    full_refresh: bool = False,
    lookback: Period | None = None,
    stream: Stream = RESPONSES,
    flattening=None,
) -> SyncResult:
    """Sync one partition of ``stream``'s raw table (see the module docstring for the three modes), paging
    ``stream.endpoint`` (it replaces ``params.endpoint``).

    ``flattening`` (a ``FlattenAsSynced``, lib/tables.py) is handed every row group of the raw file as it is
    written (``add``), and the file's version (``Lake.look``) taken under the commit lock right after the
    commit (``synced``), so it knows its rows are those of that version of the file. A ``skipped`` partition
    hands it nothing.

    Idempotent: running it again for the same partition replays the recorded range and rewrites the same
    file; it never moves the head. ``full_refresh`` ignores the head (and any recorded range) and loads from
    the beginning; it still commits only if no other sync committed meanwhile; it also replaces an unreadable
    cursor file, raw file or manifest of this partition (the fix the errors name). Committed rows are never
    lost: a file that holds rows but has no manifest (a tool rewrote it and its sidecar is gone), a deleted
    file whose manifest says it held rows, or a missing or empty one without a manifest whose flattened
    ``stream.flat_tables[0]`` file holds rows, is refused (``_refuse_to_lose_rows``) except by a ``full_refresh``. Every
    page's ``fetched_at`` is later than any this lake committed before (``_FetchClock``).

    Raises:
        CursorConflictError: another sync committed a new head while this one ran. Nothing committed.
        CustomerGaugeError: from the client (HTTP, auth, cursor, body); nothing committed.
        FlattenError: a record without an integer number_customergauge; nothing committed.
        LakeError: the lake cannot be written, its cursor file, the partition's file or a manifest is
            unreadable (without ``full_refresh``), or the partition's file holds rows without a manifest or
            was deleted with rows (names the file and the fix).
    """
    lake.ensure_writable()
    for name in lake.sweep_tmp():
        log.warning("removed %s from the lake's _tmp/: a day old, left by a killed run", name)
    params = dataclasses.replace(params, endpoint=stream.endpoint)
    target = lake.partition_path(stream.raw_table, partition_key)
    head = _unless_unreadable(recover_lost_head, lake, stream, full_refresh=full_refresh)
    recorded = _unless_unreadable(lake.read_manifest, target, full_refresh=full_refresh)
    clock = _FetchClock(lake, stream)
    last_reread(lake, stream)  # so that the commit's write of it is conditional on it as it is now (object storage)

    if not full_refresh:
        _refuse_to_lose_rows(lake, target, recorded, stream)
    if recorded is not None and not full_refresh:
        return _replay(client, lake, recorded, target, head, run_id, clock, stream, flattening)
    if head is not None and partition_key < head.partition_key and not full_refresh:
        return _skip(lake, params, target, head, partition_key, run_id)

    start = None if full_refresh else (head.cursor if head else None)
    with _raw_writer(lake, target) as file:
        writer = _RowGroups(file, flattening)
        # An initial load just read everything: no trailing window to re-read, no numbers to remember.
        seen: set[int] | None = set() if lookback and start is not None else None
        cursor_end, pages = _copy_pages(
            client, params, start, writer, _Progress(partition_key, "cursor", clock), seen=seen
        )
        rows = writer.rows
        lookback_pages = 0
        if seen is not None:
            period = _with_period(params, lookback)
            progress = _Progress(partition_key, "lookback", clock)
            lookback_pages = _copy_pages(client, period, None, writer, progress, skip=seen)[1]
        writer.flush()
        manifest = SyncManifest(
            mode="sync",
            partition_key=partition_key,
            run_id=run_id,
            cursor_start=start,
            cursor_end=cursor_end,
            pages=pages,
            rows=rows,
            per_page=params.per_page,
            with_=params.with_,
            filter=params.filter,
            lookback=_period_dict(lookback) if seen is not None else None,
            lookback_pages=lookback_pages,
            lookback_rows=writer.rows - rows,
            full_refresh=full_refresh,
        )
        file.set_metadata(manifest.footer())
        new_head = HeadCursor(
            cursor=cursor_end, partition_key=partition_key, run_id=run_id, committed_at=utc_now().isoformat()
        )
        with lake.commit_lock():
            lake.assert_head(head, unreadable_ok=full_refresh, stream=stream)
            writes = [
                (f"the raw file {str(target)!r}", file.commit),
                ("its manifest", lambda: lake.write_manifest(target, manifest)),
                ("the head cursor", lambda: lake.write_head(new_head, stream)),
                (f"_state/{stream.fetched_at_state}", lambda: clock.commit(lake)),
            ]
            if manifest.lookback or start is None:  # a re-read, or an initial load: read everything
                record = {"partition_key": partition_key, "run_id": run_id, "period": manifest.lookback}
                writes.append(("the re-read record", lambda: record_reread(lake, stream, **record)))
            _publish(writes)
            if flattening is not None:
                flattening.synced(lake.look(target))
    result = SyncResult(manifest=manifest, head_before=head, head_after=new_head, path=target)
    log.info("%s partition %s: %s", stream.raw_table, partition_key, result.summary(stream.endpoint))
    return result


def _unless_unreadable(read, *args, full_refresh: bool):
    """``read(*args)``; with ``full_refresh``, None when it raises LakeError (the file is unreadable, and the
    operator asked to replace it: the errors name this as the fix)."""
    try:
        return read(*args)
    except LakeError as error:
        if not full_refresh:
            raise
        log.warning("full_refresh replaces what it cannot read: %s", error)
        return None


def _refuse_to_lose_rows(lake: Lake, target: Path, recorded: SyncManifest | None, stream: Stream) -> None:
    """Raise LakeError naming the file and the fix when materializing ``target`` would lose committed rows:
    it holds rows but has no manifest (its range is unknown, so a sync or a skip would replace them), its
    manifest outlived the deleted file (a replay cannot tell which responses of the range's last page, which
    reaches past the range, were the file's own), or it is gone or empty with no manifest while the
    partition's flattened ``stream.flat_tables[0]`` file holds rows (proof it was synced: a sync or skip would write it
    empty and the flattening would then empty the partition)."""
    fix = (
        f"Restore the original file and its manifest from a backup, or run {stream.raw_table} for this partition "
        "with full_refresh: true (loads every record from the start into it)"
    )
    target_exists = lake.exists(target)
    rows = read_parquet_metadata(target).num_rows if target_exists else 0
    flat = lake.table_dir(stream.flat_tables[0]) / target.name  # one row per raw row: proof it was synced
    if recorded is None and not rows and lake.exists(flat) and (flat_rows := read_parquet_metadata(flat).num_rows):
        raise LakeError(
            f"{str(target)!r} is {'empty' if target_exists else 'missing'} and has no sync manifest "
            f"({str(lake.manifest_path(target))!r}), but {str(flat)!r} holds {flat_rows} "
            f"{stream.flat_tables[0]} flattened from "
            f"it: the partition was synced, and materializing it would replace them with none. {fix}"
        )
    if recorded is None and rows:
        raise LakeError(
            f"{str(target)!r} holds {rows} rows but no sync manifest (neither its Parquet footer, which a tool "
            f"that rewrote the file dropped, nor {str(lake.manifest_path(target))!r}), so the range it covers is "
            f"unknown and a sync would replace these rows. {fix}"
        )
    if recorded is not None and recorded.rows + recorded.lookback_rows and not target_exists:
        raise LakeError(
            f"{str(target)!r} was deleted, but its manifest {str(lake.manifest_path(target))!r} says it held "
            f"{recorded.rows + recorded.lookback_rows} rows of cursors {recorded.cursor_start} to "
            f"{recorded.cursor_end}, which a replay cannot fetch exactly again. {fix}"
        )


def recover_lost_head(lake: Lake, stream: Stream = RESPONSES) -> HeadCursor | None:
    """The committed head of ``stream``, rolled forward if a sync's data landed but its head write did not.

    A sync renames its file into place, then writes the manifest's sidecar, then the head (all under the
    commit lock). A process killed after the rename leaves a raw file whose manifest (in its footer, and in
    the sidecar if that write happened) records a range for a partition newer than the head's partition,
    which no committed sync can leave (nor can a deleted head file: then every file is newer). The newest
    such file's recorded ``cursor_end`` becomes the head, so the next sync does not fetch its responses
    again; only if it is past the head's cursor. A replay's manifest keeps its sync's range end, so it
    counts too. A file that cannot be read is logged and passed over. Before that, every raw file whose
    manifest is only in its footer gets its sidecar (``_write_missing_sidecars``).

    Raises:
        LakeError: the cursor file is corrupt (names it and the fix).
    """
    with lake.commit_lock():
        _write_missing_sidecars(lake, stream)
        head = lake.read_head(stream)
        newer = [
            path
            for path in lake.partition_files(stream.raw_table)
            if head is None or path.stem > partition_file_stem(head.partition_key)
        ]
        for path in reversed(newer):
            recorded = _readable_manifest(lake, path)
            if recorded and recorded.mode in ("sync", "replay") and _ahead(recorded.cursor_end, head):
                lost = HeadCursor(
                    cursor=recorded.cursor_end,
                    partition_key=recorded.partition_key,
                    run_id=recorded.run_id,
                    committed_at=utc_now().isoformat(),
                )
                log.warning(
                    "the head cursor is behind %s, whose manifest (run %s) records cursor %s: the head write was "
                    "lost or the cursor file deleted; rolling the head forward to it",
                    path.name,
                    lost.run_id,
                    lost.cursor,
                )
                lake.write_head(lost, stream)
                return lost
        return head


def _write_missing_sidecars(lake: Lake, stream: Stream) -> None:
    """Give every raw file whose manifest is only in its footer a sidecar (files of a lake written before
    sidecars existed, or of a commit that died between its data rename and its sidecar write), so that a tool
    rewriting the file later cannot lose its manifest. Reads the footers of those files only."""
    sidecars = {path.stem for path in lake.files(lake.manifest_dir(stream.raw_table), ".json")}
    for path in lake.partition_files(stream.raw_table):
        if path.stem not in sidecars and (manifest := _readable_manifest(lake, path)) is not None:
            lake.write_manifest(path, manifest)


def _readable_manifest(lake: Lake, path: Path) -> SyncManifest | None:
    """``lake.read_manifest(path)`` for a scan of every raw file: an unreadable file or manifest is logged
    and passed over (None), so that one damaged partition does not stop the syncs of the others; it fails
    the run only when that partition is materialized."""
    try:
        return lake.read_manifest(path)
    except LakeError as error:
        log.warning("passed over: %s", error)
        return None


def _ahead(cursor: int | None, head: HeadCursor | None) -> bool:
    """True when ``cursor`` is past the head's cursor: a roll-forward never moves the head back (a
    ``full_refresh`` into an older partition leaves newer files whose ranges the head already covers)."""
    if cursor is None:
        return False
    return head is None or head.cursor is None or cursor > head.cursor


def _copy_pages(
    client: CustomerGaugeClient,
    params: SyncParams,
    start: int | None,
    writer: "_RowGroups",
    progress: "_Progress",
    *,
    seen: set[int] | None = None,
    skip: set[int] | None = None,
) -> tuple[int | None, int]:
    """Stream pages from ``start`` into ``writer`` as rows of ``progress.sync_pass``; return (cursor after the
    last page, pages read).

    ``seen`` collects the number_customergauge of every record written; records whose
    number is in ``skip`` are not written (the trailing-window pass skips what the cursor pass just fetched,
    so a partition holds one row per response).
    """
    cursor, pages = start, 0
    skip_values = pa.array(sorted(skip), pa.int64()) if skip else None
    for page in client.iter_pages(params, start):
        table = _page_rows(page, progress.sync_pass, progress.clock)
        numbers = table.column("number_customergauge")
        if skip_values is not None:
            table = table.filter(pc.invert(pc.is_in(numbers, value_set=skip_values)))
        if seen is not None:
            seen.update(numbers.to_pylist())
        writer.write(table)
        cursor, pages = page.cursor_next, page.number
        progress.page(table.num_rows, cursor)
    return cursor, pages


def _page_rows(page: Page, sync_pass: str, clock: "_FetchClock") -> pa.Table:
    """raw_responses rows of one page: from the records' texts as received where the client could split the
    body (``Page.record_json``), else from the decoded records. ``fetched_at`` is taken once per page, so rows
    of one fetch share it (the current tables rely on that to tell fetches apart)."""
    fetched_at = clock()
    if page.record_json is not None:
        return raw_rows_from_json(
            page.numbers, page.record_json, fetched_at=fetched_at, cursor_sent=page.cursor_sent, sync_pass=sync_pass
        )
    return raw_rows(
        page.records,
        fetched_at=fetched_at,
        cursor_sent=page.cursor_sent,
        sync_pass=sync_pass,
        fast_json=page.orjson_safe,
    )


class _FetchClock:
    """The ``fetched_at`` of each page: ``utc_now()``, but always at least 1 µs after the previous page and
    after the latest fetched_at the lake committed for the stream (``_state/<stream.fetched_at_state>``;
    absent: no floor). The host
    clock can step back (a VM restored, an NTP step); the current tables let the latest fetched_at win, so an
    older clock must never make a newer fetch (a GDPR anonymisation re-read) lose. ``commit`` records the
    latest value; call it holding the commit lock, with the data.

    Raises (on construction):
        LakeError: the state file is corrupt; names it and the fix.
    """

    def __init__(self, lake: Lake, stream: Stream):
        self.state = stream.fetched_at_state
        data = lake.read_state(self.state)
        try:
            self.last = dt.datetime.fromisoformat(data["fetched_at"]) if data is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise LakeError(
                f"state file {str(lake.root / '_state' / self.state)!r} is corrupt ({exc!r}): delete it "
                "(the next sync writes it again)"
            ) from None

    def __call__(self) -> dt.datetime:
        now = utc_now()
        if self.last is not None and now <= self.last:
            now = self.last + dt.timedelta(microseconds=1)
        self.last = now
        return now

    def commit(self, lake: Lake) -> None:
        if self.last is not None:
            lake.write_state(self.state, {"fetched_at": self.last.isoformat()})


def _replay_range(
    client,
    params: SyncParams,
    recorded: SyncManifest,
    writer,
    committed: pa.Array,
    seen: set[int],
    clock: "_FetchClock",
) -> int:
    """Re-fetch the cursor pass of a recorded range into ``writer``; return the pages read.

    Pages are requested from ``recorded.cursor_start`` until ``cursor.next`` reaches ``recorded.cursor_end``
    (more or fewer pages than recorded when records changed upstream). The API pages by a cursor we cannot
    map to single records, so of a page that reaches past ``cursor_end`` only the responses the range held
    before (``committed``, their numbers) are kept: the rest belong to later partitions, except a record
    that newly matches the filter inside the range on that page, which is left to the trailing-window re-read.
    """
    pages, progress = 0, _Progress(recorded.partition_key, "cursor", clock)
    for page in client.iter_pages(params, recorded.cursor_start):
        table = _page_rows(page, "cursor", clock)
        if page.cursor_next > recorded.cursor_end:
            table = table.filter(pc.is_in(table.column("number_customergauge"), value_set=committed))
        seen.update(table.column("number_customergauge").to_pylist())
        writer.write(table)
        pages = page.number
        progress.page(table.num_rows, page.cursor_next)
        if page.cursor_next >= recorded.cursor_end:
            break
    return pages


def _replay(
    client,
    lake: Lake,
    recorded: SyncManifest,
    target: Path,
    head,
    run_id: str,
    clock: "_FetchClock",
    stream: Stream,
    flattening,
) -> SyncResult:
    """Re-fetch the recorded range of an already synced partition and rewrite its file; the head stays.

    A replay never removes a response from the lake: a response the old file held that the API no longer
    returns in the same pass (deleted upstream, moved to a later position, or out of the trailing window now)
    keeps its committed row, and the file still holds one row per response and pass, the lookback pass
    skipping what the cursor pass holds. Rows of a file another tool rewrote (other Arrow types, no footer)
    are read back with the contract's types.
    """
    params = SyncParams(
        per_page=recorded.per_page, with_=recorded.with_, filter=recorded.filter, endpoint=stream.endpoint
    )
    lookback = Period.from_strings(**recorded.lookback) if recorded.lookback else None
    committed = _committed_numbers(lake, target)
    with _raw_writer(lake, target) as file:
        writer = _RowGroups(file, flattening)
        pages, seen, kept = 0, set(), 0
        if recorded.pages:
            cursor_committed = pa.array(sorted(committed["cursor"]), pa.int64())
            pages = _replay_range(client, params, recorded, writer, cursor_committed, seen, clock)
        kept += _carry_over(lake, target, "cursor", committed["cursor"] - seen, writer)
        seen |= committed["cursor"]
        rows = writer.rows
        lookback_pages = 0
        if lookback:
            fetched: set[int] = set()
            progress = _Progress(recorded.partition_key, "lookback", clock)
            lookback_pages = _copy_pages(
                client, _with_period(params, lookback), None, writer, progress, seen=fetched, skip=seen
            )[1]
            kept += _carry_over(lake, target, "lookback", committed["lookback"] - fetched - seen, writer)
        writer.flush()
        manifest = dataclasses.replace(
            recorded,
            mode="replay" if recorded.mode != "skipped" else "skipped",
            run_id=run_id,
            pages=pages,
            rows=rows,
            lookback_pages=lookback_pages,
            lookback_rows=writer.rows - rows,
            kept_rows=kept,
            reason=recorded.reason
            if recorded.mode == "skipped"
            else f"replay of the range recorded by run {recorded.run_id}",
        )
        file.set_metadata(manifest.footer())
        with lake.commit_lock():
            _publish(
                [
                    (f"the raw file {str(target)!r}", file.commit),
                    ("its manifest", lambda: lake.write_manifest(target, manifest)),
                    (f"_state/{stream.fetched_at_state}", lambda: clock.commit(lake)),
                ]
            )
            if flattening is not None:
                flattening.synced(lake.look(target))
    result = SyncResult(manifest=manifest, head_before=head, head_after=head, path=target)
    level = logging.WARNING if kept else logging.INFO  # kept: responses the API dropped stay in the lake
    log.log(level, "%s partition %s: %s", stream.raw_table, recorded.partition_key, result.summary(stream.endpoint))
    return result


def _publish(writes: list[tuple[str, Callable[[], None]]]) -> None:
    """Make the commit's writes (what, write) in order. One refused on object storage (``PreconditionFailed``:
    another run wrote that object since this run saw it, or this run's lease was lost; ``CursorConflictError``
    from the head write) stops the commit and raises CursorConflictError saying truly what was written.

    Raises:
        CursorConflictError: a write was refused; names it and the writes made before it.
    """
    done = []
    for what, write in writes:
        try:
            write()
        except (PreconditionFailed, CursorConflictError) as refused:
            if not done:
                raise CursorConflictError(
                    f"{what} was not written: {refused}. Another run wrote the lake after this run read it (this "
                    "run's lease expired while it was paused?). Nothing was committed; run again"
                ) from None
            raise CursorConflictError(
                f"{what} was not written: {refused}. Another run wrote the lake after this run read it (this run's "
                f"lease expired while it was paused?). This run had written {', '.join(done)} (a raw file carries its "
                "manifest in its footer too), which the next sync of this lake rolls the head forward to or replays"
            ) from None
        done.append(what)


def _committed_numbers(lake: Lake, path: Path) -> dict[str, set[int]]:
    """number_customergauge of a committed raw file's rows, per sync pass (two small columns read); none
    when the file is gone (one its manifest says was empty: ``_refuse_to_lose_rows``).

    Raises:
        LakeError: the file is unreadable, or a row's sync_pass is neither 'cursor' nor 'lookback' (a tool
            rewrote the file); names the file and the fix.
    """
    found: dict[str, set[int]] = {"cursor": set(), "lookback": set()}
    if not lake.exists(path):
        return found
    try:
        table = lake.read_table(path, columns=["number_customergauge", "sync_pass"])
    except (OSError, pa.ArrowException) as exc:
        raise LakeError(f"{str(path)!r} is not a readable Parquet file ({exc}): {UNREADABLE_FIX}") from None
    numbers = table.column("number_customergauge").to_pylist()
    passes = table.column("sync_pass").to_pylist()
    if unknown := set(passes) - found.keys():
        raise LakeError(
            f"{str(path)!r} holds rows whose sync_pass is {', '.join(sorted(map(repr, unknown)))}, not 'cursor' or "
            f"'lookback' (a tool rewrote the file?), so a replay cannot tell which rows to keep: {UNREADABLE_FIX}"
        )
    for number, sync_pass in zip(numbers, passes, strict=True):
        found[sync_pass].add(number)
    return found


def _carry_over(lake: Lake, path: Path, sync_pass: str, numbers: set[int], writer) -> int:
    """Copy the committed rows of ``sync_pass`` whose number is in ``numbers`` from ``path``; return the count.

    Raises:
        LakeError: those rows cannot be read as the contract's types (a tool rewrote the file: say, record_json
            as binary holding bytes that are not UTF-8); names the file and the fix. Nothing is committed.
    """
    if not numbers:
        return 0
    schema = TABLES[RAW_TABLE].arrow_schema
    filters = [("sync_pass", "=", sync_pass), ("number_customergauge", "in", sorted(numbers))]
    try:  # cast after the filter: only the rows kept must be readable as the contract's types
        rows = lake.read_table(path, filters=filters).select(schema.names).cast(schema)
    except (pa.ArrowInvalid, KeyError) as exc:  # KeyError: a column missing
        raise LakeError(
            f"{str(path)!r} holds committed rows the API no longer returns, which a replay keeps, but they cannot "
            f"be read as the raw table's types ({exc}; a tool rewrote the file?), so nothing was replaced: "
            f"{UNREADABLE_FIX}"
        ) from None
    writer.write(rows)
    return rows.num_rows


def _skip(
    lake: Lake, params: SyncParams, target: Path, head: HeadCursor, partition_key: str, run_id: str
) -> SyncResult:
    """Write an empty, schema-valid file for a never-synced partition older than the head's partition."""
    manifest = SyncManifest(
        mode="skipped",
        partition_key=partition_key,
        run_id=run_id,
        cursor_start=head.cursor,
        cursor_end=head.cursor,
        pages=0,
        rows=0,
        per_page=params.per_page,
        with_=params.with_,
        filter=params.filter,
        reason=(
            f"partition {partition_key} is older than {head.partition_key}, the partition of the committed head "
            f"cursor {head.cursor}: its window passed without a sync and its responses are in later partitions"
        ),
    )
    with lake.commit_lock():
        _publish(
            [
                (
                    f"the empty raw file {str(target)!r}",
                    lambda: lake.write_table(target, TABLES[RAW_TABLE].empty_table(), manifest.footer()),
                ),
                ("its manifest", lambda: lake.write_manifest(target, manifest)),
            ]
        )
    return SyncResult(manifest=manifest, head_before=head, head_after=head, path=target)


def _raw_writer(lake: Lake, target: Path):
    """The atomic Parquet writer of a raw file: no dictionary for the unique record_json and ids (trying one
    costs time and gains nothing), one for the columns that hold one value per page."""
    return lake.parquet_writer(target, TABLES[RAW_TABLE].arrow_schema, use_dictionary=RAW_DICTIONARY_COLUMNS)


class _RowGroups:
    """Collects raw rows into row groups of RAW_ROW_GROUP_ROWS rows before writing them to ``file`` (an
    ``AtomicParquetWriter``): pages hold 1000 rows at most, and larger row groups make a smaller file that
    reads faster. Memory: one row group. ``rows`` counts the rows written and pending; call ``flush()``
    before committing the file. Each row group is handed to ``flattening`` (``FlattenAsSynced.add``) as well,
    before it is written, so its flattening overlaps the write and the next pages."""

    def __init__(self, file, flattening=None):
        self._file = file
        self._flattening = flattening
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    @property
    def rows(self) -> int:
        return self._file.rows + self._pending_rows

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= RAW_ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending)
            if self._flattening is not None:
                self._flattening.add(table)
            self._file.write(table)
        self._pending, self._pending_rows = [], 0


class _Progress:
    """Logs a sync pass's progress through ``cg_dagster.sync`` (so into the Dagster run log) about every
    PROGRESS_SECONDS: pages, records, records per second since the pass started, and the cursor reached.
    Carries the sync's ``clock`` (``_FetchClock``) to the pages of the pass."""

    def __init__(self, partition_key: str, sync_pass: str, clock: _FetchClock):
        self.partition_key, self.sync_pass, self.clock = partition_key, sync_pass, clock
        self.pages = self.records = 0
        self._start = self._logged = _clock()

    def page(self, records: int, cursor: int) -> None:
        """Count one page of ``records`` rows written, after which the cursor is ``cursor``."""
        self.pages += 1
        self.records += records
        now = _clock()
        if now - self._logged >= PROGRESS_SECONDS:
            self._logged = now
            log.info(
                "partition %s, %s pass: %d pages, %d records so far, %.0f records/s, cursor %s",
                self.partition_key,
                self.sync_pass,
                self.pages,
                self.records,
                self.records / (now - self._start),
                cursor,
            )


def _with_period(params: SyncParams, period: Period | None) -> SyncParams:
    return dataclasses.replace(params, period=period)


def _period_dict(period: Period | None) -> dict | None:
    if period is None:
        return None
    return {"field": period.field, "start": period.start.isoformat(), "end": period.end.isoformat()}
