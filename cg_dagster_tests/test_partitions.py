"""Where the hourly partitions start (CG_PARTITIONS_START, else recorded once in DAGSTER_HOME), the freshness
setting, and that backfilling an hour older than the first sync is cheap: no API request, an empty file with
its reason."""

import datetime as dt
import threading

import dagster as dg
import pytest

from cg_dagster.customergauge.partitions import (
    START_RECORD,
    freshness_hours,
    parse_start,
    partitions_start,
)
from cg_dagster.lib.client import CustomerGaugeConfigError
from cg_dagster.lib.lake import Lake
from cg_dagster_tests._fixtures_runs import ASSETS, NO_LOOKBACK, failure_text, raw_metadata, run
from cg_dagster_tests._fixtures_sandbox import make_resources

TODAY = dt.date(2026, 11, 30)


@pytest.mark.parametrize(
    "text, key",
    [("2026-11-29", "2026-11-29-00:00"), (" 2026-11-29-09:00\n", "2026-11-29-09:00"), ("2026-1-5", "2026-01-05-00:00")],
)
def test_a_start_is_a_utc_day_or_hour(text, key):
    assert parse_start(text) == key


@pytest.mark.parametrize("text", ["2026-11-29-09:30", "29.11.2026", "2026-11-29T09:00", "", "2026-02-30"])
def test_a_malformed_start_names_the_setting_and_the_forms(text):
    with pytest.raises(CustomerGaugeConfigError) as error:
        parse_start(text)
    assert str(error.value) == (
        f"CG_PARTITIONS_START={text!r} is not the start of an hourly partition: give a UTC day (2026-11-29) or "
        "hour (2026-11-29-09:00)"
    )


def test_the_setting_wins_and_nothing_is_recorded(tmp_path):
    environ = {"CG_PARTITIONS_START": "2026-10-01", "DAGSTER_HOME": str(tmp_path)}
    assert partitions_start(environ, today=TODAY) == "2026-10-01-00:00"
    assert not (tmp_path / START_RECORD).exists()


def test_unset_the_day_before_the_first_load_is_recorded_and_kept(tmp_path):
    environ = {"DAGSTER_HOME": str(tmp_path)}
    assert partitions_start(environ, today=TODAY) == "2026-11-29-00:00"
    assert (tmp_path / START_RECORD).read_text() == "2026-11-29\n"
    # a week later (webserver restarted, a run worker, the CLI): the same grid
    assert partitions_start(environ, today=TODAY + dt.timedelta(days=7)) == "2026-11-29-00:00"


def test_two_first_loads_at_once_record_one_day(tmp_path):
    environ = {"DAGSTER_HOME": str(tmp_path)}
    days = [TODAY + dt.timedelta(days=i) for i in range(8)]
    results: list[str] = []
    threads = [threading.Thread(target=lambda d=d: results.append(partitions_start(environ, today=d))) for d in days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 8
    assert parse_start((tmp_path / START_RECORD).read_text()) == results[0]


def test_a_damaged_record_names_the_file(tmp_path):
    (tmp_path / START_RECORD).write_text("yesterday\n")
    with pytest.raises(CustomerGaugeConfigError, match=f"^{tmp_path / START_RECORD}='yesterday\\\\n' is not"):
        partitions_start({"DAGSTER_HOME": str(tmp_path)}, today=TODAY)


def test_without_dagster_home_the_grid_starts_the_day_before():
    assert partitions_start({}, today=TODAY) == "2026-11-29-00:00"


@pytest.mark.parametrize("text, hours", [(None, 2.0), ("", 2.0), ("1.5", 1.5), ("24", 24.0)])
def test_freshness_hours(text, hours):
    assert freshness_hours({} if text is None else {"CG_FRESHNESS_HOURS": text}) == hours


@pytest.mark.parametrize("text", ["0", "-1", "two", "nan", "inf", "9000"])
def test_bad_freshness_hours_name_the_setting(text):
    with pytest.raises(CustomerGaugeConfigError, match=f"^CG_FRESHNESS_HOURS='{text}' must be a number of hours"):
        freshness_hours({"CG_FRESHNESS_HOURS": text})


@pytest.mark.slow
def test_backfilling_an_hour_before_the_first_sync_requests_nothing(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        run(instance, resources, "2026-11-02-09:00")  # the first sync: the initial load
        sandbox.reset_log()
        meta = raw_metadata(run(instance, resources, "2026-11-01-09:00"))
    assert sandbox.requests_log == [] and sandbox.token_requests == 0
    assert meta["sync_mode"] == "skipped" and meta["dagster/row_count"] == 0 and meta["pages"] == 0
    assert meta["reason"].startswith("partition 2026-11-01-09:00 is older than 2026-11-02-09:00")


@pytest.mark.slow
def test_a_partition_range_run_is_refused_with_a_project_message(sandbox, tmp_path):
    """A run over a range (UI backfill with single-run policy, or run tags) once failed on Dagster's internal
    'Call partition_key_range instead' invariant (advice to the developer) instead of a clear refusal."""
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS, instance=instance, resources=make_resources(sandbox, tmp_path / "lake"), run_config=NO_LOOKBACK,
            tags={"dagster/asset_partition_range_start": "2026-11-01-10:00",
                  "dagster/asset_partition_range_end": "2026-11-01-11:00"},
            raise_on_error=False,
        )  # fmt: skip
    assert not result.success
    text = failure_text(result)
    assert "DagsterInvariantViolationError" not in text, text[:400]
    assert "a sync commits one window's cursor at a time" in text
    assert not (tmp_path / "lake" / "raw_responses").exists()
