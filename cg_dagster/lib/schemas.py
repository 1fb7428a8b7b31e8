"""The table contract: one explicit Arrow schema per lake table, with column lineage.

Every table written to the lake is described here and nowhere else. `flatten.py` builds its tables
with `TABLES[name].arrow_schema`, and the tests check that the output schemas equal these.

Lineage (`Column.source`) uses raw API field paths relative to one record of the sync page's `data`
list (vendor page, "Example Response Body"): `a.b` is key `b` of object `a`; `a[]` is the list `a`
(for a position column: the item's index in that list); `a[].b` is key `b` of each item of `a`;
`a[].*` stands for the item keys the contract does not know; `*` is the whole record. ETL columns
(added by the sync, not read from a record) have `source == ()` and are listed in `ETL_COLUMNS`.

Record shape sources: the vendor page (`customergauge-get-responses-api.txt`) for the documented keys,
and api-notes.md for `drivers: [{"label": ...}]` and `custom_fields: [{"field", "reference"}]`.
"""

import dataclasses
from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP_UTC = pa.timestamp("us", tz="UTC")

# Top-level record keys the contract knows: the vendor example's keys plus `drivers` and
# `custom_fields` (api-notes.md). Any other key is reported in FlattenStats.unknown_fields.
RECORD_KEYS = frozenset(
    {
        "status",
        "contact",
        "account",
        "number_customergauge",
        "number_customer",
        "number_order",
        "email",
        "phone",
        "nps",
        "comment",
        "date_creation",
        "date_order",
        "date_sent",
        "date_survey_response",
        "language",
        "locale",
        "follow_up",
        "tags",
        "questions",
        "selected_drivers",
        "properties",
        "drivers",
        "custom_fields",
    }
)

# Known keys of the nested objects of a record (vendor page example).
OBJECT_KEYS = {
    "contact": frozenset({"first_name", "last_name"}),
    "account": frozenset({"name", "number"}),
    "comment": frozenset({"original", "translation"}),
    "follow_up": frozenset({"requested", "details"}),
}

# Known keys of the items of each list of a record (vendor page example; api-notes.md for `drivers`
# and `custom_fields`). Other item keys go to the child table's `extra_json` column.
ITEM_KEYS = {
    "selected_drivers": frozenset({"primary", "secondary"}),
    "drivers": frozenset({"label"}),
    "tags": frozenset({"label", "type", "sentiment"}),
    "questions": frozenset({"title", "answer"}),
    "properties": frozenset({"field", "reference"}),
    "custom_fields": frozenset({"field", "reference"}),
}

# Columns added by the sync (or the current tables' update: is_response) rather than read from a record.
ETL_COLUMNS = frozenset({"fetched_at", "sync_pass", "cursor_sent", "is_response"})


@dataclass(frozen=True)
class Column:
    """One column of a lake table.

    `source` holds the raw API field path(s) the column comes from (notation in the module docstring),
    or `()` for an ETL column.
    """

    name: str
    type: pa.DataType
    nullable: bool
    description: str
    source: tuple[str, ...]


@dataclass(frozen=True)
class TableContract:
    """The contract of one lake table: its name, what one row is, its columns and its row key.

    `key` names the columns that identify a row within a partition (several fetches of the same row
    differ only in `fetched_at`; downstream the latest fetch wins).

    Raises ValueError at construction if column names repeat or a key column is not a column.
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    def __post_init__(self) -> None:
        names = [column.name for column in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name!r}: column names repeat: {names}")
        missing = [name for name in self.key if name not in names]
        if missing:
            raise ValueError(f"table {self.name!r}: key columns {missing} are not columns of the table")

    @property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema: one field per column, in order, with the column's type and nullability."""
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    def empty_table(self) -> pa.Table:
        """A table with zero rows and exactly `arrow_schema`."""
        return self.arrow_schema.empty_table()

    def column(self, name: str) -> Column:
        """The column `name`; KeyError naming the table when it has none."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name!r} has no column {name!r}")


def _number_customergauge(table_description: str) -> Column:
    return Column(
        "number_customergauge",
        pa.int64(),
        False,
        f"CustomerGauge's id of the survey record (CGID) {table_description}.",
        ("number_customergauge",),
    )


def _fetched_at() -> Column:
    return Column(
        "fetched_at",
        TIMESTAMP_UTC,
        False,
        "When the sync fetched the record from the API (UTC). The latest fetch of a key wins.",
        (),
    )


def _extra_json(list_names: str, sources: tuple[str, ...]) -> Column:
    return Column(
        "extra_json",
        pa.string(),
        True,
        f"Keys of the {list_names} item that the contract does not know, as compact JSON with sorted "
        "keys; null when the item has none.",
        sources,
    )


def _text(name: str, description: str, source: str) -> Column:
    """A nullable string column read from one field; non-string values are rendered as JSON text."""
    return Column(name, pa.string(), True, description, (source,))


def _date(name: str, what: str) -> Column:
    return Column(
        name,
        TIMESTAMP_UTC,
        True,
        f"{what}, converted to UTC from the system time zone the API reports it in (vendor page note). "
        "Null when missing, null, empty, zero ('0000-00-00 00:00:00') or malformed.",
        (name,),
    )


RAW_RESPONSES = TableContract(
    name="raw_responses",
    description="One row per record fetched from the sync API, per sync pass: the record's JSON as received.",
    columns=(
        _number_customergauge("of this record"),
        _fetched_at(),
        Column(
            "sync_pass",
            pa.string(),
            False,
            "Which pass of the sync fetched the record: 'cursor' (forward from the stored cursor) or "
            "'lookback' (re-read of a trailing period).",
            (),
        ),
        Column(
            "cursor_sent",
            pa.int64(),
            True,
            "The cursor parameter sent for the page the record came on; null for a page fetched without one.",
            (),
        ),
        Column(
            "record_json",
            pa.string(),
            False,
            "The whole record as compact JSON (non-ASCII kept as is), lossless.",
            ("*",),
        ),
    ),
    key=("number_customergauge", "sync_pass"),
)

RESPONSES = TableContract(
    name="responses",
    description="One row per survey record (response): its base data, NPS, comment and dates.",
    columns=(
        _number_customergauge("of this response"),
        _text("status", "Status of the survey record, e.g. 'response'.", "status"),
        _text("contact_first_name", "Contact's first name.", "contact.first_name"),
        _text("contact_last_name", "Contact's last name.", "contact.last_name"),
        _text("account_name", "Account (company) name.", "account.name"),
        _text("account_number", "Account number, as text (numbers rendered without '.0').", "account.number"),
        _text("number_customer", "Customer number, as text (sent as string or number).", "number_customer"),
        _text("number_order", "Order number, as text (sent as string or number).", "number_order"),
        _text("email", "Contact's e-mail address.", "email"),
        _text("phone", "Contact's phone number, as text.", "phone"),
        Column(
            "nps",
            pa.int8(),
            True,
            "NPS score 0..10 (0 is a real score). Null when missing, null or not an integer 0..10.",
            ("nps",),
        ),
        _text("comment_original", "Comment as the contact wrote it, byte for byte.", "comment.original"),
        _text("comment_translation", "Comment translated by CustomerGauge.", "comment.translation"),
        _date("date_creation", "When the survey record was created"),
        _date("date_order", "Order date"),
        _date("date_sent", "When the survey was sent"),
        _date("date_survey_response", "When the contact responded"),
        _text("language", "Survey language code, e.g. 'EN'.", "language"),
        _text("locale", "Survey locale, e.g. 'en_GB'.", "locale"),
        Column(
            "follow_up_requested",
            pa.bool_(),
            True,
            "Whether the contact asked for a follow-up (true/false, or 1/0). Null when missing or other.",
            ("follow_up.requested",),
        ),
        _text("follow_up_details", "Follow-up details given by the contact.", "follow_up.details"),
        _fetched_at(),
    ),
    key=("number_customergauge",),
)

RESPONSE_DRIVERS = TableContract(
    name="response_drivers",
    description=(
        "One row per (primary driver, secondary driver) pair of a response; a primary driver with no "
        "secondary gives one row with a null secondary. Legacy `drivers` labels give one row each."
    ),
    columns=(
        _number_customergauge("of the response"),
        Column(
            "driver_position",
            pa.int32(),
            False,
            "0-based position of the driver item in its list (selected_drivers or drivers).",
            ("selected_drivers[]", "drivers[]"),
        ),
        Column(
            "primary_driver",
            pa.string(),
            True,
            "The primary driver (reason for the NPS score).",
            ("selected_drivers[].primary", "drivers[].label"),
        ),
        Column(
            "secondary_position",
            pa.int32(),
            True,
            "0-based position of the secondary driver in the primary's secondary list; null when the "
            "primary has no secondary driver.",
            ("selected_drivers[].secondary[]",),
        ),
        Column(
            "secondary_driver",
            pa.string(),
            True,
            "The secondary driver; null when the primary has none.",
            ("selected_drivers[].secondary[]",),
        ),
        Column(
            "driver_source",
            pa.string(),
            False,
            "Which list the driver came from: 'selected_drivers' (documented) or 'drivers' (legacy shape, "
            "api-notes.md).",
            ("selected_drivers", "drivers"),
        ),
        _extra_json("driver", ("selected_drivers[].*", "drivers[].*")),
        _fetched_at(),
    ),
    key=("number_customergauge", "driver_source", "driver_position", "secondary_position"),
)

RESPONSE_TAGS = TableContract(
    name="response_tags",
    description="One row per manual tag or text-analytics topic of a response.",
    columns=(
        _number_customergauge("of the response"),
        Column("tag_position", pa.int32(), False, "0-based position of the item in the tags list.", ("tags[]",)),
        _text("label", "The tag or topic label.", "tags[].label"),
        _text("tag_type", "Item kind as sent: 'tag' (manual) or 'topic' (text analytics).", "tags[].type"),
        _text("sentiment", "Sentiment of a topic, e.g. 'mixed'; null when not sent.", "tags[].sentiment"),
        _extra_json("tags", ("tags[].*",)),
        _fetched_at(),
    ),
    key=("number_customergauge", "tag_position"),
)

RESPONSE_QUESTIONS = TableContract(
    name="response_questions",
    description="One row per additional question (incl. CES, CSAT, rating) answered in a response.",
    columns=(
        _number_customergauge("of the response"),
        Column(
            "question_position",
            pa.int32(),
            False,
            "0-based position of the item in the questions list.",
            ("questions[]",),
        ),
        _text("title", "The question's title.", "questions[].title"),
        _text(
            "answer",
            "The answer: text as sent; a number rendered as JSON text; a list or object as compact JSON.",
            "questions[].answer",
        ),
        Column(
            "answer_number",
            pa.float64(),
            True,
            "The answer as a number when it is a number or a numeric string (e.g. '7'); else null.",
            ("questions[].answer",),
        ),
        _extra_json("questions", ("questions[].*",)),
        _fetched_at(),
    ),
    key=("number_customergauge", "question_position"),
)

RESPONSE_PROPERTIES = TableContract(
    name="response_properties",
    description="One row per property (segment) of a response, from `properties` or `custom_fields`.",
    columns=(
        _number_customergauge("of the response"),
        Column(
            "property_position",
            pa.int32(),
            False,
            "0-based position of the item in its list (properties or custom_fields).",
            ("properties[]", "custom_fields[]"),
        ),
        Column(
            "field",
            pa.string(),
            True,
            "The property (segment) name, e.g. 'Country'.",
            ("properties[].field", "custom_fields[].field"),
        ),
        Column(
            "reference",
            pa.string(),
            True,
            "The property value, as text (numbers rendered as text); often null.",
            ("properties[].reference", "custom_fields[].reference"),
        ),
        Column(
            "property_origin",
            pa.string(),
            False,
            "Which list the item came from: 'properties' (documented) or 'custom_fields' (api-notes.md).",
            ("properties", "custom_fields"),
        ),
        _extra_json("properties/custom_fields", ("properties[].*", "custom_fields[].*")),
        _fetched_at(),
    ),
    key=("number_customergauge", "property_origin", "property_position"),
)

# Non-responses (GET /v7/rest/sync/non-responses, api-notes.md): "like a response without the answer"
# (issue 11; the record shape is not documented further), so the raw table is raw_responses' twin and the
# flat table takes the responses columns a non-response carries: no nps, comment, response date or follow-up
# (and no drivers, tags or questions). Its segments (`properties`, `custom_fields`) go to
# non_response_properties, response_properties' twin, read by the same rules.
RAW_NON_RESPONSES = dataclasses.replace(
    RAW_RESPONSES,
    name="raw_non_responses",
    description=(
        "One row per record fetched from the non-responses sync endpoint, per sync pass: the record's JSON as received."
    ),
)
NON_RESPONSE_COLUMNS = (
    "number_customergauge",
    "status",
    "contact_first_name",
    "contact_last_name",
    "account_name",
    "account_number",
    "number_customer",
    "number_order",
    "email",
    "phone",
    "date_creation",
    "date_order",
    "date_sent",
    "language",
    "locale",
    "fetched_at",
)
NON_RESPONSES = TableContract(
    name="non_responses",
    description=(
        "One row per non-response (a survey sent that got no answer): the response columns it carries. Its "
        "number_customergauge is the one a response gets if the contact answers later."
    ),
    columns=tuple(RESPONSES.column(name) for name in NON_RESPONSE_COLUMNS),
    key=("number_customergauge",),
)
NON_RESPONSE_PROPERTIES = dataclasses.replace(
    RESPONSE_PROPERTIES,
    name="non_response_properties",
    description=(
        "One row per property (segment, e.g. the survey's 'Touchpoint') of a non-response, from `properties` or "
        "`custom_fields`: response_properties' twin, read by the same rules."
    ),
    columns=(_number_customergauge("of the non-response"), *RESPONSE_PROPERTIES.columns[1:]),
)
# The record keys a non-response may carry as a response does, read by the responses' rules into
# non_response_properties; a value of another shape (not a list of objects, e.g. "properties": "y") gives no
# rows and is counted in FlattenStats.unread_fields instead of refusing the partition (the shape of a
# non-response is not documented, so one odd record must not block its partition for good).
NON_RESPONSE_SEGMENT_KEYS = frozenset({"properties", "custom_fields"})
# The record keys the contract knows that the non-responses' tables do not read: the answer (nps, comment,
# date_survey_response, follow_up, drivers, tags, questions). Flattening a non-response neither reads nor
# checks them (a response's shape does not bind a non-response); they stay in raw_non_responses.record_json
# and are counted in FlattenStats.unread_fields.
NON_RESPONSE_UNREAD_KEYS = RECORD_KEYS - {
    path.split(".")[0].removesuffix("[]")
    for contract in (NON_RESPONSES, NON_RESPONSE_PROPERTIES)
    for column in contract.columns
    for path in column.source
}
CURRENT_NON_RESPONSES = TableContract(
    name="current_non_responses",
    description=(
        "The latest version of every non-response (current/non_responses/), with whether it has been answered since."
    ),
    columns=(
        *NON_RESPONSES.columns,
        Column(
            "is_response",
            pa.bool_(),
            False,
            "True when current/responses holds this number_customergauge: the contact answered after all (the "
            "record is then in both tables). Set when the current tables are updated.",
            (),
        ),
    ),
    key=("number_customergauge",),
)

TABLES: dict[str, TableContract] = {
    contract.name: contract
    for contract in (
        RAW_RESPONSES,
        RESPONSES,
        RESPONSE_DRIVERS,
        RESPONSE_TAGS,
        RESPONSE_QUESTIONS,
        RESPONSE_PROPERTIES,
        RAW_NON_RESPONSES,
        NON_RESPONSES,
        NON_RESPONSE_PROPERTIES,
        CURRENT_NON_RESPONSES,
    )
}

# Table names, from the contract above: import them from here, never type them out again.
RAW_TABLE = RAW_RESPONSES.name  # the sync writes it: one file per hourly partition, each record as received
KEY_TABLE = RESPONSES.name  # one row per response; the child tables' rows point to it by number_customergauge
FLAT_TABLE_NAMES = (
    KEY_TABLE,
    *(t.name for t in (RESPONSE_DRIVERS, RESPONSE_TAGS, RESPONSE_QUESTIONS, RESPONSE_PROPERTIES)),
)
CHILD_TABLES = tuple(name for name in FLAT_TABLE_NAMES if name != KEY_TABLE)
CURRENT_TABLES = FLAT_TABLE_NAMES  # one current table (latest version of every response) per flattened table
RAW_NON_RESPONSES_TABLE = RAW_NON_RESPONSES.name
NON_RESPONSES_TABLE = NON_RESPONSES.name  # flattened from raw_non_responses, one row per raw row
NON_RESPONSE_FLAT_TABLES = (NON_RESPONSES_TABLE, NON_RESPONSE_PROPERTIES.name)  # key table first; each has a
# current table (current/<table>/)
