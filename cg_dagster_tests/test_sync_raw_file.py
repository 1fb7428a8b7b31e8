"""The raw file as the sync writes it (issue 7): row groups of RAW_ROW_GROUP_ROWS rows whatever the page size,
no Parquet dictionary for record_json; and a long sync's progress in the log about every PROGRESS_SECONDS
(issue 10), with the clock replaced (not timed); on a local lake and on ``s3://`` (``lake_root``). A disk that
fills up after the first row group commits nothing (local lake)."""

import itertools
import json
import logging

import pytest

from cg_dagster.lib import sync as sync_module
from cg_dagster.lib.client import CustomerGaugeClient, SyncParams
from cg_dagster.lib.lake import AtomicParquetWriter, Lake
from cg_dagster.lib.sync import sync_partition
from cg_dagster_tests._fixtures_sandbox import SANDBOX_ID, SANDBOX_SECRET
from cg_dagster_tests._fixtures_sync import PageSource, records
from cg_dagster_tests._fixtures_sync import sync as sync_fake

P = "2026-11-02-10:00"


def sync(sandbox, lake: Lake, per_page: int):
    client = CustomerGaugeClient(
        client_id=SANDBOX_ID,
        client_secret=SANDBOX_SECRET,
        api_base_url=sandbox.base_url,
        auth_base_url=sandbox.base_url,
    )
    with client:
        return sync_partition(client, SyncParams(per_page=per_page), lake, partition_key=P, run_id="run-1")


def test_row_groups_span_pages_and_record_json_has_no_dictionary(sandbox, lake_root, monkeypatch):
    monkeypatch.setattr(sync_module, "RAW_ROW_GROUP_ROWS", 100)
    lake = Lake(lake_root)
    result = sync(sandbox, lake, per_page=30)  # 350 records: 11 pages of 30, the last of 20
    metadata = lake.parquet_file(result.path).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [120, 120, 110]
    columns = {metadata.schema.column(i).name: i for i in range(metadata.num_columns)}
    encodings = {name: metadata.row_group(0).column(i).encodings for name, i in columns.items()}
    assert not any(
        "DICTIONARY" in encoding for encoding in encodings["record_json"] + encodings["number_customergauge"]
    )
    assert "RLE_DICTIONARY" in encodings["fetched_at"] and "RLE_DICTIONARY" in encodings["cursor_sent"]
    texts = lake.read_table(result.path).column("record_json").to_pylist()
    assert [json.loads(text) for text in texts] == sandbox.records() and result.rows == 350


def test_a_long_sync_logs_its_progress_about_every_ten_seconds(sandbox, lake_root, monkeypatch, caplog):
    ticks = itertools.count(0.0, 5.0)  # every clock reading is 5 s after the one before
    monkeypatch.setattr(sync_module, "_clock", lambda: next(ticks))
    caplog.set_level(logging.INFO, logger="cg_dagster.sync")
    lake = Lake(lake_root)
    result = sync(sandbox, lake, per_page=50)  # 7 pages; clock read at the start (0 s), after each page
    cursors = lake.read_table(result.path).column("cursor_sent").to_pylist()  # page n+1's cursor: after page n
    progress = [r for r in caplog.records if "records so far" in r.getMessage()]
    assert [r.getMessage() for r in progress] == [
        f"partition {P}, cursor pass: {pages} pages, {pages * 50} records so far, 10 records/s, "
        f"cursor {cursors[pages * 50]}"
        for pages in (2, 4, 6)
    ]
    assert {r.name for r in progress} == {"cg_dagster.sync"}


@pytest.mark.parametrize("seconds, logged_pages", [(4.0, [1, 2, 3, 4, 5, 6, 7]), (30.0, [])])
def test_progress_follows_the_clock_not_the_page_count(sandbox, lake_root, monkeypatch, caplog, seconds, logged_pages):
    ticks = itertools.count(0.0, 4.0)
    monkeypatch.setattr(sync_module, "_clock", lambda: next(ticks))
    monkeypatch.setattr(sync_module, "PROGRESS_SECONDS", seconds)
    caplog.set_level(logging.INFO, logger="cg_dagster.sync")
    sync(sandbox, Lake(lake_root), per_page=50)
    messages = [r.getMessage() for r in caplog.records if "records so far" in r.getMessage()]
    assert [int(m.split(" pages")[0].rsplit(" ", 1)[1]) for m in messages] == logged_pages


def test_a_disk_full_after_the_first_row_group_fails_the_sync_and_commits_nothing(tmp_path, monkeypatch):
    """The second row group of the raw file cannot be written (ENOSPC): the sync raises that error, and the
    head, the raw folder and _tmp/ are as before the sync."""
    monkeypatch.setattr(sync_module, "RAW_ROW_GROUP_ROWS", 20)
    real_write, written = AtomicParquetWriter.write, []

    def write(self, table):
        if written:
            raise OSError(28, "No space left on device")
        real_write(self, table)
        written.append(table.num_rows)

    monkeypatch.setattr(AtomicParquetWriter, "write", write)
    lake = Lake(tmp_path / "lake")
    with pytest.raises(OSError, match="No space left on device"):
        sync_fake(PageSource(records(50)), lake, P)
    assert written == [20]
    assert lake.read_head() is None
    assert list((lake.root / "raw_responses").glob("*")) == []  # glob of a missing folder: nothing
    assert [p for p in (lake.root / "_tmp").rglob("*") if p.is_file()] == []
