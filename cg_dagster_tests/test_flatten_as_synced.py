"""Flattening while syncing (lib/tables.py ``FlattenAsSynced``): the files it publishes are those flattening the
raw file gives, it never publishes the rows of a raw file that is no longer there, and whatever it could not
do is done by reading the raw file, with the same errors."""

import logging

import dagster as dg
import pyarrow.parquet as pq
import pytest

import cg_dagster.lib.sync as sync_module
import cg_dagster.lib.tables as tables_module
from cg_dagster.customergauge.assets import raw_responses
from cg_dagster.customergauge.keys import FLAT_KEYS, RAW_KEY
from cg_dagster.lib.flatten import FLAT_TABLE_NAMES, FlattenError
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.storage import PreconditionFailed
from cg_dagster.lib.tables import FlattenAsSynced, flatten_partition
from cg_dagster_tests._fixtures_flatten import P, sandbox_records, write_raw
from cg_dagster_tests._fixtures_runs import NO_LOOKBACK, assert_current_matches_sandbox, run
from cg_dagster_tests._fixtures_sandbox import make_resources
from cg_dagster_tests._fixtures_sync import PageSource, sync


@pytest.fixture(autouse=True)
def small_groups(monkeypatch):
    """Raw row groups of 25 rows cut into batches of 10, at most 2 waiting: every boundary and the wait happen."""
    monkeypatch.setattr(sync_module, "RAW_ROW_GROUP_ROWS", 25)
    monkeypatch.setattr(tables_module, "RAW_BATCH_ROWS", 10)
    monkeypatch.setattr(tables_module, "FLATTEN_AHEAD_BATCHES", 2)


def no_reading_back(monkeypatch):
    """Make flattening from the raw file fail, so a test sees the files were flattened along the sync."""

    def refuse(*args, **kwargs):
        raise AssertionError("the raw file was flattened again")

    monkeypatch.setattr(tables_module, "_flatten", refuse)


def flat_tables(lake: Lake) -> dict:
    return {name: lake.read_table(lake.partition_path(name, P)) for name in FLAT_TABLE_NAMES}


def flattened_from(lake: Lake, name: str) -> str:
    """The raw version the footer of ``name``'s file of P says it was flattened from."""
    return tables_module._flattened_from(lake.partition_path(name, P))


def sync_along(source, lake: Lake) -> tuple:
    """Sync partition P from ``source`` flattening along, publish; (files, what flatten_partition returned)."""
    with FlattenAsSynced(lake, P) as along:
        sync(source, lake, P, flattening=along)
        done = flatten_partition(lake, P, along=along)
    return flat_tables(lake), done


@pytest.mark.parametrize("replay", [False, True], ids=["sync", "replay"])
def test_the_files_flattened_along_equal_flattening_the_raw_file(tmp_path, monkeypatch, replay):
    lake = Lake(tmp_path)
    source = PageSource(sandbox_records(203))  # both renderings and odd records; 21 pages, 9 row groups
    if replay:
        sync(source, lake, P)
    with monkeypatch.context() as patched:
        no_reading_back(patched)
        along, done_along = sync_along(source, lake)
    version = lake.look(lake.partition_path("raw_responses", P))
    assert {name: flattened_from(lake, name) for name in FLAT_TABLE_NAMES} == dict.fromkeys(FLAT_TABLE_NAMES, version)
    footers = {name: pq.read_metadata(lake.partition_path(name, P)).metadata for name in FLAT_TABLE_NAMES}
    done = flatten_partition(lake, P)  # from the raw file
    assert flat_tables(lake) == along and along["responses"].num_rows == 203
    # the whole footer: the provenance key, and the Arrow schema stored in it (without that key either way)
    assert {name: pq.read_metadata(lake.partition_path(name, P)).metadata for name in FLAT_TABLE_NAMES} == footers
    assert done_along.rows == done.rows and (done_along.along_sync, done.along_sync) == (True, False)
    assert done_along.stats.counters() == done.stats.counters() and done_along.stats.unknown_fields
    assert done_along.stats.unknown_fields == done.stats.unknown_fields
    keys_along, keys = done_along.facts.responses_keys(), done.facts.responses_keys()
    assert [a.tolist() for a in keys_along] == [a.tolist() for a in keys]
    assert done_along.facts.nps_out_of_range == done.facts.nps_out_of_range
    for name in FLAT_TABLE_NAMES[1:]:
        assert done_along.facts.orphans(name).to_pylist() == done.facts.orphans(name).to_pylist()


def test_a_raw_file_replaced_after_the_sync_is_flattened_from_the_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cg_dagster.tables")
    lake = Lake(tmp_path)
    records = sandbox_records(60)
    with FlattenAsSynced(lake, P) as along:
        sync(PageSource(records[:50]), lake, P, flattening=along)
        write_raw(lake, records)  # a replay committed meanwhile, with ten more responses
        done = flatten_partition(lake, P, along=along)
    assert done.rows["responses"] == 60 == flat_tables(lake)["responses"].num_rows and not done.along_sync
    assert "flattening it from the file (replaced since the sync)" in caplog.text
    assert list((tmp_path / "_tmp").iterdir()) == []


def test_a_record_that_cannot_be_flattened_fails_as_flattening_the_file_does(tmp_path):
    lake = Lake(tmp_path)
    records = sandbox_records(40)
    records[33] = {"number_customergauge": 9_999, "tags": "x"}  # row 33: a segment that is not a list
    with FlattenAsSynced(lake, P) as along:
        sync(PageSource(records), lake, P, flattening=along)
        message = "raw_responses file 2026-11-01-1000.parquet, rows 30..39: record number_customergauge=9999: .tags."
        with pytest.raises(FlattenError, match=message):
            flatten_partition(lake, P, along=along)
    assert not lake.exists(lake.partition_path("responses", P))
    assert list((tmp_path / "_tmp").iterdir()) == []


def test_a_failed_sync_leaves_no_temporary_file(tmp_path):
    class Failing(PageSource):
        def iter_pages(self, params, cursor=None):
            for number, page in enumerate(super().iter_pages(params, cursor)):
                if number == 4:
                    raise OSError("connection reset")
                yield page

    lake = Lake(tmp_path)
    with pytest.raises(OSError, match="connection reset"), FlattenAsSynced(lake, P) as along:
        sync(Failing(sandbox_records(100)), lake, P, flattening=along)
    assert along.version is None
    assert not lake.exists(lake.partition_path("raw_responses", P))
    assert list((tmp_path / "_tmp").iterdir()) == []


@pytest.mark.slow
def test_on_object_storage_a_flattening_published_before_the_lease_is_no_lost_lease(s3_root, monkeypatch):
    """Another run flattens the partition between this sync's commit and its publish: this run's writers were
    opened before that, yet it publishes (``fence`` under the lease), the other run's files replaced by its own."""
    lake = Lake(s3_root)
    with FlattenAsSynced(lake, P) as along:
        sync(PageSource(sandbox_records(60)), lake, P, flattening=along)
        flatten_partition(Lake(s3_root), P)  # the other run
        with monkeypatch.context() as patched:
            no_reading_back(patched)
            done = flatten_partition(lake, P, along=along)
    assert done.rows["responses"] == 60
    assert flattened_from(lake, "responses") == lake.look(lake.partition_path("raw_responses", P))


@pytest.mark.slow
def test_on_object_storage_a_fenced_writer_still_loses_to_a_later_write(s3_root):
    lake = Lake(s3_root)
    target = lake.partition_path("responses", P)
    table = flat_tables_of_one(lake)
    with lake.parquet_writer(target, table.schema) as writer:
        writer.write(table)
        Lake(s3_root).write_table(target, table)  # before the fence: taken into account
        writer.fence()
        Lake(s3_root).write_table(target, table.slice(0, 1))  # after it: this writer lost
        with pytest.raises(PreconditionFailed):
            writer.commit()
    assert lake.read_table(target).num_rows == 1


def flat_tables_of_one(lake: Lake):
    write_raw(lake, sandbox_records(5))
    flatten_partition(lake, P)
    return lake.read_table(lake.partition_path("responses", P))


def test_a_run_of_the_group_flattens_along_the_sync(sandbox, tmp_path, monkeypatch):
    lake = Lake(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        with monkeypatch.context() as patched:
            no_reading_back(patched)
            assert run(instance, make_resources(sandbox, lake.root), "2026-11-01-10:00").success
        along = {key: instance.get_latest_materialization_event(key) for key in FLAT_KEYS.values()}
        resources = make_resources(sandbox, lake.root)
        flat_only = dg.materialize(
            [raw_responses], selection=list(FLAT_KEYS.values()), instance=instance, resources=resources, partition_key=P
        )
        from_file = {key: instance.get_latest_materialization_event(key) for key in FLAT_KEYS.values()}
    assert_current_matches_sandbox(lake, sandbox)
    # each flattened table's materialization says which way its file was made
    for key in FLAT_KEYS.values():
        assert along[key].asset_materialization.metadata["flattened_along_sync"].value is True
        assert from_file[key].run_id == flat_only.run_id
        assert from_file[key].asset_materialization.metadata["flattened_along_sync"].value is False


def test_the_raw_asset_alone_syncs_without_flattening(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_responses],
            selection=[RAW_KEY],
            instance=instance,
            resources=make_resources(sandbox, lake.root),
            partition_key=P,
            run_config=NO_LOOKBACK,
        )
    assert {event.asset_key for event in result.get_asset_materialization_events()} == {RAW_KEY}
    assert lake.exists(lake.partition_path("raw_responses", P))
    assert not any(lake.exists(lake.partition_path(name, P)) for name in FLAT_TABLE_NAMES)


def test_some_flattened_tables_without_the_others_are_refused_naming_them(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_responses],
            selection=[RAW_KEY, FLAT_KEYS["response_drivers"]],
            instance=instance,
            resources=make_resources(sandbox, lake.root),
            partition_key=P,
            run_config=NO_LOOKBACK,
            raise_on_error=False,
        )
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.event_specific_data.error.message
    assert "customergauge/response_drivers selected without the other tables flattened from raw_responses" in message
    assert "select all of customergauge/responses, customergauge/response_drivers" in message
    assert not lake.exists(lake.partition_path("raw_responses", P))


def test_a_flattening_along_is_published_only_through_its_own_lake(tmp_path):
    """Its writers check the leases of the Lake they were opened through: another Lake object's flattening
    lease would not guard them."""
    with FlattenAsSynced(Lake(tmp_path), P) as along:
        sync(PageSource(sandbox_records(20)), along.lake, P, flattening=along)
        with pytest.raises(ValueError, match="another Lake"):
            flatten_partition(Lake(tmp_path), P, along=along)


def test_a_skipped_partition_is_flattened_from_its_empty_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cg_dagster.tables")
    lake = Lake(tmp_path)
    source = PageSource(sandbox_records(20))
    sync(source, lake, "2026-11-01-11:00")
    with FlattenAsSynced(lake, P) as along:
        assert sync(source, lake, P, flattening=along).manifest.mode == "skipped"
        done = flatten_partition(lake, P, along=along)
    assert done.rows == dict.fromkeys(FLAT_TABLE_NAMES, 0)
    assert "flattening it from the file (the sync committed no rows through it)" in caplog.text


def test_nothing_is_written_before_the_sync_writes_rows(tmp_path):
    """A step whose sync fails before its first page (a setting refused, the API down) leaves the lake as it was:
    the flat tables' temporary files are opened with the first rows."""
    with FlattenAsSynced(Lake(tmp_path / "lake"), P) as along:
        assert along.publish("any version") is None
    assert not (tmp_path / "lake").exists()


def test_a_check_executed_alone_is_refused_naming_what_to_materialize(sandbox, tmp_path):
    """The UI's Execute on one check of a partition selects that check and no asset of the step (found by a
    review: the step then flattened the raw file and failed on the outputs nobody selected). A check is judged
    while its tables are written, so the run fails, naming the tables to materialize, and writes nothing."""
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        assert run(instance, resources, P).success
        before = {name: lake.look(lake.partition_path(name, P)) for name in FLAT_TABLE_NAMES}
        nps_check = next(key for key in raw_responses.check_keys if key.name.endswith("nps_in_range"))
        job = dg.Definitions(
            assets=[raw_responses], resources=resources, jobs=[dg.define_asset_job("checks_only")]
        ).resolve_job_def("checks_only")
        subset = job.get_subset(asset_selection=set(), asset_check_selection={nps_check})
        result = subset.execute_in_process(
            instance=instance, tags={"dagster/partition": P}, run_config=NO_LOOKBACK, raise_on_error=False
        )
    [failure] = result.get_step_failure_events()
    message = failure.event_specific_data.error.message
    assert "the checks of the tables flattened from raw_responses are judged while they are written" in message
    assert "materialize customergauge/responses, customergauge/response_drivers" in message
    assert result.get_asset_materialization_events() == []
    assert {name: lake.look(lake.partition_path(name, P)) for name in FLAT_TABLE_NAMES} == before
