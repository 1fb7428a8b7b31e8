"""The daily trailing-window re-read cannot be missed (issue 8 #5): it runs in the first sync after it is due,
the lake records the last one, and each run's metadata says whether it re-read and why."""

import datetime as dt

import dagster as dg
import pytest

from cg_dagster.customergauge.assets import RawResponsesConfig, raw_non_responses
from cg_dagster.customergauge.keys import RAW_NON_RESPONSES_OP
from cg_dagster.lib.client import CustomerGaugeConfigError, Period
from cg_dagster.lib.lake import NON_RESPONSES, Lake, LakeError
from cg_dagster.lib.lookback import last_reread, plan_lookback
from cg_dagster_tests._fixtures_runs import RAW_OP, failure_text, raw_metadata, raw_numbers, run
from cg_dagster_tests._fixtures_sandbox import assert_current_matches_sandbox, make_resources

UTC = dt.timezone.utc
PERIOD = Period(field="date_survey_response", start=dt.date(2026, 10, 25), end=dt.date(2026, 11, 29))


def at(key: str) -> dt.datetime:
    return dt.datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "last_key, partition_key, due, reason",
    [
        ("2026-11-28-02:00", "2026-11-29-09:00", True,
         "due: last re-read 2026-11-28-02:00, 31 h before this partition, before the daily slot 2026-11-29-02:00"),
        ("2026-11-28-02:00", "2026-11-29-02:00", True,
         "due: last re-read 2026-11-28-02:00, 24 h before this partition, before the daily slot 2026-11-29-02:00"),
        ("2026-11-28-02:00", "2026-11-29-01:00", False,
         "not due: last re-read 2026-11-28-02:00, 23 h before this partition; next due at or after 2026-11-29-02:00"),
        ("2026-11-29-03:00", "2026-11-30-02:00", True,  # a late re-read does not push the next one later
         "due: last re-read 2026-11-29-03:00, 23 h before this partition, before the daily slot 2026-11-30-02:00"),
        ("2026-11-29-03:00", "2026-11-29-04:00", False,
         "not due: last re-read 2026-11-29-03:00, 1 h before this partition; next due at or after 2026-11-30-02:00"),
    ],
)  # fmt: skip
def test_the_reread_is_due_in_the_first_partition_at_or_after_the_daily_slot(last_key, partition_key, due, reason):
    plan = plan_lookback({"partition_key": last_key}, at(partition_key), PERIOD, hour=2)
    assert (plan.period == PERIOD if due else plan.period is None) and plan.reason == reason


def test_no_record_off_and_forced_plans():
    assert plan_lookback(None, at("2026-11-29-09:00"), PERIOD, hour=2).reason == (
        "due: no re-read recorded in this lake (daily slot 2026-11-29-02:00)"
    )
    off = plan_lookback(None, at("2026-11-29-02:00"), None, hour=-1)
    assert (off.period, off.reason) == (None, "off: lookback_hour is -1")
    forced = plan_lookback({"partition_key": "2026-11-29-08:00"}, at("2026-11-29-09:00"), PERIOD, hour=2, force=True)
    assert (forced.period, forced.reason) == (PERIOD, "forced by run config (force_lookback)")


def test_a_corrupt_record_names_the_file_and_the_fix(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.write_state("lookback.json", {"partition_key": "yesterday"})
    with pytest.raises(LakeError, match=r"_state/lookback.json .*holds no partition key .* delete it"):
        plan_lookback(last_reread(lake), at("2026-11-29-09:00"), PERIOD, hour=2)
    (lake.root / "_state" / "lookback.json").write_text("{not json")
    with pytest.raises(LakeError, match=r"lookback.json.* is corrupt .*delete or restore it"):
        last_reread(lake)


def test_huge_lookback_days_is_a_config_error_naming_the_setting():
    config = RawResponsesConfig(lookback_hour=0, lookback_days=1_000_000)
    with pytest.raises(CustomerGaugeConfigError, match="lookback_days"):
        config.lookback_period(dt.datetime(2026, 1, 1, 0, tzinfo=dt.timezone.utc))  # once an OverflowError


def test_bad_lookback_hour_error_names_the_environment_variable():
    # lookback_days' message named CG_LOOKBACK_DAYS; lookback_hour's (default from CG_LOOKBACK_HOUR) did not.
    with pytest.raises(CustomerGaugeConfigError, match="CG_LOOKBACK_HOUR"):
        RawResponsesConfig(lookback_hour=24).lookback_period(dt.datetime(2026, 11, 1, 2, tzinfo=dt.timezone.utc))


def config(**values) -> dict:
    return {"ops": {RAW_OP: {"config": values}}}


@pytest.mark.slow
def test_a_missed_reread_hour_is_made_up_by_the_next_sync_and_recorded_once(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    scheduled = config(lookback_days=10)  # what the schedule runs (lookback_hour 2 by default)
    with dg.instance_for_test() as instance:
        initial = raw_metadata(run(instance, resources, "2026-11-01-10:00", run_config=scheduled))
        assert (
            initial["lookback_reason"]
            == "initial load (or full refresh): read everything; recorded as the last re-read"
        )
        assert last_reread(lake)["partition_key"] == "2026-11-01-10:00" and last_reread(lake)["period"] is None

        # 2026-11-02-02:00 never ran (daemon down): the 03:00 sync re-reads.
        made_up = raw_metadata(run(instance, resources, "2026-11-02-03:00", run_config=scheduled))
        assert made_up["lookback_reason"] == (
            "due: last re-read 2026-11-01-10:00, 17 h before this partition, before the daily slot 2026-11-02-02:00"
        )
        assert made_up["lookback"] == {"field": "date_survey_response", "start": "2026-10-23", "end": "2026-11-02"}
        window = [r["number_customergauge"] for r in sandbox.records()
                  if "2026-10-23" <= (r.get("date_survey_response") or "")[:10] <= "2026-11-02"]  # fmt: skip
        assert sorted(raw_numbers(lake, "2026-11-02-03:00", "lookback")) == sorted(window) != []
        record = last_reread(lake)
        assert (record["partition_key"], record["period"]) == ("2026-11-02-03:00", made_up["lookback"])

        after = raw_metadata(run(instance, resources, "2026-11-02-04:00", run_config=scheduled))
        assert after["lookback"] is None and after["lookback_rows"] == 0
        assert after["lookback_reason"] == (
            "not due: last re-read 2026-11-02-03:00, 1 h before this partition; next due at or after 2026-11-03-02:00"
        )
        # Neither a replay (which re-reads what it recorded) nor the missed partition run late changes the record.
        replay = raw_metadata(run(instance, resources, "2026-11-02-03:00", run_config=scheduled))
        assert replay["sync_mode"] == "replay" and replay["lookback"] == made_up["lookback"]
        assert replay["lookback_reason"].startswith("replay: re-read the period recorded with this partition")
        late = raw_metadata(run(instance, resources, "2026-11-02-02:00", run_config=scheduled))
        assert late["sync_mode"] == "skipped" and late["lookback_reason"].startswith("skipped:")
        assert last_reread(lake) == record

        forced = raw_metadata(run(instance, resources, "2026-11-02-05:00", run_config=config(force_lookback=True)))
        assert forced["lookback_reason"] == "forced by run config (force_lookback)" and forced["lookback_rows"] > 0
        assert last_reread(lake)["partition_key"] == "2026-11-02-05:00"
        off = raw_metadata(run(instance, resources, "2026-11-03-03:00", run_config=config(lookback_hour=-1)))
        assert off["lookback"] is None and off["lookback_reason"] == "off: lookback_hour is -1"
        assert last_reread(lake)["partition_key"] == "2026-11-02-05:00"
    assert_current_matches_sandbox(lake, sandbox)


# ---- each stream re-reads through a date its records carry (issue 11 review: the non-responses read nothing) ----

START = at("2026-11-01-11:00")


def test_each_stream_rereads_by_its_own_default_field_and_variable(monkeypatch):
    assert RawResponsesConfig().lookback_period(START).field == "date_survey_response"
    assert RawResponsesConfig().lookback_period(START, NON_RESPONSES).field == "date_sent"
    monkeypatch.setenv("CG_LOOKBACK_FIELD", "date_order")  # the responses' variable only
    monkeypatch.setenv("CG_NON_RESPONSES_LOOKBACK_FIELD", "date_creation")
    assert RawResponsesConfig().lookback_period(START).field == "date_order"
    assert RawResponsesConfig().lookback_period(START, NON_RESPONSES).field == "date_creation"
    assert RawResponsesConfig().resolved(NON_RESPONSES).lookback_field == "date_creation"
    given = RawResponsesConfig(lookback_field="date_sent")
    assert given.lookback_period(START, NON_RESPONSES).field == given.lookback_period(START).field == "date_sent"


@pytest.mark.parametrize(
    "run_config, variable, source",
    [
        ({"lookback_field": "date_survey_response"}, None, "run config of raw_non_responses"),
        ({}, "date_survey_response", "CG_NON_RESPONSES_LOOKBACK_FIELD"),
        ({"lookback_field": "date_modified", "lookback_hour": -1}, None, "run config of raw_non_responses"),
    ],
)
def test_a_field_the_non_responses_do_not_carry_is_refused_naming_field_stream_and_choices(
    monkeypatch, run_config, variable, source
):
    if variable is not None:
        monkeypatch.setenv("CG_NON_RESPONSES_LOOKBACK_FIELD", variable)
    field = run_config.get("lookback_field", variable)
    with pytest.raises(CustomerGaugeConfigError) as error:
        RawResponsesConfig(**run_config).lookback_period(START, NON_RESPONSES)
    assert str(error.value) == (
        f"lookback_field {field!r} ({source}) is not a period[field] date the non-responses records carry: "
        "use one of date_creation, date_order, date_sent (default date_sent)"
    )
    RawResponsesConfig(lookback_field="date_survey_response").lookback_period(START)  # the responses carry it


def test_a_recorded_reread_through_a_field_the_stream_does_not_carry_does_not_count():
    last = {"partition_key": "2026-11-01-10:00", "period": {"field": "date_survey_response"}}
    window = Period(field="date_sent", start=dt.date(2026, 10, 2), end=dt.date(2026, 11, 1))
    plan = plan_lookback(last, START, window, hour=2, stream=NON_RESPONSES)
    assert (plan.period, plan.reason) == (
        window,
        "due: last re-read 2026-11-01-10:00, 1 h before this partition, read date_survey_response, which the "
        "non-responses records lack (so nothing)",
    )
    responses = plan_lookback(last, START, PERIOD, hour=2)
    assert responses.period is None and responses.reason.startswith("not due:")


def non_responses_config(**values) -> dict:
    return {"ops": {RAW_NON_RESPONSES_OP: {"config": values}}}


def test_a_forced_non_responses_reread_over_http_stores_the_window_the_sandbox_serves(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    served = sandbox.records("non-responses")
    window = sorted(r["number_customergauge"] for r in served if "2026-10-02" <= r["date_sent"][:10] <= "2026-11-01")
    assert 0 < len(window) < len(served)  # the window is a part of them: the period filter did the choosing
    with dg.instance_for_test() as instance:
        for partition, config in (("2026-11-01-10:00", {"lookback_hour": -1}), ("2026-11-01-11:00", {})):
            dg.materialize(
                [raw_non_responses],
                instance=instance,
                resources=resources,
                partition_key=partition,
                run_config=non_responses_config(force_lookback=True, lookback_days=30, **config),
            )
    raw = lake.read_table(lake.partition_path("raw_non_responses", "2026-11-01-11:00"))
    assert raw.column("sync_pass").unique().to_pylist() == ["lookback"]
    assert sorted(raw.column("number_customergauge").to_pylist()) == window
    period = {"field": "date_sent", "start": "2026-10-02", "end": "2026-11-01"}
    assert last_reread(lake, NON_RESPONSES)["period"] == period


def test_a_refused_non_responses_field_fails_the_run_before_any_request(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    config = non_responses_config(force_lookback=True, lookback_field="date_survey_response")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_non_responses],
            instance=instance,
            resources=make_resources(sandbox, lake.root),
            partition_key="2026-11-01-10:00",
            run_config=config,
            raise_on_error=False,
        )
    assert not result.success and "lookback_field 'date_survey_response' (run config of raw_non_responses)" in (
        failure_text(result)
    )
    assert sandbox.requests_log == [] and not lake.exists(lake.partition_path("raw_non_responses", "2026-11-01-10:00"))
