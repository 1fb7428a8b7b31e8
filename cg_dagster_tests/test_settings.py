"""The settings module (cg_dagster/settings.py): every environment variable the code reads is in its table, one
parser per kind with errors that name the variable and the fix, values read when used (a malformed one fails
the run that needs it, not the code location's load), and the sandbox's environment."""

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from cg_dagster import settings
from cg_dagster.customergauge.assets import RawResponsesConfig
from cg_dagster.customergauge.keys import DEFAULT
from cg_dagster.customergauge.resources import CustomerGaugeResource
from cg_dagster.lib.client import CustomerGaugeConfigError
from cg_dagster.lib.flatten import FlattenError, flatten_records
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.lease import lease_ttl_seconds
from cg_dagster.sandbox import SandboxServer, project_env
from cg_dagster_tests._fixtures_runs import failure_text, run
from cg_dagster_tests._fixtures_sandbox import make_resources

PROJECT = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r"""["'`]((?:CG|CUSTOMERGAUGE)_[A-Z_]*[A-Z])["'`]""")
PARTITION_START = dt.datetime(2026, 11, 1, 2, tzinfo=dt.timezone.utc)


def test_every_variable_the_code_reads_is_in_the_settings_table():
    sources = [*PROJECT.glob("cg_dagster/**/*.py"), *PROJECT.glob("scripts/*.py"), PROJECT / "run.py"]
    read = {name for path in sources for name in VARIABLE.findall(path.read_text())}
    table = {row.split("`")[1] for row in settings.__doc__.splitlines() if row.startswith("| `")}
    assert read >= {"CUSTOMERGAUGE_PER_PAGE", "CG_LOOKBACK_HOUR", "CG_LAKE_ROOT"}  # the scan finds them
    assert read - table == set()
    assert settings.setting_names() <= table


@pytest.mark.parametrize("text, value", [(None, 35), ("", 35), ("  ", 35), ("7", 7), (" 12 ", 12), ("-1", -1)])
def test_an_integer_setting_reads_the_variable_or_its_default(text, value):
    environ = {} if text is None else {"CG_LOOKBACK_DAYS": text}
    assert settings.LOOKBACK_DAYS.integer(environ) == value


@pytest.mark.parametrize("text", ["two", "1.5", "0x10", "1e3"])
def test_a_malformed_integer_names_the_variable_and_the_fix(text):
    with pytest.raises(CustomerGaugeConfigError) as error:
        settings.LEASE_WAIT_SECONDS.integer({"CG_LEASE_WAIT_SECONDS": text})
    assert str(error.value) == (
        f"CG_LEASE_WAIT_SECONDS={text!r} must be a whole number of seconds, 0 or more, e.g. 1800, "
        "or unset it (default 1800)"
    )


@pytest.mark.parametrize("text", ["0", "65536", "-80"])
def test_an_integer_out_of_its_range_is_refused(text):
    with pytest.raises(CustomerGaugeConfigError, match=f"^CG_DAGSTER_PORT='{text}' is not a TCP port"):
        settings.DAGSTER_PORT.integer({"CG_DAGSTER_PORT": text}, minimum=1, maximum=65535)


@pytest.mark.parametrize("text, ttl", [(None, 120.0), ("3", 3.0), ("4.5", 4.5), ("86400", 86400.0)])
def test_the_object_lease_ttl_reads_the_variable_or_its_default(monkeypatch, text, ttl):
    if text is None:
        monkeypatch.delenv("CG_LEASE_TTL_SECONDS", raising=False)
    else:
        monkeypatch.setenv("CG_LEASE_TTL_SECONDS", text)
    assert lease_ttl_seconds() == ttl


@pytest.mark.parametrize("text", ["2.9", "0", "-5", "nan", "inf", "two minutes", "86401"])
def test_a_lease_ttl_too_short_or_malformed_names_the_variable_and_the_fix(monkeypatch, text):
    monkeypatch.setenv("CG_LEASE_TTL_SECONDS", text)
    with pytest.raises(CustomerGaugeConfigError) as error:
        lease_ttl_seconds()
    assert str(error.value) == (
        f"CG_LEASE_TTL_SECONDS={text!r} must be a number of seconds from 3 to 86400, e.g. 120, "
        "or unset it (default 120)"
    )


def test_the_run_config_reads_its_variables_when_the_run_starts_not_at_import(monkeypatch):
    assert {
        name: RawResponsesConfig.model_fields[name].default for name in ("lookback_hour", "lease_wait_seconds")
    } == {
        "lookback_hour": None,
        "lease_wait_seconds": None,
    }
    monkeypatch.setenv("CG_LOOKBACK_HOUR", "5")
    monkeypatch.setenv("CG_LOOKBACK_DAYS", "3")
    resolved = RawResponsesConfig(lookback_days=9).resolved()
    assert (resolved.lookback_hour, resolved.lookback_days, resolved.lookback_field, resolved.lease_wait_seconds) == (
        5,
        9,  # run config wins over the variable
        "date_survey_response",
        1800,
    )
    monkeypatch.setenv("CG_LOOKBACK_HOUR", "two")
    with pytest.raises(CustomerGaugeConfigError, match="^CG_LOOKBACK_HOUR='two' must be a whole number"):
        RawResponsesConfig().lookback_period(PARTITION_START)
    assert RawResponsesConfig(lookback_hour=-1).lookback_period(PARTITION_START) is None  # set in run config


def test_per_page_comes_from_the_variable_when_the_resource_leaves_it_unset(monkeypatch):
    resource = CustomerGaugeResource(client_id="id", client_secret="secret")
    assert resource.sync_params().per_page == 1000
    monkeypatch.setenv("CUSTOMERGAUGE_PER_PAGE", "250")
    assert resource.sync_params().per_page == 250
    assert CustomerGaugeResource(client_id="id", client_secret="secret", per_page=40).sync_params().per_page == 40
    monkeypatch.setenv("CUSTOMERGAUGE_PER_PAGE", "a thousand")
    with pytest.raises(CustomerGaugeConfigError, match="^CUSTOMERGAUGE_PER_PAGE='a thousand' must be an integer"):
        resource.validate()


@pytest.mark.parametrize(
    ("client_id", "client_secret", "expected"),
    [
        (
            " ",
            "secret",
            r"^client_id is empty: set CUSTOMERGAUGE_CLIENT_ID \(or, with CG_ACCOUNTS_FILE, the variable the "
            r"account's client_id_env names\)",
        ),
        (
            "id",
            "",
            r"^client_secret is empty: set CUSTOMERGAUGE_CLIENT_SECRET \(or, with CG_ACCOUNTS_FILE, the variable "
            r"the account's client_secret_env names\)",
        ),
    ],
)
def test_an_empty_credential_names_both_places_it_comes_from(client_id, client_secret, expected):
    resource = CustomerGaugeResource(client_id=client_id, client_secret=client_secret)
    with pytest.raises(CustomerGaugeConfigError, match=expected):
        resource.validate()


def test_system_timezone_naming_a_region_folder_is_a_config_error():
    resource = CustomerGaugeResource(client_id="a", client_secret="b", system_timezone="Europe")
    with pytest.raises(CustomerGaugeConfigError, match="system_timezone"):
        resource.validate()  # once IsADirectoryError [Errno 21] .../tzdata/zoneinfo/Europe
    with pytest.raises(FlattenError, match="system_timezone"):
        flatten_records([], fetched_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), system_timezone="Europe")


def test_the_sandbox_exports_the_environment_that_points_the_project_at_it():
    assert project_env("http://127.0.0.1:9") == {
        "CUSTOMERGAUGE_CLIENT_ID": "sandbox-client",
        "CUSTOMERGAUGE_CLIENT_SECRET": "sandbox-secret",
        "CUSTOMERGAUGE_API_BASE_URL": "http://127.0.0.1:9",
        "CUSTOMERGAUGE_AUTH_BASE_URL": "http://127.0.0.1:9",
    }
    with SandboxServer(records=1, client_id="a", client_secret="b") as server:
        assert server.project_env() == project_env(server.base_url, "a", "b")


@pytest.mark.slow
def test_malformed_variables_let_the_code_location_load_and_fail_the_run_that_reads_them(sandbox, tmp_path):
    bad = {"CUSTOMERGAUGE_PER_PAGE": "lots", "CG_LOOKBACK_HOUR": "x", "CG_LOOKBACK_DAYS": "y"}
    env = {"PATH": "/usr/bin:/bin", "CG_PARTITIONS_START": "2026-11-01", "HOME": str(tmp_path), **bad}
    code = (
        "import cg_dagster.definitions as d; print(sorted(k.to_user_string() for k in d.defs.resolve_all_asset_keys()))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    # the sixteen: raw, 5 flattened and 5 current response tables; raw, 2 flattened, 2 current non-response tables
    expected = sorted(key.to_user_string() for key in DEFAULT.all_keys)
    assert len(expected) == 16
    assert (loaded.returncode, loaded.stdout.strip()) == (0, str(expected)), loaded.stderr

    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root, per_page=None)
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("CUSTOMERGAUGE_PER_PAGE", "lots")
        result = run(instance, resources, "2026-11-02-10:00", raise_on_error=False)
    assert not result.success
    assert "CUSTOMERGAUGE_PER_PAGE='lots' must be an integer from 1 to 1000" in failure_text(result)
    assert sandbox.requests_log == [] and not lake.root.exists()
