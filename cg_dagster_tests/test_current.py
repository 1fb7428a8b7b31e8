"""build_current: latest fetch wins, two versions are never mixed, files are matched to the contract by column name;
on a local lake and on ``s3://`` (``lake_root``)."""

import contextlib
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from cg_dagster.lib import current as current_module
from cg_dagster.lib import tables as tables_module
from cg_dagster.lib.current import CURRENT_TABLES, build_current
from cg_dagster.lib.flatten import FLAT_TABLE_NAMES
from cg_dagster.lib.lake import Lake, LakeError
from cg_dagster.lib.schemas import TABLES, Column
from cg_dagster.lib.sync import sync_partition
from cg_dagster.lib.tables import flatten_partition
from cg_dagster_tests._fixtures_flatten import tag, write_partition
from cg_dagster_tests._fixtures_sandbox import expected_current, make_resources, read_current

T1 = datetime(2026, 11, 1, 10, 5, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)


def current(lake: Lake, table: str, *columns: str) -> list[tuple]:
    rows = lake.read_table(lake.current_path(table), columns=list(columns)).to_pylist()
    return [tuple(row[c] for c in columns) for row in rows]


def test_latest_fetch_wins_with_its_own_child_rows(lake_root):
    lake = Lake(lake_root)
    write_partition(lake, "2026-11-01-10:00", [{"number_customergauge": 7, "nps": 1, "tags": [tag("a"), tag("b")]}], T1)
    write_partition(lake, "2026-11-01-11:00", [{"number_customergauge": 7, "nps": 9, "tags": [tag("c")]}], T2)
    assert build_current(lake)["responses"] == 1
    assert current(lake, "responses", "number_customergauge", "nps") == [(7, 9)]
    assert current(lake, "response_tags", "tag_position", "label") == [(0, "c")]


def test_a_response_twice_in_one_fetch_is_never_mixed_and_an_older_clean_version_stays(lake_root):
    # The exact input the breaker found: one page holding number 7 twice with different tags.
    lake = Lake(lake_root)
    write_partition(
        lake,
        "2026-11-01-10:00",
        [{"number_customergauge": 7, "nps": 5, "tags": [tag("old")]}, {"number_customergauge": 8, "nps": 6}],
        T1,
    )
    twice = [
        {"number_customergauge": 7, "nps": 1, "tags": [tag("a")]},
        {"number_customergauge": 7, "nps": 9, "tags": [tag("b"), tag("c")]},
        {"number_customergauge": 9, "nps": 1, "tags": [tag("x")]},
        {"number_customergauge": 9, "nps": 2, "tags": [tag("y")]},
    ]
    write_partition(lake, "2026-11-01-11:00", twice, T2)
    counts = build_current(lake)
    assert current(lake, "responses", "number_customergauge", "nps") == [(7, 5), (8, 6)]  # 9: no clean version
    assert current(lake, "response_tags", "number_customergauge", "label") == [(7, "old")]
    assert counts["responses"] == 2 and counts["response_tags"] == 1


def test_flat_files_rewritten_by_pandas_give_the_same_current_tables(lake_root):
    # pandas writes large strings, an all-null column as type null, and its own footer metadata.
    lake = Lake(lake_root)
    write_partition(lake, "2026-11-01-10:00", [{"number_customergauge": 7, "nps": 3, "tags": [tag("a")]}], T1)
    write_partition(lake, "2026-11-01-11:00", [{"number_customergauge": 8, "date_creation": "2026-01-01 10:00:00"}], T2)
    build_current(lake)
    before = {name: lake.read_table(lake.current_path(name)) for name in CURRENT_TABLES}
    for name in FLAT_TABLE_NAMES:
        for path in lake.partition_files(name):
            pd.read_parquet(str(path)).to_parquet(str(path))  # s3://: through s3fs
    build_current(lake)
    for name in CURRENT_TABLES:
        assert lake.read_table(lake.current_path(name)).equals(before[name]), name


LOYALTY_TIER = Column("loyalty_tier", pa.string(), True, "Loyalty tier (added to the contract).", ("loyalty_tier",))


def _with_loyalty_tier(flatten_raw):
    """flatten_raw as it would be once the flattener fills the new responses column from the record."""

    def flatten(raw, **kwargs):
        flat = flatten_raw(raw, **kwargs)
        tiers = [json.loads(text).get("loyalty_tier") for text in raw.column("record_json").to_pylist()]
        responses = flat.tables["responses"].append_column(LOYALTY_TIER.name, pa.array(tiers, pa.string()))
        return dataclasses.replace(flat, tables={**flat.tables, "responses": responses})

    return flatten


def test_a_column_added_to_the_contract_reads_as_null_from_older_partitions(sandbox, lake_root, monkeypatch):
    lake = Lake(lake_root)
    resource = make_resources(sandbox, lake_root)["customergauge"]
    p1, p2 = "2026-11-01-10:00", "2026-11-01-11:00"
    with contextlib.closing(resource.get_client()) as client:
        sync_partition(client, resource.sync_params(), lake, partition_key=p1, run_id="r1")
        flatten_partition(lake, p1)
        build_current(lake)  # a lake written with today's contract

        responses = TABLES["responses"]
        grown = dataclasses.replace(responses, columns=(*responses.columns, LOYALTY_TIER))
        contract = {**TABLES, "responses": grown}
        for module in (tables_module, current_module):
            monkeypatch.setattr(module, "TABLES", contract)
        monkeypatch.setattr(tables_module, "flatten_raw", _with_loyalty_tier(tables_module.flatten_raw))
        tiers = {}
        for i, record in enumerate(sandbox.append_records(5)):
            tiers[record["number_customergauge"]] = f"tier-{i}"
            sandbox.update_record(record["number_customergauge"], {"loyalty_tier": f"tier-{i}"})
        sync_partition(client, resource.sync_params(), lake, partition_key=p2, run_id="r2")
        flatten_partition(lake, p2)
        counts = build_current(lake)

    current = lake.read_table(lake.current_path("responses"))
    assert current.schema == grown.arrow_schema
    got = dict(zip(current["number_customergauge"].to_pylist(), current["loyalty_tier"].to_pylist(), strict=True))
    assert counts["responses"] == len(got) == 355
    assert {number: tier for number, tier in got.items() if tier is not None} == tiers
    monkeypatch.undo()  # every other column equals the sandbox's records, flattened with today's contract
    rows = read_current(lake)
    for row in rows["responses"]:
        del row["loyalty_tier"]
    assert rows == expected_current(sandbox)


def test_the_same_fetch_in_two_partition_files_is_one_version_not_an_ambiguity(lake_root):
    # The review's input, reduced: a tool copied the 10:00 rows into the 09:00 file (compaction), and a
    # replay kept their fetched_at, so two files hold the same fetch. Counted across files it looked like
    # one page holding the response twice, and the response left current (305 -> 300).
    lake = Lake(lake_root)
    write_partition(
        lake,
        "2026-11-01-09:00",
        [{"number_customergauge": 8, "nps": 6}, {"number_customergauge": 7, "nps": 9, "tags": [tag("c")]}],
        T1,
    )
    write_partition(lake, "2026-11-01-10:00", [{"number_customergauge": 7, "nps": 9, "tags": [tag("c")]}], T1)
    counts = build_current(lake)
    assert current(lake, "responses", "number_customergauge", "nps") == [(7, 9), (8, 6)]
    assert current(lake, "response_tags", "number_customergauge", "label") == [(7, "c")]  # once, not per file
    assert counts["responses"] == 2 and counts["response_tags"] == 1


def test_a_lake_root_duckdb_would_glob_is_refused_naming_the_setting(lake_root):
    # The review's input: a lake at .../lake-* read .../lake-old too (99 rows instead of 50).
    write_partition(Lake(lake_root + "-old"), "2026-11-01-09:00", [{"number_customergauge": 1}], T1)
    for suffix in ("-*", "-?", "-[o]ld"):
        lake = Lake(lake_root + suffix)
        with pytest.raises(LakeError, match=r"DuckDB reads as a glob .*set CG_LAKE_ROOT to a path without"):
            build_current(lake)
        assert not lake.exists(lake.root)  # nothing written
