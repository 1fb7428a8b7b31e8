"""Several accounts in one code location (issue 11 item 2): the accounts file, the names each account's group gets,
the zero-configuration names unchanged, and two accounts synced from two sandboxes over real HTTP into their own
lakes, a wrong credential failing only its account's runs."""

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._utils.tags import TagConcurrencyLimitsCounter  # the run queue's own counter (QueuedRunCoordinator)

from cg_dagster.customergauge.accounts import load_accounts
from cg_dagster.customergauge.keys import AccountNames
from cg_dagster.definitions import build_defs
from cg_dagster.lib.client import CustomerGaugeConfigError
from cg_dagster.lib.lake import Lake
from cg_dagster.sandbox import SandboxServer
from cg_dagster_tests._fixtures_runs import PROJECT, dagster_home, numbers
from cg_dagster_tests._fixtures_sandbox import expected_current, read_current

P1, P2 = "2026-11-01-10:00", "2026-11-01-11:00"
TABLES = [
    "raw_responses",
    "responses",
    "response_drivers",
    "response_tags",
    "response_questions",
    "response_properties",
    "current_responses",
    "current_response_drivers",
    "current_response_tags",
    "current_response_questions",
    "current_response_properties",
    "raw_non_responses",
    "non_responses",
    "non_response_properties",
    "current_non_responses",
    "current_non_response_properties",
]
CHECKS = [
    "responses_number_customergauge_unique",
    "responses_nps_in_range",
    "responses_row_count_matches_raw",
    "responses_no_unknown_fields",
    "response_drivers_rows_point_to_responses",
    "response_tags_rows_point_to_responses",
    "response_questions_rows_point_to_responses",
    "response_properties_rows_point_to_responses",
    "non_responses_number_customergauge_unique",
    "non_responses_row_count_matches_raw",
    "non_responses_no_unknown_fields",
    "non_response_properties_rows_point_to_non_responses",
]
SECRETS = {"emea": "emea-secret-do-not-log", "apac": "apac-secret-do-not-log"}
ZONES = {"emea": "Europe/Amsterdam", "apac": "UTC"}  # as two_accounts() sets them


def write_accounts(tmp_path, text: str) -> str:
    path = tmp_path / "accounts.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def two_accounts(tmp_path, emea_url="https://api.eu.customergauge.com", apac_url="https://api.au.customergauge.com"):
    """An accounts file of ``emea`` and ``apac``, each with its own variables, hosts and lake."""
    return write_accounts(
        tmp_path,
        f"""\
        accounts:
          - name: emea
            region: eu
            client_id_env: EMEA_CLIENT_ID
            client_secret_env: EMEA_CLIENT_SECRET
            lake_root: {tmp_path / "lakes" / "emea"}
            system_timezone: Europe/Amsterdam
            api_base_url: {emea_url}
            auth_base_url: {emea_url}
          - name: apac
            region: au
            client_id_env: APAC_CLIENT_ID
            client_secret_env: APAC_CLIENT_SECRET
            lake_root: {tmp_path / "lakes" / "apac"}
            api_base_url: {apac_url}
            auth_base_url: {apac_url}
        """,
    )


def keys(defs: dg.Definitions) -> set[str]:
    return {key.to_user_string() for key in defs.resolve_all_asset_keys()}


# ---- the names ----------------------------------------------------------------------------------------------


def test_without_an_accounts_file_every_name_is_todays():
    defs = build_defs(None)
    dg.Definitions.validate_loadable(defs)
    assert keys(defs) == {f"customergauge/{table}" for table in TABLES}
    assert [job.name for job in defs.jobs] == ["customergauge_hourly_sync"]
    assert [schedule.name for schedule in defs.schedules] == ["customergauge_hourly_sync_schedule"]
    assert set(defs.resources) == {"customergauge", "lake"}
    job = defs.resolve_job_def("customergauge_hourly_sync")
    assert job.tags["customergauge/sync"] == "true"
    assert {node.name for node in job.nodes} == {
        "customergauge__raw_responses",
        "current_tables",
        "customergauge__raw_non_responses",
        "customergauge__current_non_responses",
    }
    groups = {spec.group_name for spec in defs.resolve_all_asset_specs()}
    assert groups == {"customergauge"}


def test_each_account_of_the_file_gets_its_group_under_its_own_names(tmp_path):
    defs = build_defs(two_accounts(tmp_path))
    dg.Definitions.validate_loadable(defs)
    assert keys(defs) == {f"customergauge/{account}/{table}" for account in ("emea", "apac") for table in TABLES}
    assert {job.name for job in defs.jobs} == {"customergauge_emea_hourly_sync", "customergauge_apac_hourly_sync"}
    assert {schedule.name for schedule in defs.schedules} == {
        "customergauge_emea_hourly_sync_schedule",
        "customergauge_apac_hourly_sync_schedule",
    }
    assert set(defs.resources) == {"customergauge_emea", "lake_emea", "customergauge_apac", "lake_apac"}
    assert defs.resources["lake_emea"].root == str(tmp_path / "lakes" / "emea")
    assert defs.resources["customergauge_apac"].region == "au"
    assert defs.resources["customergauge_emea"].system_timezone == "Europe/Amsterdam"
    assert defs.resources["lake_apac"].system_timezone == "UTC"
    specs = defs.resolve_all_asset_specs()
    for account in ("emea", "apac"):
        assert {s.key.to_user_string() for s in specs if s.group_name == f"customergauge_{account}"} == {
            f"customergauge/{account}/{table}" for table in TABLES
        }
        job = defs.resolve_job_def(f"customergauge_{account}_hourly_sync")
        assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
            f"customergauge/{account}/{table}" for table in TABLES
        }
        assert job.tags["customergauge/sync"] == account
        assert job.executor_def is dg.in_process_executor
        checks = {key for key in job.asset_layer.asset_graph.asset_check_keys}
        assert sorted(key.name for key in checks) == sorted(CHECKS)
        assert {key.asset_key.path[1] for key in checks} == {account}
        schedule = defs.resolve_schedule_def(f"customergauge_{account}_hourly_sync_schedule")
        context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 29, 10, 5, tzinfo=dt.UTC))
        [request] = schedule.evaluate_tick(context).run_requests
        assert request.partition_key == "2026-11-29-09:00"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # the credentials are bound by variable name, read when a run needs them
    assert "EMEA_CLIENT_SECRET" in repr(defs.resources["customergauge_emea"].client_secret)


def test_the_deployed_run_queue_holds_one_sync_per_account():
    config = yaml.safe_load((PROJECT / "deploy" / "dagster.yaml").read_text(encoding="utf-8"))
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    running = dg.DagsterRun(job_name="customergauge_emea_hourly_sync", tags=AccountNames("emea").sync_run_tags)
    counter = TagConcurrencyLimitsCounter(limits, [running])
    second = dg.DagsterRun(job_name="customergauge_emea_hourly_sync", tags=AccountNames("emea").sync_run_tags)
    other = dg.DagsterRun(job_name="customergauge_apac_hourly_sync", tags=AccountNames("apac").sync_run_tags)
    assert counter.is_blocked(second) and not counter.is_blocked(other)
    default = dg.DagsterRun(job_name="customergauge_hourly_sync", tags=AccountNames().sync_run_tags)
    assert TagConcurrencyLimitsCounter(limits, [default]).is_blocked(default)


# ---- the file's validation: each case an exact input ----------------------------------------------------


ACCOUNT = """\
  - name: emea
    region: eu
    client_id_env: EMEA_CLIENT_ID
    client_secret_env: EMEA_CLIENT_SECRET
    lake_root: /data/emea
"""


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            ACCOUNT.replace("    lake_root", "    client_secret: hunter2-secret\n    lake_root"),
            "account 'emea' (accounts[0]): unknown keys ['client_secret']; the known ones are name, region, "
            "client_id_env, client_secret_env, lake_root, system_timezone, api_base_url, auth_base_url",
        ),
        (ACCOUNT.replace("name: emea", "name: emea-west"), "name 'emea-west' is not a valid Dagster name"),
        (ACCOUNT.replace("name: emea", "name: ''"), "accounts[0]: name is missing: give letters, digits and _ only"),
        (ACCOUNT.replace("lake_root: /data/emea", "lake_root: '  '"), "lake_root is missing"),
        (ACCOUNT + ACCOUNT.replace("/data/emea", "/data/other"), "account name 'emea' is listed twice"),
        (
            ACCOUNT.replace("    client_secret_env: EMEA_CLIENT_SECRET\n", ""),
            "account 'emea' (accounts[0]): client_secret_env is missing: give the NAME of the environment variable "
            "that holds the Connected App's client secret",
        ),
        (
            ACCOUNT.replace("client_secret_env: EMEA_CLIENT_SECRET", "client_secret_env: hunter2-secret"),
            "account 'emea' (accounts[0]): client_secret_env is not an environment variable name",
        ),
        (ACCOUNT.replace("client_id_env: EMEA_CLIENT_ID", "client_id_env: 12"), "client_id_env is not text"),
        (ACCOUNT.replace("region: eu", "region: mars"), "region 'mars' is unknown: give one of eu, us, au"),
        (ACCOUNT.replace("    region: eu\n", ""), "account 'emea' (accounts[0]): region is missing"),
        (ACCOUNT.replace("    lake_root: /data/emea\n", ""), "lake_root is missing: give the account's own lake"),
        (
            ACCOUNT + "    system_timezone: Europe/Amsterdamm\n",
            "system_timezone 'Europe/Amsterdamm' is not an IANA time zone",
        ),
        (
            ACCOUNT + "    api_base_url: http://api.example.com\n",
            "account 'emea' (accounts[0]): api_base_url of account",
        ),
        (
            ACCOUNT + ACCOUNT.replace("emea", "apac").replace("/data/apac", "/data/emea/"),
            "accounts 'emea' and 'apac' share a lake ('/data/emea' and '/data/emea/'): give each account a lake_root "
            "of its own, neither inside the other",
        ),
        (
            ACCOUNT + ACCOUNT.replace("emea", "apac").replace("/data/apac", "/data/emea/apac"),
            "accounts 'emea' and 'apac' share a lake ('/data/emea' and '/data/emea/apac')",
        ),
        (ACCOUNT.replace("  - name", "  - nam"), "accounts[0]: unknown keys ['nam']"),
        # the review's inputs: one lake spelled two ways; a secret that passes for a variable name; a glob
        *(
            (
                ACCOUNT.replace("/data/emea", first) + ACCOUNT.replace("emea", "apac").replace("/data/apac", second),
                f"accounts 'emea' and 'apac' share a lake ({first!r} and {second!r})",
            )
            for first, second in [
                ("s3://cglake/shared", "s3a://cglake/shared"),
                ("s3://cglake/shared", "S3://cglake/shared/"),
                ("/data/emea", "file:///data/emea"),
                ("gs://b/x", "gcs://b/x/y"),
            ]
        ),
        (
            ACCOUNT.replace("client_secret_env: EMEA_CLIENT_SECRET", "client_secret_env: hunter2Sup3rSecret42"),
            "account 'emea' (accounts[0]): client_secret_env is not an environment variable name",
        ),
        (
            ACCOUNT.replace("/data/emea", "/data/emea[1]"),
            "lake_root '/data/emea[1]' holds [ ], which DuckDB reads as a glob: give a path without",
        ),
        (ACCOUNT.replace("/data/emea", "ftp://host/lake"), "lake_root 'ftp://host/lake': ftp:// is not a supported"),
        ("  - just text\n", "accounts[0] must be a mapping of name, region"),
    ],
)
def test_a_malformed_account_is_refused_naming_the_file_account_and_field(tmp_path, text, expected):
    path = write_accounts(tmp_path, "accounts:\n" + text)
    with pytest.raises(CustomerGaugeConfigError) as error:
        build_defs(path)
    message = str(error.value)
    assert message.startswith(f"{path} (CG_ACCOUNTS_FILE): "), message
    assert expected in message
    assert "hunter2" not in message  # a value given where a name belongs may be the secret


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "must hold a non-empty list 'accounts:' of accounts"),
        ("accounts: []\n", "must hold a non-empty list 'accounts:' of accounts"),
        ("accounts:\n  emea: {}\n", "must hold a non-empty list 'accounts:' of accounts"),
        ("accounts:\n" + ACCOUNT + "lakes: []\n", "unknown top-level keys ['lakes']: only 'accounts' is read"),
        ("accounts: [\n", "not valid YAML: "),
    ],
)
def test_a_malformed_accounts_file_is_refused_naming_it(tmp_path, text, expected):
    path = write_accounts(tmp_path, text)
    with pytest.raises(CustomerGaugeConfigError) as error:
        load_accounts(path)
    assert str(error.value).startswith(f"{path} (CG_ACCOUNTS_FILE): ")
    assert expected in str(error.value)


def test_a_missing_accounts_file_is_refused_naming_the_variable(tmp_path):
    path = str(tmp_path / "nowhere.yaml")
    with pytest.raises(CustomerGaugeConfigError) as error:
        load_accounts(path)
    assert str(error.value) == (
        f"{path} (CG_ACCOUNTS_FILE): cannot be read (No such file or directory): set CG_ACCOUNTS_FILE to the "
        "accounts file, or unset it for the single account of the CUSTOMERGAUGE_* variables"
    )


def test_relative_and_absolute_roots_of_one_lake_are_the_same_lake(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (
        "accounts:\n"
        + ACCOUNT.replace("/data/emea", "lake")
        + ACCOUNT.replace("emea", "apac").replace("/data/apac", str(tmp_path / "lake"))
    )
    with pytest.raises(CustomerGaugeConfigError, match="accounts 'emea' and 'apac' share a lake"):
        load_accounts(write_accounts(tmp_path, text))


# ---- two accounts over real HTTP ----------------------------------------------------------------------------


@pytest.fixture
def two_sandboxes():
    """Two sandboxes, each its own data set and Connected App: emea 120 responses, apac 80."""
    with (
        SandboxServer(seed=21, records=120, client_id="emea-client", client_secret=SECRETS["emea"]) as emea,
        SandboxServer(seed=22, records=80, client_id="apac-client", client_secret=SECRETS["apac"]) as apac,
    ):
        yield {"emea": emea, "apac": apac}


def account_env(monkeypatch, sandboxes, **overrides) -> None:
    """Each account's credentials in its own variables (``overrides``: variable -> value, None unsets it)."""
    values = {"CUSTOMERGAUGE_PER_PAGE": "50"}
    for account in sandboxes:
        values[f"{account.upper()}_CLIENT_ID"] = f"{account}-client"
        values[f"{account.upper()}_CLIENT_SECRET"] = SECRETS[account]
    values.update(overrides)
    for name, value in values.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def sync(defs, instance, account: str, partition: str):
    """One run of the account's hourly job for ``partition`` (no trailing re-read), as the schedule starts it."""
    names = AccountNames(account)
    return defs.resolve_job_def(names.job).execute_in_process(
        instance=instance,
        partition_key=partition,
        run_config=names.raw_run_config(non_responses=True, lookback_hour=-1),
        raise_on_error=False,
    )


def raw_cursor(instance, account: str) -> int:
    event = instance.get_latest_materialization_event(AccountNames(account).raw_key)
    return event.asset_materialization.metadata["cursor"].value


@pytest.mark.slow
def test_two_accounts_sync_into_their_own_lakes_with_their_own_cursors(two_sandboxes, tmp_path, monkeypatch):
    emea, apac = two_sandboxes["emea"], two_sandboxes["apac"]
    account_env(monkeypatch, two_sandboxes)
    defs = build_defs(two_accounts(tmp_path, emea.base_url, apac.base_url))
    lakes = {account: Lake(tmp_path / "lakes" / account) for account in two_sandboxes}
    with dg.instance_for_test() as instance:
        for account in ("emea", "apac"):
            assert sync(defs, instance, account, P1).success
        for account, sandbox in two_sandboxes.items():
            lake = lakes[account]
            assert lake.read_head().cursor == sandbox.last_cursor == raw_cursor(instance, account)
            raw = lake.read_table(lake.partition_path("raw_responses", P1))
            assert raw.column("number_customergauge").to_pylist() == numbers(sandbox.records())
            served = numbers(sandbox.records("non-responses"))
            assert lake.read_table(lake.partition_path("raw_non_responses", P1)).num_rows == len(served) > 0
            # each account's dates converted from its own system's zone (emea Europe/Amsterdam, apac UTC)
            assert read_current(lake) == expected_current(sandbox, ZONES[account])
        assert emea.last_cursor != apac.last_cursor  # so equal heads above could not be a shared cursor
        assert instance.get_latest_materialization_event(dg.AssetKey(["customergauge", "raw_responses"])) is None

        # a new hour on emea only: its next run resumes from its own cursor; apac's lake and head do not move
        emea_cursor = raw_cursor(instance, "emea")
        appended = numbers(emea.append_records(7))
        emea.reset_log()
        apac.reset_log()
        apac_head = lakes["apac"].read_head()
        assert sync(defs, instance, "emea", P2).success
        assert (
            lakes["emea"]
            .read_table(lakes["emea"].partition_path("raw_responses", P2))
            .column("number_customergauge")
            .to_pylist()
            == appended
        )
        sent = [dict(entry.query).get("cursor") for entry in emea.requests_log if entry.path.endswith("/responses")]
        assert sent[0] == str(emea_cursor) and raw_cursor(instance, "emea") == emea.last_cursor
        assert apac.requests_log == [] and lakes["apac"].read_head() == apac_head
        assert not lakes["apac"].partition_path("raw_responses", P2).exists()
    for lake in lakes.values():  # no secret of either account in either lake
        for path in lake.root.rglob("*"):
            if path.is_file():
                assert not any(secret.encode() in path.read_bytes() for secret in SECRETS.values()), path


@pytest.mark.slow
@pytest.mark.parametrize("secret", ["wrong-secret", None], ids=["wrong", "unset"])
def test_a_wrong_credential_fails_only_that_accounts_runs(two_sandboxes, tmp_path, monkeypatch, secret):
    emea, apac = two_sandboxes["emea"], two_sandboxes["apac"]
    account_env(monkeypatch, two_sandboxes, APAC_CLIENT_SECRET=secret)
    defs = build_defs(two_accounts(tmp_path, emea.base_url, apac.base_url))
    with dg.instance_for_test() as instance:
        if secret is None:  # Dagster refuses to start the run: the variable is named, nothing is sent
            with pytest.raises(dg.DagsterInvalidConfigError, match='"APAC_CLIENT_SECRET" which is not set'):
                sync(defs, instance, "apac", P1)
            assert apac.requests_log == []
        else:  # the token request is refused; the run fails, the secret is not in its log
            failed = sync(defs, instance, "apac", P1)
            assert not failed.success
            statuses = [entry.status for entry in apac.requests_log]
            assert statuses and set(statuses) == {400}
            logs = "\n".join(str(entry) for entry in instance.all_logs(failed.run_id))
            assert "invalid_client" in logs and "wrong-secret" not in logs
        assert sync(defs, instance, "emea", P1).success  # with apac's variable wrong or unset
    assert Lake(tmp_path / "lakes" / "apac").read_head() is None
    assert not (tmp_path / "lakes" / "apac" / "raw_responses").exists()
    assert Lake(tmp_path / "lakes" / "emea").read_head().cursor == emea.last_cursor


@pytest.mark.slow
def test_dg_check_defs_loads_an_accounts_file_and_a_bad_one_stops_the_load_naming_it(tmp_path):
    path = two_accounts(tmp_path)
    env = dict(os.environ, CG_ACCOUNTS_FILE=path, DAGSTER_HOME=str(dagster_home(tmp_path)))
    command = [str(Path(sys.executable).parent / "dg"), "check", "defs"]
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    write_accounts(tmp_path, "accounts:\n" + ACCOUNT + ACCOUNT)
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    assert f"{path} (CG_ACCOUNTS_FILE): account name 'emea' is listed twice" in done.stdout + done.stderr


@pytest.mark.slow
def test_the_cli_materializes_one_accounts_group_while_another_accounts_variable_is_unset(two_sandboxes, tmp_path):
    emea = two_sandboxes["emea"]
    env = dict(
        os.environ,
        CG_ACCOUNTS_FILE=two_accounts(tmp_path, emea.base_url, two_sandboxes["apac"].base_url),
        CG_PARTITIONS_START="2026-11-01",
        DAGSTER_HOME=str(dagster_home(tmp_path)),
        EMEA_CLIENT_ID="emea-client",
        EMEA_CLIENT_SECRET=SECRETS["emea"],
    )
    env.pop("APAC_CLIENT_SECRET", None)
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "cg_dagster.definitions",
        "--select", "group:customergauge_emea", "--partition", P1,
        "--config-json", json.dumps(AccountNames("emea").raw_run_config(non_responses=True, lookback_hour=-1)),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lake = Lake(tmp_path / "lakes" / "emea")
    assert lake.read_head().cursor == emea.last_cursor
    assert read_current(lake) == expected_current(emea, ZONES["emea"])
    assert not (tmp_path / "lakes" / "apac").exists() and two_sandboxes["apac"].requests_log == []


def test_the_readme_example_is_an_accounts_file_of_two_accounts(tmp_path):
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    [example] = [block for block in readme.split("```yaml\n")[1:] if block.startswith("accounts:")]
    path = write_accounts(tmp_path, example.split("```")[0])
    assert [(a.name, a.region, a.client_secret_env, a.lake_root) for a in load_accounts(path)] == [
        ("emea", "eu", "EMEA_CLIENT_SECRET", "s3://bucket/customergauge/emea"),
        ("apac", "au", "APAC_CLIENT_SECRET", "s3://bucket/customergauge/apac"),
    ]
    dg.Definitions.validate_loadable(build_defs(path))
