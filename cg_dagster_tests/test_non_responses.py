"""Non-responses beside responses (issue 11 item 1): the sandbox's non-responses endpoint, the client paging it,
the sync protocol on its own stream (head, lease, replay), and the Dagster assets end to end over real HTTP."""

import contextlib
import dataclasses
import datetime as dt
import importlib.util
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests

from cg_dagster.customergauge.assets import (
    current_non_responses,
    current_tables,
    raw_non_responses,
    raw_responses,
)
from cg_dagster.customergauge.keys import RAW_NON_RESPONSES_KEY, RAW_NON_RESPONSES_OP, raw_run_config
from cg_dagster.lib.client import CustomerGaugeConfigError, SyncParams
from cg_dagster.lib.current import NON_RESPONSES_CURRENT, update_current
from cg_dagster.lib.flatten import raw_rows
from cg_dagster.lib.lake import MANIFEST_FOOTER_KEY, NON_RESPONSES, RESPONSES, Lake
from cg_dagster.lib.lease import LeaseTimeoutError
from cg_dagster.lib.schemas import TABLES
from cg_dagster.lib.sync import sync_partition
from cg_dagster.lib.tables import flatten_partition, stale_partitions
from cg_dagster.sandbox.data import ANSWER_KEYS, NON_RESPONSE_NUMBERS_FROM
from cg_dagster_tests._fixtures_runs import materialization, numbers
from cg_dagster_tests._fixtures_sandbox import SANDBOX_ID, SANDBOX_SECRET, make_resources

P1, P2 = "2026-11-01-10:00", "2026-11-01-11:00"
NON_RESPONSES_PATH = "/v7/rest/sync/non-responses"
ALL_ASSETS = [raw_responses, current_tables, raw_non_responses, current_non_responses]
NO_LOOKBACK = raw_run_config(non_responses=True, lookback_hour=-1)


def token(sandbox) -> str:
    form = {"grant_type": "client_credentials", "client_id": SANDBOX_ID, "client_secret": SANDBOX_SECRET}
    return requests.post(sandbox.base_url + "/oauth2/token", data=form).json()["access_token"]


def non_response_numbers(lake: Lake, partition: str) -> list[int]:
    return (
        lake.read_table(lake.partition_path("raw_non_responses", partition)).column("number_customergauge").to_pylist()
    )


def sync_non_responses(resource, lake: Lake, partition: str, **kwargs):
    with contextlib.closing(resource.get_client()) as client:
        params = resource.sync_params()
        return sync_partition(
            client, params, lake, partition_key=partition, run_id=f"run-{partition}", stream=NON_RESPONSES, **kwargs
        )


# ---- the sandbox ----------------------------------------------------------------------------------------


def test_the_sandbox_pages_non_responses_like_responses(sandbox):
    served = sandbox.records("non-responses")
    assert len(served) == 350 // 3  # a third of the responses, by default
    headers = {"Authorization": f"Bearer {token(sandbox)}"}
    pages, cursor = [], None
    while True:
        query = {"per_page": 50, "with[]": "properties", **({"cursor": cursor} if cursor is not None else {})}
        body = requests.get(sandbox.base_url + NON_RESPONSES_PATH, params=query, headers=headers).json()
        if not body["data"]:
            break
        pages.append(body["data"])
        cursor = body["cursor"]["next"]
    assert [len(page) for page in pages] == [50, 50, 16]
    assert [record for page in pages for record in page] == served  # properties asked for: every key there is
    assert requests.get(sandbox.base_url + "/_sandbox/stats").json()["non_responses_last_cursor"] == cursor
    for record in served:
        assert record["status"] == "non_response" and not set(ANSWER_KEYS) & record.keys()
        assert record["number_customergauge"] > NON_RESPONSE_NUMBERS_FROM
    assert not set(numbers(served)) & set(numbers(sandbox.records()))  # apart from the responses' numbers
    unauthenticated = requests.get(sandbox.base_url + NON_RESPONSES_PATH)
    assert (unauthenticated.status_code, unauthenticated.json()) == (401, {"message": "Unauthenticated."})
    bad = requests.get(sandbox.base_url + NON_RESPONSES_PATH, params={"per_page": 1001}, headers=headers)
    assert bad.status_code == 422 and list(bad.json()["errors"]) == ["per_page"]


def test_a_converted_non_response_is_appended_to_the_responses_with_its_number(sandbox):
    waiting = sandbox.records("non-responses")
    last = sandbox.last_cursor
    reply = requests.post(sandbox.base_url + "/_sandbox/convert", params={"count": 2})
    assert reply.json() == {"converted": 2, "numbers": numbers(waiting[:2])}
    new = sandbox.records()[-2:]
    assert numbers(new) == numbers(waiting[:2]) and sandbox.last_cursor > last
    assert [record["status"] for record in new] == ["response", "response"]
    assert new[0]["contact"] == waiting[0]["contact"] and set(ANSWER_KEYS) <= new[0].keys()
    assert sandbox.records("non-responses") == waiting  # still a non-response as well
    assert numbers(sandbox.convert_non_responses(1)) == numbers(waiting[2:3])  # the next one not converted yet
    too_many = requests.post(sandbox.base_url + "/_sandbox/convert", params={"count": len(waiting)})
    assert too_many.status_code == 422 and list(too_many.json()["errors"]) == ["count"]
    appended = requests.post(sandbox.base_url + "/_sandbox/append", params={"count": 3, "endpoint": "non-responses"})
    assert appended.json()["numbers"] == numbers(sandbox.records("non-responses")[-3:])
    wrong = requests.post(sandbox.base_url + "/_sandbox/append", params={"count": 3, "endpoint": "surveys"})
    assert wrong.status_code == 422 and list(wrong.json()["errors"]) == ["endpoint"]


# ---- the client -----------------------------------------------------------------------------------------


def test_sync_params_refuse_an_unknown_endpoint_naming_the_field():
    with pytest.raises(
        CustomerGaugeConfigError, match=r"endpoint must be one of 'responses', 'non-responses'.*'surveys'"
    ):
        SyncParams(endpoint="surveys")
    assert SyncParams(endpoint="non-responses").path == NON_RESPONSES_PATH


def test_the_client_pages_the_non_responses_endpoint_with_the_same_token(sandbox, tmp_path):
    resource = make_resources(sandbox, tmp_path)["customergauge"]
    sandbox.reset_log()
    with contextlib.closing(resource.get_client()) as client:
        params = dataclasses.replace(resource.sync_params(), per_page=40)
        got = [
            r for page in client.iter_pages(dataclasses.replace(params, endpoint="non-responses")) for r in page.records
        ]
        responses = [r for page in client.iter_pages(params) for r in page.records]
    assert numbers(got) == numbers(sandbox.records("non-responses"))
    assert numbers(responses) == numbers(sandbox.records())
    paths = [entry.path for entry in sandbox.requests_log if entry.method == "GET"]
    assert paths == [NON_RESPONSES_PATH] * 4 + ["/v7/rest/sync/responses"] * 10  # 3 + 9 pages, each and an empty one
    assert sandbox.token_requests == 1


# ---- the sync protocol on the non-responses stream ------------------------------------------------------


def test_non_responses_sync_exactly_once_on_their_own_head(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resource = make_resources(sandbox, lake.root)["customergauge"]
    first = sync_non_responses(resource, lake, P1)
    assert non_response_numbers(lake, P1) == numbers(sandbox.records("non-responses"))
    appended = numbers(sandbox.append_non_responses(7))
    second = sync_non_responses(resource, lake, P2)
    assert non_response_numbers(lake, P2) == appended
    assert second.manifest.cursor_start == first.head_after.cursor < second.head_after.cursor
    assert lake.read_head(NON_RESPONSES) == second.head_after and lake.read_head(RESPONSES) is None
    assert (lake.root / "_state" / "raw_non_responses.cursor.json").is_file()
    assert not lake.exists(lake.partition_path("raw_responses", P1))  # the responses' stream is untouched
    assert lake.read_manifest(lake.partition_path("raw_non_responses", P2)) == second.manifest


def test_a_held_responses_lease_does_not_block_the_non_responses_sync(tmp_path):
    lake = Lake(tmp_path / "lake")
    with lake.lease(RESPONSES.lease).hold("responses-run", wait_seconds=0, setting="-"):
        with lake.lease(NON_RESPONSES.lease).hold("non-responses-run", wait_seconds=0, setting="-") as holder:
            assert lake.lease(NON_RESPONSES.lease).holder() == holder
        with pytest.raises(LeaseTimeoutError, match="responses-run"):
            with lake.lease(RESPONSES.lease).hold("another-run", wait_seconds=0, setting="-"):
                pass


# ---- the assets, end to end -----------------------------------------------------------------------------


def run_all(instance, resources, partition, run_config=NO_LOOKBACK):
    return dg.materialize(
        ALL_ASSETS, instance=instance, resources=resources, partition_key=partition, run_config=run_config
    )


def current_non_response_flags(lake: Lake) -> dict[int, bool]:
    table = pq.read_table(lake.current_path("non_responses"))
    assert table.schema == TABLES["current_non_responses"].arrow_schema
    return dict(zip(table["number_customergauge"].to_pylist(), table["is_response"].to_pylist(), strict=True))


def touchpoints(records: list[dict]) -> dict[int, str]:
    """{number_customergauge: its 'Touchpoint' property} of sandbox records (each has one)."""
    return {
        r["number_customergauge"]: next(p["reference"] for p in r["properties"] if p["field"] == "Touchpoint")
        for r in records
    }


def current_touchpoints(lake: Lake, table: str) -> dict[int, str]:
    """{number_customergauge: reference} of the 'Touchpoint' rows of current/<table>/ (one each)."""
    rows = pq.read_table(lake.current_path(table)).filter(pc.field("field") == "Touchpoint")
    got = dict(zip(rows["number_customergauge"].to_pylist(), rows["reference"].to_pylist(), strict=True))
    assert len(got) == rows.num_rows
    return got


@pytest.mark.slow
def test_both_endpoints_sync_exactly_once_and_a_converted_non_response_flips_is_response(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    waiting = numbers(sandbox.records("non-responses"))
    with dg.instance_for_test() as instance:
        first = run_all(instance, resources, P1)
        assert current_non_response_flags(lake) == dict.fromkeys(waiting, False)
        converted = numbers(sandbox.convert_non_responses(3))
        appended = numbers(sandbox.append_non_responses(5))
        second = run_all(instance, resources, P2)
    assert non_response_numbers(lake, P1) == waiting and non_response_numbers(lake, P2) == appended
    raw = pq.read_table(lake.partition_path("raw_responses", P2)).column("number_customergauge").to_pylist()
    assert raw == converted  # the forward cursor of responses brought the late answers
    flags = current_non_response_flags(lake)
    assert flags == {**dict.fromkeys(waiting + appended, False), **dict.fromkeys(converted, True)}
    current = pq.read_table(lake.current_path("responses"), columns=["number_customergauge", "status"])
    answered = current.filter(pc.is_in(current["number_customergauge"], pa.array(converted, pa.int64())))
    assert answered["status"].to_pylist() == ["response"] * 3  # in both tables
    # every non-response keeps its segments, the converted ones too (their survey is known on both sides)
    assert current_touchpoints(lake, "non_response_properties") == touchpoints(sandbox.records("non-responses"))
    assert (
        current_touchpoints(lake, "response_properties").items()
        >= touchpoints([r for r in sandbox.records() if r["number_customergauge"] in converted]).items()
    )
    mat = materialization(second, RAW_NON_RESPONSES_KEY)
    meta = {key: value.value for key, value in mat.metadata.items()}
    first_mat = materialization(first, RAW_NON_RESPONSES_KEY)
    assert meta["cursor_start"] == first_mat.metadata["cursor"].value and meta["dagster/row_count"] == 5
    assert meta["cursor"] == lake.read_head(NON_RESPONSES).cursor and meta["sync_mode"] == "sync"
    checks = {e.check_name: e.passed for e in second.get_asset_check_evaluations() if "non_responses" in e.check_name}
    assert checks == dict.fromkeys(
        [
            "non_responses_number_customergauge_unique",
            "non_responses_row_count_matches_raw",
            "non_responses_no_unknown_fields",
            "non_response_properties_rows_point_to_non_responses",
        ],
        True,
    )


@pytest.mark.slow
def test_a_rewritten_raw_non_responses_file_is_replayed_and_the_heads_stay(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    with dg.instance_for_test() as instance:
        run_all(instance, resources, P1)
        heads = lake.read_head(RESPONSES), lake.read_head(NON_RESPONSES)
        path = lake.partition_path("raw_non_responses", P1)
        pq.write_table(pq.read_table(path), path)  # a tool's rewrite: the footer's manifest is gone
        assert MANIFEST_FOOTER_KEY not in (pq.read_metadata(path).metadata or {})
        sandbox.anonymise_record(sandbox.records()[0]["number_customergauge"])  # upstream moves on meanwhile
        replayed = dg.materialize(
            [raw_non_responses],
            instance=instance,
            resources=resources,
            partition_key=P1,
            run_config={"ops": {RAW_NON_RESPONSES_OP: {"config": {"lookback_hour": -1}}}},
        )
    mat = materialization(replayed, RAW_NON_RESPONSES_KEY)
    assert mat.metadata["sync_mode"].value == "replay"
    assert (lake.read_head(RESPONSES), lake.read_head(NON_RESPONSES)) == heads
    assert sorted(non_response_numbers(lake, P1)) == sorted(numbers(sandbox.records("non-responses")))


@pytest.mark.slow
def test_a_held_responses_lease_does_not_hold_up_the_non_responses_asset(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    resources = make_resources(sandbox, lake.root)
    config = {"ops": {RAW_NON_RESPONSES_OP: {"config": {"lookback_hour": -1, "lease_wait_seconds": 0}}}}
    with lake.lease(RESPONSES.lease).hold("a-responses-sync", wait_seconds=0, setting="-"):
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [raw_non_responses], instance=instance, resources=resources, partition_key=P1, run_config=config
            )
    assert result.success and non_response_numbers(lake, P1) == numbers(sandbox.records("non-responses"))


# ---- a key non_responses does not read never blocks a partition (issue 11 review) -----------------------


def test_a_partition_of_non_responses_with_odd_answer_keys_is_flattened_and_current(sandbox, tmp_path):
    lake = Lake(tmp_path / "lake")
    served = sandbox.records("non-responses")[:8]
    odd = {"tags": {}, "drivers": "x", "questions": 5, "properties": "y"}  # the review's exact inputs
    records = [{**record, **dict([item])} for record, item in zip(served[:4], odd.items(), strict=True)] + served[4:]
    fetched = dt.datetime(2026, 11, 1, 10, 5, tzinfo=dt.timezone.utc)
    raw = raw_rows(records, fetched_at=fetched, cursor_sent=None, sync_pass="cursor")
    lake.write_table(lake.partition_path("raw_non_responses", P1), raw)
    assert stale_partitions(lake, NON_RESPONSES) == [P1]
    done = flatten_partition(lake, P1, stream=NON_RESPONSES)
    assert all(len(record["properties"]) == 6 for record in served)  # with[]=properties; one is "y" above
    assert done.rows == {"non_responses": 8, "non_response_properties": 7 * 6}
    assert stale_partitions(lake, NON_RESPONSES) == []
    assert done.stats.unread_fields == Counter({"tags": 1, "drivers": 1, "questions": 1, "properties": 1})
    assert done.stats.unknown_fields == set()
    update_current(lake, NON_RESPONSES_CURRENT)
    assert current_non_response_flags(lake) == dict.fromkeys(numbers(served), False)
    properties = pq.read_table(lake.current_path("non_response_properties"))
    expected = [  # the records' own properties, but none of the record with "properties": "y"
        (record["number_customergauge"], position, item["field"], item["reference"])
        for record in records
        if isinstance(record["properties"], list)
        for position, item in enumerate(record["properties"])
    ]
    assert sorted(
        zip(
            *(properties[c].to_pylist() for c in ("number_customergauge", "property_position", "field", "reference")),
            strict=True,
        )
    ) == sorted(expected)


def test_a_lake_from_before_non_response_properties_gets_them_at_the_next_update(sandbox, tmp_path):
    """A lake flattened and made current before non_response_properties existed: its partitions lack the file, so
    they are stale and flattened again, and its record names only non_responses, so the update rebuilds whole."""
    lake = Lake(tmp_path / "lake")
    served = sandbox.records("non-responses")[:5]
    fetched = dt.datetime(2026, 11, 1, 10, 5, tzinfo=dt.timezone.utc)
    raw = raw_rows(served, fetched_at=fetched, cursor_sent=None, sync_pass="cursor")
    lake.write_table(lake.partition_path("raw_non_responses", P1), raw)
    flatten_partition(lake, P1, stream=NON_RESPONSES)
    update_current(lake, NON_RESPONSES_CURRENT)
    lake.delete(lake.partition_path("non_response_properties", P1))  # as the lake was before
    for file in lake.files(lake.current_path("non_response_properties")):
        lake.delete(file)
    record = lake.read_state(NON_RESPONSES_CURRENT.state_file)
    del record["rows"]["non_response_properties"]
    lake.write_state(NON_RESPONSES_CURRENT.state_file, record)

    assert stale_partitions(lake, NON_RESPONSES) == [P1]
    flatten_partition(lake, P1, stream=NON_RESPONSES)
    update = update_current(lake, NON_RESPONSES_CURRENT)
    assert update.mode == "full rebuild" and "records the tables ['non_responses']" in update.reason
    assert update.rows == {"non_responses": 5, "non_response_properties": 5 * 6}
    assert current_touchpoints(lake, "non_response_properties") == touchpoints(served)
    assert update_current(lake, NON_RESPONSES_CURRENT).mode == "unchanged"


# ---- the response rate: every sent survey once (issue 11 review) ----------------------------------------


def response_rate_sql() -> str:
    """scripts/demo.py's RESPONSE_RATE_SQL, the README's query (test_docs.py)."""
    spec = importlib.util.spec_from_file_location(
        "cg_demo", Path(__file__).resolve().parents[1] / "scripts" / "demo.py"
    )
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo.RESPONSE_RATE_SQL


def write_current(lake: Path, table: str, columns: dict) -> None:
    """One range file of current/<table>/ holding ``columns`` (only the columns the query reads)."""
    folder = lake / "current" / table
    folder.mkdir(parents=True)
    pq.write_table(pa.table(columns), folder / "0000000000000000000.parquet")


def test_the_response_rate_per_survey_and_month_counts_every_sent_survey_once(tmp_path):
    """The README's query on a small lake: per touchpoint and month sent; a converted non-response (2) counts once,
    as its response, with its response's touchpoint; a record with its touchpoint twice (7) once; records without
    one (8, 9) under '(none)'; other segments (Country) are not surveys."""
    october, november = (
        dt.datetime(2026, 10, 5, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 11, 5, tzinfo=dt.timezone.utc),
    )
    stamp = pa.timestamp("us", tz="UTC")
    responses = {1: "response", 2: "partial", 3: "non_response", 4: "response", 7: "response", 8: "response"}
    sent = {1: october, 2: october, 3: october, 4: november, 7: october, 8: october}
    write_current(
        tmp_path,
        "responses",
        {
            "number_customergauge": list(responses),
            "status": list(responses.values()),
            "date_sent": pa.array(sent.values(), stamp),
        },
    )
    non_responses = {2: (True, october), 5: (False, october), 6: (False, november), 9: (False, october)}
    write_current(
        tmp_path,
        "non_responses",
        {
            "number_customergauge": list(non_responses),
            "is_response": [answered for answered, _ in non_responses.values()],
            "date_sent": pa.array([when for _, when in non_responses.values()], stamp),
        },
    )
    properties = {
        "response_properties": [
            (1, "Touchpoint", "Onboarding"),
            (1, "Country", "NL"),
            (2, "Touchpoint", "Relationship"),
            (3, "Touchpoint", "Relationship"),
            (4, "Touchpoint", "Relationship"),
            (7, "Touchpoint", "Relationship"),
            (7, "Touchpoint", "Relationship"),  # say, from properties and from custom_fields
        ],
        "non_response_properties": [
            (2, "Touchpoint", "Onboarding"),  # before it was answered: the response's touchpoint counts
            (5, "Touchpoint", "Onboarding"),
            (6, "Touchpoint", "Relationship"),
            (9, "Country", "DE"),
        ],
    }
    for table, rows in properties.items():
        write_current(
            tmp_path, table, dict(zip(("number_customergauge", "field", "reference"), zip(*rows), strict=True))
        )
    rate = duckdb.sql(response_rate_sql().format(lake=tmp_path)).fetchall()
    # survey, month, sent, responses, partial, response_rate
    assert rate == [
        ("(none)", "2026-10", 2, 1, 0, 0.5),  # 8, 9
        ("Onboarding", "2026-10", 2, 1, 0, 0.5),  # 1, 5
        ("Relationship", "2026-10", 3, 1, 1, 0.333),  # 2 (partial), 3, 7
        ("Relationship", "2026-11", 2, 1, 0, 0.5),  # 4, 6
    ]
    assert sum(row[2] for row in rate) == len(responses) + 3  # each response and unanswered non-response once
