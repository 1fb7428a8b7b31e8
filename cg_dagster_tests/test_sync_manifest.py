"""The sync's commit protocol around the manifest (lib/sync.py): data file, then sidecar, then head.

A crash between any two steps leaves a state the next sync completes; a deleted data file with rows is
refused rather than rebuilt with fewer.
"""

import contextlib
import re
from datetime import timedelta

import dagster as dg
import pyarrow as pa
import pytest

from cg_dagster.customergauge.keys import CURRENT_KEYS
from cg_dagster.lib import sync as sync_module
from cg_dagster.lib.lake import Lake, LakeError
from cg_dagster.lib.sync import sync_partition
from cg_dagster.lib.tables import flatten_partition, stale_partitions
from cg_dagster_tests._fixtures_runs import numbers, raw_numbers, run
from cg_dagster_tests._fixtures_s3 import write_like_a_tool
from cg_dagster_tests._fixtures_sandbox import assert_current_matches_sandbox, make_resources

P0, P1, P2, P3 = "2026-11-01-09:00", "2026-11-01-10:00", "2026-11-01-11:00", "2026-11-01-12:00"


@pytest.fixture
def synced(sandbox, lake_root):
    """(lake, sync) after P1 synced the sandbox's 350 responses; ``sync(partition)`` syncs one more partition,
    through a ``Lake`` of its own as a run does (on S3 a lake's writes are conditional on what it saw)."""
    lake = Lake(lake_root)
    resource = make_resources(sandbox, lake_root)["customergauge"]
    with contextlib.closing(resource.get_client()) as client:

        def sync(partition: str, **kwargs):
            params = resource.sync_params()
            return sync_partition(client, params, Lake(lake_root), partition_key=partition, run_id=partition, **kwargs)

        sync(P1)
        yield lake, sync


@pytest.mark.parametrize("dies_at", ["write_manifest", "write_head"])
def test_a_sync_that_died_after_its_data_rename_is_completed_by_the_next_sync(synced, sandbox, monkeypatch, dies_at):
    lake, sync = synced
    head = lake.read_head()
    appended = numbers(sandbox.append_records(40))

    def killed(*args):
        raise SystemExit("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Lake, dies_at, killed)
        with pytest.raises(SystemExit):
            sync(P2)
    p2 = lake.partition_path("raw_responses", P2)
    assert lake.read_head() == head and raw_numbers(lake, P2) == appended
    assert lake.manifest_path(p2).exists() == (dies_at == "write_head")
    result = sync(P3)
    assert result.head_before.partition_key == P2 and result.head_before.cursor == sandbox.last_cursor
    assert raw_numbers(lake, P3) == []  # the 40 were not fetched again
    assert lake.manifest_path(p2).exists()  # completed from the footer
    assert lake.read_manifest(p2).cursor_end == sandbox.last_cursor


def test_a_deleted_raw_file_with_rows_is_refused_and_an_empty_one_is_written_again(synced, sandbox):
    lake, sync = synced
    sandbox.append_records(40)
    sync(P2)
    p1 = lake.partition_path("raw_responses", P1)
    p1.unlink()  # a replay cannot rebuild it exactly: its range's last page now reaches past the range
    with pytest.raises(LakeError, match="full_refresh: true") as info:
        sync(P1)
    assert f"{str(p1)!r} was deleted, but its manifest" in str(info.value) and "held 350 rows" in str(info.value)
    assert not p1.exists()
    p0 = lake.partition_path("raw_responses", P0)
    assert sync(P0).manifest.mode == "skipped"
    p0.unlink()
    assert sync(P0).manifest.mode == "skipped" and raw_numbers(lake, P0) == []


@pytest.mark.slow
def test_a_partition_whose_flattening_never_ran_is_flattened_by_the_next_current_update(sandbox, lake_root):
    # The adversarial review's input: a run killed after its raw commit, before the flattening; the run of
    # the next partition succeeded, and the killed partition's responses never reached current (305 -> 300).
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root)
    with dg.DagsterInstance.ephemeral() as instance:
        run(instance, resources, P1)
        appended = numbers(sandbox.append_records(5))
        with contextlib.closing(resources["customergauge"].get_client()) as client:
            sync_partition(client, resources["customergauge"].sync_params(), lake, partition_key=P2, run_id="killed")
        assert stale_partitions(lake) == [P2]  # no flattened files: the run died before the flattening
        result = run(instance, resources, P3)
    [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == CURRENT_KEYS["responses"]]
    assert mat.materialization.metadata["reflattened"].value == [P2]
    assert stale_partitions(lake) == []
    assert lake.read_table(lake.partition_path("responses", P2))["number_customergauge"].to_pylist() == appended
    assert_current_matches_sandbox(lake, sandbox)  # all 355, the 5 of P2 included


def test_a_raw_file_rewritten_after_its_flattening_is_stale(synced):
    # On S3 the rewrite lands in the flattening's second (LastModified has whole seconds): once unseen
    lake, _ = synced
    flatten_partition(lake, P1)
    assert stale_partitions(lake) == []
    raw = lake.partition_path("raw_responses", P1)
    write_like_a_tool(lake, raw, lake.read_table(raw))  # a tool rewrote it after the flattening
    assert stale_partitions(lake) == [P1]


@pytest.mark.parametrize("victim", [P1, P2], ids=["older", "head"])
def test_a_raw_file_deleted_with_its_manifest_is_refused_while_its_responses_hold_rows(synced, sandbox, victim):
    # The review's input: raw file and sidecar deleted, then the partition materialized again: it was written
    # empty (skipped, or a forward sync of 0 rows for the head's partition) and flattened over 350 responses.
    lake, sync = synced
    sandbox.append_records(5)
    sync(P2)
    for partition in (P1, P2):
        flatten_partition(lake, partition)
    raw = lake.partition_path("raw_responses", victim)
    raw.unlink()
    lake.manifest_path(raw).unlink()
    held = lake.parquet_file(lake.partition_path("responses", victim)).metadata.num_rows
    with pytest.raises(LakeError) as info:
        sync(victim)
    assert str(info.value).startswith(f"{str(raw)!r} is missing and has no sync manifest")
    assert f"holds {held} responses flattened from it" in str(info.value) and "full_refresh: true" in str(info.value)
    assert not raw.exists() and lake.parquet_file(lake.partition_path("responses", victim)).metadata.num_rows == held
    # the advice works: a full refresh loads everything into the partition, which is then flattened
    assert sync(victim, full_refresh=True).manifest.rows == 355
    assert flatten_partition(lake, victim).rows["responses"] == 355


def test_flattening_a_raw_file_emptied_by_hand_replaces_nothing(synced):
    lake, _ = synced
    flatten_partition(lake, P1)
    raw = lake.partition_path("raw_responses", P1)
    write_like_a_tool(lake, raw, lake.read_table(raw).slice(0, 0))  # emptied by a tool; the sidecar still says 350 rows
    responses = lake.partition_path("responses", P1)
    with pytest.raises(LakeError, match=f"^{re.escape(repr(str(raw)))} holds 0 rows but .* holds 350 flattened"):
        flatten_partition(lake, P1)
    assert lake.parquet_file(responses).metadata.num_rows == 350


@pytest.mark.parametrize("damage", ["truncated", "zero bytes"])
def test_an_unreadable_raw_file_is_named_and_a_full_refresh_replaces_it(synced, sandbox, damage):
    lake, sync = synced
    sandbox.append_records(5)
    sync(P2)
    raw = lake.partition_path("raw_responses", P1)
    raw.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2] if damage == "truncated" else b"")
    with pytest.raises(
        LakeError, match=f"^{re.escape(repr(str(raw)))} is not a readable Parquet file .*full_refresh: true"
    ):
        sync(P1)
    with pytest.raises(LakeError, match=f"^{re.escape(repr(str(raw)))} is not a readable Parquet file"):
        flatten_partition(lake, P1)
    assert sync(P1, full_refresh=True).manifest.rows == 355  # the advice, followed
    assert len(raw_numbers(lake, P1)) == 355


def test_an_unreadable_raw_file_without_a_sidecar_does_not_stop_the_other_partitions(synced, sandbox, caplog):
    lake, sync = synced
    raw = lake.partition_path("raw_responses", P1)
    raw.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    lake.manifest_path(raw).unlink()  # the sidecar back-fill reads every sidecar-less footer
    appended = numbers(sandbox.append_records(2))
    with caplog.at_level("WARNING", logger="cg_dagster.sync"):
        sync(P2)
    assert raw_numbers(lake, P2) == appended
    assert f"passed over: {str(raw)!r} is not a readable Parquet file" in caplog.text


def test_a_corrupt_cursor_file_is_replaced_by_the_full_refresh_its_error_advises(synced, sandbox):
    lake, sync = synced
    head_file = lake.root / "_state" / "raw_responses.cursor.json"
    head_file.write_text("{garbage")
    with pytest.raises(LakeError, match="is corrupt .*run raw_responses with full_refresh: true") as info:
        sync(P2)
    result = sync(P2, full_refresh=True)  # before: failed with the same error
    assert result.head_before is None and result.manifest.rows == 350
    assert lake.read_head().cursor == sandbox.last_cursor and str(head_file) in str(info.value)


def test_a_corrupt_sidecar_of_a_rewritten_raw_file_is_replaced_by_a_full_refresh(synced, sandbox):
    lake, sync = synced
    sandbox.append_records(5)
    sync(P2)
    raw = lake.partition_path("raw_responses", P1)
    write_like_a_tool(lake, raw, lake.read_table(raw).replace_schema_metadata(None))  # a tool dropped the footer
    lake.manifest_path(raw).write_text("{bad")
    with pytest.raises(LakeError, match="sync manifest in .* is corrupt .*full_refresh: true"):
        sync(P1)
    assert sync(P1, full_refresh=True).manifest.rows == 355
    assert lake.read_manifest(raw).full_refresh
    appended = numbers(sandbox.append_records(3))
    assert sync(P3).manifest.rows == 3 and raw_numbers(lake, P3) == appended  # syncs go on from the new head


def test_a_head_file_deleted_after_a_replay_rolls_forward_to_the_replayed_range(synced, sandbox):
    lake, sync = synced
    sandbox.append_records(40)
    end = sync(P2).manifest.cursor_end
    assert sync(P2).manifest.mode == "replay"
    (lake.root / "_state" / "raw_responses.cursor.json").unlink()
    result = sync(P3)
    assert result.head_before.cursor == end and result.head_before.partition_key == P2  # before: P1's cursor
    assert raw_numbers(lake, P3) == []  # P2's 40 not fetched again


def test_a_raw_file_whose_sync_pass_is_not_a_pass_is_named(synced):
    lake, sync = synced
    raw = lake.partition_path("raw_responses", P1)
    table = lake.read_table(raw)
    column = table.schema.get_field_index("sync_pass")
    table = table.set_column(column, "sync_pass", pa.nulls(table.num_rows, pa.string()))
    write_like_a_tool(lake, raw, table.replace_schema_metadata(None))  # before: KeyError: None
    with pytest.raises(LakeError, match=f"^{re.escape(repr(str(raw)))} holds rows whose sync_pass is None, not"):
        sync(P1)


def test_fetched_at_never_goes_back_when_the_host_clock_does(synced, sandbox, monkeypatch):
    # The review's input: the host clock stepped back an hour (VM restore, NTP) before a re-read that brought
    # an anonymised response; the older fetch won in current.
    lake, sync = synced
    first = max(lake.read_table(lake.partition_path("raw_responses", P1))["fetched_at"].to_pylist())
    real = sync_module.utc_now
    monkeypatch.setattr(sync_module, "utc_now", lambda: real() - timedelta(hours=1))
    sandbox.append_records(3)
    sync(P2)
    second = lake.read_table(lake.partition_path("raw_responses", P2))["fetched_at"].to_pylist()
    assert min(second) > first
    assert sorted(second) == second and len(set(second)) == 1  # one page, one fetched_at
    assert lake.read_state("fetched_at.json") == {"fetched_at": max(second).isoformat()}
