"""Raw partition files rewritten by another tool (issue 8 #3): re-materializing them never loses a response.

Each tool below rewrites a raw file and drops its Parquet footer key/value metadata (the manifest's footer
copy): the sidecar in ``_state/manifests/`` still says which range the file holds, so a re-materialization
replays it. Without any manifest the sync refuses rather than replace the rows. On a local lake and on ``s3://``
(``lake_root``).
"""

import shutil
import tempfile
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from cg_dagster.lib.lake import MANIFEST_FOOTER_KEY, Lake
from cg_dagster_tests._fixtures_runs import (
    assert_lake_correct,
    failure_text,
    numbers,
    raw_metadata,
    raw_numbers,
    run,
)
from cg_dagster_tests._fixtures_s3 import delete_tree, write_like_a_tool
from cg_dagster_tests._fixtures_sandbox import make_resources

pytestmark = pytest.mark.slow  # Dagster runs of the asset group (run.py test --fast skips them)

P1, P2 = "2026-11-01-10:00", "2026-11-01-11:00"


def _pyarrow(lake, path):
    write_like_a_tool(lake, path, lake.read_table(path))


def _duckdb(lake, path):
    with tempfile.TemporaryDirectory() as folder, duckdb.connect() as con, lake.registered(con):
        copy = Path(folder) / "copy.parquet"
        con.sql(f"COPY (SELECT * FROM read_parquet('{path}')) TO '{copy}' (FORMAT parquet)")
        if lake.storage.remote:
            lake.storage.fs.put_file(str(copy), path.path)
        else:
            shutil.move(copy, path)


def _pandas(lake, path):
    pd.read_parquet(str(path)).to_parquet(str(path))  # s3://: through s3fs


REWRITES = {"pyarrow": _pyarrow, "duckdb": _duckdb, "pandas": _pandas}


def _rewrite(lake: Lake, tool: str, *partitions: str) -> dict[str, int]:
    """Rewrite the raw files of ``partitions`` with ``tool``; return their row counts. Asserts the footer is gone."""
    rows = {}
    for partition in partitions:
        path = lake.partition_path("raw_responses", partition)
        REWRITES[tool](lake, path)
        metadata = lake.parquet_file(path).metadata
        assert MANIFEST_FOOTER_KEY not in (metadata.metadata or {}), f"{tool} kept the footer: not the fault's input"
        rows[partition] = metadata.num_rows
    return rows


@pytest.mark.parametrize("tool", REWRITES)
def test_raw_files_rewritten_by_a_tool_are_replayed_and_lose_nothing(sandbox, lake_root, tool):
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        appended = numbers(sandbox.append_records(40))
        run(instance, resources, P2)
        head = lake.read_head()
        assert _rewrite(lake, tool, P1, P2) == {P1: 350, P2: 40}
        newest = raw_metadata(run(instance, resources, P2))
        older = raw_metadata(run(instance, resources, P1))
    assert (newest["sync_mode"], older["sync_mode"]) == ("replay", "replay")
    assert lake.read_head() == head
    assert raw_numbers(lake, P2) == appended
    assert sorted(raw_numbers(lake, P1)) == sorted(numbers(sandbox.records()[:350]))
    assert_lake_correct(lake, sandbox)  # every response once in the raw files, current equal to the sandbox


def test_a_raw_file_with_rows_and_no_manifest_is_refused_not_replaced(sandbox, lake_root):
    # A lake written before manifests had sidecars (footers only), then rewritten by a tool.
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        sandbox.append_records(40)
        run(instance, resources, P2)
        head = lake.read_head()
        delete_tree(lake, lake.root / "_state" / "manifests")
        before = _rewrite(lake, "pyarrow", P1, P2)
        for partition in (P2, P1):  # the newest would sync again from the head, the older be skipped (empty)
            result = run(instance, resources, partition, raise_on_error=False)
            assert not result.success
            path = lake.partition_path("raw_responses", partition)
            message = failure_text(result)
            assert f"{str(path)!r} holds {before[partition]} rows but no sync manifest" in message
            assert "full_refresh: true" in message
            assert lake.parquet_file(path).metadata.num_rows == before[partition]
    assert lake.read_head() == head
    assert_lake_correct(lake, sandbox)


def test_a_footer_only_lake_gets_sidecars_at_the_next_sync_and_survives_a_rewrite_after(sandbox, lake_root):
    lake = Lake(lake_root)
    resources = make_resources(sandbox, lake_root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        delete_tree(lake, lake.root / "_state" / "manifests")  # as a lake written before sidecars existed
        sandbox.append_records(40)
        run(instance, resources, P2)  # the next sync writes the missing sidecars
        p1 = lake.partition_path("raw_responses", P1)
        assert lake.exists(lake.manifest_path(p1))
        _rewrite(lake, "pandas", P1)
        assert raw_metadata(run(instance, resources, P1))["sync_mode"] == "replay"
    assert_lake_correct(lake, sandbox)
