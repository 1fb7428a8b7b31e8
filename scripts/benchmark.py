"""Throughput and memory figures of the CustomerGauge pipeline against the local sandbox API.

Run it with ``python3 run.py bench [--records N] [--per-page P]`` (defaults: 100,000 records, 1000 per page).
It prints figures only; nothing is asserted. The sandbox runs as its own process
(``python -m cg_dagster.sandbox``) so it does not share the GIL with the client, and every stage runs in a
fresh Python process so its peak RSS (``ru_maxrss``) belongs to that stage alone. "import RSS" is the
process's peak right after its imports, before any work: the stage's own memory is peak minus that.

1. serve    ``CustomerGaugeClient.iter_pages`` over all N records, doing nothing with the pages: the cost of
            the sandbox answering, HTTP and JSON parsing. The first pass ("cold") also pays the sandbox's
            one-off JSON encoding of each record (it caches rows); the second ("warm") is what later
            stages see.
2. sync     ``sync_partition``: client -> raw_responses Parquet file (zstd) with the atomic commit. Also
            the raw file's size in MB.
3. flatten  ``flatten_partition`` (what the ``flattened_tables`` asset runs, without Dagster): the raw file
            read in batches of RAW_BATCH_ROWS through ``flatten_raw`` into the five tables' files.
4. current  ``build_current`` (DuckDB) over the lake written by stages 2-3.
5. streaming peak RSS of stage 2 at N/4 and at N records (a fresh sandbox and lake for N/4). A ratio near
            1.0 means memory does not grow with the number of records (one page in memory at a time).
6. dagster  one ``dg.materialize`` of [raw_responses, flattened_tables, current_tables] for N records on a
            temporary instance and a fresh lake: stages 2-4 plus Dagster's overhead, in one process.

"cpu s" is the stage process's user+system CPU time; wall seconds well above it mean the stage waited,
mostly for the sandbox process.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"
PARTITION = "2026-11-01-10:00"
NO_LOOKBACK = {"ops": {"customergauge__raw_responses": {"config": {"lookback_hour": -1}}}}


# ---- stages: each runs in a fresh process (``--stage NAME``) and prints one JSON line ----------------


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_client(base_url: str):
    from cg_dagster.lib.client import CustomerGaugeClient

    return CustomerGaugeClient(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, api_base_url=base_url,
                               auth_base_url=base_url, backoff_factor=0.1)


def stage_serve(args) -> dict:
    from cg_dagster.lib.client import SyncParams

    records = pages = 0
    with make_client(args.base_url) as client:
        for page in client.iter_pages(SyncParams(per_page=args.per_page)):
            records, pages = records + len(page.records), page.number
    return {"records": records, "pages": pages}


def stage_sync(args) -> dict:
    from cg_dagster.lib.client import SyncParams
    from cg_dagster.lib.lake import Lake
    from cg_dagster.lib.sync import sync_partition

    with make_client(args.base_url) as client:
        result = sync_partition(client, SyncParams(per_page=args.per_page), Lake(args.lake),
                                partition_key=PARTITION, run_id="benchmark")
    return {"records": result.rows, "pages": result.record.pages, "raw_mb": result.path.stat().st_size / 1e6}


def stage_flatten(args) -> dict:
    from cg_dagster.lib.lake import Lake
    from cg_dagster.lib.tables import flatten_partition

    done = flatten_partition(Lake(args.lake), PARTITION)
    return {"records": done.rows["responses"], "rows_all_tables": sum(done.rows.values())}


def stage_current(args) -> dict:
    from cg_dagster.lib.current import build_current
    from cg_dagster.lib.lake import Lake

    counts = build_current(Lake(args.lake))
    return {"records": counts["responses"], "rows_all_tables": sum(counts.values())}


def stage_dagster(args) -> dict:
    import dagster as dg

    from cg_dagster.customergauge.assets import current_tables, flattened_tables, raw_responses
    from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource

    resources = {
        "customergauge": CustomerGaugeResource(client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                               api_base_url=args.base_url, auth_base_url=args.base_url,
                                               per_page=args.per_page),
        "lake": LakeResource(root=args.lake),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_responses, flattened_tables, current_tables], instance=instance,
                                resources=resources, partition_key=PARTITION, run_config=NO_LOOKBACK)
    [raw] = result.asset_materializations_for_node("customergauge__raw_responses")
    return {"records": raw.metadata["dagster/row_count"].value}


STAGES = {"serve": stage_serve, "sync": stage_sync, "flatten": stage_flatten, "current": stage_current,
          "dagster": stage_dagster}


def run_stage_here(args) -> None:
    """Child side: import what the stage needs, then time it; print the figures as one JSON line."""
    import cg_dagster.lib.sync  # noqa: F401  (pyarrow, requests: part of every stage's baseline)

    import_rss = peak_rss_mb()
    cpu_before, start = cpu_seconds(), time.perf_counter()
    figures = STAGES[args.stage](args)
    seconds = time.perf_counter() - start
    figures.update(seconds=seconds, cpu=cpu_seconds() - cpu_before, peak_mb=peak_rss_mb(), import_mb=import_rss)
    print(json.dumps(figures), flush=True)


# ---- parent: sandbox processes, stage processes, the printed figures ---------------------------------


def start_sandbox(records: int) -> tuple[subprocess.Popen, str]:
    """``python -m cg_dagster.sandbox`` on a free port; returns (process, base URL) once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cg_dagster.sandbox", "--port", "0", "--records", str(records),
         "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    line = process.stdout.readline().strip()  # "sandbox listening on http://127.0.0.1:PORT"
    if not line.startswith("sandbox listening on "):
        process.kill()
        raise SystemExit(f"the sandbox did not start (first line: {line!r})")
    return process, line.rsplit(" ", 1)[1]


def stop_sandbox(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def run_stage(stage: str, base_url: str, lake: Path, per_page: int) -> dict:
    command = [sys.executable, __file__, "--stage", stage, "--base-url", base_url, "--lake", str(lake),
               "--per-page", str(per_page)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(label: str, figures: dict, extra: str = "") -> None:
    rate = figures["records"] / figures["seconds"] if figures["seconds"] else float("nan")
    print(f"{label:<22} {figures['records']:>9,} rec {figures['seconds']:>8.2f} s {rate:>10,.0f} rec/s "
          f"{figures['cpu']:>7.2f} cpu s   peak RSS {figures['peak_mb']:>6.0f} MB "
          f"(import {figures['import_mb']:.0f} MB){extra}", flush=True)


def print_machine() -> None:
    import dagster
    import duckdb
    import pyarrow

    print(f"machine: nproc {os.cpu_count()}, {platform.platform()}, python {platform.python_version()}, "
          f"pyarrow {pyarrow.__version__}, duckdb {duckdb.__version__}, dagster {dagster.__version__}")


def run_all(records: int, per_page: int) -> None:
    print_machine()
    print(f"records {records:,}, per_page {per_page}; every stage is a fresh process, the sandbox another\n")
    with tempfile.TemporaryDirectory(prefix="cg-bench-") as tmp:
        lake, small_lake, dagster_lake = Path(tmp, "lake"), Path(tmp, "lake_quarter"), Path(tmp, "lake_dagster")
        started = time.perf_counter()
        sandbox, base_url = start_sandbox(records)
        print(f"(sandbox with {records:,} records up in {time.perf_counter() - started:.1f} s)")
        try:
            report("1. serve (cold)", run_stage("serve", base_url, lake, per_page))
            report("1. serve (warm)", run_stage("serve", base_url, lake, per_page))
            sync = run_stage("sync", base_url, lake, per_page)
            report("2. sync -> raw", sync, f"   raw file {sync['raw_mb']:.1f} MB")
            flat = run_stage("flatten", base_url, lake, per_page)
            report("3. flatten", flat, f"   {flat['rows_all_tables']:,} rows in 5 tables")
            current = run_stage("current", base_url, lake, per_page)
            report("4. current (duckdb)", current, f"   {current['rows_all_tables']:,} rows in 5 tables")
            e2e = run_stage("dagster", base_url, dagster_lake, per_page)
        finally:
            stop_sandbox(sandbox)
        quarter = max(records // 4, 1)
        sandbox, base_url = start_sandbox(quarter)
        try:
            run_stage("serve", base_url, small_lake, per_page)  # warm the sandbox's row cache, as for N
            small = run_stage("sync", base_url, small_lake, per_page)
        finally:
            stop_sandbox(sandbox)
    report("5. sync at N/4", small)
    print(f"5. streaming: sync peak RSS {small['peak_mb']:.0f} MB at {quarter:,} records, "
          f"{sync['peak_mb']:.0f} MB at {records:,} records: ratio N/(N/4) = {sync['peak_mb'] / small['peak_mb']:.2f}; "
          f"above import: {small['peak_mb'] - small['import_mb']:.0f} MB -> {sync['peak_mb'] - sync['import_mb']:.0f} MB")
    report("6. dagster materialize", e2e, "   raw + flattened + current, one run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records in the sandbox (default 100000)")
    parser.add_argument("--per-page", type=int, default=1000, help="records per page, 1..1000 (default 1000)")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)  # internal: child process
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.records < 1 or not 1 <= args.per_page <= 1000:
        parser.error("--records must be >= 1 and --per-page from 1 to 1000")
    if args.stage:
        run_stage_here(args)
    else:
        run_all(args.records, args.per_page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
