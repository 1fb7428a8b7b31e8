"""Regressions found by a third adversarial review, in the Dagster layer and the sandbox: a quarantined partition
stays out of the current tables, a multi-partition run is refused clearly, lookback errors name their variables,
the sandbox validates like PHP/Laravel (ASCII digits, named with[] keys)."""

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import cg_dagster.lib.tables as tables_module  # where the flattened_tables asset calls flatten_raw
from cg_dagster.customergauge.assets import RawResponsesConfig, current_tables, flattened_tables, raw_responses
from cg_dagster.lib.client import CustomerGaugeConfigError
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.schemas import TABLES
from cg_dagster.sandbox.server import QueryInvalid, parse_responses_query
from cg_dagster_tests.conftest import make_resources

ASSETS = [raw_responses, flattened_tables, current_tables]  # the checks are check_specs of flattened_tables
NO_LOOKBACK = {"ops": {"customergauge__raw_responses": {"config": {"lookback_hour": -1}}}}
BAD, NEXT = "2026-11-01-10:00", "2026-11-01-11:00"


def _materialize(instance, resources, partition, **kwargs):
    return dg.materialize(
        ASSETS, instance=instance, resources=resources, partition_key=partition, run_config=NO_LOOKBACK,
        raise_on_error=False, **kwargs,
    )


# --- A. Dagster layer -----------------------------------------------------------------------------

def test_a_partition_that_failed_a_blocking_check_stays_out_of_current_on_the_next_hourly_run(
    sandbox, tmp_path, monkeypatch
):
    """checks.py: 'a failure stops the current tables from being rebuilt from it'. It only stops the
    rebuild in the same run: the next (clean) hour rebuilds current from every partition file, bad one
    included, so nps=11 reaches current_responses although its partition failed responses_nps_in_range."""
    lake = Lake(tmp_path / "lake")
    real = tables_module.flatten_raw

    def nps_eleven(raw, **kwargs):
        flat = real(raw, **kwargs)
        t = flat.tables["responses"]
        flat.tables["responses"] = t.set_column(
            t.schema.get_field_index("nps"), "nps", pa.array([11] * t.num_rows, pa.int8())
        ).cast(TABLES["responses"].arrow_schema)
        return flat

    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        monkeypatch.setattr(tables_module, "flatten_raw", nps_eleven)
        first = _materialize(instance, resources, BAD)
        assert not first.success  # the blocking check did its job in this run
        monkeypatch.setattr(tables_module, "flatten_raw", real)
        sandbox.append_records(5)
        second = _materialize(instance, resources, NEXT)
    assert second.success
    nps = pq.read_table(lake.current_path("responses"), columns=["nps"])["nps"]
    assert (pc.max(nps).as_py() or 0) <= 10, "rows of a partition that failed a blocking ERROR check are in current"


def test_a_partition_range_run_is_refused_with_a_project_message(sandbox, tmp_path):
    """A run over a range (UI backfill with single-run policy, or run tags) fails on Dagster's internal
    'Call partition_key_range instead' invariant (advice to the developer) instead of a clear refusal."""
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            ASSETS, instance=instance, resources=make_resources(sandbox, tmp_path / "lake"), run_config=NO_LOOKBACK,
            tags={"dagster/asset_partition_range_start": BAD, "dagster/asset_partition_range_end": NEXT},
            raise_on_error=False,
        )
    assert not result.success
    text = "\n".join(e.event_specific_data.error.to_string() for e in result.get_step_failure_events())
    assert "DagsterInvariantViolationError" not in text, text[:400]
    assert "a sync commits one window's cursor at a time" in text
    assert not (tmp_path / "lake" / "raw_responses").exists()


def test_bad_lookback_hour_error_names_the_environment_variable():
    """lookback_days' message names CG_LOOKBACK_DAYS; lookback_hour's (default from CG_LOOKBACK_HOUR) does not."""
    import datetime as dt

    with pytest.raises(CustomerGaugeConfigError, match="CG_LOOKBACK_HOUR"):
        RawResponsesConfig(lookback_hour=24).lookback_period(dt.datetime(2026, 11, 1, 2, tzinfo=dt.timezone.utc))


# --- B. Sandbox fidelity --------------------------------------------------------------------------

@pytest.mark.parametrize("name, value", [("per_page", "１００"), ("per_page", "٣"), ("cursor", "１２３")])
def test_sandbox_refuses_non_ascii_digits_like_php(name, value):
    """PHP's FILTER_VALIDATE_INT (Laravel 'integer') accepts ASCII digits only; the sandbox's \\d and int()
    accept any Unicode digit, so a client sending '１００' would pass against the sandbox."""
    with pytest.raises(QueryInvalid) as raised:
        parse_responses_query([(name, value)])
    assert list(raised.value.errors) == [name]


def test_sandbox_period_start_with_non_ascii_digits_is_a_format_error():
    pairs = [("period[field]", "date_creation"), ("period[start]", "２０２３-01-05"), ("period[end]", "2023-01-25")]
    with pytest.raises(QueryInvalid) as raised:
        parse_responses_query(pairs)
    assert raised.value.errors.get("period.start") == ["The period.start does not match the format Y-m-d."]


def test_sandbox_with_given_a_named_key_is_validated_not_ignored():
    """PHP parses with[x]=bogus into with = {"x": "bogus"}; Laravel's with.* rule reports with.x. The
    sandbox ignores the key entirely (no error, no expansion)."""
    with pytest.raises(QueryInvalid) as raised:
        parse_responses_query([("with[x]", "bogus")])
    assert "with.x" in raised.value.errors
