"""The ``current`` tables: the latest version of every response, built with DuckDB over the partition files.

No Dagster import. A response can be in several partitions (a record re-sent at a higher cursor position,
the trailing-window re-read, a full refresh, a replay). The current tables keep, per number_customergauge,
the version with the latest ``fetched_at`` in ``responses`` ("latest fetch wins"), and from each child table
only the rows of that same fetch, so a driver removed upstream disappears from ``current`` too.

Responses deleted upstream stay: the sync API reports no deletions (api-notes.md).

Partition files are matched by column name (DuckDB ``union_by_name``) and each row is cast to the table's
contract (lib/schemas.py): a column added to the contract reads as null from files written before it, and a
file another tool rewrote with other Arrow types (pandas: large strings) reads as the contract says.

Partitions a blocking asset check quarantined (``Lake.quarantine``) are left out until the check passes.

A fetch that returned the same number_customergauge twice (one page holding it twice: the blocking check
``responses_number_customergauge_unique`` fails on that partition) is ambiguous: its child rows cannot be
told apart, so no version of it is ever used. The response's newest unambiguous version is current instead,
or it is left out of ``current`` until a later fetch brings it once; the current tables never mix two versions.
"""

import duckdb
import pyarrow as pa

from cg_dagster.lib.flatten import FLAT_TABLE_NAMES
from cg_dagster.lib.lake import Lake, LakeError
from cg_dagster.lib.schemas import TABLES

CURRENT_TABLES = FLAT_TABLE_NAMES  # one current table per flattened table
BATCH_ROWS = 100_000


def build_current(lake: Lake) -> dict[str, int]:
    """Rebuild ``<lake>/current/<table>.parquet`` for the five flattened tables; return their row counts.

    Idempotent: the result depends only on the partition files. Each file is written atomically with the
    table's declared schema and streamed in batches of 100,000 rows. Rows are ordered by the table's key.

    Raises:
        LakeError: the lake cannot be written, or a NOT NULL column of the contract is missing from older
            partition files (names the table, the column and the fix).
        duckdb.Error: a partition file is unreadable (the message names it).
        pyarrow.ArrowInvalid: a column of a partition file cannot be cast to the contract's type.
    """
    lake.ensure_writable()
    quarantined = set(lake.quarantined())
    files = {
        name: [path for path in lake.partition_files(name) if path.stem not in quarantined] for name in CURRENT_TABLES
    }
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        has_responses = bool(files["responses"])
        if has_responses:
            con.execute(
                f"""
                CREATE TEMP TABLE winners AS
                SELECT number_customergauge, max(fetched_at) AS fetched_at
                FROM (
                    SELECT number_customergauge, fetched_at
                    FROM {_read_parquet(files["responses"])}
                    GROUP BY number_customergauge, fetched_at
                    HAVING count(*) = 1  -- one page holding a response twice: ambiguous, see module docstring
                )
                GROUP BY number_customergauge
                """
            )
        counts = {}
        for name in CURRENT_TABLES:
            counts[name] = _write_current(con, lake, name, files[name] if has_responses else [])
        return counts
    finally:
        con.close()


def _write_current(con: duckdb.DuckDBPyConnection, lake: Lake, name: str, files: list) -> int:
    contract = TABLES[name]
    schema = contract.arrow_schema
    with lake.parquet_writer(lake.current_path(name), schema) as writer:
        if files:
            key = ", ".join(contract.key)
            reader = con.sql(
                f"""
                SELECT t.* FROM {_read_parquet(files)} AS t
                SEMI JOIN winners AS w USING (number_customergauge, fetched_at)
                QUALIFY row_number() OVER (PARTITION BY {key}) = 1
                ORDER BY {key}
                """
            ).to_arrow_reader(BATCH_ROWS)
            for batch in reader:
                writer.write(_to_contract(name, batch, schema))
        writer.commit()
        return writer.rows


def _to_contract(name: str, batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """``batch`` with exactly the contract's columns and types; a column no file of the batch has is null."""
    columns = []
    for field in schema:
        column = batch.column(field.name) if field.name in batch.schema.names else pa.nulls(batch.num_rows, field.type)
        if not field.nullable and column.null_count:
            raise LakeError(
                f"current/{name}: column {field.name!r} is NOT NULL in the contract (lib/schemas.py) but partition "
                "files written before it was added lack it: declare it nullable, or re-materialize the flattened "
                "tables of those partitions"
            )
        columns.append(column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _read_parquet(paths: list) -> str:
    """DuckDB ``read_parquet`` of these files, columns matched by name (a file lacking a column gives nulls)."""
    quoted = ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)
    return f"read_parquet([{quoted}], union_by_name = true)"
