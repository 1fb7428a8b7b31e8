"""A page source for the unit tests of the sync protocol (lib/sync.py) without HTTP: ``PageSource`` stands in
for ``CustomerGaugeClient``, of which the sync calls ``iter_pages`` only (the client itself is tested over HTTP
in test_client*.py)."""

import threading

from cg_dagster.lib.client import CustomerGaugeClient, Page, SyncParams
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.sync import SyncResult, sync_partition

PER_PAGE = 10


class PageSource:
    """The sync endpoint over ``records`` (dicts with a number_customergauge), in list order; a record's cursor
    is its 1-based position in the list, as in the sandbox. Tests change ``records`` and ``window`` between
    syncs as upstream would.

    ``iter_pages(params, cursor)`` yields a ``Page`` (records decoded, as the client gives a body it could not
    split) per ``params.per_page`` records after position ``cursor`` (None: from the start); with
    ``params.period`` set (the trailing-window re-read) only the records whose number is in ``window``.
    ``calls`` logs ``(cursor, period)`` of every call.
    """

    def __init__(self, records: list[dict], window=()):
        self.records, self.window, self.calls = records, set(window), []

    def iter_pages(self, params: SyncParams, cursor: int | None = None):
        self.calls.append((cursor, params.period))
        found = [
            (position, dict(record))
            for position, record in enumerate(self.records, 1)
            if position > (cursor or 0) and (params.period is None or record["number_customergauge"] in self.window)
        ]
        sent = cursor
        for number, first in enumerate(range(0, len(found), params.per_page), 1):
            chunk = found[first : first + params.per_page]
            decoded = ([record for _, record in chunk], False)
            page = Page(number=number, cursor_sent=sent, cursor_next=chunk[-1][0], decoded=decoded)
            yield page
            sent = page.cursor_next


def records(count: int, first: int = 101) -> list[dict]:
    """``count`` records numbered from ``first``, each with an nps."""
    return [{"number_customergauge": number, "nps": number % 11} for number in range(first, first + count)]


def sync(source, lake: Lake, partition: str, **kwargs) -> SyncResult:
    """``sync_partition`` of ``partition`` from ``source``, PER_PAGE records a page, run id ``run-<partition>``."""
    params = SyncParams(per_page=PER_PAGE, with_=())
    return sync_partition(source, params, lake, partition_key=partition, run_id=f"run-{partition}", **kwargs)


class PausingClient(CustomerGaugeClient):
    """A real client that stops after its first page until ``resume`` is set (the overlap made certain)."""

    def __init__(self, *, paged: threading.Event, resume: threading.Event, **settings):
        super().__init__(**settings)
        self._paged, self._resume = paged, resume

    def iter_pages(self, params, cursor=None, *, max_pages=None):
        for page in super().iter_pages(params, cursor, max_pages=max_pages):
            yield page
            self._paged.set()
            assert self._resume.wait(30)
