"""raw_rows and flatten_records at the edges of their types: ids beyond int64, lone surrogates, a follow-up flag
that is not a boolean. Each refuses with a FlattenError or counts what it changed, never a crash from pyarrow or
a silent null. (Kept apart from test_flatten.py while another change to that file is under way; one subject.)"""

import datetime as dt
import json

import pytest

from cg_dagster.lib.flatten import FlattenError, flatten_records, raw_rows

T = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_number_customergauge_beyond_int64_is_refused_with_a_flatten_error():
    records = [{"number_customergauge": 2**63, "nps": 5}]
    with pytest.raises(FlattenError, match="number_customergauge"):
        raw_rows(records, fetched_at=T, cursor_sent=None, sync_pass="cursor")
    with pytest.raises(FlattenError, match="number_customergauge"):
        flatten_records(records, fetched_at=T)


def test_lone_surrogate_in_a_comment_is_not_a_raw_unicode_crash():
    record = json.loads('{"number_customergauge": 1, "comment": {"original": "ok \\ud800 ok"}}')
    for build in (
        lambda: raw_rows([record], fetched_at=T, cursor_sent=None, sync_pass="cursor"),
        lambda: flatten_records([record], fetched_at=T),
    ):
        try:
            build()
        except FlattenError:
            pass  # refused with a clear error is acceptable; UnicodeEncodeError from pyarrow is not


def test_unusable_follow_up_requested_is_counted_not_silently_nulled():
    flat = flatten_records([{"number_customergauge": 1, "follow_up": {"requested": "true"}}], fetched_at=T)
    value = flat.tables["responses"]["follow_up_requested"].to_pylist()[0]
    stats = vars(flat.stats)
    uncounted = ("records", "nps_invalid", "dates_invalid", "unknown_fields")
    counters = {k: v for k, v in stats.items() if k not in uncounted}
    assert value is True or any(counters.values()), "'true' became null and nothing counted it"
