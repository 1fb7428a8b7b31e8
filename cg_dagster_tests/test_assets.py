"""The assets end to end: real HTTP to the sandbox, real Dagster runs on a test instance, a real lake."""

import datetime as dt
import json
import subprocess
import sys

import dagster as dg
import pyarrow.parquet as pq
import pytest

from cg_dagster.customergauge.checks import NON_RESPONSES_CHECK_SPECS, PARTITION_CHECK_SPECS
from cg_dagster.customergauge.keys import (
    CURRENT_KEYS,
    CURRENT_NON_RESPONSES_KEY,
    FLAT_KEYS,
    NON_RESPONSES_KEY,
    RAW_KEY,
    RAW_NON_RESPONSES_KEY,
    RAW_NON_RESPONSES_OP,
    RAW_OP,
    raw_run_config,
)
from cg_dagster.customergauge.schedules import hourly_sync_schedule
from cg_dagster.definitions import defs
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.schemas import TABLES
from cg_dagster_tests._fixtures_runs import (
    NO_LOOKBACK,
    PROJECT,
    cli_env,
    dagster_home,
    raw_metadata,
    run,
    sent_cursors,
)
from cg_dagster_tests._fixtures_sandbox import SANDBOX_SECRET, assert_current_matches_sandbox, make_resources

pytestmark = pytest.mark.slow  # Dagster runs of the asset group (run.py test --fast skips them)

P1, P2, P3, P4 = "2026-11-01-10:00", "2026-11-01-11:00", "2026-11-01-12:00", "2026-11-01-13:00"


def raw_numbers(lake: Lake, partition: str) -> list[int]:
    return pq.read_table(lake.partition_path("raw_responses", partition)).column("number_customergauge").to_pylist()


def test_initial_then_incremental_sync_fetches_only_new_records(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    served = [r["number_customergauge"] for r in sandbox.records()]
    with dg.instance_for_test() as instance:
        first = run(instance, resources, P1)
        meta1 = raw_metadata(first)
        assert raw_numbers(lake, P1) == served
        assert meta1["cursor_start"] is None
        assert meta1["pages"] == 4  # 350 records, per_page 100
        assert meta1["dagster/row_count"] == 350
        assert meta1["cursor"] == sandbox.last_cursor
        assert meta1["dagster/uri"] == lake.partition_path("raw_responses", P1).as_uri()

        appended = [r["number_customergauge"] for r in sandbox.append_records(42)]
        sandbox.reset_log()
        second = run(instance, resources, P2)
        meta2 = raw_metadata(second)
        assert raw_numbers(lake, P2) == appended
        assert meta2["cursor_start"] == meta1["cursor"]
        assert meta2["cursor"] == sandbox.last_cursor > meta1["cursor"]
        assert meta2["pages"] == 1
        sent = [dict(e.query).get("cursor") for e in sandbox.requests_log if e.path.endswith("/responses")]
        assert sent[0] == str(meta1["cursor"])  # resumed, no reload

        # nothing new: an empty, schema-valid partition and the cursor unchanged
        third = run(instance, resources, P3)
        meta3 = raw_metadata(third)
        assert meta3["dagster/row_count"] == 0 and meta3["pages"] == 0
        assert meta3["cursor"] == meta3["cursor_start"] == meta2["cursor"]
        assert meta3["dagster/uri"] == lake.partition_path("raw_responses", P3).as_uri()
        assert pq.read_schema(lake.partition_path("raw_responses", P3)).equals(TABLES["raw_responses"].arrow_schema)
        assert lake.read_head().cursor == meta2["cursor"]
    assert_current_matches_sandbox(lake, sandbox)


def test_flattened_tables_have_one_row_per_response_and_declared_schemas(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        result = run(instance, make_resources(sandbox, lake.root), P1)
    responses = pq.read_table(lake.partition_path("responses", P1))
    assert responses.column("number_customergauge").to_pylist() == [
        r["number_customergauge"] for r in sandbox.records()
    ]
    expected_drivers = sum(
        max(1, len(d.get("secondary") or [])) for r in sandbox.records() for d in (r.get("selected_drivers") or [])
    )
    assert pq.read_table(lake.partition_path("response_drivers", P1)).num_rows == expected_drivers
    for name, key in FLAT_KEYS.items():
        path = lake.partition_path(name, P1)
        assert pq.read_schema(path).equals(TABLES[name].arrow_schema), name
        [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == key]
        metadata = mat.materialization.metadata
        assert metadata["dagster/row_count"].value == pq.read_metadata(path).num_rows
        assert "dagster/column_lineage" in metadata and "dagster/column_schema" in metadata
    # Values the flattening nulled are counted on the responses materialization; counted here independently
    # from the records the sandbox served (zero or empty dates; nps present but not an integer 0..10).
    [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == FLAT_KEYS["responses"]]
    counts = {key: mat.materialization.metadata[key].value for key in ("dates_invalid", "nps_invalid")}
    date_fields = ("date_creation", "date_order", "date_sent", "date_survey_response")
    bad_dates = sum(r.get(f) in ("", "0000-00-00 00:00:00") for r in sandbox.records() for f in date_fields)
    bad_nps = sum(
        r.get("nps") is not None and not (type(r["nps"]) is int and 0 <= r["nps"] <= 10) for r in sandbox.records()
    )
    assert bad_dates > 0
    assert counts == {"dates_invalid": bad_dates, "nps_invalid": bad_nps}


def test_rematerializing_a_synced_partition_replays_its_range_without_moving_the_cursor(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        head = lake.read_head()
        sandbox.append_records(10)
        replay = raw_metadata(run(instance, resources, P1))
        assert replay["sync_mode"] == "replay"
        assert raw_numbers(lake, P1) == [r["number_customergauge"] for r in sandbox.records()[:350]]
        assert lake.read_head() == head
        assert replay["cursor"] == head.cursor
        # the next window still gets the appended records
        run(instance, resources, P2)
        assert len(raw_numbers(lake, P2)) == 10


def test_an_older_never_synced_partition_is_written_empty_with_a_reason(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P2)
        head = lake.read_head()
        meta = raw_metadata(run(instance, resources, P1))
    assert meta["sync_mode"] == "skipped" and meta["dagster/row_count"] == 0
    assert "older than 2026-11-01-11:00" in meta["reason"]
    assert lake.read_head() == head
    assert pq.read_schema(lake.partition_path("responses", P1)).equals(TABLES["responses"].arrow_schema)


def test_full_refresh_loads_from_the_beginning(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    config = raw_run_config(lookback_hour=-1, full_refresh=True)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        meta = raw_metadata(run(instance, resources, P2, run_config=config))
    assert meta["cursor_start"] is None and meta["dagster/row_count"] == 350


def test_full_refresh_into_an_older_partition_never_moves_the_head_backwards(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    full = raw_run_config(lookback_hour=-1, full_refresh=True)
    with dg.instance_for_test() as instance:
        run(instance, resources, P2)
        sandbox.append_records(10)
        run(instance, resources, P3)
        sandbox.append_records(10)
        run(instance, resources, P1, run_config=full)  # operator: full refresh from the selected partition
        after_refresh = lake.read_head().cursor
        assert after_refresh == sandbox.last_cursor
        sandbox.reset_log()
        run(instance, resources, P4)  # nothing new upstream
    assert sent_cursors(sandbox)[0] == str(after_refresh), "the next sync resumed from an older cursor"
    assert raw_numbers(lake, P4) == [], "responses fetched by the full refresh were fetched again"


def test_lookback_hour_rereads_the_trailing_window(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    config = raw_run_config(lookback_hour=11, lookback_days=10)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        sandbox.reset_log()
        meta = raw_metadata(run(instance, resources, P2, run_config=config))
    window = [
        r["number_customergauge"]
        for r in sandbox.records()
        if "2026-10-22" <= (r.get("date_survey_response") or "")[:10] <= "2026-11-01"
    ]
    assert meta["lookback"] == {"field": "date_survey_response", "start": "2026-10-22", "end": "2026-11-01"}
    assert meta["lookback_rows"] == len(window) > 0
    table = pq.read_table(lake.partition_path("raw_responses", P2))
    assert sorted(table.filter(pq_filter(table, "lookback")).column("number_customergauge").to_pylist()) == sorted(
        window
    )
    periods = {dict(e.query).get("period[start]") for e in sandbox.requests_log if e.path.endswith("/responses")}
    assert periods == {None, "2026-10-22"}


def pq_filter(table, sync_pass):
    import pyarrow.compute as pc

    return pc.equal(table.column("sync_pass"), sync_pass)


def test_bad_settings_fail_before_any_request_and_write_nothing(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        result = run(instance, make_resources(sandbox, lake.root, per_page=1001), P1, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "per_page" in failure and "1000" in failure
    assert sandbox.requests_log == []
    assert not lake.partition_path("raw_responses", P1).exists()
    assert lake.read_head() is None


def test_schedule_tick_requests_the_last_complete_hour():
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 29, 10, 5, tzinfo=dt.timezone.utc)
    )
    schedule = defs.resolve_schedule_def(hourly_sync_schedule.name)
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-29-09:00"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def("customergauge_hourly_sync")
    assert set(job.asset_layer.executable_asset_keys) == {
        RAW_KEY,
        *FLAT_KEYS.values(),
        *CURRENT_KEYS.values(),
        RAW_NON_RESPONSES_KEY,
        NON_RESPONSES_KEY,
        CURRENT_NON_RESPONSES_KEY,
        dg.AssetKey(["customergauge", "non_response_properties"]),
        dg.AssetKey(["customergauge", "current_non_response_properties"]),
    }
    # the daemon's run of this job, and `dagster asset materialize` (the implicit asset job), run every step
    # in the run's process
    assert job.executor_def is dg.in_process_executor
    assert defs.resolve_implicit_global_asset_job_def().executor_def is dg.in_process_executor


def test_definitions_load_and_the_secret_stays_out_of_the_lake_and_metadata(sandbox, tmp_path):
    dg.Definitions.validate_loadable(defs)
    lake = Lake(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        result = run(instance, make_resources(sandbox, lake.root), P1)
        token = sandbox.requests_log[-1].authorization.split()[-1]
        logs = json.dumps([str(e) for e in instance.all_logs(result.run_id)])
    assert SANDBOX_SECRET not in logs and token not in logs
    for path in lake.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SANDBOX_SECRET.encode() not in data and token.encode() not in data, path


def test_a_head_write_lost_after_the_data_landed_is_rolled_forward(sandbox, tmp_path, monkeypatch):
    """kill -9 between the data rename and the head write: the next sync must not fetch those responses again."""
    from cg_dagster.lib import lake as lake_module

    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        run(instance, resources, P1)
        committed = lake.read_head()
        appended = [r["number_customergauge"] for r in sandbox.append_records(30)]

        def crash(self, head, stream):
            raise KeyboardInterrupt("killed between the data rename and the head write")

        monkeypatch.setattr(lake_module.Lake, "write_head", crash)
        with pytest.raises(KeyboardInterrupt):
            run(instance, resources, P2)
        monkeypatch.undo()
        assert lake.read_head() == committed and raw_numbers(lake, P2) == appended  # data landed, head did not

        meta = raw_metadata(run(instance, resources, P3))
    assert meta["cursor_start"] == sandbox.last_cursor and meta["dagster/row_count"] == 0
    assert lake.read_head().cursor == sandbox.last_cursor
    every = [n for p in (P1, P2, P3) for n in raw_numbers(lake, p)]
    assert sorted(every) == sorted(r["number_customergauge"] for r in sandbox.records())


def test_the_cli_materializes_the_group_in_one_process_with_checks_per_partition(sandbox, tmp_path):
    """`dagster asset materialize` of the whole group, as users run it: no process per step (no step worker
    events, every step in the run's process), and the asset checks run in it, each result on its partition."""
    lake = Lake(tmp_path / "lake")
    home = dagster_home(tmp_path)
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "cg_dagster.definitions",
        "--select", "group:customergauge", "--partition", P1, "--config-json", json.dumps(NO_LOOKBACK),
    ]  # fmt: skip
    env = cli_env(sandbox, lake, home, per_page=100)
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records()
        events = [entry.dagster_event for entry in instance.all_logs(record.dagster_run.run_id) if entry.dagster_event]
    kinds = [event.event_type for event in events]
    assert dg.DagsterEventType.STEP_WORKER_STARTING not in kinds
    steps = {event.step_key: event.pid for event in events if event.event_type == dg.DagsterEventType.STEP_START}
    assert set(steps) == {
        RAW_OP,  # raw_responses and the five flattened tables
        "current_tables",
        RAW_NON_RESPONSES_OP,  # raw_non_responses and its two flattened tables
        "customergauge__current_non_responses",
    }
    assert len(set(steps.values())) == 1
    check_type = dg.DagsterEventType.ASSET_CHECK_EVALUATION
    evaluations = [event.event_specific_data for event in events if event.event_type == check_type]
    specs = [*PARTITION_CHECK_SPECS, *NON_RESPONSES_CHECK_SPECS]
    assert sorted(e.check_name for e in evaluations) == sorted(spec.name for spec in specs)
    assert all(e.passed and e.partition == P1 for e in evaluations)
    assert_current_matches_sandbox(lake, sandbox)
