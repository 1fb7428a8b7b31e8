"""The lake (lib/lake.py) alone: stray temporary files, sync manifests (sidecar and footer), atomic writes, the
head cursor file, quarantine markers, the layout, the roots it refuses, the head's compare-and-set, the commit
lock and state files."""

import dataclasses
import datetime as dt
import fcntl
import json
import os
import re
import time

import pyarrow.parquet as pq
import pytest

from cg_dagster.lib import lake as lake_module
from cg_dagster.lib.flatten import raw_rows
from cg_dagster.lib.lake import (
    MANIFEST_FOOTER_KEY,
    CursorConflictError,
    HeadCursor,
    Lake,
    LakeError,
    SyncManifest,
    partition_file_stem,
    partition_key_of,
    read_parquet_metadata,
)
from cg_dagster.lib.storage import lake_identity

T = dt.datetime(2026, 11, 1, 10, 5, tzinfo=dt.UTC)


def test_sweep_tmp_removes_only_files_a_day_old(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.ensure_writable()
    tmp = lake.root / "_tmp"
    stale = tmp / "raw_responses__2026-11-01-1000.parquet.0123.tmp"  # the name a killed sync leaves
    fresh = tmp / "responses__2026-11-01-1000.parquet.4567.tmp"  # a write in progress
    for path in (stale, fresh):
        path.write_bytes(b"PAR1")
    two_days_ago = time.time() - 2 * 86_400
    os.utime(stale, (two_days_ago, two_days_ago))
    assert lake.sweep_tmp() == [stale.name]
    assert sorted(p.name for p in tmp.iterdir()) == [fresh.name]
    assert Lake(tmp_path / "never-written").sweep_tmp() == []


# ---- sync manifests: one read/write pair, sidecar and footer ------------------------------------------------

P = "2026-11-01-10:00"
MANIFEST = SyncManifest(
    mode="sync", partition_key=P, run_id="run-1", cursor_start=None, cursor_end=350, pages=4, rows=350,
    per_page=100, with_=("drivers", "tags"), filter=None,
)  # fmt: skip
# A footer exactly as the code before sidecars wrote it (json.dumps(asdict(SyncRecord), sort_keys=True)).
OLD_FOOTER = (
    b'{"cursor_end": 350, "cursor_start": null, "filter": null, "full_refresh": false, "kept_rows": 0, '
    b'"lookback": null, "lookback_pages": 0, "lookback_rows": 0, "mode": "sync", "pages": 4, '
    b'"partition_key": "2026-11-01-10:00", "per_page": 100, "reason": null, "rows": 350, "run_id": "run-1", '
    b'"with_": ["drivers", "tags"]}'
)


def _raw_file(lake: Lake, footer: dict[bytes, bytes] | None = None):
    path = lake.partition_path("raw_responses", P)
    rows = raw_rows([{"number_customergauge": 1}], fetched_at=T, cursor_sent=None, sync_pass="cursor")
    lake.write_table(path, rows, footer)
    return path


def test_manifest_written_as_sidecar_reads_back_equal_and_survives_a_rewrite(tmp_path):
    lake = Lake(tmp_path / "lake")
    path = _raw_file(lake, MANIFEST.footer())
    lake.write_manifest(path, MANIFEST)
    sidecar = lake.root / "_state" / "manifests" / "raw_responses" / "2026-11-01-1000.json"
    assert lake.manifest_path(path) == sidecar and json.loads(sidecar.read_text())["cursor_end"] == 350
    assert lake.read_manifest(path) == MANIFEST
    pq.write_table(pq.read_table(path).replace_schema_metadata(), path)  # a rewrite that drops the footer
    assert MANIFEST_FOOTER_KEY not in pq.read_metadata(path).metadata
    assert lake.read_manifest(path) == MANIFEST
    path.unlink()  # the data file deleted: its range is still known
    assert lake.read_manifest(path) == MANIFEST


def test_a_footer_written_before_sidecars_reads_as_the_manifest(tmp_path):
    lake = Lake(tmp_path / "lake")
    path = _raw_file(lake, {MANIFEST_FOOTER_KEY: OLD_FOOTER})
    assert lake.read_manifest(path) == MANIFEST
    assert not lake.manifest_path(path).exists()


def test_a_footer_that_differs_from_the_sidecar_wins(tmp_path):
    # A replay died after its data rename, before its sidecar write: the footer describes the rows.
    lake = Lake(tmp_path / "lake")
    replayed = dataclasses.replace(MANIFEST, mode="replay", run_id="run-2", kept_rows=1)
    path = _raw_file(lake, replayed.footer())
    lake.write_manifest(path, MANIFEST)
    assert lake.read_manifest(path) == replayed


def test_no_manifest_anywhere_reads_as_none(tmp_path):
    lake = Lake(tmp_path / "lake")
    assert lake.read_manifest(lake.partition_path("raw_responses", P)) is None
    assert lake.read_manifest(_raw_file(lake)) is None


@pytest.mark.parametrize("where", ["sidecar", "footer"])
def test_a_corrupt_manifest_is_a_lake_error_naming_its_place_and_the_fix(tmp_path, where):
    lake = Lake(tmp_path / "lake")
    if where == "footer":
        path = _raw_file(lake, {MANIFEST_FOOTER_KEY: b'{"mode": "sync"}'})
        place = f"the footer of {str(path)!r}"
    else:
        path = _raw_file(lake)
        lake.manifest_path(path).parent.mkdir(parents=True)
        lake.manifest_path(path).write_text("{not json")
        place = repr(str(lake.manifest_path(path)))
    with pytest.raises(LakeError, match="full_refresh: true") as info:
        lake.read_manifest(path)
    assert f"the sync manifest in {place} is corrupt" in str(info.value)


# ---- atomic writes, head cursor, quarantine markers ------------------------------------------------------------


def test_a_write_that_fails_midway_leaves_the_old_file_and_nothing_in_tmp(tmp_path):
    lake = Lake(tmp_path / "lake")
    path = _raw_file(lake)
    before = path.read_bytes()
    rows = raw_rows([{"number_customergauge": 2}], fetched_at=T, cursor_sent=None, sync_pass="cursor")
    with pytest.raises(RuntimeError, match="killed"), lake.parquet_writer(path, rows.schema) as writer:
        writer.write(rows)
        raise RuntimeError("killed")
    assert path.read_bytes() == before
    assert list((lake.root / "_tmp").iterdir()) == []
    new = lake.partition_path("raw_responses", "2026-11-01-11:00")
    with pytest.raises(RuntimeError, match="killed"), lake.parquet_writer(new, rows.schema) as writer:
        raise RuntimeError("killed")
    assert not new.exists() and list((lake.root / "_tmp").iterdir()) == []


def test_a_json_write_that_fails_before_its_rename_keeps_the_old_head(tmp_path, monkeypatch):
    lake = Lake(tmp_path / "lake")
    head = HeadCursor(cursor=350, partition_key=P, run_id="run-1", committed_at="2026-11-01T10:05:00+00:00")
    lake.write_head(head)

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lake_module.os, "replace", no_rename)
    with pytest.raises(OSError, match="No space"):
        lake.write_head(dataclasses.replace(head, cursor=400))
    monkeypatch.undo()
    assert lake.read_head() == head


@pytest.mark.parametrize("text", ["{not json", '{"cursor": 1}', "[]"])
def test_a_corrupt_head_cursor_file_is_a_lake_error_naming_it_and_the_fix(tmp_path, text):
    lake = Lake(tmp_path / "lake")
    lake.ensure_writable()
    path = lake.root / "_state" / "raw_responses.cursor.json"
    path.write_text(text)
    with pytest.raises(LakeError, match="full_refresh: true") as info:
        lake.read_head()
    assert f"cursor file {str(path)!r} is corrupt" in str(info.value)


def test_quarantine_markers_are_kept_per_check_until_each_is_released(tmp_path):
    lake = Lake(tmp_path / "lake")
    assert lake.quarantined() == {}
    lake.quarantine(P, "responses_nps_in_range", {"metadata": {"out_of_range": 2}})
    lake.quarantine(P, "responses_row_count_matches_raw", {"metadata": {"raw_rows": 3, "responses_rows": 2}})
    marker = lake.root / "_state" / "quarantine" / "2026-11-01-1000" / "responses_nps_in_range.json"
    assert json.loads(marker.read_text()) == {
        "partition_key": P, "check": "responses_nps_in_range", "metadata": {"out_of_range": 2},
    }  # fmt: skip
    assert lake.quarantined() == {"2026-11-01-1000": ["responses_nps_in_range", "responses_row_count_matches_raw"]}
    lake.release(P, "responses_nps_in_range")
    lake.release(P, "responses_nps_in_range")  # no marker: no-op
    assert lake.quarantined() == {"2026-11-01-1000": ["responses_row_count_matches_raw"]}
    lake.release(P, "responses_row_count_matches_raw")
    assert lake.quarantined() == {} and not marker.parent.exists()


def test_two_writers_of_the_same_target_keep_their_own_temporary_files(tmp_path):
    # The review's input: two runs of the same target; the second's writer removed the first's temporary
    # file as "stale", and the first failed at its commit with FileNotFoundError.
    lake = Lake(tmp_path / "lake")
    path = lake.partition_path("raw_responses", "2026-11-01-10:00")
    rows = raw_rows([{"number_customergauge": 2}], fetched_at=T, cursor_sent=None, sync_pass="cursor")
    with lake.parquet_writer(path, rows.schema) as first, lake.parquet_writer(path, rows.schema) as second:
        first.write(rows)
        second.write(rows)
        assert len(list((lake.root / "_tmp").iterdir())) == 2
        second.commit()
        first.commit()
    assert pq.read_table(path)["number_customergauge"].to_pylist() == [2]
    assert list((lake.root / "_tmp").iterdir()) == []


# ---- layout --------------------------------------------------------------------------------------------------


def test_paths_follow_the_documented_layout(tmp_path):
    lake = Lake(tmp_path / "lake")
    root = tmp_path / "lake"
    path = lake.partition_path("responses", "2026-11-29-09:00")
    assert path == root / "responses" / "2026-11-29-0900.parquet"
    assert partition_key_of(partition_file_stem("2026-11-29-09:00")) == "2026-11-29-09:00"
    assert lake.current_path("response_tags") == root / "current" / "response_tags"
    assert lake.manifest_path(path) == root / "_state" / "manifests" / "responses" / "2026-11-29-0900.json"


def test_partition_files_are_the_complete_parquet_files_in_partition_order(tmp_path):
    lake = Lake(tmp_path / "lake")
    rows = pq.read_table(_raw_file(lake))  # P
    for key in ("2026-11-01-11:00", "2026-11-01-09:00", "2026-10-31-23:00"):
        lake.write_table(lake.partition_path("raw_responses", key), rows)
    (lake.table_dir("raw_responses") / "notes.txt").write_text("not a partition")
    assert [path.stem for path in lake.partition_files("raw_responses")] == [
        "2026-10-31-2300", "2026-11-01-0900", "2026-11-01-1000", "2026-11-01-1100",
    ]  # fmt: skip
    assert lake.partition_files("responses") == []  # no folder yet


@pytest.mark.parametrize("character", sorted(lake_module.GLOB_CHARACTERS))
def test_a_root_holding_a_glob_character_is_refused_before_anything_is_written(tmp_path, character):
    lake = Lake(tmp_path / f"lake{character}1")
    fix = r"set CG_LAKE_ROOT to a path without \* \? \[ \] \{ \}"
    with pytest.raises(LakeError, match=f"holds {re.escape(character)}, which DuckDB reads as a glob .*{fix}"):
        lake.ensure_writable()
    with pytest.raises(LakeError, match="DuckDB reads as a glob"):
        lake.lease("sync")
    assert list(tmp_path.iterdir()) == []


def test_a_root_that_cannot_be_a_folder_names_the_setting(tmp_path):
    (tmp_path / "lake").write_text("a file, not a folder")
    with pytest.raises(LakeError, match=r"is not writable .*; set CG_LAKE_ROOT to a folder this process can create"):
        Lake(tmp_path / "lake").ensure_writable()


# ---- files ------------------------------------------------------------------------------------------------


def test_footer_metadata_given_at_open_and_added_before_commit_are_both_kept(tmp_path):
    lake = Lake(tmp_path / "lake")
    path = lake.partition_path("raw_responses", P)
    rows = raw_rows([{"number_customergauge": 1}, {"number_customergauge": 2}], fetched_at=T, cursor_sent=None,
                    sync_pass="cursor")  # fmt: skip
    with lake.parquet_writer(path, rows.schema, {b"first": b"1"}) as writer:
        writer.write(rows.to_batches()[0])
        writer.write(rows.slice(0, 0))  # an empty table writes nothing
        writer.set_metadata({b"second": b"2"})
        assert writer.rows == 2
        writer.commit()
    metadata = pq.read_metadata(path).metadata
    assert (metadata[b"first"], metadata[b"second"]) == (b"1", b"2")
    assert pq.read_table(path)["number_customergauge"].to_pylist() == [1, 2]


def test_parquet_metadata_of_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_parquet_metadata(tmp_path / "absent.parquet")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 and then nothing")
    with pytest.raises(LakeError, match="is not a readable Parquet file .*full_refresh: true") as info:
        read_parquet_metadata(broken)
    assert str(info.value).startswith(repr(str(broken)))


# ---- head cursor, commit lock, state files ---------------------------------------------------------------------

HEAD = HeadCursor(cursor=350, partition_key=P, run_id="run-1", committed_at="2026-11-01T10:05:00+00:00")


def test_the_head_reads_back_as_written_and_is_none_before_the_first_commit(tmp_path):
    lake = Lake(tmp_path / "lake")
    assert lake.read_head() is None
    lake.write_head(HEAD)
    assert json.loads((lake.root / "_state" / "raw_responses.cursor.json").read_text()) == dataclasses.asdict(HEAD)
    assert Lake(lake.root).read_head() == HEAD
    lake.write_head(dataclasses.replace(HEAD, cursor=None))  # an initial load that found nothing
    assert lake.read_head().cursor is None


def test_the_head_check_passes_for_the_head_a_sync_started_from_and_names_both_when_it_moved(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.assert_head(None)  # nothing committed yet, nothing expected
    lake.write_head(HEAD)
    lake.assert_head(HEAD)
    with pytest.raises(CursorConflictError) as info:
        lake.assert_head(None)
    assert str(info.value).startswith(
        "the head cursor moved during this run: it was absent (no sync committed) when the sync started and is "
        f"now 350 (partition {P}, run run-1)"
    )
    with pytest.raises(CursorConflictError, match="it was 349 .* and is now 350"):
        lake.assert_head(dataclasses.replace(HEAD, cursor=349))


def test_a_corrupt_head_counts_as_absent_only_for_a_full_refresh(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.ensure_writable()
    (lake.root / "_state" / "raw_responses.cursor.json").write_text("{not json")
    lake.assert_head(None, unreadable_ok=True)
    with pytest.raises(LakeError, match="is corrupt"):
        lake.assert_head(None)
    with pytest.raises(CursorConflictError):
        lake.assert_head(HEAD, unreadable_ok=True)


def test_the_commit_lock_is_exclusive_while_held(tmp_path):
    lake = Lake(tmp_path / "lake")

    def try_lock() -> bool:
        with open(lake.root / "_state" / "commit.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(handle, fcntl.LOCK_UN)
            return True

    with lake.commit_lock():
        assert not try_lock()
    assert try_lock()


def test_state_files_read_back_as_written_and_absent_ones_as_none(tmp_path):
    lake = Lake(tmp_path / "lake")
    assert lake.read_state("lookback.json") is None
    lake.write_state("lookback.json", {"partition_key": P, "period": None})
    text = (lake.root / "_state" / "lookback.json").read_text()
    assert text == '{\n  "partition_key": "2026-11-01-10:00",\n  "period": null\n}\n'
    assert lake.read_state("lookback.json") == {"partition_key": P, "period": None}
    assert list((lake.root / "_tmp").iterdir()) == []


def test_quarantine_markers_of_two_partitions_are_listed_and_released_apart(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.quarantine("2026-11-01-11:00", "responses_nps_in_range", {})
    lake.quarantine(P, "responses_nps_in_range", {})
    assert lake.quarantined() == {
        "2026-11-01-1000": ["responses_nps_in_range"], "2026-11-01-1100": ["responses_nps_in_range"],
    }  # fmt: skip
    lake.release("2026-11-01-11:00", "responses_nps_in_range")
    assert lake.quarantined() == {"2026-11-01-1000": ["responses_nps_in_range"]}


@pytest.mark.parametrize(
    "one, other",
    [
        ("s3://cglake/shared", "s3a://cglake/shared/"),
        ("S3://cglake/shared", "s3://cglake/shared"),
        ("gcs://b/x", "gs://b/x"),
        ("az://c/x", "abfss://c/x"),
        ("/data/emea/", "file:///data/emea"),
        ("/data/emea", "/data/./emea"),
    ],
)
def test_one_lake_spelled_two_ways_has_one_identity(one, other):
    assert lake_identity(one) == lake_identity(other)


@pytest.mark.parametrize("one, other", [("s3://b/x", "s3://b/y"), ("s3://b/x", "gs://b/x"), ("/data/a", "/data/b")])
def test_two_lakes_have_two_identities(one, other):
    assert lake_identity(one) != lake_identity(other)


def test_an_upper_case_scheme_opens_the_store():
    # the review's input: S3://... once failed every run with "ValueError: Unsupported filesystem: 'S3'"
    assert str(Lake("S3://cglake/shared").root) == "s3://cglake/shared"
