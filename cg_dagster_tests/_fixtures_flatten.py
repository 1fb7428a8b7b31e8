"""Records for the flatten and schema tests.

VENDOR_RECORD is the example record of the vendor page (customergauge-get-responses-api.txt), as the
sandbox serves it (cg_dagster.sandbox.data.VENDOR_EXAMPLE_RECORD, key for key in the page's order); a copy,
so a test cannot change the sandbox's.
"""

import copy
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from cg_dagster.lib.flatten import FLAT_TABLE_NAMES, flatten_records, raw_rows
from cg_dagster.lib.lake import Lake
from cg_dagster.sandbox.data import EXPANSIONS, VENDOR_EXAMPLE_RECORD, generate_records
from cg_dagster.sandbox.server import _render

FETCHED_AT = datetime(2024, 5, 1, 8, 0, 0, tzinfo=timezone.utc)

VENDOR_RECORD = copy.deepcopy(VENDOR_EXAMPLE_RECORD)

# A bare record: only the id. Every other key missing.
BARE_RECORD = {"number_customergauge": 1}

DROP = object()


def record(**changes) -> dict:
    """A deep copy of VENDOR_RECORD with top-level keys replaced; a value of DROP removes the key."""
    result = copy.deepcopy(VENDOR_RECORD)
    for key, value in changes.items():
        if value is DROP:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def odd_page() -> list[dict]:
    """A page mixing the variants of api-notes.md and broken values, for schema checks."""
    return [
        record(
            number_customergauge=10,
            number_customer=123,
            nps="ten",
            date_sent="0000-00-00 00:00:00",
            date_order="",
            tags=None,
            questions=[{"title": "List", "answer": ["a", "b"]}, {"title": "Num", "answer": 7.5, "kind": "x"}],
            selected_drivers=[{"primary": "Ordering"}, {"primary": "Price", "secondary": None}],
            drivers=[{"label": "Speed"}],
            custom_fields=[{"field": "Region", "reference": 42}],
            surprise=True,
        ),
        {"number_customergauge": 11, "contact": None, "account": None, "comment": None, "follow_up": None},
        BARE_RECORD,
    ]


P = "2026-11-01-10:00"
PAGE = 250


def write_raw(lake: Lake, records: list, bad_row: int | None = None) -> pa.Table:
    """The raw partition file of `records`, in pages of PAGE rows as the sync writes it; with `bad_row`,
    that row's record_json is not JSON. Returns the whole raw table."""
    pages = []
    for start in range(0, len(records), PAGE):
        page = raw_rows(
            records[start : start + PAGE],
            fetched_at=FETCHED_AT + timedelta(seconds=start),
            cursor_sent=start,
            sync_pass="cursor",
        )
        pages.append(page)
    raw = pa.concat_tables(pages)
    if bad_row is not None:
        texts = raw.column("record_json").to_pylist()
        texts[bad_row] = '{"number_customergauge": 1,'
        raw = raw.set_column(raw.schema.get_field_index("record_json"), "record_json", pa.array(texts, pa.string()))
    with lake.parquet_writer(lake.partition_path("raw_responses", P), raw.schema) as writer:
        for batch in raw.to_batches(max_chunksize=PAGE):
            writer.write(batch)
        writer.commit()
    return raw


def sandbox_records(count: int) -> list[dict]:
    """``count`` sandbox records, both renderings, the last three from ``odd_page``."""
    records = [
        _render(rec, frozenset(EXPANSIONS), legacy)
        for legacy in (False, True)
        for rec in generate_records(4, count // 2)
    ]
    return records[: count - 3] + odd_page()


def write_partition(lake: Lake, partition: str, records: list[dict], fetched_at: datetime) -> None:
    """The five flattened partition files of ``records`` (flatten_records), as the flattening step writes them."""
    flat = flatten_records(records, fetched_at=fetched_at)
    for name in FLAT_TABLE_NAMES:
        lake.write_table(lake.partition_path(name, partition), flat.tables[name])


def tag(label: str) -> dict:
    """A response tag of the vendor's shape."""
    return {"label": label, "type": "topic"}
