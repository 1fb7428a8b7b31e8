"""update_current: incremental updates give the same tables as a full rebuild, file for file and cell for cell,
and touch only the ranges that changed; on a local lake and on ``s3://`` (``lake_root``)."""

import contextlib
import datetime as dt
import tempfile

import dagster as dg
import duckdb
import pytest

from cg_dagster.customergauge.assets import CURRENT_KEYS, current_tables
from cg_dagster.lib import current as current_module
from cg_dagster.lib.client import Period
from cg_dagster.lib.current import (
    CURRENT_TABLES,
    RESPONSES_CURRENT,
    build_current,
    range_path,
    update_current,
)
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.sync import sync_partition
from cg_dagster.lib.tables import flatten_partition
from cg_dagster_tests._fixtures_flatten import tag, write_partition
from cg_dagster_tests._fixtures_s3 import copy_lake, write_like_a_tool
from cg_dagster_tests._fixtures_sandbox import assert_current_matches_sandbox, make_resources

WIDTH = 150  # ids per range in these tests: the sandbox's 350 records (ids 3000..4050) span 8 ranges


@pytest.fixture(autouse=True)
def _narrow_ranges(monkeypatch):
    monkeypatch.setattr(current_module, "RANGE_WIDTH", WIDTH)


def snapshot(lake: Lake) -> dict:
    """{table/file name: the file's rows, fetched_at included}, every range file of every current table."""
    return {
        f"{name}/{path.name}": lake.read_table(path).to_pylist()
        for name in CURRENT_TABLES
        for path in lake.files(lake.current_path(name))
    }


def assert_same_as_full_rebuild(lake: Lake, step: str) -> None:
    """The lake's current tables equal a full rebuild of a copy of the lake, file for file, cell for cell. The
    copy of an ``s3://`` lake is local (one download): the incremental updates under test ran on S3, and a full
    rebuild on S3 (test_current.py) at every step of these tests cost minutes of moto requests."""
    with tempfile.TemporaryDirectory() as folder:
        if lake.storage.remote:
            lake.storage.fs.get(lake.root.path + "/", folder + "/", recursive=True)
            copy = Lake(folder)
        else:
            copy = copy_lake(lake, f"{folder}/lake")
        build_current(copy)
        incremental, full = snapshot(lake), snapshot(copy)
    assert sorted(incremental) == sorted(full), step
    for name, rows in full.items():
        assert incremental[name] == rows, (step, name)


def committed_files(lake: Lake, monkeypatch) -> list:
    """The paths of the files ``lake`` writes from now on, as they are committed (every write of a lake file is
    an ``open_atomic`` of its storage)."""
    committed, open_atomic = [], lake.storage.open_atomic

    def recording(target):
        file = open_atomic(target)
        commit = file._commit
        file._commit = lambda: (commit(), committed.append(target))
        return file

    monkeypatch.setattr(lake.storage, "open_atomic", recording)
    return committed


def sync(client, resource, lake: Lake, partition: str, lookback: Period | None = None) -> None:
    sync_partition(client, resource.sync_params(), lake, partition_key=partition, run_id=partition, lookback=lookback)
    flatten_partition(lake, partition)


@pytest.mark.slow
def test_incremental_updates_equal_a_full_rebuild_through_updates_replays_lookback_quarantine_and_duplicates(
    sandbox, lake_root
):
    lake = Lake(lake_root)
    resource = make_resources(sandbox, lake_root)["customergauge"]
    p = [f"2026-11-01-{hour:02d}:00" for hour in range(10, 16)]
    modes = []

    def update(step: str) -> None:
        modes.append(update_current(lake).mode)
        assert_same_as_full_rebuild(lake, step)

    with contextlib.closing(resource.get_client()) as client:
        sync(client, resource, lake, p[0])
        update("initial load")
        numbers = [record["number_customergauge"] for record in sandbox.records()]
        sandbox.append_records(30)
        for number in numbers[-3:]:  # re-sent at the end of the cursor order: a second version
            sandbox.update_record(number, {"nps": 0, "tags": [tag("re-sent")]}, move_to_end=True)
        sync(client, resource, lake, p[1])
        update("incremental sync with updates")
        sandbox.update_record(numbers[5], {"nps": 1, "tags": []})  # changed in place: only a re-read sees it
        sandbox.anonymise_record(numbers[100])
        sync(
            client,
            resource,
            lake,
            p[2],
            lookback=Period("date_survey_response", dt.date(2026, 8, 1), dt.date(2026, 11, 1)),
        )
        update("lookback re-read")
        sandbox.update_record(numbers[-1], {"nps": 4})
        sync(client, resource, lake, p[1])  # replay of an applied partition: rows re-fetched
        update("replay")
        lake.quarantine(p[2], "responses_nps_in_range", {"detail": "test"})
        update("quarantined")
        lake.release(p[2], "responses_nps_in_range")
        update("released")
        sandbox.append_records(5)
        sync(client, resource, lake, p[3])
        update("another sync")
    later = dt.datetime(2026, 11, 1, 23, tzinfo=dt.UTC)
    twice = [
        {"number_customergauge": numbers[7], "nps": 2, "tags": [tag("a")]},
        {"number_customergauge": numbers[7], "nps": 9, "tags": [tag("b")]},
    ]  # one page holding it twice
    write_partition(lake, p[4], twice, later)
    update("a response twice in one page")
    assert modes == ["full rebuild", "merge", "merge", "rebuild", "rebuild", "merge", "merge", "merge"]
    assert_current_matches_sandbox(lake, sandbox)  # the ambiguous fetch left the previous version current
    assert update_current(lake).mode == "unchanged"


@pytest.mark.slow
def test_a_merge_rewrites_only_the_ranges_the_new_partition_touches(sandbox, lake_root, monkeypatch):
    lake = Lake(lake_root)
    resource = make_resources(sandbox, lake_root)["customergauge"]
    with contextlib.closing(resource.get_client()) as client:
        sync(client, resource, lake, "2026-11-01-10:00")
        assert update_current(lake).mode == "full rebuild"
        appended = sandbox.append_records(3)
        sync(client, resource, lake, "2026-11-01-11:00")
    committed = committed_files(lake, monkeypatch)
    update = update_current(lake)

    touched = {number // WIDTH for number in (record["number_customergauge"] for record in appended)}
    assert (update.mode, update.partitions, update.ranges) == ("merge", 1, len(touched))
    rewritten = {path for path in committed if path.parent.parent == lake.root / "current"}
    assert rewritten == {range_path(lake, name, r) for name in CURRENT_TABLES for r in touched}
    assert_current_matches_sandbox(lake, sandbox)


@pytest.mark.slow
def test_an_update_that_died_before_its_record_is_redone_with_the_same_result(sandbox, lake_root, monkeypatch):
    lake = Lake(lake_root)
    resource = make_resources(sandbox, lake_root)["customergauge"]
    with contextlib.closing(resource.get_client()) as client:
        sync(client, resource, lake, "2026-11-01-10:00")
        update_current(lake)
        sandbox.append_records(40)
        sandbox.update_record(sandbox.records()[-50]["number_customergauge"], {"nps": 3}, move_to_end=True)
        sync(client, resource, lake, "2026-11-01-11:00")

    def die(name, data):
        raise OSError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(lake, "write_state", die)
        with pytest.raises(OSError, match="killed"):
            update_current(lake)  # every range file rewritten, the record not: the merge is applied again
    assert update_current(lake).mode == "merge"
    assert_same_as_full_rebuild(lake, "redo")
    assert_current_matches_sandbox(lake, sandbox)


@pytest.mark.slow
def test_range_files_changed_by_hand_or_an_old_layout_lead_to_a_full_rebuild(sandbox, lake_root):
    lake = Lake(lake_root)
    resource = make_resources(sandbox, lake_root)["customergauge"]
    with contextlib.closing(resource.get_client()) as client:
        sync(client, resource, lake, "2026-11-01-10:00")
    old_layout = lake.current_path("responses").with_suffix(".parquet")
    if not lake.storage.remote:
        old_layout.parent.mkdir(parents=True)
    old_layout.write_bytes(b"a current table of the layout before range files")  # by hand (UPath on S3)
    assert update_current(lake).mode == "full rebuild"
    assert not lake.exists(old_layout)
    lake.files(lake.current_path("response_tags"))[0].unlink()
    update = update_current(lake)
    assert update.mode == "full rebuild" and "current/response_tags/" in update.reason
    assert_current_matches_sandbox(lake, sandbox)


def test_a_lake_without_responses_has_one_empty_file_per_table_that_a_glob_reads(lake_root):
    lake = Lake(lake_root)
    write_partition(lake, "2026-11-01-10:00", [], dt.datetime(2026, 11, 1, 10, 5, tzinfo=dt.UTC))
    assert update_current(lake).rows == dict.fromkeys(CURRENT_TABLES, 0)
    for name in CURRENT_TABLES:
        assert [path.name for path in lake.files(lake.current_path(name), "")] == ["0000000000000000000.parquet"]
        with duckdb.connect() as con, lake.registered(con):
            assert con.sql(f"select count(*) from '{lake.current_path(name)}/*.parquet'").fetchall() == [(0,)]
    write_partition(
        lake,
        "2026-11-01-11:00",
        [{"number_customergauge": 12_345, "nps": 7}],
        dt.datetime(2026, 11, 1, 11, 5, tzinfo=dt.UTC),
    )
    assert update_current(lake).mode == "merge"
    assert lake.files(lake.current_path("response_tags"), "") == [range_path(lake, "response_tags", 12_345 // WIDTH)]
    assert_same_as_full_rebuild(lake, "first response")


@pytest.mark.slow
def test_full_rebuild_run_config_of_the_current_tables(sandbox, lake_root):
    lake = Lake(lake_root)
    resource = make_resources(sandbox, lake_root)["customergauge"]
    with contextlib.closing(resource.get_client()) as client:
        sync(client, resource, lake, "2026-11-01-10:00")
    update_current(lake)
    state = lake.storage.read_bytes(lake.root / "_state" / RESPONSES_CURRENT.state_file)
    with dg.instance_for_test() as instance:
        for config, mode in (({}, "unchanged"), ({"full_rebuild": True}, "full rebuild")):
            result = dg.materialize(
                [current_tables],
                instance=instance,
                resources=make_resources(sandbox, lake_root),
                run_config={"ops": {"current_tables": {"config": config}}},
            )
            [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == CURRENT_KEYS["responses"]]
            metadata = mat.materialization.metadata
            assert (metadata["update_mode"].value, metadata["dagster/row_count"].value) == (mode, 350)
    same = lake.storage.read_bytes(lake.root / "_state" / RESPONSES_CURRENT.state_file) == state
    assert same  # the same record: same files, same counts
    assert_current_matches_sandbox(lake, sandbox)


def test_a_partition_file_without_parquet_statistics_is_merged_by_its_ids(lake_root):
    lake = Lake(lake_root)
    fetched = dt.datetime(2026, 11, 1, 10, 5, tzinfo=dt.UTC)
    write_partition(lake, "2026-11-01-10:00", [{"number_customergauge": n, "nps": 1} for n in (10, 20, 30)], fetched)
    update_current(lake)
    write_partition(
        lake,
        "2026-11-01-11:00",
        [{"number_customergauge": n, "nps": 2} for n in (5, 1_000)],
        fetched + dt.timedelta(hours=1),
    )
    path = lake.partition_path("responses", "2026-11-01-11:00")
    write_like_a_tool(lake, path, lake.read_table(path), write_statistics=False)  # as some writers leave it
    update = update_current(lake)
    assert (update.mode, update.ranges) == ("merge", 2)  # ranges 0 and 6, not the 5 between them
    assert [name.split("/")[1] for name in snapshot(lake) if name.startswith("responses/")] == [
        range_path(lake, "responses", r).name for r in (0, 1_000 // WIDTH)
    ]
    assert_same_as_full_rebuild(lake, "no statistics")


@pytest.mark.slow
def test_another_range_width_rebuilds_everything_into_the_new_ranges(sandbox, lake_root, monkeypatch):
    lake = Lake(lake_root)
    resource = make_resources(sandbox, lake_root)["customergauge"]
    with contextlib.closing(resource.get_client()) as client:
        sync(client, resource, lake, "2026-11-01-10:00")
    update_current(lake)
    monkeypatch.setattr(current_module, "RANGE_WIDTH", 100)  # a release with another width: files 0..149 -> 0..99
    update = update_current(lake)
    assert update.mode == "full rebuild" and "another layout (range width 150)" in update.reason
    ids = {record["number_customergauge"] // 100 * 100 for record in sandbox.records()}
    for name in CURRENT_TABLES:
        assert {int(path.stem) for path in lake.files(lake.current_path(name), "")} == ids, name
    assert_same_as_full_rebuild(lake, "new width")
    assert_current_matches_sandbox(lake, sandbox)  # no response twice: no file of the old width is left


def test_a_partition_whose_ids_lie_far_apart_rewrites_only_the_ranges_of_its_ids(lake_root):
    lake = Lake(lake_root)
    fetched = dt.datetime(2026, 11, 1, 10, 5, tzinfo=dt.UTC)
    write_partition(lake, "2026-11-01-10:00", [{"number_customergauge": n, "nps": 1} for n in (10, 20)], fetched)
    update_current(lake)
    far = 20 * WIDTH + 3  # a late answer with an id far from the others: statistics span 21 ranges
    records = [{"number_customergauge": n, "nps": 2} for n in (5, far)]
    write_partition(lake, "2026-11-01-11:00", records, fetched + dt.timedelta(hours=1))
    update = update_current(lake)
    assert (update.mode, update.ranges) == ("merge", 2)  # ranges 0 and 20, not the 19 between them
    assert_same_as_full_rebuild(lake, "ids far apart")
