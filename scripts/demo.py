"""The demo: an initial load and an incremental sync of responses and non-responses from the sandbox into
./demo_lake, through Dagster's CLI, and the response rate.

Run it with ``python3 run.py demo`` (which creates .venv and sets DAGSTER_HOME=./.dagster_home, even when
another is exported: the sandbox's runs stay out of that instance). The project's settings exported in the
shell (``CG_ACCOUNTS_FILE``, ``CG_PARTITIONS_START``, credentials, ...) are left out of its runs (``demo_env``).

1. starts the sandbox API (``python -m cg_dagster.sandbox``) on a free loopback port;
2. materializes every CustomerGauge asset for the partition two hours back: the initial load;
3. appends responses to the sandbox and lets some non-responses answer (its control endpoints
   ``POST /_sandbox/append`` and ``POST /_sandbox/convert``: each converted one becomes a new response);
4. materializes the last complete hour: the incremental sync, which must fetch exactly the appended and
   converted responses, and no non-response;
5. prints per-table row counts (DuckDB over the lake), the stored cursors (lake and Dagster metadata) and the
   response rate per survey (touchpoint) and month (RESPONSE_RATE_SQL, the README's query), and exits 1 if any
   count differs from what the sandbox served (the rate's sent surveys included: each response and unanswered
   non-response once), if a converted non-response is not ``is_response`` in
   current/non_responses, or if the second run's update of the current tables was not a merge of the new
   partition into the ranges it touches (lib/current.py).

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

from cg_dagster.customergauge.keys import CURRENT_KEYS, DEFAULT, FLAT_KEYS, RAW_KEY, raw_run_config
from cg_dagster.lib.lake import NON_RESPONSES, Lake
from cg_dagster.lib.schemas import NON_RESPONSE_FLAT_TABLES
from cg_dagster.sandbox import project_env
from cg_dagster.settings import LAKE_ROOT as LAKE_ROOT_SETTING
from cg_dagster.settings import setting_names

ROOT = Path(__file__).resolve().parent.parent
LAKE_ROOT = ROOT / "demo_lake"
RECORDS, APPENDED, CONVERTED = 2500, 137, 40  # the sandbox serves RECORDS // 3 non-responses
CLIENT_ID, CLIENT_SECRET = "demo-client", "demo-secret"
SELECTION = ",".join(key.to_user_string() for key in DEFAULT.all_keys)
# The trailing-window re-read is off in the demo so the incremental sync's count is exactly the new records.
RUN_CONFIG = json.dumps(raw_run_config(non_responses=True, lookback_hour=-1))
# The README's response-rate query (section "Non-responses and the response rate"), over a lake at {lake}: per
# survey (the record's 'Touchpoint' segment, from the properties tables; '(none)' without one) and month sent,
# every sent survey once (a converted non-response is in both current tables: it counts as its response, whatever
# that response's status, with that response's touchpoint); the rate is completed responses (status 'response')
# over all sent.
RESPONSE_RATE_SQL = """
WITH sent AS (
    SELECT number_customergauge, 'response' AS side, date_sent, status
    FROM read_parquet('{lake}/current/responses/*.parquet', union_by_name = true)
    UNION ALL
    SELECT number_customergauge, 'non_response', date_sent, 'non_response'
    FROM read_parquet('{lake}/current/non_responses/*.parquet', union_by_name = true)
    WHERE NOT is_response
),
survey AS (  -- one touchpoint per record: the least, should a record carry two
    SELECT number_customergauge, 'response' AS side, min(reference) AS survey
    FROM read_parquet('{lake}/current/response_properties/*.parquet', union_by_name = true)
    WHERE field = 'Touchpoint' GROUP BY ALL
    UNION ALL
    SELECT number_customergauge, 'non_response', min(reference)
    FROM read_parquet('{lake}/current/non_response_properties/*.parquet', union_by_name = true)
    WHERE field = 'Touchpoint' GROUP BY ALL
)
SELECT coalesce(survey, '(none)') AS survey,
       strftime(date_trunc('month', date_sent), '%Y-%m') AS month,
       count(*) AS sent,
       count(*) FILTER (WHERE status = 'response') AS responses,
       count(*) FILTER (WHERE status = 'partial') AS partial,
       round(count(*) FILTER (WHERE status = 'response') / count(*), 3) AS response_rate
FROM sent LEFT JOIN survey USING (number_customergauge, side)
GROUP BY ALL ORDER BY survey, month
"""


def demo_env(environ: dict[str, str], base_url: str) -> tuple[dict[str, str], list[str]]:
    """The environment of the demo's runs: ``environ`` without the project's settings (``cg_dagster/settings.py``:
    an exported ``CG_ACCOUNTS_FILE`` or ``CG_PARTITIONS_START`` would make other assets or another partition
    grid, production credentials would be sent to the sandbox), plus the sandbox at ``base_url``
    (``project_env``) and the demo lake; and the names of the settings left out, sorted."""
    names = setting_names()
    left_out = sorted(name for name in environ if name in names)
    env = {name: value for name, value in environ.items() if name not in names}
    env |= project_env(base_url, CLIENT_ID, CLIENT_SECRET) | {LAKE_ROOT_SETTING.name: str(LAKE_ROOT)}
    return env, left_out


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
        env, left_out = demo_env(dict(os.environ), base_url)
        if left_out:
            print(f"the demo's runs leave out these settings of your shell: {', '.join(left_out)}", flush=True)
        last_hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
        initial, incremental = [(last_hour - dt.timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M") for h in (1, 0)]

        print(f"\n== initial load: partition {initial}", flush=True)
        _materialize(initial, env)
        first = _raw_rows(initial)

        appended, converted = advance_sandbox(base_url)
        print(
            f"\n== sandbox appended {appended} responses and {len(converted)} non-responses answered; "
            f"incremental sync: partition {incremental}",
            flush=True,
        )
        _materialize(incremental, env)
        second = _raw_rows(incremental)
        stats = _post_json(f"{base_url}/_sandbox/stats", method="GET")
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    problems = _report(first, second, stats["records"], appended + len(converted))
    problems += _report_non_responses(stats["non_responses"], converted)
    for problem in problems:
        print(f"DEMO FAILED: {problem}", file=sys.stderr)
    if not problems:
        print(
            "OK: every served response and non-response is in the lake exactly once; the second sync fetched only new "
            "ones; the answered non-responses are is_response."
        )
    return 1 if problems else 0


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


def _raw_rows(partition: str, table: str = "raw_responses") -> int:
    path = Lake(LAKE_ROOT).partition_path(table, partition)
    return duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall()[0][0]


def _report(first: int, second: int, served: int, new: int) -> list[str]:
    """Print the responses' counts and cursor; return the problems found."""
    print(f"\ninitial load fetched {first} responses; incremental sync fetched {second} (new: {new})")
    print(f"\n{'table':<22}{'rows':>8}   (all partitions of {LAKE_ROOT.name}/)")
    for table in ["raw_responses", *FLAT_KEYS, "raw_non_responses", *NON_RESPONSE_FLAT_TABLES]:
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
    if second != new:
        problems.append(f"the incremental sync fetched {second} responses, not the {new} appended and converted")
    if current != (served, served):
        problems.append(f"current/responses holds {current[0]} rows ({current[1]} distinct), not the {served} served")
    if update_mode != "merge":
        problems.append(f"the second update of the current tables was a {update_mode}, not a merge")
    if head.cursor != dagster_cursor:
        problems.append(f"lake cursor {head.cursor} != Dagster metadata cursor {dagster_cursor}")
    return problems


def _report_non_responses(served: int, converted: list[int]) -> list[str]:
    """Print the non-responses' cursor, is_response count and the response rate; return the problems found."""
    lake = Lake(LAKE_ROOT)
    raw = duckdb.sql(f"select count(*) from read_parquet('{lake.table_dir('raw_non_responses')}/*.parquet')")
    glob = f"{lake.current_path('non_responses')}/*.parquet"
    current = duckdb.sql(
        f"select count(*), count(distinct number_customergauge), list(number_customergauge) filter (where is_response) "
        f"from read_parquet('{glob}')"
    ).fetchall()[0]
    print(f"{'current/non_responses':<22}{current[0]:>8}   ({len(current[2] or [])} answered since: is_response)")
    print(f"stored non-responses cursor: {lake.read_head(NON_RESPONSES).cursor} in _state/{NON_RESPONSES.head_file}")
    rate = duckdb.sql(RESPONSE_RATE_SQL.format(lake=LAKE_ROOT))
    print("\nresponse rate per survey (Touchpoint) and month of date_sent (current tables):")
    rate.show(max_rows=100)
    problems = []
    responses = duckdb.sql(f"select count(*) from read_parquet('{lake.current_path('responses')}/*.parquet')")
    sent = duckdb.sql("select sum(sent) from rate").fetchall()[0][0]
    if sent != responses.fetchall()[0][0] + served - len(converted):
        problems.append(f"the response rate counts {sent} sent surveys, not each response and unanswered non-response")
    if raw.fetchall()[0][0] != served or current[:2] != (served, served):
        problems.append(
            f"current/non_responses holds {current[0]} rows ({current[1]} distinct), not the {served} served"
        )
    if sorted(current[2] or []) != sorted(converted):
        problems.append(
            f"is_response is true for {len(current[2] or [])} non-responses, not the {len(converted)} answered"
        )
    return problems


def advance_sandbox(base_url: str) -> tuple[int, list[int]]:
    """Step 3 on the sandbox at ``base_url``: append APPENDED responses and let CONVERTED non-responses answer.
    Returns (responses appended, numbers of the non-responses answered). Deterministic from the seed, so
    ``run.py dev`` (scripts/dev.py) does it to its fresh sandbox too, which then serves what the demo's did."""
    appended = _post_json(f"{base_url}/_sandbox/append?count={APPENDED}")["appended"]
    return appended, _post_json(f"{base_url}/_sandbox/convert?count={CONVERTED}")["numbers"]


def _post_json(url: str, method: str = "POST") -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
        return json.load(response)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
