"""Polling: the incremental poll and the reconcile sweep.

The poll asks the helpdesk for tickets changed since its cursor and needing
triage; the sweep lists every open ticket that still needs triage, whenever it
changed. Webhooks are the fast path; these two are the guarantee: a lost
webhook, a full queue or a restart delays a ticket, never loses it.

The cursor is an update time. Each poll starts a little before it
(``poll_overlap_seconds``) so tickets updated in the same second are not
skipped, and the queue de-duplicates the overlap. The cursor only moves to
the newest ticket actually handed to the queue, and never past the poll's own
start: a full queue or a page cap leaves it where the next poll must resume.
It lives in memory; after a restart the sweep, not the cursor, catches up.

With several replicas, each polls only its shard of ticket ids
(``shard_index`` of ``shard_count``); webhooks go to whichever replica the
Service picks, and claims on the ticket keep the effect single.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from connector.adapters.base import HelpdeskAdapter
from connector.config import IngestSettings
from connector.domain import TicketRef
from connector.errors import HelpdeskError
from connector.health import Health
from connector.ingest.queue import Offer, WorkQueue
from connector.metrics import Metrics

log = logging.getLogger("connector.poller")


class Poller:
    def __init__(
        self,
        adapter: HelpdeskAdapter,
        queue: WorkQueue,
        settings: IngestSettings,
        metrics: Metrics,
        health: Health,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        skip: Callable[[int], bool] = lambda ticket_id: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.adapter = adapter
        self.queue = queue
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self._now = now
        self._skip = skip
        self._clock = clock
        self._sweep_requested = threading.Event()
        self.cursor: datetime | None = now()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def owns(self, ticket_id: int) -> bool:
        return ticket_id % self.settings.shard_count == self.settings.shard_index

    # -- one pass each -----------------------------------------------------------------

    def poll_once(self) -> int:
        """One incremental poll; returns how many tickets were handed to the queue."""
        if self._queue_full():
            return 0  # the cursor stays; the next poll pages from the same place
        started = self._now()
        since = None
        if self.cursor is not None:
            since = self.cursor - timedelta(seconds=self.settings.poll_overlap_seconds)
        refs = self.adapter.changed_since(
            since, page_size=self.settings.page_size, max_pages=self.settings.max_pages
        )
        accepted, newest, blocked = self._offer_all(refs, "poll")
        if blocked is not None:
            self.cursor = blocked
        elif newest is not None:
            self.cursor = min(max(newest, self.cursor or newest), started)
        return accepted

    def sweep_once(self) -> int:
        """One reconcile sweep over every open ticket that still needs triage."""
        if self._queue_full():
            return 0
        refs = self.adapter.untriaged(
            page_size=self.settings.page_size, max_pages=self.settings.max_pages
        )
        accepted, _, _ = self._offer_all(refs, "sweep")
        return accepted

    def _queue_full(self) -> bool:
        # Paging through a listing whose first pages are all already queued costs
        # both sides a request per page and cannot hand over anything new.
        return self.queue.depth() >= self.queue.capacity

    def _offer_all(
        self, refs: Iterable[TicketRef], source: str
    ) -> tuple[int, datetime | None, datetime | None]:
        accepted = 0
        newest: datetime | None = None
        for ref in refs:
            if not self.owns(ref.id) or self._skip(ref.id):
                continue
            self.metrics.polled_tickets.labels(kind=source).inc()
            result = self.queue.offer(ref.id, source)
            if result in (Offer.FULL, Offer.CLOSED):
                return accepted, newest, ref.updated_at
            if result is Offer.ACCEPTED:
                accepted += 1
            if newest is None or ref.updated_at > newest:
                newest = ref.updated_at
        return accepted, newest, None

    # -- the loop ----------------------------------------------------------------------

    def start(self, *, poll: bool = True, sweep: bool = True) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(poll, sweep), name="poller", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop; a pass stuck in a helpdesk call is left behind (a daemon thread)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def trigger_sweep(self) -> None:
        """Run a sweep now instead of at the next interval."""
        self._sweep_requested.set()
        self._wake.set()

    def _loop(self, poll: bool, sweep: bool) -> None:
        # The first pass is a sweep: it catches up on whatever happened while down.
        next_sweep = self._clock() if sweep else float("inf")
        while not self._stop.is_set():
            if self._sweep_requested.is_set() or self._clock() >= next_sweep:
                self._sweep_requested.clear()
                self._run("sweep", self.sweep_once)
                if sweep:
                    next_sweep = self._clock() + self.settings.sweep_interval_seconds
            elif poll:
                self._run("poll", self.poll_once)
            until_sweep = max(0.0, next_sweep - self._clock())
            if poll:
                wait: float | None = min(self.settings.poll_interval_seconds, until_sweep)
            else:
                wait = None if until_sweep == float("inf") else until_sweep
            self._wake.wait(wait)
            self._wake.clear()

    def _run(self, kind: str, action: Callable[[], int]) -> None:
        if self.health.is_shutting_down:
            return
        try:
            count = action()
        except HelpdeskError as error:
            self.metrics.polls.labels(kind=kind, result=error.kind).inc()
            log.warning(f"{kind} failed", extra={"error": str(error)})
            return
        except Exception:
            self.metrics.polls.labels(kind=kind, result="error").inc()
            log.exception(f"{kind} failed")
            return
        self.metrics.polls.labels(kind=kind, result="ok").inc()
        if count:
            log.info(f"{kind} queued tickets", extra={"count": count})
