"""Records for the flatten and schema tests.

VENDOR_RECORD is the example record of the vendor page (customergauge-get-responses-api.txt), whose
JSON is printed there without braces; reconstructed here key for key, in the page's order.
"""

import copy
from datetime import datetime, timezone

FETCHED_AT = datetime(2024, 5, 1, 8, 0, 0, tzinfo=timezone.utc)

VENDOR_RECORD = {
    "status": "response",
    "contact": {"first_name": "John", "last_name": "Doe"},
    "account": {"name": "ACME", "number": "123"},
    "number_customergauge": 3414,
    "number_customer": "123",
    "number_order": "321",
    "email": "example@customergauge.com",
    "phone": "1234567890",
    "nps": 10,
    "comment": {"original": "Comentário de exemplo", "translation": "Example Comment"},
    "date_creation": "2022-03-30 12:34:56",
    "date_order": "2022-03-30 12:34:56",
    "date_sent": "2022-03-30 12:34:56",
    "date_survey_response": "2022-03-30 12:34:56",
    "language": "EN",
    "locale": "en_GB",
    "follow_up": {"requested": False, "details": "1234567890"},
    "tags": [
        {"label": "Product", "type": "topic", "sentiment": "mixed"},
        {"label": "Support", "type": "tag"},
    ],
    "questions": [{"title": "We made it easy to solve your support issue.", "answer": "7"}],
    "selected_drivers": [
        {"primary": "Ordering", "secondary": ["Ease of Ordering", "Product Information"]},
        {"primary": "Product", "secondary": ["Ease of Use", "Return on Investment"]},
    ],
    "properties": [
        {"field": "Country", "reference": "NL"},
        {"field": "Division", "reference": "Global"},
        {"field": "Touchpoint", "reference": "Relationship"},
        {"field": "Key Contact", "reference": None},
        {"field": "Segment A", "reference": None},
        {"field": "Account Manager", "reference": None},
    ],
}

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
