"""Tests of cg_dagster.lib.schemas: the contract itself, and that flatten output matches it exactly."""

import re

import pyarrow as pa
import pytest

from cg_dagster.lib.flatten import FLAT_TABLE_NAMES, flatten_records, raw_rows
from cg_dagster.lib.schemas import (
    ETL_COLUMNS,
    ITEM_KEYS,
    OBJECT_KEYS,
    RECORD_KEYS,
    TABLES,
    Column,
    TableContract,
)
from cg_dagster_tests._fixtures_flatten import FETCHED_AT, VENDOR_RECORD, odd_page

PAGES = {"normal": [VENDOR_RECORD], "empty": [], "odd": odd_page()}
CHILD_TABLES = {
    "response_drivers": "driver_position",
    "response_tags": "tag_position",
    "response_questions": "question_position",
    "response_properties": "property_position",
}


def test_table_names():
    assert set(TABLES) == {
        "raw_responses",
        "responses",
        "response_drivers",
        "response_tags",
        "response_questions",
        "response_properties",
        "raw_non_responses",
        "non_responses",
        "non_response_properties",
        "current_non_responses",
    }
    assert set(FLAT_TABLE_NAMES) == set(TABLES) - {
        "raw_responses",
        "raw_non_responses",
        "non_responses",
        "non_response_properties",
        "current_non_responses",
    }
    assert all(contract.name == name for name, contract in TABLES.items())


@pytest.mark.parametrize("page", PAGES, ids=list(PAGES))
@pytest.mark.parametrize("name", FLAT_TABLE_NAMES)
def test_flat_output_schema_is_the_contract(name, page):
    result = flatten_records(PAGES[page], fetched_at=FETCHED_AT, system_timezone="Europe/Amsterdam")
    table = result.tables[name]
    assert table.schema.equals(TABLES[name].arrow_schema, check_metadata=True)


@pytest.mark.parametrize("page", PAGES, ids=list(PAGES))
def test_raw_output_schema_is_the_contract(page):
    table = raw_rows(PAGES[page], fetched_at=FETCHED_AT, cursor_sent=7, sync_pass="cursor")
    assert table.schema.equals(TABLES["raw_responses"].arrow_schema, check_metadata=True)


@pytest.mark.parametrize("name", TABLES)
def test_common_columns(name):
    schema = TABLES[name].arrow_schema
    assert schema.field("number_customergauge") == pa.field("number_customergauge", pa.int64(), False)
    assert schema.field("fetched_at") == pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False)
    assert TABLES[name].key[0] == "number_customergauge"
    assert "fetched_at" not in TABLES[name].key


@pytest.mark.parametrize("name, position", CHILD_TABLES.items())
def test_child_tables_have_position_and_extra_json(name, position):
    schema = TABLES[name].arrow_schema
    assert schema.field(position) == pa.field(position, pa.int32(), nullable=False)
    assert schema.field("extra_json") == pa.field("extra_json", pa.string(), nullable=True)
    assert position in TABLES[name].key


def test_keys():
    assert {name: contract.key for name, contract in TABLES.items()} == {
        "raw_responses": ("number_customergauge", "sync_pass"),
        "responses": ("number_customergauge",),
        "response_drivers": (
            "number_customergauge",
            "driver_source",
            "driver_position",
            "secondary_position",
        ),
        "response_tags": ("number_customergauge", "tag_position"),
        "response_questions": ("number_customergauge", "question_position"),
        "response_properties": ("number_customergauge", "property_origin", "property_position"),
        "raw_non_responses": ("number_customergauge", "sync_pass"),
        "non_responses": ("number_customergauge",),
        "non_response_properties": ("number_customergauge", "property_origin", "property_position"),
        "current_non_responses": ("number_customergauge",),
    }


def test_non_response_properties_is_the_twin_of_response_properties():
    """Same columns, types, lineage and key as response_properties, so one query reads both; its own name and
    description."""
    twin, original = TABLES["non_response_properties"], TABLES["response_properties"]
    assert twin.arrow_schema == original.arrow_schema and twin.key == original.key
    assert [c.source for c in twin.columns] == [c.source for c in original.columns]
    assert twin.description != original.description and "non-response" in twin.description


def test_raw_responses_columns():
    assert TABLES["raw_responses"].arrow_schema == pa.schema(
        [
            pa.field("number_customergauge", pa.int64(), nullable=False),
            pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("sync_pass", pa.string(), nullable=False),
            pa.field("cursor_sent", pa.int64(), nullable=True),
            pa.field("record_json", pa.string(), nullable=False),
        ]
    )


def test_typed_response_columns():
    schema = TABLES["responses"].arrow_schema
    assert schema.field("nps").type == pa.int8()
    assert schema.field("follow_up_requested").type == pa.bool_()
    for name in ("date_creation", "date_order", "date_sent", "date_survey_response"):
        assert schema.field(name).type == pa.timestamp("us", tz="UTC")
    for name in ("account_number", "number_customer", "number_order"):
        assert schema.field(name).type == pa.string()
    assert TABLES["response_questions"].arrow_schema.field("answer_number").type == pa.float64()


def all_columns():
    return [(contract.name, column) for contract in TABLES.values() for column in contract.columns]


@pytest.mark.parametrize("table, column", all_columns(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_column_has_description_and_lineage(table, column):
    assert len(column.description) > 10
    if column.name in ETL_COLUMNS:
        assert column.source == ()
    else:
        assert column.source, f"{table}.{column.name} has no source"


def path_is_known(path: str) -> bool:
    """Whether a lineage path names a field the contract knows (RECORD_KEYS, OBJECT_KEYS, ITEM_KEYS)."""
    if path == "*":
        return True
    root = re.split(r"[.\[]", path)[0]
    if root not in RECORD_KEYS:
        return False
    if "." not in path:
        return True
    key = path.split(".")[1].removesuffix("[]")
    known = ITEM_KEYS.get(root, ()) if path.startswith(f"{root}[]") else OBJECT_KEYS.get(root, ())
    return key == "*" or key in known


@pytest.mark.parametrize("table, column", all_columns(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_source_path_is_a_known_field(table, column):
    unknown = [path for path in column.source if not path_is_known(path)]
    assert unknown == []


def test_path_check_rejects_unknown_paths():
    paths = ("tags[].label", "selected_drivers[].secondary[]", "contact.x", "score", "tags[].x", "tags.label")
    assert [path_is_known(path) for path in paths] == [True, True, False, False, False, False]


def test_every_known_record_key_is_used_by_a_column():
    roots = {re.split(r"[.\[]", path)[0] for _, column in all_columns() for path in column.source}
    assert RECORD_KEYS - roots == set()


def test_empty_table():
    for contract in TABLES.values():
        empty = contract.empty_table()
        assert empty.num_rows == 0
        assert empty.schema.equals(contract.arrow_schema)


def test_contract_rejects_bad_key_and_repeated_columns():
    column = Column("number_customergauge", pa.int64(), False, "Id.", ("number_customergauge",))
    with pytest.raises(ValueError, match=r"key columns \['nope'\]"):
        TableContract("t", "A row.", (column,), ("nope",))
    with pytest.raises(ValueError, match="column names repeat"):
        TableContract("t", "A row.", (column, column), ("number_customergauge",))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=list(PAGES))
def test_every_partition_file_the_assets_write_has_the_declared_schema(page, tmp_path):
    """The flattened tables materialized alone (the five selected of raw_responses' multi-asset) for real on a
    raw partition holding a normal, an empty and an odd page: each of the six files in the lake has exactly its
    table's schema (names, types, nullability)."""
    import dagster as dg
    import pyarrow.parquet as pq

    from cg_dagster.customergauge.assets import raw_responses
    from cg_dagster.customergauge.keys import FLAT_KEYS
    from cg_dagster.customergauge.resources import CustomerGaugeResource, LakeResource
    from cg_dagster.lib.lake import Lake

    lake, partition = Lake(tmp_path / "lake"), "2026-11-01-10:00"
    lake.write_table(
        lake.partition_path("raw_responses", partition),
        raw_rows(PAGES[page], fetched_at=FETCHED_AT, cursor_sent=7, sync_pass="cursor"),
    )
    resources = {
        "customergauge": CustomerGaugeResource(
            client_id="id", client_secret="secret", system_timezone="Europe/Amsterdam"
        ),
        "lake": LakeResource(root=str(lake.root)),
    }
    with dg.instance_for_test() as instance:
        assert dg.materialize(
            [raw_responses],
            selection=list(FLAT_KEYS.values()),
            instance=instance,
            resources=resources,
            partition_key=partition,
        ).success
    for name in ("raw_responses", *FLAT_TABLE_NAMES):
        written = pq.read_schema(lake.partition_path(name, partition))
        assert written.remove_metadata().equals(TABLES[name].arrow_schema.remove_metadata()), name
        assert [f.nullable for f in written] == [f.nullable for f in TABLES[name].arrow_schema], name
    rows = pq.read_metadata(lake.partition_path("responses", partition)).num_rows
    assert rows == len(PAGES[page])
