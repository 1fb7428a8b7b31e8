"""The ``current`` tables: the latest version of every response, built with DuckDB over the partition files.

No Dagster import. A response can be in several partitions (a record re-sent at a higher cursor position,
the trailing-window re-read, a full refresh, a replay). The current tables keep, per number_customergauge,
the version with the latest ``fetched_at`` in ``responses`` ("latest fetch wins"), and from each child table
only the rows of that same fetch, so a driver removed upstream disappears from ``current`` too.

Responses deleted upstream stay: the sync API reports no deletions (api-notes.md).

Partitions a blocking asset check quarantined (``Lake.quarantine``) are left out until the check passes.

A fetch that returned the same number_customergauge twice (one page holding it twice: the blocking check
``responses_number_customergauge_unique`` fails on that partition) is ambiguous: its child rows cannot be
told apart, so no version of it is ever used. The response's newest unambiguous version is current instead,
or it is left out of ``current`` until a later fetch brings it once; the current tables never mix two versions.
"""

import duckdb
import pyarrow as pa

from cg_dagster.lib.flatten import FLAT_TABLE_NAMES
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.schemas import TABLES

CURRENT_TABLES = FLAT_TABLE_NAMES  # one current table per flattened table
BATCH_ROWS = 100_000


def build_current(lake: Lake) -> dict[str, int]:
    """Rebuild ``<lake>/current/<table>.parquet`` for the five flattened tables; return their row counts.

    Idempotent: the result depends only on the partition files. Each file is written atomically with the
    table's declared schema and streamed in batches of 100,000 rows. Rows are ordered by the table's key.

    Raises:
        LakeError: the lake cannot be written.
        duckdb.Error: a partition file is unreadable (the message names it).
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
                    FROM read_parquet({_file_list(files["responses"])})
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
                SELECT t.* FROM read_parquet({_file_list(files)}) AS t
                SEMI JOIN winners AS w USING (number_customergauge, fetched_at)
                QUALIFY row_number() OVER (PARTITION BY {key}) = 1
                ORDER BY {key}
                """
            ).to_arrow_reader(BATCH_ROWS)
            for batch in reader:
                writer.write(pa.Table.from_batches([batch]).select(schema.names).cast(schema))
        writer.commit()
        return writer.rows


def _file_list(paths: list) -> str:
    """A DuckDB list literal of file paths (quotes escaped)."""
    quoted = ", ".join("'" + str(path).replace("'", "''") + "'" for path in paths)
    return f"[{quoted}]"
