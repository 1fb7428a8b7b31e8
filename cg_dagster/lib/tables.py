"""The flattened tables of one raw partition, written to the lake. No Dagster import.

The raw file is streamed in batches of RAW_BATCH_ROWS rows through ``flatten_raw`` into one Parquet file
per table, each written atomically (``Lake.parquet_writer``). Idempotent: running it again for the same
partition rewrites the same five files from the same raw file.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from cg_dagster.lib.flatten import FLAT_TABLE_NAMES, FlattenError, FlattenStats, flatten_raw
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.schemas import TABLES
from cg_dagster.lib.sync import RAW_TABLE

RAW_BATCH_ROWS = 5_000
RAW_COLUMNS = ("record_json", "fetched_at")
"""The raw columns ``flatten_raw`` reads; the others are not read from the file."""
DICTIONARY_COLUMNS = frozenset(
    {
        "status",
        "language",
        "locale",
        "account_name",
        "primary_driver",
        "secondary_driver",
        "driver_source",
        "label",
        "tag_type",
        "sentiment",
        "title",
        "field",
        "reference",
        "property_origin",
        "fetched_at",
    }
)
"""Flat columns with few distinct values (codes, driver and tag labels, question titles, property names and
values, one fetch time per page), written with a Parquet dictionary. The others (ids, names, e-mail
addresses, comments, dates) have about one value per row: a dictionary would only cost write time."""


@dataclass(frozen=True)
class FlattenedPartition:
    """What ``flatten_partition`` wrote: per table its row count and file path, and the flattening stats."""

    rows: dict[str, int]
    paths: dict[str, Path]
    stats: FlattenStats


def flatten_partition(lake: Lake, partition_key: str, *, system_timezone: str = "UTC") -> FlattenedPartition:
    """Write ``<table>/<partition>.parquet`` for the five flat tables from ``raw_responses/<partition>.parquet``.

    Memory holds one batch of RAW_BATCH_ROWS raw rows (RAW_COLUMNS only) and its flat rows at a time,
    whatever the partition's size. Every file has exactly its table's declared schema, even when empty.

    Raises:
        FileNotFoundError: the partition has no raw file.
        FlattenError: a raw row cannot be flattened (see ``flatten_raw``; the message names the raw file and
            the rows of the batch, and the row in the batch); no file is replaced.
        LakeError: the lake cannot be written.
    """
    raw_path = lake.partition_path(RAW_TABLE, partition_key)
    raw = pq.ParquetFile(raw_path)
    stats = FlattenStats()
    with contextlib.ExitStack() as stack:
        writers = {
            name: stack.enter_context(
                lake.parquet_writer(
                    lake.partition_path(name, partition_key),
                    TABLES[name].arrow_schema,
                    use_dictionary=[c for c in TABLES[name].arrow_schema.names if c in DICTIONARY_COLUMNS],
                )
            )
            for name in FLAT_TABLE_NAMES
        }
        for batch in raw.iter_batches(batch_size=RAW_BATCH_ROWS, columns=list(RAW_COLUMNS)):
            try:
                flat = flatten_raw(batch, system_timezone=system_timezone)
            except FlattenError as error:
                rows = f"rows {stats.records}..{stats.records + batch.num_rows - 1}"
                raise FlattenError(f"{RAW_TABLE} file {raw_path.name}, {rows}: {error}") from None
            stats.merge(flat.stats)
            for name in FLAT_TABLE_NAMES:
                writers[name].write(flat.tables[name])
        for writer in writers.values():
            writer.commit()
    return FlattenedPartition(
        rows={name: writer.rows for name, writer in writers.items()},
        paths={name: writer.target for name, writer in writers.items()},
        stats=stats,
    )

