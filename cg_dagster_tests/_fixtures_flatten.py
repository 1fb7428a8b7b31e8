"""Records for the flatten and schema tests.

VENDOR_RECORD is the example record of the vendor page (customergauge-get-responses-api.txt), as the
sandbox serves it (cg_dagster.sandbox.data.VENDOR_EXAMPLE_RECORD, key for key in the page's order); a copy,
so a test cannot change the sandbox's.
"""

import copy
from datetime import datetime, timezone

from cg_dagster.sandbox.data import VENDOR_EXAMPLE_RECORD

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
