"""Dagster metadata built from the table contract (``lib/schemas.py``): column schema and column lineage."""

from pathlib import Path

import dagster as dg

from cg_dagster.lib.schemas import TABLES, TableContract

RAW_JSON_COLUMN = "record_json"


def column_schema(contract: TableContract) -> dg.TableSchema:
    """``dagster/column_schema`` for a table: name, Arrow type, description and nullability of each column."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=str(column.type),
                description=column.description,
                constraints=dg.TableColumnConstraints(nullable=column.nullable),
            )
            for column in contract.columns
        ]
    )


def column_lineage(contract: TableContract, raw_key: dg.AssetKey) -> dg.TableColumnLineage:
    """``dagster/column_lineage`` of a flattened table: each column back to the raw field it came from.

    A column read from the record points at ``record_json.<API field path>`` of raw_responses (path
    notation in ``lib/schemas.py``); a column the raw table also has (``number_customergauge``,
    ``fetched_at``) points at that column.
    """
    raw_columns = {column.name for column in TABLES["raw_responses"].columns}
    deps_by_column = {}
    for column in contract.columns:
        if column.name in raw_columns:
            deps = [dg.TableColumnDep(asset_key=raw_key, column_name=column.name)]
        else:
            deps = [
                dg.TableColumnDep(asset_key=raw_key, column_name=f"{RAW_JSON_COLUMN}.{path}") for path in column.source
            ]
        if deps:
            deps_by_column[column.name] = deps
    return dg.TableColumnLineage(deps_by_column=deps_by_column)


def lake_uri(path: Path) -> str:
    """``dagster/uri`` of a lake file: an absolute ``file://`` URI."""
    return path.resolve().as_uri()
