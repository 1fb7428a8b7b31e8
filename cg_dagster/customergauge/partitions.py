"""Partitions and freshness of the CustomerGauge assets: one hourly partition is one sync window.

The grid starts at ``CG_PARTITIONS_START`` (UTC, ``YYYY-MM-DD`` or ``YYYY-MM-DD-HH:00``; parsed in
``cg_dagster/settings.py``, like every setting). Unset, it starts
at 00:00 UTC of the day before this Dagster instance first loaded the code: that day is recorded in
``$DAGSTER_HOME/cg_partitions_start`` on the first load and read from there ever after, so every process of
the deployment (webserver, daemon, run workers, CLI) builds the same grid, and it never moves on its own
(moving the start later hides the materializations of older partitions in the UI). Without DAGSTER_HOME
(a temporary instance, forgotten on exit) it is the day before today.

Freshness: an asset whose last materialization is older than ``CG_FRESHNESS_HOURS`` (default 2: the
hourly schedule missed two runs in a row) is marked failed by the daemon's freshness evaluation.
"""

import contextlib
import datetime as dt
import os
import tempfile
from pathlib import Path

import dagster as dg

from cg_dagster.settings import FRESHNESS_HOURS, PARTITIONS_START
from cg_dagster.settings import parse_partitions_start as parse_start

START_RECORD = "cg_partitions_start"  # in DAGSTER_HOME


def partitions_start(environ: dict | None = None, today: dt.date | None = None) -> str:
    """The first partition key: ``CG_PARTITIONS_START``, else the day recorded in DAGSTER_HOME (recorded as
    the day before ``today`` (UTC) when missing; the first process to write it wins), else the day before
    ``today``. ``environ`` defaults to ``os.environ``.

    Raises:
        CustomerGaugeConfigError: a malformed setting or record (names which).
    """
    environ = os.environ if environ is None else environ
    start = PARTITIONS_START.text(environ)
    if start:
        return parse_start(start)
    today = today or dt.datetime.now(dt.UTC).date()
    default = (today - dt.timedelta(days=1)).isoformat()
    if not environ.get("DAGSTER_HOME"):
        return parse_start(default)
    record = Path(environ["DAGSTER_HOME"]) / START_RECORD
    if not record.exists():
        # written whole beside it, then linked into place: a link never replaces a file, so the first of two
        # first loads wins, and a reader never sees a half-written record
        with tempfile.NamedTemporaryFile("w", dir=record.parent, prefix=f".{START_RECORD}.") as draft:
            draft.write(default + "\n")
            draft.flush()
            with contextlib.suppress(FileExistsError):
                os.link(draft.name, record)
    return parse_start(record.read_text(), source=str(record))


def freshness_hours(environ: dict | None = None) -> float:
    """``CG_FRESHNESS_HOURS`` (default 2), hours without a materialization before an asset is stale.

    Raises:
        CustomerGaugeConfigError: not a number of hours above 0 and at most a year.
    """
    return FRESHNESS_HOURS.number(environ, above=0, maximum=24 * 366)


hourly_partitions = dg.HourlyPartitionsDefinition(start_date=partitions_start())

# Shown in the UI (asset page, lineage) and evaluated by the daemon (dagster dev runs one).
freshness_policy = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=freshness_hours()))
