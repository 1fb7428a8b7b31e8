"""Two flattenings of one partition (lib/tables.py ``flatten_partition``): the one that read an older raw file
never publishes last, a replay that replaced the raw file meanwhile is flattened too, one partition's lease does
not hold up another's (nor the current tables' update: a partition another run is flattening is left to the next
update), and on S3 a flattening paused past its lease fails clean. On a local lake and on S3 (moto), with real
threads; the older flattening is held inside its first batch by an event, not a timer."""

import json
import logging
import threading
import time
from datetime import timedelta

import dagster as dg
import pytest

import cg_dagster.lib.tables as tables_module
from cg_dagster.customergauge.assets import current_non_responses, current_tables
from cg_dagster.customergauge.keys import DEFAULT
from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource
from cg_dagster.lib.current import NON_RESPONSES_CURRENT, RESPONSES_CURRENT, update_current
from cg_dagster.lib.flatten import FLAT_TABLE_NAMES, flatten_raw, raw_rows
from cg_dagster.lib.lake import NON_RESPONSES, RESPONSES, Lake, partition_file_stem, read_parquet_metadata
from cg_dagster.lib.lease import LeaseTimeoutError
from cg_dagster.lib.storage import PreconditionFailed
from cg_dagster.lib.tables import FLATTENED_FROM_KEY, flatten_lease, flatten_partition, stale_partitions
from cg_dagster_tests._fixtures_client import SECRET
from cg_dagster_tests._fixtures_flatten import FETCHED_AT, P, record

Q = "2026-11-01-11:00"
RECORDS = 300
LEASE = f"flatten-raw_responses-{partition_file_stem(P)} lease"


def write_raw(root: str, partition: str, nps: int, minutes: int = 0) -> None:
    """Commit the raw file of ``partition``: RECORDS responses (ids 1..RECORDS), every one with ``nps``, as a
    run of its own would (a ``Lake`` of its own)."""
    rows = raw_rows(
        [record(number_customergauge=n, nps=nps) for n in range(1, RECORDS + 1)],
        fetched_at=FETCHED_AT + timedelta(minutes=minutes),
        cursor_sent=0,
        sync_pass="cursor",
    )
    lake = Lake(root)
    lake.write_table(lake.partition_path("raw_responses", partition), rows)


def nps_of(lake: Lake, partition: str = P) -> set[int]:
    return set(lake.read_table(lake.partition_path("responses", partition), columns=["nps"])["nps"].to_pylist())


def flattened_from(lake: Lake, partition: str = P) -> set[str]:
    """The raw versions the partition's five flat files record in their footers."""
    return {
        json.loads(read_parquet_metadata(lake.partition_path(name, partition)).metadata[FLATTENED_FROM_KEY])[
            "raw_version"
        ]
        for name in FLAT_TABLE_NAMES
    }


def flatten_leases(lake: Lake) -> list[str]:
    """Names of the flattening lease files (and holder records) in ``_state/``."""
    return sorted(name for name in lake.stats(lake.root / "_state", "") if name.startswith("flatten-"))


class Paused:
    """``flatten_raw`` that holds the first batch it gets (the first flattening's) until ``go`` is set."""

    def __init__(self):
        self.entered, self.go, self._first = threading.Event(), threading.Event(), threading.Lock()

    def __call__(self, batch, **options):
        if self._first.acquire(blocking=False):
            self.entered.set()
            assert self.go.wait(60), "the test never let the paused flattening go on"
        return flatten_raw(batch, **options)


class Run(threading.Thread):
    """``flatten_partition`` of ``P`` in a thread, with a ``Lake`` of its own (as another run's); keeps the
    result or the error."""

    def __init__(self, root: str, run_id: str):
        super().__init__(name=run_id)
        self.root, self.run_id, self.result, self.error = root, run_id, None, None
        self.start()

    def run(self):
        try:
            self.result = flatten_partition(Lake(self.root), P, run_id=self.run_id, wait_seconds=60)
        except Exception as error:  # noqa: BLE001 - the test judges it
            self.error = error


@pytest.fixture
def logged():
    """{text: Event} set when a ``cg_dagster`` log line holding that text is emitted (from any thread)."""
    events: dict[str, threading.Event] = {}

    class Watch(logging.Handler):
        def emit(self, entry):
            for text, event in events.items():
                if text in entry.getMessage():
                    event.set()

    watch, logger = Watch(), logging.getLogger("cg_dagster")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    yield lambda text: events.setdefault(text, threading.Event())
    logger.removeHandler(watch)
    logger.setLevel(level)


@pytest.fixture
def paused(monkeypatch) -> Paused:
    monkeypatch.setattr(tables_module, "RAW_BATCH_ROWS", 100)  # three batches
    pause = Paused()
    monkeypatch.setattr(tables_module, "flatten_raw", pause)
    return pause


def test_the_flattening_of_the_older_raw_file_never_publishes_last(lake_root, paused, logged):
    # The partition's run flattens raw v1; a replay commits raw v2 meanwhile and its run flattens: it waits for
    # the lease, so it reads v2 after the older flattening ended, and the files left are v2's.
    write_raw(lake_root, P, nps=3)
    older = Run(lake_root, "older")
    assert paused.entered.wait(60)  # the older flattening holds the lease and has read v1
    write_raw(lake_root, P, nps=9, minutes=1)  # the replay's commit
    waiting = logged(f"waiting for the {LEASE}")
    newer = Run(lake_root, "newer")
    assert waiting.wait(60)  # the newer flattening waits for the older one's lease
    assert newer.result is None and not Lake(lake_root).exists(Lake(lake_root).partition_path("responses", P))
    paused.go.set()
    for run in (older, newer):
        run.join(120)
        assert run.error is None, run.error
    lake = Lake(lake_root)
    assert nps_of(lake) == {9} and newer.result.rows["responses"] == RECORDS
    assert flattened_from(lake) == {lake.look(lake.partition_path("raw_responses", P))}
    assert stale_partitions(lake) == [] and flatten_leases(lake) == []


def test_a_raw_file_replaced_while_it_is_flattened_is_flattened_again(lake_root, paused, logged):
    # The replay that replaced the raw file died before its own flattening: the running one flattens it again
    # before it lets the lease go, so no partition is left holding the older rows with newer files.
    write_raw(lake_root, P, nps=3)
    older = Run(lake_root, "older")
    assert paused.entered.wait(60)
    write_raw(lake_root, P, nps=9, minutes=1)
    again = logged("was replaced while it was flattened: flattening it again")
    paused.go.set()
    older.join(120)
    assert older.error is None, older.error
    lake = Lake(lake_root)
    assert again.is_set() and nps_of(lake) == {9} and older.result.stats.records == RECORDS
    assert flattened_from(lake) == {lake.look(lake.partition_path("raw_responses", P))}
    assert stale_partitions(lake) == [] and flatten_leases(lake) == []


def test_the_lease_of_one_partition_does_not_hold_up_another(lake_root):
    write_raw(lake_root, P, nps=3)
    write_raw(lake_root, Q, nps=5)
    lake = Lake(lake_root)
    with flatten_lease(lake, P).hold("busy-run", wait_seconds=0, setting="-"):
        assert flatten_partition(Lake(lake_root), Q, run_id="q-run", wait_seconds=0).rows["responses"] == RECORDS
        with pytest.raises(LeaseTimeoutError) as raised:
            flatten_partition(Lake(lake_root), P, run_id="p-run", wait_seconds=0)
    message = str(raised.value)
    assert f"for the {LEASE}" in message and "held by run busy-run (pid" in message
    assert "CG_LEASE_WAIT_SECONDS" in message
    assert nps_of(lake, Q) == {5} and not lake.exists(lake.partition_path("responses", P))  # P: nothing written
    assert flatten_leases(lake) == []  # both released, files and holder records gone


UPDATES = {  # stream: (its current update asset, the key carrying the metadata, its lib/current.py set)
    RESPONSES: (current_tables, DEFAULT.current_keys["responses"], RESPONSES_CURRENT),
    NON_RESPONSES: (current_non_responses, DEFAULT.current_non_responses_key, NON_RESPONSES_CURRENT),
}


@pytest.mark.parametrize("stream", UPDATES, ids=lambda stream: stream.raw_table)
def test_a_partition_another_run_is_flattening_is_left_to_the_next_current_update(lake_root, monkeypatch, stream):
    # The input noticed: the current update re-flattens a stale partition while another run flattens it (a replay's
    # run); the lease stayed held past CG_LEASE_WAIT_SECONDS and the LeaseTimeoutError failed the whole update.
    monkeypatch.setenv("CG_LEASE_WAIT_SECONDS", "0")
    asset, key, tables = UPDATES[stream]
    lake = Lake(lake_root)

    def commit_raw(partition: str, first: int, hours: int) -> None:
        """RECORDS records numbered from ``first``, fetched ``hours`` after FETCHED_AT."""
        rows = raw_rows(
            [record(number_customergauge=n) for n in range(first, first + RECORDS)],
            fetched_at=FETCHED_AT + timedelta(hours=hours),
            cursor_sent=0,
            sync_pass="cursor",
        )
        lake.write_table(lake.partition_path(stream.raw_table, partition), rows)

    def current_fetches() -> dict[int, int]:
        """{number_customergauge: hours after FETCHED_AT it was fetched} of the stream's current key table."""
        table = lake.read_table(lake.current_path(stream.flat_tables[0]))
        hours = [(at - FETCHED_AT) // timedelta(hours=1) for at in table["fetched_at"].to_pylist()]
        return dict(zip(table["number_customergauge"].to_pylist(), hours, strict=True))

    def update() -> dict:
        resources = {
            "customergauge": CustomerGaugeResource(client_id="id", client_secret=SECRET),
            "lake": lake_resource,
        }
        result = dg.materialize([asset], instance=instance, resources=resources)
        [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
        return {name: value.value for name, value in event.materialization.metadata.items()} | {"logs": logs}

    commit_raw(P, 1, hours=0)
    flatten_partition(lake, P, stream=stream)
    update_current(lake, tables)
    commit_raw(P, 1, hours=1)  # a replay's run committed P again and flattens it right now (the lease below)
    commit_raw(Q, 1001, hours=2)  # never flattened: its run died after the raw commit
    lake_resource = LakeResource(root=lake_root)
    with dg.instance_for_test() as instance:
        with flatten_lease(lake, P, stream).hold("busy-run", wait_seconds=0, setting="-"):
            metadata = update()
        assert metadata["reflattened"] == [Q] and list(metadata["being_flattened"]) == [P]
        assert "held by run busy-run (pid" in metadata["being_flattened"][P]
        assert f"partition {P} is being flattened by another run: left out of this update" in "".join(metadata["logs"])
        assert current_fetches() == dict.fromkeys(range(1, 301), 0) | dict.fromkeys(range(1001, 1301), 2)
        assert stale_partitions(lake, stream) == [P]  # the busy run's flattening died (released, nothing published)
        metadata = update()  # the next update
        assert (metadata["reflattened"], metadata["being_flattened"]) == ([P], {})
        assert current_fetches() == dict.fromkeys(range(1, 301), 1) | dict.fromkeys(range(1001, 1301), 2)
    assert stale_partitions(lake, stream) == [] and flatten_leases(lake) == []


@pytest.mark.slow  # as the s3 cases of lake_root (_fixtures_s3.py)
def test_a_flattening_paused_past_its_lease_fails_clean_and_leaves_the_newer_files(s3_root, paused, logged):
    write_raw(s3_root, P, nps=3)
    paused_run = Run(s3_root, "paused")
    assert paused.entered.wait(60)  # holds the lease, has read v1 and looked at the (absent) flat files
    write_raw(s3_root, P, nps=9, minutes=1)
    # Its lease expires while it is paused: the record as the store would hold it, with an expiry passed.
    lake = Lake(s3_root)
    lease_path = lake.root / "_state" / f"flatten-raw_responses-{partition_file_stem(P)}.lease"
    body, etag = lake.storage.read_versioned(lease_path)
    lake.storage.put_if(lease_path, json.dumps({**json.loads(body), "expires": time.time() - 1}).encode(), etag)
    taken = logged(f"took over the {LEASE}")
    newer = flatten_partition(Lake(s3_root), P, run_id="taker", wait_seconds=60)
    assert taken.is_set() and newer.rows["responses"] == RECORDS
    published = {name: lake.look(lake.partition_path(name, P)) for name in FLAT_TABLE_NAMES}
    paused.go.set()
    paused_run.join(120)
    assert isinstance(paused_run.error, PreconditionFailed), paused_run.error
    message = str(paused_run.error)
    assert f"flattening raw_responses partition {P} was refused" in message
    assert "nothing was published (the files there are left as they are)" in message
    # The newer flattening's files stand, byte for byte the same objects, and hold v2's rows.
    assert {name: lake.look(lake.partition_path(name, P)) for name in FLAT_TABLE_NAMES} == published
    assert nps_of(lake) == {9}
    assert flattened_from(lake) == {lake.look(lake.partition_path("raw_responses", P))}
    assert flatten_leases(lake) == []
