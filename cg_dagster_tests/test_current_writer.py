"""update_current's writer thread (lib/current.py): range files are written while DuckDB computes the next ones,
and a file that fails, on either side, fails the update without leaving that file or the record; the next
update then gives the same tables as if nothing had failed."""

import contextlib
import dataclasses
import hashlib
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pytest

from cg_dagster.lib import current as current_module
from cg_dagster.lib.current import CURRENT_TABLES, range_path, update_current
from cg_dagster.lib.lake import Lake, LakeError
from cg_dagster.lib.schemas import TABLES, Column
from cg_dagster_tests._fixtures_flatten import tag, write_partition

T1 = datetime(2026, 11, 1, 10, 5, tzinfo=UTC)
WIDTH = current_module.RANGE_WIDTH


def lake_of_three_ranges(root) -> Lake:
    """One partition of 30 responses (two tags each) in ranges 0, 1 and 2, ten in each."""
    lake = Lake(root)
    records = [
        {"number_customergauge": r * WIDTH + 3 * i, "nps": i % 11, "tags": [tag("a"), tag(f"t{i}")]}
        for r in range(3)
        for i in range(10)
    ]
    write_partition(lake, "2026-11-01-10:00", records, T1)
    return lake


def tables_of(lake: Lake) -> dict:
    """{table: its rows, every range file in name order}."""
    return {name: lake.read_table(lake.current_path(name)).to_pylist() for name in CURRENT_TABLES}


def tables_of_update(lake: Lake) -> dict:
    """Update the current tables of ``lake`` and return them (``tables_of``)."""
    update_current(lake)
    return tables_of(lake)


def test_batches_queued_for_the_writer_give_the_tables_of_an_update_in_one_batch_per_file(tmp_path, monkeypatch):
    expected = tables_of_update(lake_of_three_ranges(tmp_path / "whole"))
    monkeypatch.setattr(current_module, "BATCH_ROWS", 3)  # 7 batches of tags per range: the queue fills
    monkeypatch.setattr(current_module, "QUEUED_BATCHES", 1)
    lake = lake_of_three_ranges(tmp_path / "batched")

    assert update_current(lake).rows == {name: len(rows) for name, rows in expected.items()}
    assert tables_of(lake) == expected
    assert len(lake.files(lake.current_path("response_tags"))) == 3


def test_a_file_the_writer_fails_on_mid_way_fails_the_update_and_is_not_left(tmp_path, monkeypatch):
    expected = tables_of_update(lake_of_three_ranges(tmp_path / "whole"))
    lake = lake_of_three_ranges(tmp_path / "lake")
    monkeypatch.setattr(current_module, "BATCH_ROWS", 3)
    monkeypatch.setattr(current_module, "QUEUED_BATCHES", 1)  # the producer would wait forever on a writer that quit
    to_contract, seen = current_module._to_contract, []

    def failing(name, batch, schema):
        seen.append(name)
        if name == "response_tags" and seen.count(name) == 9:  # the second batch of range 1's tags
            raise OSError("disk full")
        return to_contract(name, batch, schema)

    monkeypatch.setattr(current_module, "_to_contract", failing)
    with pytest.raises(OSError, match="disk full"):
        update_current(lake)

    assert not lake.exists(range_path(lake, "response_tags", 1))
    assert lake.exists(range_path(lake, "response_tags", 0))  # written before the failure: redone by the next update
    assert lake.read_state(current_module.RESPONSES_CURRENT.state_file) is None
    monkeypatch.setattr(current_module, "_to_contract", to_contract)
    assert tables_of_update(lake) == expected


def test_a_query_duckdb_fails_on_aborts_the_file_it_was_writing(tmp_path, monkeypatch):
    expected = tables_of_update(lake_of_three_ranges(tmp_path / "whole"))
    lake = lake_of_three_ranges(tmp_path / "lake")
    source = current_module._source

    def failing(lake, tables, name, r, stems, from_current):
        sql = source(lake, tables, name, r, stems, from_current)
        return f"SELECT * FROM no_such_table_{name}" if (name, r) == ("response_questions", 2) else sql

    monkeypatch.setattr(current_module, "_source", failing)
    monkeypatch.setattr(current_module, "SOLE_SOURCE", False)  # one partition: DuckDB's way only when told
    with pytest.raises(duckdb.CatalogException, match="no_such_table_response_questions"):
        update_current(lake)

    assert not lake.exists(range_path(lake, "response_questions", 2))
    assert lake.exists(range_path(lake, "response_tags", 2))  # handed to the writer before the failing query
    assert lake.read_state(current_module.RESPONSES_CURRENT.state_file) is None
    monkeypatch.setattr(current_module, "_source", source)
    assert tables_of_update(lake) == expected


def test_a_not_null_column_older_partitions_lack_fails_naming_it_and_writes_no_file_of_that_table(
    tmp_path, monkeypatch
):
    lake = lake_of_three_ranges(tmp_path / "lake")
    tags = TABLES["response_tags"]
    required = Column("weight", pa.int64(), False, "A column added to the contract as NOT NULL.", ())
    grown = dataclasses.replace(tags, columns=(*tags.columns, required))
    monkeypatch.setattr(current_module, "TABLES", {**TABLES, "response_tags": grown})

    with pytest.raises(LakeError, match=r"current/response_tags: column 'weight' is NOT NULL"):
        update_current(lake)

    assert lake.files(lake.current_path("response_tags")) == []
    assert lake.read_state(current_module.RESPONSES_CURRENT.state_file) is None


@pytest.mark.slow
def test_duckdb_spills_on_an_s3_lake_before_any_upload_from_this_machine(s3_root):
    """An S3 lake's spill folder is in a local scratch folder that only an upload created: DuckDB creates its
    temp_directory but not the parents, so the first query that spilled failed ("Failed to create directory")."""
    lake = Lake(s3_root)
    spill = lake.scratch_dir("duckdb")
    assert not spill.parent.exists()
    with contextlib.ExitStack() as stack:
        con = current_module._duckdb(lake, stack)
        con.execute("SET memory_limit = '16MB'")  # a temp table of ~60 MB: spilled
        con.execute("CREATE TEMP TABLE spilled AS SELECT md5(range::VARCHAR) AS s FROM range(1000000)")
        smallest = min(hashlib.md5(str(i).encode()).hexdigest() for i in range(1_000_000))
        assert con.sql("SELECT count(*), min(s) FROM spilled").fetchall() == [(1_000_000, smallest)]
        assert any(spill.iterdir())
    assert not spill.exists()  # deleted with the connection
