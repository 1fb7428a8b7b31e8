"""The demo: an initial load and an incremental sync from the sandbox into ./demo_lake, through Dagster's CLI.

Run it with ``python3 run.py demo`` (which creates .venv and sets DAGSTER_HOME=./.dagster_home).

1. starts the sandbox API (``python -m cg_dagster.sandbox``) on a free loopback port;
2. materializes every CustomerGauge asset for the partition two hours back: the initial load;
3. appends records to the sandbox (its control endpoint ``POST /_sandbox/append``);
4. materializes the last complete hour: the incremental sync, which must fetch exactly the appended records;
5. prints per-table row counts (DuckDB over the lake) and the stored cursor (lake and Dagster metadata),
   and exits 1 if any count differs from what the sandbox served, or if the second run's update of the
   current tables was not a merge of the new partition into the ranges it touches (lib/current.py).

The demo lake is wiped at the start (the sandbox is regenerated from its seed each time, so the counts
can be checked exactly); Dagster's run history in DAGSTER_HOME is kept, and ``python3 run.py dev`` works on
the same lake, so the UI shows every demo run and its own runs continue from the demo's cursor.
"""

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import dagster as dg
import duckdb

from cg_dagster.customergauge.keys import CURRENT_KEYS, FLAT_KEYS, RAW_KEY, raw_run_config
from cg_dagster.lib.lake import Lake
from cg_dagster.sandbox import project_env
from cg_dagster.settings import LAKE_ROOT as LAKE_ROOT_SETTING

ROOT = Path(__file__).resolve().parent.parent
LAKE_ROOT = ROOT / "demo_lake"
RECORDS, APPENDED = 2500, 137
CLIENT_ID, CLIENT_SECRET = "demo-client", "demo-secret"
SELECTION = ",".join(key.to_user_string() for key in [RAW_KEY, *FLAT_KEYS.values(), *CURRENT_KEYS.values()])
# The trailing-window re-read is off in the demo so the incremental sync's count is exactly the appended records.
RUN_CONFIG = json.dumps(raw_run_config(lookback_hour=-1))


def main() -> int:
    if "DAGSTER_HOME" not in os.environ:
        print("DAGSTER_HOME is not set: run the demo with `python3 run.py demo`", file=sys.stderr)
        return 2
    shutil.rmtree(LAKE_ROOT, ignore_errors=True)
    port = _free_port()
    sandbox = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cg_dagster.sandbox",
            "--port",
            str(port),
            "--records",
            str(RECORDS),
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        print(sandbox.stdout.readline().strip(), flush=True)
        base_url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **project_env(base_url, CLIENT_ID, CLIENT_SECRET), LAKE_ROOT_SETTING.name: str(LAKE_ROOT)}
        last_hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
        initial, incremental = [(last_hour - dt.timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M") for h in (1, 0)]

        print(f"\n== initial load: partition {initial}", flush=True)
        _materialize(initial, env)
        first = _raw_rows(initial)

        appended = _post_json(f"{base_url}/_sandbox/append?count={APPENDED}")["appended"]
        print(f"\n== sandbox appended {appended} records; incremental sync: partition {incremental}", flush=True)
        _materialize(incremental, env)
        second = _raw_rows(incremental)
        served = _post_json(f"{base_url}/_sandbox/stats", method="GET")["records"]
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    return _report(first, second, served, appended)


def _materialize(partition: str, env: dict) -> None:
    """Run `dagster asset materialize` for every CustomerGauge asset; on failure print its log and exit 1."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "cg_dagster.definitions",
            "--select",
            SELECTION,
            "--partition",
            partition,
            "--config-json",
            RUN_CONFIG,
        ],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(done.stdout[-5000:], done.stderr[-5000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"DEMO FAILED: dagster asset materialize --partition {partition} exited {done.returncode}")
    print(f"materialized {SELECTION} for {partition}", flush=True)


def _raw_rows(partition: str) -> int:
    path = Lake(LAKE_ROOT).partition_path("raw_responses", partition)
    return duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall()[0][0]


def _report(first: int, second: int, served: int, appended: int) -> int:
    print(f"\ninitial load fetched {first} responses; incremental sync fetched {second} (appended: {appended})")
    print(f"\n{'table':<22}{'rows':>8}   (all partitions of {LAKE_ROOT.name}/)")
    for table in ["raw_responses", *FLAT_KEYS]:
        rows = duckdb.sql(f"select count(*) from read_parquet('{LAKE_ROOT / table}/*.parquet')").fetchall()[0][0]
        print(f"{table:<22}{rows:>8}")
    glob = f"{Lake(LAKE_ROOT).current_path('responses')}/*.parquet"
    current = duckdb.sql(
        f"select count(*), count(distinct number_customergauge) from read_parquet('{glob}', union_by_name = true)"
    ).fetchall()[0]
    files = len(list(Lake(LAKE_ROOT).current_path("responses").glob("*.parquet")))
    print(
        f"{'current/responses':<22}{current[0]:>8}   (one row per response: {current[1]} distinct, {files} range files)"
    )
    head = Lake(LAKE_ROOT).read_head()
    instance = dg.DagsterInstance.get()
    dagster_cursor = instance.get_latest_materialization_event(RAW_KEY).asset_materialization.metadata["cursor"].value
    update = instance.get_latest_materialization_event(CURRENT_KEYS["responses"]).asset_materialization.metadata
    update_mode = update["update_mode"].value
    print(
        f"second update of the current tables: {update_mode} ({update['update_reason'].value}), "
        f"{update['ranges_rewritten'].value} of {files} ranges rewritten"
    )
    print(
        f"\nstored cursor: {head.cursor} in {LAKE_ROOT.name}/_state/raw_responses.cursor.json; "
        f"{dagster_cursor} in the metadata of raw_responses' latest materialization"
    )
    problems = []
    if first + second != served:
        problems.append(f"the lake holds {first + second} raw responses but the sandbox served {served}")
    if second != appended:
        problems.append(f"the incremental sync fetched {second} responses, not the {appended} appended")
    if current != (served, served):
        problems.append(f"current/responses holds {current[0]} rows ({current[1]} distinct), not the {served} served")
    if update_mode != "merge":
        problems.append(f"the second update of the current tables was a {update_mode}, not a merge")
    if head.cursor != dagster_cursor:
        problems.append(f"lake cursor {head.cursor} != Dagster metadata cursor {dagster_cursor}")
    for problem in problems:
        print(f"DEMO FAILED: {problem}", file=sys.stderr)
    if not problems:
        print("OK: every served response is in the lake exactly once; the second sync fetched only new ones.")
    return 1 if problems else 0


def _post_json(url: str, method: str = "POST") -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
        return json.load(response)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
