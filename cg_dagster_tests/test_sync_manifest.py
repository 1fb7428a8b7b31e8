"""The sync's commit protocol around the manifest (lib/sync.py): data file, then sidecar, then head.

A crash between any two steps leaves a state the next sync completes; a deleted data file with rows is
refused rather than rebuilt with fewer.
"""

import contextlib

import pytest

from cg_dagster.lib.lake import Lake, LakeError
from cg_dagster.lib.sync import sync_partition
from cg_dagster_tests._fixtures_runs import numbers, raw_numbers
from cg_dagster_tests.conftest import make_resources

P0, P1, P2, P3 = "2026-11-01-09:00", "2026-11-01-10:00", "2026-11-01-11:00", "2026-11-01-12:00"


@pytest.fixture
def synced(sandbox, tmp_path):
    """(lake, sync) after P1 synced the sandbox's 350 responses; ``sync(partition)`` syncs one more partition."""
    lake = Lake(tmp_path / "lake")
    resource = make_resources(sandbox, lake.root)["customergauge"]
    with contextlib.closing(resource.get_client()) as client:

        def sync(partition: str, **kwargs):
            params = resource.sync_params()
            return sync_partition(client, params, lake, partition_key=partition, run_id=partition, **kwargs)

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
