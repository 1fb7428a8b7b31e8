"""flatten_partition: the raw file flattened batch by batch gives the five files that flatten_raw gives for the
whole raw file, dictionary-encoded where it pays; a failure in any batch (a row that is not JSON, bytes that are
not UTF-8), or in a write, replaces no file and leaves no temporary file. Not timed."""

import os
import subprocess
import sys
import threading
from itertools import accumulate

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cg_dagster.lib.tables as tables_module
from cg_dagster.lib.flatten import FLAT_TABLE_NAMES, FlattenError, flatten_raw, raw_rows
from cg_dagster.lib.lake import NON_RESPONSES, RESPONSES, AtomicParquetWriter, Lake, LakeError
from cg_dagster.lib.schemas import TABLES
from cg_dagster.lib.tables import DICTIONARY_COLUMNS, flatten_partition, stale_partitions
from cg_dagster_tests._fixtures_flatten import FETCHED_AT, P, sandbox_records, write_raw
from cg_dagster_tests._fixtures_s3 import write_like_a_tool


def flat_files(lake: Lake) -> dict[str, bytes]:
    return {name: lake.partition_path(name, P).read_bytes() for name in FLAT_TABLE_NAMES}


def test_files_equal_flatten_raw_of_the_whole_raw_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tables_module, "RAW_BATCH_ROWS", 300)  # 9 batches
    lake = Lake(tmp_path)
    raw = write_raw(lake, sandbox_records(2_600))
    whole = flatten_raw(raw, system_timezone="Europe/Amsterdam")
    done = flatten_partition(lake, P, system_timezone="Europe/Amsterdam")
    assert done.stats == whole.stats and done.stats.records == 2_600
    for name in FLAT_TABLE_NAMES:
        written = pq.read_table(done.paths[name])
        assert written.schema == TABLES[name].arrow_schema, name
        assert written.to_pylist() == whole.tables[name].to_pylist(), name
        assert done.rows[name] == whole.tables[name].num_rows > 0, name


def test_batches_flattened_at_once_are_written_in_file_order(tmp_path, monkeypatch):
    # The first batch finishes after the second: its rows still come first, byte for byte as one thread writes.
    monkeypatch.setattr(tables_module, "RAW_BATCH_ROWS", 300)
    lake = Lake(tmp_path)
    raw = write_raw(lake, sandbox_records(2_000))
    monkeypatch.setattr(tables_module, "FLATTEN_THREADS", 1)
    flatten_partition(lake, P)
    one_thread = flat_files(lake)
    first, second = (raw["record_json"][row].as_py() for row in (0, 300))
    second_done, real = threading.Event(), tables_module.flatten_raw

    def first_batch_last(batch, **options):
        if batch["record_json"][0].as_py() == first:
            assert second_done.wait(60), "the second batch was not flattened while the first one was"
        flat = real(batch, **options)
        if batch["record_json"][0].as_py() == second:
            second_done.set()
        return flat

    monkeypatch.setattr(tables_module, "FLATTEN_THREADS", 2)
    monkeypatch.setattr(tables_module, "flatten_raw", first_batch_last)
    done = flatten_partition(lake, P)
    assert second_done.is_set() and done.stats.records == 2_000
    assert flat_files(lake) == one_thread


def test_dictionary_encoding_only_on_the_listed_columns(tmp_path):
    lake = Lake(tmp_path)
    write_raw(lake, sandbox_records(400))
    done = flatten_partition(lake, P)
    for name in FLAT_TABLE_NAMES:
        row_group = pq.ParquetFile(done.paths[name]).metadata.row_group(0)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            dictionary = chunk.dictionary_page_offset is not None
            assert dictionary == (chunk.path_in_schema in DICTIONARY_COLUMNS), (name, chunk.path_in_schema)


@pytest.mark.parametrize("bad_row", [5, 1_900])  # in the first batch; in a later one, after writes began
def test_a_bad_row_replaces_no_file(tmp_path, monkeypatch, bad_row):
    monkeypatch.setattr(tables_module, "RAW_BATCH_ROWS", 300)
    lake = Lake(tmp_path)
    records = sandbox_records(2_000)
    write_raw(lake, records)
    flatten_partition(lake, P)
    before = flat_files(lake)
    write_raw(lake, records, bad_row=bad_row)
    start = bad_row - bad_row % 300
    rows = f"rows {start}..{min(start + 299, 1_999)}: raw row {bad_row % 300}"  # the row in its batch
    message = f"raw_responses file 2026-11-01-1000.parquet, {rows}: "
    with pytest.raises(FlattenError, match=message + "record_json is not valid JSON"):
        flatten_partition(lake, P)
    assert flat_files(lake) == before
    assert list((lake.root / "_tmp").iterdir()) == []


NOT_UTF8 = b'{"number_customergauge": 1, "comment": "\xff"}'  # the input noticed: its byte 40 is not UTF-8


def text_column(texts: list[bytes], kind: str) -> pa.Array:
    """``texts`` as a record_json column of Arrow type ``kind``, as another tool may write it."""
    if kind in ("string", "large_string"):  # pa.array would refuse the bytes: the buffers a tool writes
        offsets = pa.array([0, *accumulate(map(len, texts))], pa.int64() if kind == "large_string" else pa.int32())
        data = [None, offsets.buffers()[1], pa.py_buffer(b"".join(texts))]
        return pa.Array.from_buffers(getattr(pa, kind)(), len(texts), data)
    column = pa.array(texts, pa.large_binary() if kind == "large_binary" else pa.binary())
    return column.dictionary_encode() if kind == "dictionary" else column  # dictionary: pandas' categorical


@pytest.mark.parametrize("kind", ["binary", "large_binary", "string", "large_string", "dictionary"])
@pytest.mark.parametrize("stream", [RESPONSES, NON_RESPONSES], ids=lambda stream: stream.raw_table)
def test_a_raw_file_rewritten_with_bytes_that_are_not_utf8_names_the_file_the_row_and_the_fix(
    tmp_path, monkeypatch, stream, kind
):
    # The input noticed: a tool rewrote the raw file with record_json as binary, one record holding b"\xff"; the
    # flattening raised UnicodeDecodeError, naming neither the file nor the row.
    monkeypatch.setattr(tables_module, "RAW_BATCH_ROWS", 300)
    lake = Lake(tmp_path)
    raw = raw_rows(sandbox_records(2_000), fetched_at=FETCHED_AT, cursor_sent=None, sync_pass="cursor")
    path = lake.partition_path(stream.raw_table, P)
    lake.write_table(path, raw)
    flatten_partition(lake, P, stream=stream)
    before = {name: lake.partition_path(name, P).read_bytes() for name in stream.flat_tables}
    rows = {name: lake.read_table(lake.partition_path(name, P)) for name in stream.flat_tables}
    texts = [text.encode() for text in raw["record_json"].to_pylist()]
    texts[1_900] = NOT_UTF8
    write_like_a_tool(lake, path, raw.set_column(4, "record_json", text_column(texts, kind)))
    with pytest.raises(FlattenError) as raised:
        flatten_partition(lake, P, stream=stream)
    table = stream.raw_table
    assert str(raised.value) == (
        f"{table} file 2026-11-01-1000.parquet, rows 1800..1999: raw row 100: record_json is not UTF-8 text (byte 40 "
        f"is not UTF-8); the sync writes UTF-8 only, so a tool rewrote the {table} file: materialize {table} for "
        f"this partition again (a replay rewrites every record the API still returns), restore the file from a "
        f"backup, or run {table} for this partition with full_refresh: true"
    )
    assert {name: lake.partition_path(name, P).read_bytes() for name in stream.flat_tables} == before
    assert list((lake.root / "_tmp").iterdir()) == []
    texts[1_900] = raw["record_json"][1_900].as_py().encode()  # the same file, all UTF-8: read as the sync's
    write_like_a_tool(lake, path, raw.set_column(4, "record_json", text_column(texts, kind)))
    assert flatten_partition(lake, P, stream=stream).rows[stream.flat_tables[0]] == 2_000
    assert {name: lake.read_table(lake.partition_path(name, P)) for name in stream.flat_tables} == rows


def test_a_failed_write_is_raised_and_replaces_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tables_module, "RAW_BATCH_ROWS", 300)
    lake = Lake(tmp_path)
    records = sandbox_records(2_000)
    write_raw(lake, records)
    flatten_partition(lake, P)
    before = flat_files(lake)
    real, calls = AtomicParquetWriter.write, []

    def failing(self, table):
        calls.append(self.target.parent.name)
        if len(calls) == 12:  # the third batch's second table
            raise LakeError("disk full")
        real(self, table)

    monkeypatch.setattr(AtomicParquetWriter, "write", failing)
    with pytest.raises(LakeError, match="disk full"):
        flatten_partition(lake, P)
    assert flat_files(lake) == before
    assert list((lake.root / "_tmp").iterdir()) == []


def test_a_missing_raw_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        flatten_partition(Lake(tmp_path), P)


def _same_second(lake: Lake, raw_records: list) -> tuple:
    """A raw file rewritten after its flattening, every file given one modification time (what S3, which keeps
    whole seconds, shows when the rewrite lands in the flattening's second)."""
    write_raw(lake, raw_records[:-1])
    flatten_partition(lake, P)
    raw = lake.partition_path("raw_responses", P)
    write_raw(lake, raw_records)  # a replay's new raw file; its run died before flattening it
    when = raw.stat().st_mtime_ns
    for path in [raw, *(lake.partition_path(name, P) for name in FLAT_TABLE_NAMES)]:
        os.utime(path, ns=(when, when))
    return raw, when


def test_a_raw_file_rewritten_in_the_flattenings_second_is_stale_by_its_footer(tmp_path):
    lake = Lake(tmp_path)
    _same_second(lake, sandbox_records(40))
    assert stale_partitions(lake) == [P]
    flatten_partition(lake, P)  # the repair: flattened from the new raw file, 40 rows
    assert lake.read_table(lake.partition_path("responses", P)).num_rows == 40
    assert stale_partitions(lake) == []


def test_footers_are_read_once_per_raw_version(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    raw, when = _same_second(lake, sandbox_records(40))
    flatten_partition(lake, P)
    for path in [raw, *(lake.partition_path(name, P) for name in FLAT_TABLE_NAMES)]:
        os.utime(path, ns=(when, when))  # still one second: the footers decide
    reads = []
    real = tables_module._flattened_from
    monkeypatch.setattr(tables_module, "_flattened_from", lambda path: reads.append(path.parent.name) or real(path))
    assert stale_partitions(lake) == []
    assert sorted(reads) == sorted(FLAT_TABLE_NAMES)
    version = f"{raw.stat().st_size}:{when}"
    assert lake.read_state("raw_responses.flattened.json") == {"flattened": {raw.name: version}}
    reads.clear()
    assert stale_partitions(lake) == [] and reads == []  # trusted while the raw file keeps its version


def test_flat_files_without_the_footer_key_in_the_raw_files_second_are_flattened_again(tmp_path):
    # A lake flattened before the footer named the raw version: in a tie, flattened once more.
    lake = Lake(tmp_path)
    write_raw(lake, sandbox_records(40))
    flatten_partition(lake, P)
    raw = lake.partition_path("raw_responses", P)
    for name in FLAT_TABLE_NAMES:
        path = lake.partition_path(name, P)
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata(None), path)
    when = raw.stat().st_mtime_ns
    for path in [raw, *(lake.partition_path(name, P) for name in FLAT_TABLE_NAMES)]:
        os.utime(path, ns=(when, when))
    assert stale_partitions(lake) == [P]


@pytest.mark.parametrize(
    ("environment", "expected"), [({}, "narenas:1"), ({"JE_ARROW_MALLOC_CONF": "narenas:3"}, "narenas:3")]
)
def test_arrows_jemalloc_gets_one_arena_before_pyarrow_is_imported_unless_the_environment_chooses(
    environment, expected
):
    # jemalloc reads its options when pyarrow is imported: importing the package sets them before any of its
    # modules imports pyarrow.
    code = "import cg_dagster, os, sys; assert 'pyarrow' not in sys.modules; print(os.environ['JE_ARROW_MALLOC_CONF'])"
    env = {key: value for key, value in os.environ.items() if key != "JE_ARROW_MALLOC_CONF"} | environment
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
