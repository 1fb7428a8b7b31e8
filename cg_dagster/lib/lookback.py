"""The daily trailing-window re-read: when it is due, and the lake's record of the last one.

No Dagster import. The re-read (``sync_pass = 'lookback'``) brings records that changed after they were
synced (api-notes.md: partial -> response 10-30 days later, GDPR anonymisation). It is due once per day:

* the day's *slot* is the latest hour ``lookback_hour`` (UTC) at or before the partition's start;
* it is due in a forward sync when the last completed re-read was in a partition before that slot, or none
  is recorded. So it runs in the partition of hour ``lookback_hour`` when that partition syncs, and
  otherwise in the first sync after it (a missed or failed 02:00 run: the 03:00 sync re-reads, or whichever
  comes next); the next day's slot brings it back to ``lookback_hour``.

The record is ``_state/lookback.json`` (a stream's ``lookback_state``: each stream keeps its own;
``{"partition_key", "run_id", "period", "committed_at"}``), written by
``sync_partition`` under the commit lock right after the head cursor it goes with, so it never claims a re-read
whose data is not committed (a crash in between only makes the next sync re-read again). An initial load or a
full refresh reads everything and counts as a re-read (``period`` null). A replay or a skipped partition never
changes the record.

Each stream re-reads through a date its records carry (``REREAD_FIELDS``): the vendor page lists the
``period[field]`` values date_creation, date_order, date_sent and date_survey_response; a non-response is a
survey sent that got no answer (api-notes.md, issue 11: "like a response without the answer"), so it has no
date_survey_response and a period on it matches none (the sandbox serves none, sandbox/server.py). The
responses re-read by date_survey_response (``CG_LOOKBACK_FIELD``: late answers and anonymised ones), the
non-responses by date_sent (``CG_NON_RESPONSES_LOOKBACK_FIELD``: the date every sent survey has). A field the
stream's records do not carry is refused (``lookback_field``), and a recorded re-read on one does not count
(``plan_lookback``): it read nothing.
"""

import datetime as dt
from dataclasses import dataclass

from cg_dagster.lib.client import PERIOD_FIELDS, CustomerGaugeConfigError, Period
from cg_dagster.lib.lake import NON_RESPONSES, RESPONSES, Lake, LakeError, Stream, utc_now
from cg_dagster.settings import LOOKBACK_FIELD, NON_RESPONSES_LOOKBACK_FIELD, Setting

PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's hourly partition keys, e.g. 2026-11-29-02:00 (UTC)


@dataclass(frozen=True)
class RereadFields:
    """The ``period[field]`` values a stream's re-read may use: the dates its records carry (``carried``, of
    PERIOD_FIELDS) and the variable giving the default (``setting``)."""

    setting: Setting
    carried: tuple[str, ...]


REREAD_FIELDS = {
    RESPONSES: RereadFields(LOOKBACK_FIELD, PERIOD_FIELDS),
    NON_RESPONSES: RereadFields(
        NON_RESPONSES_LOOKBACK_FIELD, tuple(name for name in PERIOD_FIELDS if name != "date_survey_response")
    ),
}


@dataclass(frozen=True)
class LookbackPlan:
    """What a sync of one partition re-reads if it syncs forward from a head: ``period`` (None: nothing)
    and ``reason``, a sentence for the run's metadata (``lookback_reason``)."""

    period: Period | None
    reason: str


def last_reread(lake: Lake, stream: Stream = RESPONSES) -> dict | None:
    """The record of ``stream``'s last completed re-read (see the module docstring), or None when there is none.

    Raises:
        LakeError: the record exists but is not JSON (``Lake.read_state``).
    """
    return lake.read_state(stream.lookback_state)


def record_reread(lake: Lake, stream: Stream, *, partition_key: str, run_id: str, period: dict | None) -> None:
    """Record a completed re-read (``period``: the ``{"field", "start", "end"}`` read, None for an initial
    load). Call it holding ``lake.commit_lock()``, after the head cursor was written."""
    record = {"partition_key": partition_key, "run_id": run_id, "period": period, "committed_at": utc_now().isoformat()}
    lake.write_state(stream.lookback_state, record)


def lookback_field(stream: Stream, given: str | None) -> str:
    """The ``period[field]`` of ``stream``'s re-read: ``given`` (run config), or when None the stream's variable
    (``REREAD_FIELDS``: CG_LOOKBACK_FIELD for the responses, CG_NON_RESPONSES_LOOKBACK_FIELD for the
    non-responses) or its default.

    Raises:
        CustomerGaugeConfigError: a field the stream's records do not carry (date_survey_response for the
            non-responses, or no period field at all); names the field, where it was set, the stream and the
            fields it may use.
    """
    fields = REREAD_FIELDS[stream]
    value = fields.setting.text() if given is None else given
    if value not in fields.carried:
        source = fields.setting.name if given is None else f"run config of {stream.raw_table}"
        raise CustomerGaugeConfigError(
            f"lookback_field {value!r} ({source}) is not a period[field] date the {stream.endpoint} records carry: "
            f"use one of {', '.join(fields.carried)} (default {fields.setting.default})"
        )
    return value


def plan_lookback(
    last: dict | None,
    partition_start: dt.datetime,
    period: Period | None,
    *,
    hour: int,
    force: bool = False,
    stream: Stream = RESPONSES,
) -> LookbackPlan:
    """Decide whether the sync of the partition starting at ``partition_start`` (UTC) re-reads ``period``.

    ``last``: ``last_reread(lake, stream)``; ``period``: the window to re-read, None when the re-read is turned
    off (``hour`` -1); ``hour``: the daily slot's hour 0..23 (UTC); ``force``: re-read whether due or not. A
    recorded re-read through a field ``stream``'s records do not carry (``REREAD_FIELDS``; written before such a
    field was refused) read nothing, so the re-read is due.

    Raises:
        LakeError: ``last`` names a partition key that is not ``YYYY-MM-DD-HH:MM``.
    """
    if period is None:
        return LookbackPlan(None, "off: lookback_hour is -1")
    if force:
        return LookbackPlan(period, "forced by run config (force_lookback)")
    slot = partition_start.replace(hour=hour, minute=0, second=0, microsecond=0)
    if slot > partition_start:
        slot -= dt.timedelta(days=1)
    if last is None:
        return LookbackPlan(period, f"due: no re-read recorded in this lake (daily slot {_key(slot)})")
    last_start = _partition_start(last)
    hours = round((partition_start - last_start).total_seconds() / 3600)
    since = f"last re-read {last['partition_key']}, {hours} h before this partition"
    read = last["period"].get("field") if isinstance(last.get("period"), dict) else None
    if read is not None and read not in REREAD_FIELDS[stream].carried:
        return LookbackPlan(period, f"due: {since}, read {read}, which the {stream.endpoint} records lack (so nothing)")
    if last_start < slot:
        return LookbackPlan(period, f"due: {since}, before the daily slot {_key(slot)}")
    return LookbackPlan(None, f"not due: {since}; next due at or after {_key(slot + dt.timedelta(days=1))}")


def explain(plan: LookbackPlan, *, mode: str, cursor_start: int | None, recorded_period: dict | None) -> str:
    """The ``lookback_reason`` of a finished sync: the plan's reason, unless the sync's mode overrode it
    (``mode``, ``cursor_start`` and the re-read ``recorded_period`` come from the partition's SyncRecord)."""
    if mode == "replay":
        if recorded_period:
            return "replay: re-read the period recorded with this partition; the re-read record is unchanged"
        return "replay: no re-read was recorded with this partition"
    if mode == "skipped":
        return "skipped: this partition's window passed without a sync; nothing fetched"
    if cursor_start is None:
        return "initial load (or full refresh): read everything; recorded as the last re-read"
    return plan.reason


def _partition_start(last: dict) -> dt.datetime:
    try:
        return dt.datetime.strptime(last["partition_key"], PARTITION_KEY_FORMAT).replace(tzinfo=dt.timezone.utc)
    except (KeyError, TypeError, ValueError):
        raise LakeError(
            f"the re-read record _state/lookback.json (lookback_non_responses.json of the non-responses) holds no "
            f"partition key like 2026-11-29-02:00 ({last!r}): "
            "delete it (the next sync then re-reads)"
        ) from None


def _key(moment: dt.datetime) -> str:
    return moment.strftime(PARTITION_KEY_FORMAT)
