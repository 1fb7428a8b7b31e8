"""update_current's Arrow way for a range whose only source is one partition file (lib/current.py
``_sole_source_rows``) gives, cell for cell, the range files of DuckDB's winners query and semi join; on the odd
inputs where it cannot, it declines and DuckDB writes the range. Each case builds the same lake twice and
updates it once each way."""

import os
import re
import resource
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cg_dagster.lib import current as current_module
from cg_dagster.lib.current import NON_RESPONSES_CURRENT, RESPONSES_CURRENT, update_current
from cg_dagster.lib.flatten import raw_rows
from cg_dagster.lib.lake import NON_RESPONSES, Lake, LakeError
from cg_dagster.lib.schemas import TABLES
from cg_dagster.lib.tables import flatten_partition
from cg_dagster_tests._fixtures_flatten import tag, write_partition

T1 = datetime(2026, 11, 1, 10, 5, tzinfo=UTC)
P1, P2 = "2026-11-01-10:00", "2026-11-01-11:00"
WIDTH = current_module.RANGE_WIDTH


def responses(*numbers: int) -> list[dict]:
    """A response per number, with two tags and a driver each (child rows in every range the numbers touch)."""
    return [
        {
            "number_customergauge": n,
            "nps": n % 11,
            "tags": [tag(f"t{n}"), tag("a")],
            "drivers": [{"driver": {"primary": "Price", "secondary": f"s{n % 3}"}, "source": "nps"}],
        }
        for n in numbers
    ]


def three_ranges(lake: Lake) -> None:
    write_partition(lake, P1, responses(*(r * WIDTH + 3 * i for r in range(3) for i in range(10))), T1)


def rewrite(lake: Lake, table: str, change) -> None:
    """Replace partition P1's file of ``table`` with ``change(its rows)``, in the table's flattened schema."""
    path = lake.partition_path(table, P1)
    lake.write_table(path, change(lake.read_table(path)).cast(TABLES[table].arrow_schema))


def both_ways(tmp_path, build, tables=RESPONSES_CURRENT, monkeypatch=None) -> tuple[dict, dict, list[bool]]:
    """Build a lake with ``build(lake)`` twice, update ``tables`` once with the Arrow way allowed and once
    without; return (its tables, DuckDB's tables, for each range the Arrow way was offered: whether it took
    it)."""
    taken, sole = [], current_module._sole_source_rows

    def spy(*args):
        rows = sole(*args)
        taken.append(rows is not None)
        return rows

    results = []
    for allowed in (True, False):
        lake = Lake(tmp_path / f"sole-{allowed}")
        build(lake)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(current_module, "SOLE_SOURCE", allowed)
            patch.setattr(current_module, "_sole_source_rows", spy)
            update_current(lake, tables)
        results.append({name: lake.read_table(lake.current_path(name)) for name in tables.tables})
        results[-1]["files"] = {
            name: sorted(p.name for p in lake.files(lake.current_path(name))) for name in tables.tables
        }
    return results[0], results[1], taken[: len(taken) // 2]


def assert_same(arrow: dict, duckdb: dict) -> None:
    assert arrow["files"] == duckdb["files"]
    for name, table in duckdb.items():
        if name != "files":
            assert arrow[name].schema == table.schema, name
            assert arrow[name].to_pylist() == table.to_pylist(), name


def test_a_partition_over_three_ranges_is_written_the_arrow_way_with_duckdbs_rows(tmp_path):
    arrow, duckdb, taken = both_ways(tmp_path, three_ranges)
    assert taken == [True, True, True]
    assert_same(arrow, duckdb)
    assert arrow["responses"].num_rows == 30 and arrow["response_tags"].num_rows == 60
    assert arrow["response_drivers"].num_rows == 30


def test_a_response_twice_in_the_range_leaves_it_to_duckdb(tmp_path):
    def build(lake):
        write_partition(lake, P1, [*responses(7, 8), {"number_customergauge": 7, "nps": 1, "tags": [tag("b")]}], T1)

    arrow, duckdb, taken = both_ways(tmp_path, build)
    assert taken == [False]
    assert_same(arrow, duckdb)
    assert arrow["responses"]["number_customergauge"].to_pylist() == [8]  # 7 is ambiguous in its only fetch


def test_child_rows_of_no_response_or_of_another_fetch_are_left_out_as_duckdb_leaves_them(tmp_path):
    def build(lake):
        three_ranges(lake)
        later = pa.scalar(T1 + timedelta(minutes=1), pa.timestamp("us", tz="UTC"))

        def odd_tags(table):  # an orphan (number 1) and a tag of number 3 from another fetch
            numbers = pc.if_else(pc.equal(table["number_customergauge"], 0), 1, table["number_customergauge"])
            table = table.set_column(
                table.schema.get_field_index("number_customergauge"), "number_customergauge", numbers
            )
            moved = pc.if_else(pc.equal(table["number_customergauge"], 3), later, table["fetched_at"])
            return table.set_column(table.schema.get_field_index("fetched_at"), "fetched_at", moved)

        rewrite(lake, "response_tags", odd_tags)

    arrow, duckdb, taken = both_ways(tmp_path, build)
    assert taken == [True, True, True]
    assert_same(arrow, duckdb)
    numbers = set(arrow["response_tags"]["number_customergauge"].to_pylist())
    assert {0, 1, 3}.isdisjoint(numbers) and len(numbers) == 28  # 30 responses, but not 0 and 3


def test_rows_out_of_key_order_are_sorted_as_duckdb_sorts_them_nulls_last(tmp_path):
    def build(lake):
        three_ranges(lake)
        rewrite(lake, "responses", lambda table: table.take(pa.array(range(table.num_rows - 1, -1, -1))))

        def shuffled_drivers(table):  # reversed, and a null secondary position among equal keys
            table = table.take(pa.array(range(table.num_rows - 1, -1, -1)))
            return (
                pa.concat_tables(
                    [
                        table,
                        table.slice(0, 1).set_column(
                            table.schema.get_field_index("secondary_position"),
                            "secondary_position",
                            pa.array([None], pa.int32()),
                        ),
                    ]
                )
                if "secondary_position" in table.column_names
                else table
            )

        rewrite(lake, "response_drivers", shuffled_drivers)

    arrow, duckdb, taken = both_ways(tmp_path, build)
    assert taken == [True, True, True]
    assert_same(arrow, duckdb)
    numbers = arrow["responses"]["number_customergauge"].to_pylist()
    assert numbers == sorted(numbers) and len(numbers) == 30


def test_files_another_tool_rewrote_are_left_to_duckdb(tmp_path):
    def build(lake):  # pandas writes large strings and its own footer metadata
        three_ranges(lake)
        for name in ("responses", "response_tags"):
            path = lake.partition_path(name, P1)
            pd.read_parquet(str(path)).to_parquet(str(path))

    arrow, duckdb, taken = both_ways(tmp_path, build)
    assert taken == [False, False, False]
    assert_same(arrow, duckdb)


def test_a_missing_child_file_gives_empty_range_files_either_way(tmp_path):
    def build(lake):
        three_ranges(lake)
        lake.delete(lake.partition_path("response_questions", P1))

    arrow, duckdb, taken = both_ways(tmp_path, build)
    assert taken == [True, True, True]
    assert_same(arrow, duckdb)
    assert arrow["response_questions"].num_rows == 0 and len(arrow["files"]["response_questions"]) == 3


def test_a_merge_takes_the_arrow_way_only_for_the_range_it_opens(tmp_path):
    def build(lake):
        write_partition(lake, P1, responses(1, 4), T1)
        update_current(lake)
        write_partition(lake, P2, responses(2, WIDTH + 5), T1 + timedelta(hours=1))

    arrow, duckdb, taken = both_ways(tmp_path, build)
    assert taken == [False, True]  # range 0 has a current file (P1's); range 1 is new
    assert_same(arrow, duckdb)
    assert arrow["responses"]["number_customergauge"].to_pylist() == [1, 2, 4, WIDTH + 5]


def test_non_responses_get_is_response_from_the_current_responses_either_way(tmp_path):
    def build(lake):
        write_partition(lake, P1, responses(4, WIDTH + 2), T1)
        update_current(lake)
        records = [
            {
                "number_customergauge": n,
                "date_sent": "2026-10-30 10:00:00",
                "properties": [{"field": "f", "value": "v"}],
            }
            for n in (3, 4, WIDTH + 2, 2 * WIDTH)
        ]
        lake.write_table(
            lake.partition_path("raw_non_responses", P1),
            raw_rows(records, fetched_at=T1, cursor_sent=None, sync_pass="cursor"),
        )
        flatten_partition(lake, P1, stream=NON_RESPONSES)

    arrow, duckdb, taken = both_ways(tmp_path, build, NON_RESPONSES_CURRENT)
    assert taken == [True, True, True]
    assert_same(arrow, duckdb)
    flags = dict(
        zip(*(arrow["non_responses"][c].to_pylist() for c in ("number_customergauge", "is_response")), strict=True)
    )
    assert flags == {3: False, 4: True, WIDTH + 2: True, 2 * WIDTH: False}
    assert arrow["non_response_properties"].num_rows == 4


def test_partition_files_are_closed_once_their_ranges_are_written(tmp_path):
    """Sixty partitions, each the sole source of its own range: the Arrow way kept every file it read open
    until the update ended (300 here, a year of hourly partitions 43,800) and failed with "Too many open files"
    where DuckDB's way, which opens a file per query, succeeds."""

    def build(lake):
        for i in range(60):
            partition = f"2026-11-0{1 + i // 24}-{i % 24:02d}:00"
            write_partition(lake, partition, responses(i * WIDTH + 1, i * WIDTH + 2), T1 + timedelta(hours=i))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 100, hard))  # room for a few dozen files at once
    try:
        arrow, duckdb, taken = both_ways(tmp_path, build)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert taken == [True] * 60
    assert_same(arrow, duckdb)
    assert len(arrow["files"]["response_tags"]) == 60 and arrow["response_tags"].num_rows == 240


def test_a_file_arrow_cannot_read_is_left_to_duckdb(tmp_path):
    """The data page of an all-null column (contact_last_name) of the responses file overwritten: DuckDB takes
    the nulls from the column's statistics and reads the file; Arrow reads the page and failed the update
    ("Couldn't deserialize thrift", naming no file)."""

    def build(lake):
        three_ranges(lake)
        path = lake.partition_path("responses", P1)
        metadata = pq.read_metadata(path)
        chunk = metadata.row_group(0).column(metadata.schema.names.index("contact_last_name"))
        assert chunk.statistics.null_count == chunk.num_values  # all null
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data = bytearray(path.read_bytes())
        data[chunk.data_page_offset : start + chunk.total_compressed_size] = b"\xff" * (
            start + chunk.total_compressed_size - chunk.data_page_offset
        )
        path.write_bytes(bytes(data))

    arrow, duckdb, taken = both_ways(tmp_path, build)
    assert taken == [False, False, False]
    assert_same(arrow, duckdb)
    assert arrow["responses"].num_rows == 30 and arrow["responses"]["contact_last_name"].null_count == 30


def test_an_unreadable_key_file_is_named_with_the_fix(tmp_path):
    lake = Lake(tmp_path / "lake")
    three_ranges(lake)
    path = lake.partition_path("responses", P1)
    path.write_bytes(b"not parquet")
    with pytest.raises(LakeError, match=f"^{re.escape(repr(str(path)))} is not a readable Parquet file .*flattened"):
        update_current(lake)
    assert not lake.exists(lake.current_path("responses")) and lake.read_state("current.json") is None
