"""Deterministic survey records for the sandbox API.

Records are shaped like the example body on the vendor page (every key of it, in its order), plus the
variants api-notes.md reports (integer account numbers, ``custom_fields``, empty tags and questions, null
references, long Unicode comments). Each record also carries ``_pos``, its internal position: the key the
sandbox orders and pages by (the cursor). ``_pos`` is never sent over HTTP. ``number_customergauge`` grows
with ``_pos`` but is never equal to it, so a client cannot mistake one for the other.

Non-responses (surveys sent that got no answer, ``GET /v7/rest/sync/non-responses``) are the same kind of
record without the answer (``as_non_response``): no NPS, comment, response date, follow-up, drivers, tags or
questions; ids, contact, account, the other dates, language, locale and properties stay. Their
number_customergauge lie from NON_RESPONSE_NUMBERS_FROM on, apart from the responses' numbers, so a
non-response that becomes a response (``as_response``) keeps its number in both endpoints.

The first record is exactly the vendor page's example. Every kind of variety is forced once into the
records right after it (so the first 50 records hold each kind) and afterwards appears at random.
"""

import copy
import random
from datetime import date, datetime, time, timedelta

DEFAULT_BASE_DATE = date(2026, 11, 1)
"""Dates of generated records lie in the ~60 days before this date (not today: records stay deterministic)."""

EXPANSIONS = ("selected_drivers", "tags", "questions", "properties")
"""The four ``with[]`` expansions of the vendor page; a record carries only those asked for."""

ANSWER_KEYS = ("nps", "comment", "date_survey_response", "follow_up", "tags", "questions", "selected_drivers")
"""The keys of a response that a non-response lacks: the answer (issue 11: "like a response without the answer")."""
NON_RESPONSE_NUMBERS_FROM = 900_000_000
"""number_customergauge of non-responses = this + the generated number: never a response's number."""
DAYS_TO_ANSWER = 12
"""A converted non-response's date_survey_response is this many days after its date_sent."""

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
ZERO_DATE = "0000-00-00 00:00:00"
LONG_COMMENT_CHARS = 70_000

# The example response body of the vendor page, value for value.
VENDOR_EXAMPLE_RECORD = {
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

FIRST_NAMES = ["Anna", "Bram", "Chloé", "Daan", "Emma", "Finn", "Greta", "Hiro", "Ines", "Jan", "Zoë"]
LAST_NAMES = ["de Vries", "Jansen", "Müller", "Kowalski", "Smith", "Tanaka", "Silva", "O'Brien"]
ACCOUNTS = ["ACME", "Globex", "Initech", "Umbrella", "Stark Industries", "Wayne Enterprises"]
LANGUAGES = [("EN", "en_GB"), ("NL", "nl_NL"), ("DE", "de_DE"), ("PL", "pl_PL"), ("JA", "ja_JP")]
COMMENTS = [
    "Great service, fast delivery.",
    "The invoice was wrong twice.",
    "Support solved it in one call.",
    "Prijs is te hoog.",
    "Alles prima geregeld.",
    "Lieferung kam zu spät.",
]
TAGS = [
    {"label": "Product", "type": "topic", "sentiment": "positive"},
    {"label": "Price", "type": "topic", "sentiment": "negative"},
    {"label": "Delivery", "type": "topic", "sentiment": "mixed"},
    {"label": "Support", "type": "tag"},
    {"label": "Escalated", "type": "tag"},
]
QUESTION_TITLES = [
    "We made it easy to solve your support issue.",
    "How satisfied are you with the product?",
    "What could we improve?",
]
DRIVERS = {
    "Ordering": ["Ease of Ordering", "Product Information", "Delivery Time"],
    "Product": ["Ease of Use", "Return on Investment", "Quality"],
    "Service": ["Friendliness", "Response Time"],
    "Price": ["Value for Money"],
}
PROPERTY_VALUES = {
    "Country": ["NL", "DE", "GB", "PL", "JP"],
    "Division": ["Global", "EMEA", "APAC"],
    "Touchpoint": ["Relationship", "Transactional", "Onboarding"],
    "Key Contact": ["Yes", "No", None],
    "Segment A": ["Enterprise", "SMB", None],
    "Account Manager": ["J. Smith", "M. Nowak", None],
}


def generate_records(seed: int, count: int, start_key: int = 1000, base_date: date | None = None) -> list[dict]:
    """Return ``count`` deterministic records for ``seed``, in cursor order.

    Shape: list of dicts with the vendor example's keys (all four expansions) plus ``_pos`` (int, the
    internal position = cursor key; first record at ``start_key``, then +1..5 each). ``base_date``: dates
    fall in the 60 days before it (None = ``DEFAULT_BASE_DATE``). Same arguments give equal records.
    Raises ValueError if ``count`` is negative.
    """
    return RecordGenerator(seed, start_key=start_key, base_date=base_date).next_records(count)


class RecordGenerator:
    """Stateful source of records: ``generate_records`` and the sandbox's ``append_records`` share it.

    Appending n records after generating m gives the same records as generating m + n at once.
    ``allocate_position()`` hands out the next, higher internal position (also used to move a record
    to the end).
    """

    def __init__(self, seed: int, start_key: int = 1000, base_date: date | None = None):
        self._rng = random.Random(seed)
        self._base = datetime.combine(base_date or DEFAULT_BASE_DATE, time(0, 0, 0))
        self._start_key = start_key
        self._last_pos: int | None = None
        self._index = 0

    def allocate_position(self) -> int:
        """Return a new internal position, 1..5 above the last one (``start_key`` the first time)."""
        if self._last_pos is None:
            self._last_pos = self._start_key
        else:
            self._last_pos += self._rng.randint(1, 5)
        return self._last_pos

    def next_records(self, count: int) -> list[dict]:
        """Return the next ``count`` records (see ``generate_records`` for the shape)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        return [self._next_record() for _ in range(count)]

    def _next_record(self) -> dict:
        pos = self.allocate_position()
        index = self._index
        self._index += 1
        if index == 0:
            return {**copy.deepcopy(VENDOR_EXAMPLE_RECORD), "_pos": pos}
        record = self._random_record(pos)
        variety = _variety_for(index, self._rng)
        if variety is not None:
            variety(record, self._rng)
        return record

    def _random_record(self, pos: int) -> dict:
        rng = self._rng
        number = 3000 + pos * 3 + rng.randint(0, 2)
        language, locale = rng.choice(LANGUAGES)
        created = self._base - timedelta(seconds=rng.randint(5 * 86400, 60 * 86400))
        sent = created + timedelta(seconds=rng.randint(0, 86400))
        answered = sent + timedelta(seconds=rng.randint(60, 3 * 86400))
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        comment = rng.choice(COMMENTS)
        return {
            "status": "response",
            "contact": {"first_name": first, "last_name": last},
            "account": {"name": rng.choice(ACCOUNTS), "number": str(rng.randint(100, 999))},
            "number_customergauge": number,
            "number_customer": str(rng.randint(1000, 9999)),
            "number_order": str(rng.randint(10000, 99999)),
            "email": f"{first.lower()}.{number}@example.com",
            "phone": f"+31{rng.randint(600000000, 699999999)}",
            "nps": rng.randint(0, 10),
            "comment": {"original": comment, "translation": f"[en] {comment}"},
            "date_creation": created.strftime(DATE_FORMAT),
            "date_order": (created - timedelta(days=rng.randint(0, 4))).strftime(DATE_FORMAT),
            "date_sent": sent.strftime(DATE_FORMAT),
            "date_survey_response": answered.strftime(DATE_FORMAT),
            "language": language,
            "locale": locale,
            "follow_up": {"requested": rng.random() < 0.2, "details": str(rng.randint(10**9, 10**10 - 1))},
            "tags": [dict(tag) for tag in rng.sample(TAGS, rng.randint(1, 3))],
            "questions": [_random_question(rng, title) for title in rng.sample(QUESTION_TITLES, rng.randint(1, 2))],
            "selected_drivers": [_driver(rng, primary) for primary in rng.sample(sorted(DRIVERS), rng.randint(1, 2))],
            "properties": [
                {"field": field, "reference": rng.choice(values)} for field, values in PROPERTY_VALUES.items()
            ],
            "_pos": pos,
        }


def as_non_response(record: dict) -> dict:
    """A generated record as a non-response: the answer keys (ANSWER_KEYS) dropped, status "non_response",
    number_customergauge moved up by NON_RESPONSE_NUMBERS_FROM; other keys (``_pos`` included) kept."""
    kept = {key: value for key, value in record.items() if key not in ANSWER_KEYS}
    return {
        **kept,
        "status": "non_response",
        "number_customergauge": NON_RESPONSE_NUMBERS_FROM + record["number_customergauge"],
    }


def as_response(non_response: dict, answer: dict, position: int) -> dict:
    """The response a non-response became: its keys with status "response", the answer keys of ``answer`` (a
    generated record), date_survey_response DAYS_TO_ANSWER days after its date_sent, at ``position``; keys in
    the vendor example's order."""
    sent = datetime.strptime(non_response["date_sent"], DATE_FORMAT)
    merged = {**non_response, **{key: answer[key] for key in ANSWER_KEYS}, "status": "response", "_pos": position}
    merged["date_survey_response"] = (sent + timedelta(days=DAYS_TO_ANSWER)).strftime(DATE_FORMAT)
    order = [*VENDOR_EXAMPLE_RECORD, *(key for key in merged if key not in VENDOR_EXAMPLE_RECORD)]
    return {key: merged[key] for key in order if key in merged}


def _random_question(rng: random.Random, title: str) -> dict:
    if title == "What could we improve?":
        return {"title": title, "answer": rng.choice(COMMENTS)}
    return {"title": title, "answer": str(rng.randint(1, 10))}


def _driver(rng: random.Random, primary: str) -> dict:
    options = DRIVERS[primary]
    return {"primary": primary, "secondary": rng.sample(options, rng.randint(1, len(options)))}


# --- variety: each function edits one record in place --------------------------------------------


def _unicode_text(record: dict, rng: random.Random) -> None:
    record["contact"] = {"first_name": "Zoë", "last_name": "Wójcik"}
    record["account"]["name"] = "Łódź Logistics 東京"
    record["comment"] = {"original": "東京への配送は速かった 🙂👍", "translation": "Delivery to Tokyo was fast 🙂👍"}


def _bracket_comment(record: dict, rng: random.Random) -> None:
    record["comment"]["original"] = '[urgent] order 55 arrived "late", see {ticket}'


def _long_comment(record: dict, rng: random.Random) -> None:
    chunk = "Lange Rückmeldung über Łódź und 東京 🙂. "
    length = rng.randint(LONG_COMMENT_CHARS - 5000, LONG_COMMENT_CHARS)
    record["comment"]["original"] = (chunk * (length // len(chunk) + 1))[:length]


def _null_contact_details(record: dict, rng: random.Random) -> None:
    record["email"] = None
    record["phone"] = None


def _null_translation(record: dict, rng: random.Random) -> None:
    record["comment"]["translation"] = None


def _null_nps(record: dict, rng: random.Random) -> None:
    record["nps"] = None


def _zero_nps(record: dict, rng: random.Random) -> None:
    record["nps"] = 0
    record["comment"] = {"original": "Never again.", "translation": None}


def _empty_lists(record: dict, rng: random.Random) -> None:
    record["tags"] = []
    record["questions"] = []


def _drivers_without_secondary(record: dict, rng: random.Random) -> None:
    record["selected_drivers"] = [
        {"primary": "Service", "secondary": []},
        {"primary": "Price"},
        {"primary": "Ordering", "secondary": ["Delivery Time"]},
    ]


def _null_segments(record: dict, rng: random.Random) -> None:
    for segment in record["properties"]:
        segment["reference"] = None


def _partial(record: dict, rng: random.Random) -> None:
    record["status"] = "partial"
    record["nps"] = None
    record["comment"] = {"original": None, "translation": None}


def _non_response(record: dict, rng: random.Random) -> None:
    record["status"] = "non_response"
    record["nps"] = None
    record["comment"] = {"original": None, "translation": None}
    record["date_survey_response"] = ZERO_DATE
    record["tags"] = []
    record["questions"] = []
    record["selected_drivers"] = []


def _integer_numbers(record: dict, rng: random.Random) -> None:
    record["account"]["number"] = int(record["account"]["number"])
    record["number_customer"] = int(record["number_customer"])


def _zero_date_order(record: dict, rng: random.Random) -> None:
    record["date_order"] = ZERO_DATE


def _empty_date_order(record: dict, rng: random.Random) -> None:
    record["date_order"] = ""


def _custom_fields(record: dict, rng: random.Random) -> None:
    record["custom_fields"] = [
        {"field": "Contract", "reference": rng.choice(["Gold", "Silver"])},
        {"field": "Region Code", "reference": None},
    ]


def _structured_answers(record: dict, rng: random.Random) -> None:
    record["questions"] = [
        {"title": "Which channels did you use?", "answer": ["Phone", "Chat"]},
        {"title": "Rate our portal", "answer": {"score": 4, "scale": 5}},
        {"title": "What could we improve?", "answer": "Nothing, thanks!"},
    ]


def _all_drivers(record: dict, rng: random.Random) -> None:
    record["selected_drivers"] = [_driver(rng, primary) for primary in sorted(DRIVERS)]


VARIETIES = [
    _unicode_text,
    _bracket_comment,
    _long_comment,
    _null_contact_details,
    _null_translation,
    _null_nps,
    _zero_nps,
    _empty_lists,
    _drivers_without_secondary,
    _null_segments,
    _partial,
    _non_response,
    _integer_numbers,
    _zero_date_order,
    _empty_date_order,
    _custom_fields,
    _structured_answers,
    _all_drivers,
]
COMMON_VARIETIES = [variety for variety in VARIETIES if variety is not _long_comment]
VARIETY_RATE = 0.2
"""Chance that a record after the forced ones gets one common variety (each appears ~30 times in 2500)."""
LONG_COMMENT_EVERY = 400
"""Every 400th record gets a ~70 KB comment (6 in 2500): rare, so a 1000-record page stays ~1.5 MB."""


def _variety_for(index: int, rng: random.Random):
    """Variety for the record at ``index`` (1-based after the vendor record): forced first, then random."""
    if index <= len(VARIETIES):
        return VARIETIES[index - 1]
    if index % LONG_COMMENT_EVERY == 0:
        return _long_comment
    if rng.random() < VARIETY_RATE:
        return rng.choice(COMMON_VARIETIES)
    return None
