"""The ``current`` tables: the latest version of every response, kept up to date incrementally with DuckDB.

No Dagster import. A response can be in several partitions (a record re-sent at a higher cursor position,
the trailing-window re-read, a full refresh, a replay). The current tables keep, per number_customergauge,
the version with the latest ``fetched_at`` in ``responses`` ("latest fetch wins"), and from each child table
only the rows of that same fetch, so a driver removed upstream disappears from ``current`` too.

Responses deleted upstream stay: the sync API reports no deletions (api-notes.md).

Layout: each table is a folder of range files, ``current/<table>/<first id>.parquet``, one per range of
RANGE_WIDTH ids (``number_customergauge // RANGE_WIDTH``; the name is the range's first id, 19 digits, so
names sort like ids). Rows are ordered by the table's key within a file, and the files by name, so a glob
(``current/<table>/*.parquet``) reads the whole table in key order. A range file exists for every range that
holds a current response, in all five tables (a child file may be empty); a table with no response at all
holds one empty file (range 0), so a glob always matches. Each file is written atomically. Ids grow with
time, so an hourly sync touches the newest range or two, a daily re-read the ranges of its weeks.

Why plain Parquet and not a table format (Delta Lake through ``deltalake``): DuckDB reads Delta tables
through its ``delta`` extension, which is downloaded at run time (CI cannot) and Spark needs the Delta
package; range files need neither, read with a glob everywhere, and give what an update needs: rewrite only
the few files it touches, each atomically.

An update costs in proportion to what changed. ``_state/current.json`` records, per partition it holds,
the partition's flattened files (size and modification time of each) and the id ranges its responses touch,
and the row count of every range file. ``update_current`` compares that record with the partition folders:

* only partitions it never applied (the hourly sync, a backfill, a partition released from quarantine):
  **merge**: each range they touch is rewritten from its current file and their rows (latest fetch wins;
  on a tie the partition's copy, newer by flattening); no other file is read or written;
* a partition it applied was rewritten (replay, re-flattening), quarantined, or deleted: **rebuild** of the
  ranges it touched (before and after) from every partition file that touches them: the winner may then
  come from any partition, and a merge cannot take a version back;
* no record, another RANGE_WIDTH, a range file the record names is missing (deleted by hand), or
  ``full_rebuild=True``: **full rebuild** of every range from the partition files that touch it; range
  files of no range are deleted, and so are the files ``current/<table>.parquet`` of the layout before.

Each range is written by its own DuckDB queries over the files the plan names for it (winners of the range,
then each table's rows of the winners in key order), so neither time nor memory depends on the lake's age.
A range whose only source is one partition file (a first build, a range the hourly sync opens) is read with
Arrow instead when every key row of it is a winner (``_sole_source_rows``): the same rows without a join.

The record is written after the files, so an update that dies is redone whole by the next one (a merge
applied twice gives the same rows). On object storage every file write is conditional on the object being as
the update listed (range files) or read (the record) it at its start (lib/storage.py, "Fencing"): an update
racing another (a holder of the current lease that stalled past its expiry) fails with ``PreconditionFailed``
at its first range file or record another update rewrote meanwhile, leaving that update's files and record.
Every path gives the same tables as a full rebuild
(cg_dagster_tests/test_current_incremental.py).

Memory is bounded whatever the lake's age or the partition's size: DuckDB runs with DUCKDB_MEMORY_LIMIT,
one thread (two took 10 MB more at the peak and saved about 5% of the update's time), no insertion
order, spilling to ``_tmp/duckdb/``; rows stream to the files in batches of BATCH_ROWS. One writer thread
encodes and commits each range file while DuckDB computes the next one's rows (at most QUEUED_BATCHES
batches wait for it; no more memory at the peak): Parquet encoding and fsync took a third of the update's
time, and a 500k-record first build took 0.85x the wall time with one other process busy on this 2-core
machine (the same CPU time: the gain needs a free core). Range files have a Parquet dictionary only for the
columns the flattened files have one for (lib/tables.py DICTIONARY_COLUMNS): a quarter less encoding time
than one for every column, and smaller files. The footers of the files
read are cached for the update (``parquet_metadata_cache``: every range's queries read the same partition files;
about 15% of a first load's time). Two ranges written at once, by two threads and DuckDB cursors, took a third
less time on two free cores but 50-60 MB more at the peak: past the 400 MB a 500k-record run must stay within.

Partition files are matched by column name (DuckDB ``union_by_name``) and each row is cast to the table's
contract (lib/schemas.py): a column added to the contract reads as null from files written before it, and a
file another tool rewrote with other Arrow types (pandas: large strings) reads as the contract says.

Partitions a blocking asset check quarantined (``Lake.quarantine``) are left out until the check passes.

Two sets of current tables are kept this way, each with its own record (``CurrentSet``): the five response
tables (``RESPONSES_CURRENT``, ``_state/current.json``) and ``non_responses`` with its child
``non_response_properties`` (``NON_RESPONSES_CURRENT``, ``_state/current_non_responses.json``; no quarantine:
its checks do not block; a record of another set of tables, such as one written before the child existed, is
rebuilt in full). A current non-response also
says whether it was answered since: ``is_response`` is true when the range file of current/responses of its
range holds its number_customergauge. It is set whenever a range is written, and the record keeps the version
of each current/responses range file it was set from, so a range whose responses file changed since (a
non-response converted, say) is rewritten by the next update (a merge of that range's current file alone).

A fetch that returned the same number_customergauge twice (one page holding it twice: the blocking check
``responses_number_customergauge_unique`` fails on that partition; judged within one file, as two files
holding the same fetch are copies, not an ambiguity) is ambiguous: its child rows cannot be
told apart, so no version of it is ever used. The response's newest unambiguous version is current instead,
or it is left out of ``current`` until a later fetch brings it once; the current tables never mix two versions.
"""

import collections
import contextlib
import queue
import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cg_dagster.lib.lake import Lake, LakeError, naming_unreadable, read_parquet_metadata
from cg_dagster.lib.schemas import CURRENT_TABLES, KEY_TABLE, NON_RESPONSE_FLAT_TABLES, TABLES, TableContract
from cg_dagster.lib.tables import DICTIONARY_COLUMNS

RANGE_WIDTH = 100_000  # ids per range file: ~33,000 responses at the sandbox's density (ids ~3 apart)
MAX_SPAN = 8  # ranges a row group's id statistics may span before its ids are read (_ranges_of)
BATCH_ROWS = 5_000  # rows per Arrow batch streamed from DuckDB (a response row can hold a 70 KB comment)
QUEUED_BATCHES = 2  # batches of one range file waiting for the writer thread
RANGES_AHEAD = 1  # ranges read with Arrow (_sole_source_rows) whose files the writer thread has not written
DUCKDB_MEMORY_LIMIT = "128MB"  # DuckDB spills to _tmp/duckdb/ beyond this
STATE_VERSION = 1
KEY = "number_customergauge"
FLAG = "is_response"  # CurrentSet.answered_from's column
SOLE_SOURCE = True  # a range with one partition file as its only source is written from Arrow (_sole_source_rows)
UNREADABLE_FLAT_FIX = (
    "materialize this partition of the flattened tables again (they are rewritten from its raw file), or restore "
    "the file from a backup"
)


@dataclass(frozen=True)
class CurrentSet:
    """Current tables updated together: ``tables`` (key table first: its rows decide the winners and the
    ranges; partition files in ``<table>/``, range files in ``current/<table>/``), ``state_file`` (the record in
    ``_state/``), ``quarantine`` (leave out partitions a blocking check quarantined), ``answered_from`` (a
    current table whose range files decide the key table's FLAG column; None: no such column). A table's
    range files have the contract ``current_<table>`` when schemas.py declares one, else ``<table>``'s."""

    tables: tuple[str, ...]
    state_file: str
    quarantine: bool = True
    answered_from: str | None = None

    def contract(self, name: str) -> TableContract:
        """The contract of table ``name``'s range files."""
        return TABLES.get(f"current_{name}", TABLES[name])

    @property
    def key_table(self) -> str:
        return self.tables[0]


RESPONSES_CURRENT = CurrentSet(CURRENT_TABLES, "current.json")
NON_RESPONSES_CURRENT = CurrentSet(
    NON_RESPONSE_FLAT_TABLES, "current_non_responses.json", quarantine=False, answered_from=KEY_TABLE
)


@dataclass(frozen=True)
class CurrentUpdate:
    """What ``update_current`` did.

    ``mode``: "unchanged", "merge", "rebuild" or "full rebuild" (module docstring); ``reason``: why, in
    words; ``rows``: {table: rows in its current table}; ``partitions``: how many partition files were read;
    ``ranges``: how many ranges were rewritten (or deleted, when no response is left in one).
    """

    mode: str
    reason: str
    rows: dict[str, int]
    partitions: int
    ranges: int


def build_current(lake: Lake, tables: CurrentSet = RESPONSES_CURRENT) -> dict[str, int]:
    """Full rebuild of the current tables (``update_current(lake, full_rebuild=True)``); returns their row counts."""
    return update_current(lake, tables, full_rebuild=True).rows


def update_current(lake: Lake, tables: CurrentSet = RESPONSES_CURRENT, *, full_rebuild: bool = False) -> CurrentUpdate:
    """Bring ``<lake>/current/<table>/`` of ``tables`` up to date with the partition files (module docstring:
    merge, rebuild of the touched ranges, or full rebuild). Call it holding the lake's "current" lease (an
    ``answered_from`` set reads that set's range files, which the lease keeps still).

    Idempotent: the result depends only on the partition files and the quarantine markers.

    Raises:
        LakeError: the lake cannot be written, ``_state/current.json`` is not JSON (names it and the fix), a
            key table partition file's footer is not readable Parquet (names it and the fix), or
            a NOT NULL column of the contract is missing from older partition files (names the table, the
            column and the fix).
        duckdb.Error: a partition file is unreadable (the message names it).
        pyarrow.ArrowInvalid: a column of a partition file cannot be cast to the contract's type.
    """
    lake.ensure_writable()
    state = lake.read_state(tables.state_file)
    # object storage: every range write below is conditional on its file being as listed here (lib/storage.py)
    existing = {name: _files(lake, name) for name in tables.tables}
    known = state["partitions"] if _same_layout(state) else {}
    found = _partitions(lake, tables)
    new = {stem for stem, files in found.items() if known.get(stem, {}).get("files") != files}
    ranges = {
        stem: _ranges_of(lake, tables.key_table, stem) if stem in new else known[stem]["ranges"] for stem in found
    }
    answers = _answer_versions(lake, tables)
    reason = "full_rebuild: true in run config" if full_rebuild else _why_full(tables, state, existing)
    if reason:
        mode, rows = "full rebuild", {name: {} for name in tables.tables}
        touched = {r for stem in found for r in ranges[stem]}
    else:
        rows = {name: _int_keys(state["rows"][name]) for name in tables.tables}
        gone = set(known) - set(found) | new & set(known)  # quarantined, deleted or rewritten since applied
        recorded = state.get("answers", {})
        answered = {r for r in rows[tables.key_table] if recorded.get(str(r)) != answers.get(r)}
        if not new and not gone and not answered:
            return CurrentUpdate("unchanged", "no partition added, rewritten or quarantined", _totals(rows), 0, 0)
        touched = {r for stem in new for r in ranges[stem]} | {r for stem in gone for r in known[stem]["ranges"]}
        touched |= answered
        mode = "rebuild" if gone else "merge"
        reason = (
            f"{len(gone & new)} partitions rewritten, {len(gone - new)} quarantined or deleted, {len(new - gone)} new"
            if gone
            else f"{len(new)} new partitions"
        ) + (f", {len(answered)} ranges whose {tables.answered_from} changed" if answered else "")
    # range -> the partitions to read for it: a merge reads the new ones (and the range's current files)
    plan = {r: [] for r in touched}
    for stem in sorted(new if mode == "merge" else found):
        for r in touched.intersection(ranges[stem]):
            plan[r].append(stem)
    written = _write_ranges(lake, tables, plan, from_current=mode == "merge")
    for name in tables.tables:
        for r in touched:
            rows[name].pop(r, None)
        rows[name].update({r: n for r, n in written[name].items() if n})
    _reconcile_files(lake, tables, rows, old_layout=mode == "full rebuild")
    record = {
        "version": STATE_VERSION,
        "range_width": RANGE_WIDTH,
        "partitions": {stem: {"files": found[stem], "ranges": ranges[stem]} for stem in sorted(found)},
        "rows": {name: {str(r): n for r, n in sorted(rows[name].items())} for name in tables.tables},
    }
    if tables.answered_from:
        record["answers"] = {str(r): answers[r] for r in sorted(rows[tables.key_table]) if r in answers}
    lake.write_state(tables.state_file, record)
    sources = {stem for stems in plan.values() for stem in stems}
    return CurrentUpdate(mode, reason, _totals(rows), len(sources), len(touched))


def _answer_versions(lake: Lake, tables: CurrentSet) -> dict[int, str]:
    """{range: version of its ``current/<answered_from>/`` range file} (one listing); {} without answered_from."""
    if not tables.answered_from:
        return {}
    listed = lake.stats(lake.current_path(tables.answered_from))
    return {int(name.removesuffix(".parquet")) // RANGE_WIDTH: stat.version for name, stat in listed.items()}


def range_path(lake: Lake, table: str, range_index: int) -> Path:
    """``current/<table>/<first id of the range, 19 digits>.parquet``."""
    return lake.current_path(table) / _file_name(range_index)


def _file_name(range_index: int) -> str:
    return f"{range_index * RANGE_WIDTH:019d}.parquet"


def _partitions(lake: Lake, tables: CurrentSet) -> dict[str, str]:
    """Partition file stems with a key table file and no quarantine (when ``tables.quarantine``) -> fingerprint
    of their files."""
    quarantined = lake.quarantined() if tables.quarantine else {}
    listed = {name: lake.stats(lake.table_dir(name)) for name in tables.tables}  # one listing per folder
    found = {}
    for path in lake.partition_files(tables.key_table):
        if path.stem not in quarantined:
            stats = [stat.version if (stat := listed[name].get(path.name)) else "-" for name in tables.tables]
            found[path.stem] = " ".join(stats)
    return found


def _ranges_of(lake: Lake, key_table: str, stem: str) -> list[int]:
    """Sorted indexes of the ranges a partition's key table rows touch (its child rows share the ids): every
    range from a row group's smallest to its largest id (Parquet statistics: no data read; a range in a gap is
    rewritten for nothing), or the ranges of its ids (one column read) when a row group has no statistics or
    spans more than MAX_SPAN ranges (ids far apart: a late answer to an old survey among new responses)."""
    path = lake.table_dir(key_table) / f"{stem}.parquet"
    metadata = read_parquet_metadata(path, UNREADABLE_FLAT_FIX)
    column = metadata.schema.names.index(KEY)
    found = set()
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or stats.max // RANGE_WIDTH - stats.min // RANGE_WIDTH >= MAX_SPAN:
            with naming_unreadable(path, UNREADABLE_FLAT_FIX):
                ids = lake.read_table(path, columns=[KEY]).column(KEY).to_numpy()
            return sorted(int(r) for r in np.unique(np.floor_divide(ids, RANGE_WIDTH)))
        found.update(range(stats.min // RANGE_WIDTH, stats.max // RANGE_WIDTH + 1))
    return sorted(found)


def _why_full(tables: CurrentSet, state: dict | None, existing: dict[str, set[str]]) -> str | None:
    """Why the record in ``_state/<tables.state_file>`` cannot be updated incrementally, or None when it can
    (``existing``: {table: names of its range files})."""
    if state is None:
        return f"no _state/{tables.state_file} (first build, or a lake written before incremental updates)"
    if not _same_layout(state):
        return f"_state/{tables.state_file} was written with another layout (range width {state.get('range_width')})"
    if sorted(state["rows"]) != sorted(tables.tables):  # a table added to the set since (non_response_properties)
        return f"_state/{tables.state_file} records the tables {sorted(state['rows'])}, not {sorted(tables.tables)}"
    expected = _expected(_int_keys(state["rows"][tables.key_table]))
    for name in tables.tables:
        if missing := expected - existing[name]:  # an extra file (an update that died) is rewritten or deleted
            return (
                f"current/{name}/ lacks {len(missing)} range files that _state/{tables.state_file} records, "
                f"e.g. {min(missing)}"
            )
    return None


def _same_layout(state: dict | None) -> bool:
    return state is not None and state.get("version") == STATE_VERSION and state.get("range_width") == RANGE_WIDTH


def _int_keys(rows: dict[str, int]) -> dict[int, int]:
    return {int(r): n for r, n in rows.items()}


def _expected(responses: dict[int, int]) -> set[str]:
    """Names of the range files every table has: of the ranges holding responses, or of range 0 (empty) when
    there are none."""
    return {_file_name(r) for r in responses or [0]}


def _files(lake: Lake, table: str) -> set[str]:
    return {path.name for path in lake.files(lake.current_path(table))}


def _totals(rows: dict[str, dict[int, int]]) -> dict[str, int]:
    return {name: sum(counts.values()) for name, counts in rows.items()}


def _write_ranges(lake: Lake, tables: CurrentSet, plan: dict[int, list[str]], *, from_current: bool) -> dict:
    """Rewrite each range of ``plan`` (range -> partition stems) in every table, one range at a time (memory
    is bounded by a range, not by the lake), from those partitions' files and, with ``from_current``, the
    range's current files. Returns {table: {range: rows written}}; a range without responses is not written.
    The files are written by one writer thread, in order, while DuckDB (or Arrow: ``_sole_source_rows``)
    computes the next file's rows; the first error (DuckDB's or the writer's) is raised once no file is being
    written. DuckDB is started for the first range that needs it (``_duckdb``): an update whose ranges are all
    read with Arrow does without it (30 MB)."""
    jobs: dict[str, dict[int, Future]] = {name: {} for name in tables.tables}
    key_table, opened, ahead, con = tables.key_table, {}, collections.deque(), None
    # the writer is shut down (its files written or aborted) before DuckDB and the partition files are closed
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(1, thread_name_prefix="current-writer") as writer:
        stack.callback(_close_files, opened)
        for r, stems in sorted(plan.items()):
            _close_files(opened, keep=stems)  # a partition's files are open only while its ranges are read
            if (sole := _sole_source_rows(lake, tables, r, stems, from_current, opened)) is not None:
                _raise_failed(jobs)
                for name in tables.tables:
                    jobs[name][r] = _write_rows(lake, writer, tables, name, r, sole[name])
                ahead.append([jobs[name][r] for name in tables.tables])
                if len(ahead) > RANGES_AHEAD:  # the writer is behind: wait, rather than hold more ranges
                    wait(ahead.popleft())
                continue
            sources = {name: _source(lake, tables, name, r, stems, from_current) for name in tables.tables}
            if sources[key_table] is None:
                continue
            con = con or _duckdb(lake, stack)
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE winners AS
                SELECT {KEY}, fetched_at, from_current, source FROM (
                    SELECT {KEY}, fetched_at, from_current, source FROM ({sources[key_table]})
                    GROUP BY ALL
                    HAVING count(*) = 1 OR from_current  -- one page holding a response twice: ambiguous
                )
                QUALIFY row_number() OVER (
                    PARTITION BY {KEY} ORDER BY fetched_at DESC, from_current, source DESC
                ) = 1
                """
            )
            for name in tables.tables:
                _raise_failed(jobs)
                jobs[name][r] = _write_range(lake, con, writer, tables, name, r, sources[name])
        return {name: {r: job.result() for r, job in done.items()} for name, done in jobs.items()}


def _duckdb(lake: Lake, stack: contextlib.ExitStack) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for the range queries, closed (and its spill folder deleted) when ``stack`` ends:
    DUCKDB_MEMORY_LIMIT, one thread, spilling to the lake's local scratch folder; reads ``s3://`` paths
    through the lake's fsspec filesystem."""
    spill = lake.scratch_dir("duckdb")  # local even for a lake on object storage
    shutil.rmtree(spill, ignore_errors=True)  # left by an update that was killed
    spill.mkdir(parents=True)  # DuckDB creates it but not its parents (an S3 lake's scratch folder before an upload)
    stack.callback(shutil.rmtree, spill, ignore_errors=True)
    con = duckdb.connect(
        config={
            "memory_limit": DUCKDB_MEMORY_LIMIT,
            "threads": 1,
            "preserve_insertion_order": False,
            "temp_directory": str(spill),
        }
    )
    stack.callback(con.close)
    stack.enter_context(lake.registered(con))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET parquet_metadata_cache = true")  # each range's queries read the same partition files
    return con


def _source(lake: Lake, tables: CurrentSet, name: str, r: int, stems: list[str], from_current: bool) -> str | None:
    """SQL of table ``name``'s rows in range ``r``: those of the partitions ``stems`` and, with
    ``from_current``, of the range's current file (without its FLAG: set again when written), each row with
    ``from_current`` and ``source`` (its file's
    stem: ambiguity is judged within one file, and a fetch two files hold, e.g. after a tool copied rows
    into another partition file, is taken from one); None when there is no file."""
    where = f"{KEY} >= {r * RANGE_WIDTH} AND {KEY} < {(r + 1) * RANGE_WIDTH}"  # Parquet statistics prune
    current_files = [path for path in [range_path(lake, name, r)] if from_current and lake.exists(path)]
    partition_files = [path for stem in stems if lake.exists(path := lake.table_dir(name) / f"{stem}.parquet")]
    derived = {"true": f"filename, {FLAG}" if tables.answered_from and name == tables.key_table else "filename"}
    branches = [
        f"SELECT * EXCLUDE ({derived.get(flag, 'filename')}), {flag} AS from_current, "
        f"parse_filename(filename, true) AS source FROM {_read_parquet(files)} WHERE {where}"
        for files, flag in ((current_files, "true"), (partition_files, "false"))
        if files
    ]
    return " UNION ALL BY NAME ".join(branches) or None


def _sole_source_rows(
    lake: Lake, tables: CurrentSet, r: int, stems: list[str], from_current: bool, opened: dict
) -> dict[str, pa.Table | None] | None:
    """{table: its current rows of range ``r``, in key order (None: no partition file)} read with Arrow, when
    one partition file per table is the range's only source and every row of its key table wins; None when
    the range needs DuckDB's winners (``_write_ranges``) instead.

    The Arrow way (SOLE_SOURCE) is taken when: ``stems`` is one partition, no table has a current file of the
    range, each file has its table's flattened schema (a file another tool rewrote goes DuckDB's way, whose
    reading is the reference), and the key table's rows of the range have distinct non-null keys and
    fetched_at, and Arrow can read the files (DuckDB passes over some damage Arrow refuses, and names a file it
    cannot read). Then every key row is a winner, and a child row is current when its key row has its
    fetched_at: the rows DuckDB's winners query and semi join give, without a join, in a first build or a
    range the hourly sync opens. A 500k-record first build took 0.4x DuckDB's wall time (2.5 s, not 6.2 s;
    the benchmark's ``cli_raw_flat_current`` lake; with the writer thread: ``_write_rows``).
    test_current_sole_source.py compares both ways on odd inputs. ``opened``: {partition file: ``_RowGroups``,
    or None when missing} of the ranges being read, so a footer is read once for a partition's consecutive
    ranges (``_write_ranges`` closes the others: a year of hourly partitions, each the sole source of its own
    range, held 43,800 files open)."""
    if not SOLE_SOURCE or len(stems) != 1:
        return None
    if from_current and any(lake.exists(range_path(lake, name, r)) for name in tables.tables):
        return None
    rows: dict[str, pa.Table | None] = {}
    for name in tables.tables:
        path = lake.table_dir(name) / f"{stems[0]}.parquet"
        try:
            if path not in opened:
                opened[path] = _RowGroups.open(lake, path) if lake.exists(path) else None
            if opened[path] is None:  # no key table file: no range to write (``_write_ranges`` skips it)
                if name == tables.key_table:
                    return None
                rows[name] = None
                continue
            if opened[path].file.schema_arrow != TABLES[name].arrow_schema:
                return None
            table = opened[path].read_range(r)
        except (OSError, pa.ArrowException):  # damaged: DuckDB reads it (it passes over some damage Arrow
            return None  # refuses) or fails naming it
        if name == tables.key_table:
            keys, fetched_at = table[KEY], table["fetched_at"]
            if keys.null_count or fetched_at.null_count or pc.count_distinct(keys).as_py() != len(keys):
                return None
        else:  # the rows of the key row's fetch: DuckDB's semi join on (key, fetched_at)
            winner = pc.index_in(table[KEY], value_set=keys)
            table = table.filter(pc.equal(pc.take(fetched_at, winner), table["fetched_at"]))
        rows[name] = _in_key_order(table, tables.contract(name).key)
    if tables.answered_from:
        answered = range_path(lake, tables.answered_from, r)
        ids = lake.read_table(answered, columns=[KEY])[KEY] if lake.exists(answered) else pa.array([], pa.int64())
        key_rows = rows[tables.key_table]
        rows[tables.key_table] = key_rows.append_column(FLAG, pc.is_in(key_rows[KEY], value_set=ids))
    return rows


@dataclass(frozen=True)
class _RowGroups:
    """A partition file open for reading range by range: ``bounds`` are its row groups' smallest and largest
    KEY (Parquet statistics, read once with the footer; None: no statistics, always read)."""

    file: pq.ParquetFile
    bounds: tuple[tuple[int, int] | None, ...]

    @classmethod
    def open(cls, lake: Lake, path: Path) -> "_RowGroups":
        file = lake.parquet_file(path)
        if (column := file.schema_arrow.get_field_index(KEY)) < 0:
            return cls(file, (None,) * file.num_row_groups)
        groups = (file.metadata.row_group(group).column(column).statistics for group in range(file.num_row_groups))
        return cls(file, tuple((s.min, s.max) if s is not None and s.has_min_max else None for s in groups))

    def read_range(self, r: int) -> pa.Table:
        """The file's rows whose KEY is in range ``r``, in file order; only the row groups that can hold one are
        read."""
        low, high = r * RANGE_WIDTH, (r + 1) * RANGE_WIDTH
        groups = [i for i, b in enumerate(self.bounds) if b is None or (b[0] < high and b[1] >= low)]
        # group by group: reading five at once held twice the memory at the peak (comments up to 70 KB)
        table = pa.concat_tables(
            [self.file.schema_arrow.empty_table()] + [self.file.read_row_group(i, use_threads=False) for i in groups]
        )
        keys = table[KEY].to_numpy()
        inside = np.flatnonzero((keys >= low) & (keys < high))
        if len(inside) and inside[-1] - inside[0] + 1 == len(inside):  # one run of rows: keys in order
            return table.slice(inside[0], len(inside))  # no copy
        return table.take(inside)


def _close_files(opened: dict, keep: Sequence[str] = ()) -> None:
    """Close and forget the partition files of ``opened`` (``_sole_source_rows``) whose stem is not in ``keep``."""
    for path in [path for path in opened if path.stem not in keep]:
        if (file := opened.pop(path)) is not None:
            file.file.close()


def _in_key_order(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """``table`` sorted by ``key`` (nulls last, as DuckDB's ORDER BY); as it is when already in that order (the
    flattening writes most tables so: no copy)."""
    order = pc.sort_indices(table, [(column, "ascending") for column in key])
    return table if np.array_equal(order.to_numpy(), np.arange(len(order))) else table.take(order)


def _raise_failed(jobs: dict[str, dict[int, Future]]) -> None:
    """Raise the error of the first range file the writer thread failed to write, if any."""
    for done in jobs.values():
        for job in done.values():
            if job.done() and job.exception():
                job.result()


def _write_range(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    writer: ThreadPoolExecutor,
    tables: CurrentSet,
    name: str,
    r: int,
    source: str | None,
) -> Future:
    """Hand the winners' rows of table ``name`` in range ``r``, in key order, to ``writer`` for its range file
    (empty when ``source`` is None), with the FLAG column of an ``answered_from`` set; returns the writer's
    job, whose result is the rows written. ``source``: the SQL of ``_source`` (the winners are DuckDB's
    ``winners`` table)."""
    contract = tables.contract(name)
    batches: queue.Queue = queue.Queue(QUEUED_BATCHES)
    job = writer.submit(_write_file, lake, range_path(lake, name, r), name, contract.arrow_schema, batches)
    end: BaseException | None = None
    try:
        if source is not None:
            flag = ""
            if FLAG in contract.arrow_schema.names:
                answered = range_path(lake, tables.answered_from, r)
                flag = (
                    f", {KEY} IN (SELECT {KEY} FROM {_read_parquet([answered])})"
                    if lake.exists(answered)
                    else ", false"
                )
                flag += f" AS {FLAG}"
            reader = con.sql(
                f"""
                SELECT * EXCLUDE (from_current, source){flag} FROM ({source})
                SEMI JOIN winners USING ({KEY}, fetched_at, from_current, source)
                ORDER BY {", ".join(contract.key)}
                """
            ).to_arrow_reader(BATCH_ROWS)
            for batch in reader:
                batches.put(batch)
    except BaseException as error:
        end = error
        raise
    finally:
        batches.put(end)  # None: commit; an error: abort
    return job


def _write_rows(
    lake: Lake, writer: ThreadPoolExecutor, tables: CurrentSet, name: str, r: int, rows: pa.Table | None
) -> Future:
    """Hand ``rows`` (``_sole_source_rows``: table ``name``'s current rows of range ``r``, in key order; None:
    none) to ``writer`` for its range file at once: they are in memory already. Returns the writer's job."""
    batches: queue.Queue = queue.Queue()
    for batch in rows.to_batches(BATCH_ROWS) if rows is not None else []:
        batches.put(batch)
    batches.put(None)
    return writer.submit(
        _write_file, lake, range_path(lake, name, r), name, tables.contract(name).arrow_schema, batches
    )


def _write_file(lake: Lake, path: Path, name: str, schema: pa.Schema, batches: queue.Queue) -> int:
    """Writer thread: write the batches of ``batches`` to ``path`` in table ``name``'s contract ``schema``
    until an end marker (None: commit; an exception: abort, raising it); returns the rows written. Takes every
    item up to the marker even after a write failed, so the producer never waits on a full queue."""
    failure = None
    dictionary = [column for column in schema.names if column in DICTIONARY_COLUMNS]
    with lake.parquet_writer(path, schema, use_dictionary=dictionary) as file:
        while isinstance(item := batches.get(), pa.RecordBatch):
            if failure is None:
                try:
                    file.write(_to_contract(name, item, schema))
                except Exception as error:  # noqa: BLE001  raised below, once the producer is done
                    failure = error
        if failure or item:
            raise failure or item
        file.commit()
        return file.rows


def _reconcile_files(lake: Lake, tables: CurrentSet, rows: dict[str, dict[int, int]], *, old_layout: bool) -> None:
    """Give every table exactly the range files ``_expected`` names: an empty one where the lake holds no
    response, none where a range holds no response. With ``old_layout``, also delete the single files of the
    layout before range files."""
    expected = _expected(rows[tables.key_table])
    for name in tables.tables:
        folder = lake.current_path(name)
        for file in expected - _files(lake, name):
            lake.write_table(folder / file, tables.contract(name).empty_table())
        for file in _files(lake, name) - expected:  # no response left in its range, or not a range file
            lake.delete(folder / file)
        if old_layout:
            lake.delete(lake.current_path(name).with_suffix(".parquet"))


def _to_contract(name: str, batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """``batch`` with exactly the contract's columns and types; a column no file of the batch has is null."""
    columns = []
    for field in schema:
        column = batch.column(field.name) if field.name in batch.schema.names else pa.nulls(batch.num_rows, field.type)
        if not field.nullable and column.null_count:
            raise LakeError(
                f"current/{name}: column {field.name!r} is NOT NULL in the contract (lib/schemas.py) but partition "
                "files written before it was added lack it: declare it nullable, or re-materialize the flattened "
                "tables of those partitions"
            )
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _read_parquet(paths: list) -> str:
    """DuckDB ``read_parquet`` of these files, columns matched by name (a file lacking a column gives nulls),
    with each row's ``filename``. DuckDB expands glob characters in these paths: ``Lake.ensure_writable``
    refuses a lake root holding one, and file names never do."""
    quoted = ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)
    return f"read_parquet([{quoted}], union_by_name = true, filename = true)"
