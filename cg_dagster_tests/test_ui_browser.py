"""The Dagster UI as an operator sees it, in Debian's Chromium (Playwright) against `run.py dev`'s scripts/dev.py.

Two hours are synced in-process into a fresh DAGSTER_HOME: 09:00 cleanly, 10:00 with an NPS of 11 on every
row (the blocking check responses_nps_in_range fails there). Then the UI must show the group's lineage,
raw_responses' cursor, pages and row count, its freshness policy, the synced hours green in the partitions
bar and the failed check red on its own hour, and the hourly schedule running. State comes from Dagster's
GraphQL API; what a person sees from the browser. Screenshots: test-artifacts/ui/ (git-ignored).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from playwright import sync_api as playwright

import cg_dagster.lib.tables as tables_module
from cg_dagster.customergauge.keys import (
    CURRENT_KEYS,
    CURRENT_NON_RESPONSES_KEY,
    FLAT_KEYS,
    NON_RESPONSES_KEY,
    RAW_KEY,
    RAW_NON_RESPONSES_KEY,
)
from cg_dagster_tests._fixtures_dev import dev_env, free_port, wait_for_ui
from cg_dagster_tests._fixtures_runs import run
from cg_dagster_tests._fixtures_sandbox import SANDBOX_ID, SANDBOX_SECRET, make_resources

PROJECT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); Playwright's own browsers are not used
START, GOOD, BAD = "2026-11-29", "2026-11-29-09:00", "2026-11-29-10:00"
GREEN, RED = "rgb(46, 204, 129)", "rgb(199, 42, 28)"  # Dagster's partition bar: materialized/passed, failed
SEGMENTS = """() => [...document.querySelectorAll('[class*=PartitionStatusBar_colorSpan]')].map(e => {
  let bar = e.parentElement; while (bar.offsetWidth < 600) bar = bar.parentElement;  // the bar spans the page
  const r = e.getBoundingClientRect(), b = bar.getBoundingClientRect();
  return {color: getComputedStyle(e).backgroundColor, start: (r.left - b.left) / b.width,
          end: (r.right - b.left) / b.width};
})"""


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert "errors" not in body, body
    return body["data"]


def sync_two_hours(sandbox, lake_root: Path, monkeypatch) -> None:
    """GOOD synced cleanly, BAD synced with nps 11 on every row (a failed blocking check on that hour)."""
    resources = make_resources(sandbox, lake_root)
    instance = dg.DagsterInstance.get()  # DAGSTER_HOME of the dev process
    assert run(instance, resources, GOOD).success
    sandbox.append_records(10)
    real = tables_module.flatten_raw

    def nps_eleven(raw, **kwargs):
        flat = real(raw, **kwargs)
        table = flat.tables["responses"]
        flat.tables["responses"] = table.set_column(
            table.schema.get_field_index("nps"), "nps", pa.array([11] * table.num_rows, pa.int8())
        )
        return flat

    monkeypatch.setattr(tables_module, "flatten_raw", nps_eleven)
    assert not run(instance, resources, BAD, raise_on_error=False).success


def bar_segments(page) -> list[tuple[str, float, float]]:
    """The partitions bar's coloured segments: (colour, start, end) as fractions of the bar's width."""
    return [(s["color"], s["start"], s["end"]) for s in page.evaluate(SEGMENTS)]


def hour_span(page, key: str) -> tuple[float, float]:
    """Where partition ``key`` lies in the bar, from the number of partitions the page says it shows."""
    count = int(re.search(r"(\d+) Partitions Selected", page.inner_text("body")).group(1))
    index = int(key[11:13]) + 24 * (int(key[8:10]) - int(START[8:10]))
    return index / count, (index + 1) / count


def covers(segments, color: str, span: tuple[float, float]) -> bool:
    middle = (span[0] + span[1]) / 2
    return any(c == color and start <= middle <= end for c, start, end in segments)


@pytest.mark.slow
def test_the_ui_shows_what_an_operator_checks(sandbox, tmp_path, monkeypatch):
    ui_port = free_port()
    env = dev_env(tmp_path, ui_port, free_port()) | {
        "CG_PARTITIONS_START": START,
        "CUSTOMERGAUGE_CLIENT_ID": SANDBOX_ID,
        "CUSTOMERGAUGE_CLIENT_SECRET": SANDBOX_SECRET,
        # read-only UI: a scheduled tick's run during the test reaches no API and writes nothing
        "CUSTOMERGAUGE_API_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "CUSTOMERGAUGE_AUTH_BASE_URL": f"http://127.0.0.1:{free_port()}",
    }
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    sync_two_hours(sandbox, Path(env["CG_LAKE_ROOT"]), monkeypatch)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    dev = subprocess.Popen(
        [sys.executable, "scripts/dev.py"],
        cwd=PROJECT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_ui(ui_port, dev)
        check_state(ui_port)
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(viewport={"width": 1600, "height": 1600})  # tall enough for the whole lineage graph
            page.set_default_timeout(30_000)
            check_pages(page, f"http://127.0.0.1:{ui_port}")
            browser.close()
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        dev.wait(timeout=60)


def check_state(port: int) -> None:
    """Dagster's own view (GraphQL): lineage edges, the latest materialization, partition and check status."""
    nodes = graphql(port, "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }")["assetNodes"]
    edges = {(tuple(d["path"]), tuple(n["assetKey"]["path"])) for n in nodes for d in n["dependencyKeys"]}
    raw, flat = tuple(RAW_KEY.path), {name: tuple(key.path) for name, key in FLAT_KEYS.items()}
    expected = {(raw, key) for key in flat.values()}
    for name, key in CURRENT_KEYS.items():
        expected |= {(flat[name], tuple(key.path)), (flat["responses"], tuple(key.path))}
    non_responses, current_non_responses = tuple(NON_RESPONSES_KEY.path), tuple(CURRENT_NON_RESPONSES_KEY.path)
    properties, current_properties = (
        ("customergauge", "non_response_properties"),
        (
            "customergauge",
            "current_non_response_properties",
        ),
    )
    expected |= {
        (tuple(RAW_NON_RESPONSES_KEY.path), non_responses),
        (tuple(RAW_NON_RESPONSES_KEY.path), properties),
        (non_responses, current_non_responses),
        (tuple(CURRENT_KEYS["responses"].path), current_non_responses),
        (properties, current_properties),
        (non_responses, current_properties),
        (tuple(CURRENT_KEYS["responses"].path), current_properties),
    }
    assert edges == expected
    assert {n["groupName"] for n in nodes} == {"customergauge"} and len(nodes) == 16
    state = graphql(
        port,
        """{
      raw: assetNodeOrError(assetKey: {path: ["customergauge", "raw_responses"]}) { ... on AssetNode {
        assetPartitionStatuses { ... on TimePartitionStatuses { ranges { status startKey endKey } } }
        internalFreshnessPolicy { ... on TimeWindowFreshnessPolicy { failWindowSeconds } } } }
      responses: assetNodeOrError(assetKey: {path: ["customergauge", "responses"]}) { ... on AssetNode {
        assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
          ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } } } } } } } }
      schedulesOrError(repositorySelector: {repositoryName: "__repository__",
                                            repositoryLocationName: "cg_dagster"}) {
        ... on Schedules { results { name scheduleState { status } } } } }""",
    )
    assert state["raw"]["assetPartitionStatuses"]["ranges"] == [
        {"status": "MATERIALIZED", "startKey": GOOD, "endKey": BAD}
    ]
    assert state["raw"]["internalFreshnessPolicy"] == {"failWindowSeconds": 7200}
    checks = {c["name"]: c["partitionStatuses"]["ranges"] for c in state["responses"]["assetChecksOrError"]["checks"]}
    assert checks["responses_nps_in_range"] == [
        {"startKey": GOOD, "endKey": GOOD, "status": "SUCCEEDED"},
        {"startKey": BAD, "endKey": BAD, "status": "FAILED"},
    ]
    assert state["schedulesOrError"]["results"] == [
        {"name": "customergauge_hourly_sync_schedule", "scheduleState": {"status": "RUNNING"}}
    ]


def check_pages(page, base: str) -> None:
    """What a person sees, page by page (a screenshot of each in ARTIFACTS)."""
    page.goto(f"{base}/asset-groups/customergauge")
    for name in ["raw_responses", *FLAT_KEYS, *(key.path[-1] for key in CURRENT_KEYS.values())]:
        page.locator(f"text={name}").first.wait_for()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=ARTIFACTS / "1-lineage.png")
    # the drawn edges: 5 raw -> flattened, 5 flattened -> current, 4 responses -> the other current tables, and
    # raw_non_responses -> non_responses -> current_non_responses <- current_responses, raw_non_responses ->
    # non_response_properties -> current_non_response_properties <- non_responses, current_responses
    assert page.locator('svg path[stroke="var(--color-lineage-edge)"]').count() == 21

    page.goto(f"{base}/assets/customergauge/raw_responses")
    page.get_by_text("Fails if more than 2 hours since last materialization").wait_for()
    page.wait_for_load_state("networkidle")
    text = page.inner_text("body")
    page.screenshot(path=ARTIFACTS / "2-raw_responses.png", full_page=True)
    latest = re.search(
        r"Latest materialization\s+.*?\s+(\S+)\s+Freshness policy\s+(\w+)\s+Row count\s+(\d+)", text, re.DOTALL
    )
    assert latest.groups() == (BAD, "Passing", "10")
    metadata = dict(re.findall(r"^(cursor|pages|cursor_start)\s+.*?\n\s*(\d+)\s*$", text, re.MULTILINE | re.DOTALL))
    assert metadata == {"cursor_start": "1991", "cursor": "2023", "pages": "1"}

    page.goto(f"{base}/assets/customergauge/raw_responses?view=partitions")
    page.get_by_text("Materialized (2)").wait_for()
    page.screenshot(path=ARTIFACTS / "3-raw_responses-partitions.png")
    segments = bar_segments(page)
    assert covers(segments, GREEN, hour_span(page, GOOD)) and covers(segments, GREEN, hour_span(page, BAD))
    assert {color for color, _, _ in segments} == {GREEN}

    page.goto(f"{base}/assets/customergauge/responses?view=checks&checkDetail=responses_nps_in_range")
    page.get_by_role("tab", name="Execution history").wait_for()  # the check's own tabs, beside the asset's
    page.get_by_role("tab", name="Partitions").last.click()
    page.get_by_text("Failed (1)").wait_for()
    page.screenshot(path=ARTIFACTS / "4-nps-check-partitions.png")
    segments = bar_segments(page)
    assert covers(segments, GREEN, hour_span(page, GOOD)) and covers(segments, RED, hour_span(page, BAD))
    assert not covers(segments, RED, hour_span(page, GOOD)) and not covers(segments, GREEN, hour_span(page, BAD))

    page.goto(f"{base}/automation")
    page.get_by_text("customergauge_hourly_sync_schedule").wait_for()
    page.get_by_text("At 5 minutes past the hour").wait_for()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=ARTIFACTS / "5-automation.png")
    assert page.get_by_role("checkbox").last.is_checked()  # the schedule's on/off switch
