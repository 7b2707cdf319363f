"""The worker pool: takes tickets off the queue and runs the pipeline on each.

Errors are sorted by what should happen next:

- passing helpdesk trouble (429, 5xx, timeouts) and ticket-level refusals:
  retry later with backoff (``Retry-After`` wins), and after ``max_attempts``
  mark the ticket ``triage-error`` on the helpdesk and stop;
- another worker's live claim: look again once it would have expired;
- a write of the ticket's own run that may still land: look again once it
  has had time to, without using an attempt (the failure that caused it has);
- a deleted ticket: nothing to do;
- bad credentials or a misconfigured helpdesk: readiness fails, the ticket
  waits, and its attempts are not used up (it is not the ticket's fault);
- the helpdesk is down (the circuit breaker is open, or a failure arrives
  while it is): the ticket waits until the next probe is due, and its
  attempts are not used up either. An outage says nothing about the ticket.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from connector.circuit import CircuitBreaker
from connector.config import IngestSettings
from connector.errors import (
    AuthError,
    CircuitOpenError,
    HelpdeskConfigError,
    HelpdeskError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnavailableError,
)
from connector.health import Health
from connector.ingest.queue import WorkItem, WorkQueue
from connector.metrics import Metrics
from connector.pipeline import ClaimedElsewhere, Pipeline, TriageRecord, WriteUnsettled

log = logging.getLogger("connector.workers")

# Tickets given up on are left out of polls and sweeps for this long. The
# triage-error tag normally does that, but a poison ticket whose reads fail
# cannot show its tag, and would otherwise come back with every poll. A webhook
# (such as a re-triage request) still brings it in at once.
GIVE_UP_MEMORY_SECONDS = 3600.0
GIVE_UP_MEMORY_SIZE = 10_000

RecordSink = Callable[[TriageRecord, WorkItem], None]


class WorkerPool:
    def __init__(
        self,
        queue: WorkQueue,
        pipeline: Pipeline,
        settings: IngestSettings,
        metrics: Metrics,
        health: Health,
        *,
        on_record: RecordSink | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.breaker = breaker
        self.pipeline = pipeline
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.on_record = on_record
        self._clock = clock
        self._stop = threading.Event()
        self._gave_up: OrderedDict[int, float] = OrderedDict()
        self._gave_up_lock = threading.Lock()
        # Daemon threads, each taking its own tickets: one stuck in a helpdesk call
        # must not hold the process past the drain (a pool's threads are joined at
        # exit). Leaving it is safe: its claim expires and the next run resumes it.
        self._threads = [
            threading.Thread(target=self._work, name=f"triage-{n}", daemon=True)
            for n in range(settings.concurrency)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop taking work, let what is in flight finish; False if it did not in time."""
        self._stop.set()
        return self.queue.wait_in_flight(timeout)

    def gave_up_recently(self, ticket_id: int) -> bool:
        """True for a ticket this pool gave up on within ``GIVE_UP_MEMORY_SECONDS``."""
        with self._gave_up_lock:
            when = self._gave_up.get(ticket_id)
            if when is None:
                return False
            if self._clock() - when < GIVE_UP_MEMORY_SECONDS:
                return True
            del self._gave_up[ticket_id]
            return False

    def _remember_give_up(self, ticket_id: int) -> None:
        with self._gave_up_lock:
            self._gave_up[ticket_id] = self._clock()
            self._gave_up.move_to_end(ticket_id)
            while len(self._gave_up) > GIVE_UP_MEMORY_SIZE:
                self._gave_up.popitem(last=False)

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self.queue.take(timeout=0.2)
            if item is None:
                if self.queue.closed:  # take() no longer waits: do not spin while draining
                    self._stop.wait(0.05)
                continue
            if self._stop.is_set():
                self.queue.retry_later(item, 0.0, "shutting down")
                continue
            self.metrics.in_flight.inc()
            self.metrics.queue_depth.set(self.queue.depth())
            self._run(item)

    def _run(self, item: WorkItem) -> None:
        try:
            self._run_one(item)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.queue_depth.set(self.queue.depth())

    def _run_one(self, item: WorkItem) -> None:
        ticket_id = item.ticket_id
        try:
            record = self.pipeline.process(ticket_id)
        except ClaimedElsewhere as busy:
            self.metrics.tickets.labels(outcome="retry").inc()
            self.queue.retry_later(item, busy.retry_after, "claimed elsewhere")
            return
        except WriteUnsettled as unsettled:
            # The attempt that left the write in doubt has been counted already.
            self.queue.defer(item, unsettled.retry_after, "write in doubt")
            return
        except NotFoundError:
            self.metrics.tickets.labels(outcome="ticket_error").inc()
            log.warning("ticket not found", extra={"ticket_id": ticket_id})
            self.queue.done(item)
            return
        except (AuthError, HelpdeskConfigError) as error:
            self.health.helpdesk_failed(error.kind)
            log.error(
                "helpdesk refused the sidecar's credentials or setup",
                extra={"ticket_id": ticket_id, "error": str(error)},
            )
            self.metrics.tickets.labels(outcome="retry").inc()
            self.queue.retry_later(item, self.settings.retry_backoff_max_seconds, error.kind)
            return
        except CircuitOpenError as error:
            self._defer(item, error)
            return
        except HelpdeskError as error:
            if self._during_outage(error):
                self._defer(item, error)
            else:
                self._retry_or_give_up(item, error.kind, str(error), _retry_after(error))
            return
        except Exception as error:  # a bug or a model failure must not kill the worker
            log.exception("triage failed", extra={"ticket_id": ticket_id})
            self._retry_or_give_up(item, type(error).__name__, type(error).__name__, None)
            return
        self.health.helpdesk_ok()
        self.queue.done(item)
        if record.decisions:
            self.metrics.enqueue_to_written_seconds.labels(source=item.source).observe(
                self._clock() - item.enqueued_at
            )
        if self.on_record is not None:
            self.on_record(record, item)

    def _during_outage(self, error: HelpdeskError) -> bool:
        """A failure the helpdesk's state explains: it came while the circuit is not closed."""
        if self.breaker is None or self.breaker.closed:
            return False
        return isinstance(error, NetworkError | UnavailableError | ServerError)

    def _defer(self, item: WorkItem, error: HelpdeskError) -> None:
        until_probe = error.retry_after if isinstance(error, CircuitOpenError) else 0.0
        floor = 1.0
        if self.breaker is not None:
            until_probe = max(until_probe, self.breaker.seconds_until_probe())
            floor = self.breaker.open_seconds / 4
        # Spread the waiting tickets out: when the probe is due only one call may
        # go, and the rest would otherwise all wake at once to be turned away.
        delay = max(until_probe, floor) * random.uniform(1.0, 1.5)
        log.debug(
            "helpdesk down; ticket waits without using an attempt",
            extra={"ticket_id": item.ticket_id, "retry_in_seconds": round(delay, 2)},
        )
        self.metrics.tickets.labels(outcome="deferred").inc()
        self.queue.defer(item, delay, error.kind)

    def _retry_or_give_up(
        self, item: WorkItem, kind: str, detail: str, retry_after: float | None
    ) -> None:
        if item.attempt + 1 < self.settings.max_attempts:
            delay = retry_after if retry_after is not None else self._backoff(item.attempt)
            log.warning(
                "triage attempt failed; will retry",
                extra={
                    "ticket_id": item.ticket_id,
                    "attempt": item.attempt + 1,
                    "error": detail,
                    "retry_in_seconds": round(delay, 2),
                },
            )
            self.metrics.tickets.labels(outcome="retry").inc()
            self.queue.retry_later(item, delay, kind)
            return
        log.error(
            "giving up on ticket",
            extra={"ticket_id": item.ticket_id, "attempts": item.attempt + 1, "error": detail},
        )
        self.metrics.tickets.labels(outcome="failed").inc()
        self._remember_give_up(item.ticket_id)
        try:
            self.pipeline.give_up(item.ticket_id)
        except HelpdeskError as error:
            # Not marked: the ticket stays untriaged on the helpdesk and a later sweep finds it.
            log.error(
                "could not mark ticket as failed",
                extra={"ticket_id": item.ticket_id, "error": str(error)},
            )
        self.queue.done(item)
        if self.on_record is not None:
            self.on_record(TriageRecord(item.ticket_id, "failed", reason=kind), item)

    def _backoff(self, attempt: int) -> float:
        base = self.settings.retry_backoff_seconds * float(1 << min(attempt, 20))
        capped = min(base, self.settings.retry_backoff_max_seconds)
        return capped * random.uniform(0.5, 1.0)


def _retry_after(error: HelpdeskError) -> float | None:
    if isinstance(error, RateLimitedError):
        return error.retry_after
    return None
