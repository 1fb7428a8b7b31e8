"""build_current over hand-made partition files: latest fetch wins, and two versions are never mixed."""

from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq

from cg_dagster.lib.current import build_current
from cg_dagster.lib.flatten import FLAT_TABLE_NAMES, flatten_records
from cg_dagster.lib.lake import Lake

T1 = datetime(2026, 11, 1, 10, 5, tzinfo=timezone.utc)
T2 = T1 + timedelta(hours=1)


def write_partition(lake: Lake, partition: str, records: list[dict], fetched_at: datetime) -> None:
    flat = flatten_records(records, fetched_at=fetched_at)
    for name in FLAT_TABLE_NAMES:
        lake.write_table(lake.partition_path(name, partition), flat.tables[name])


def current(lake: Lake, table: str, *columns: str) -> list[tuple]:
    rows = pq.read_table(lake.current_path(table), columns=list(columns)).to_pylist()
    return [tuple(row[c] for c in columns) for row in rows]


def tag(label: str) -> dict:
    return {"label": label, "type": "topic"}


def test_latest_fetch_wins_with_its_own_child_rows(tmp_path):
    lake = Lake(tmp_path / "lake")
    write_partition(lake, "2026-11-01-10:00", [{"number_customergauge": 7, "nps": 1, "tags": [tag("a"), tag("b")]}], T1)
    write_partition(lake, "2026-11-01-11:00", [{"number_customergauge": 7, "nps": 9, "tags": [tag("c")]}], T2)
    assert build_current(lake)["responses"] == 1
    assert current(lake, "responses", "number_customergauge", "nps") == [(7, 9)]
    assert current(lake, "response_tags", "tag_position", "label") == [(0, "c")]


def test_a_response_twice_in_one_fetch_is_never_mixed_and_an_older_clean_version_stays(tmp_path):
    # The exact input the breaker found: one page holding number 7 twice with different tags.
    lake = Lake(tmp_path / "lake")
    write_partition(lake, "2026-11-01-10:00", [{"number_customergauge": 7, "nps": 5, "tags": [tag("old")]},
                                               {"number_customergauge": 8, "nps": 6}], T1)
    twice = [
        {"number_customergauge": 7, "nps": 1, "tags": [tag("a")]},
        {"number_customergauge": 7, "nps": 9, "tags": [tag("b"), tag("c")]},
        {"number_customergauge": 9, "nps": 1, "tags": [tag("x")]},
        {"number_customergauge": 9, "nps": 2, "tags": [tag("y")]},
    ]
    write_partition(lake, "2026-11-01-11:00", twice, T2)
    counts = build_current(lake)
    assert current(lake, "responses", "number_customergauge", "nps") == [(7, 5), (8, 6)]  # 9: no clean version
    assert current(lake, "response_tags", "number_customergauge", "label") == [(7, "old")]
    assert counts["responses"] == 2 and counts["response_tags"] == 1
