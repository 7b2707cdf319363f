"""The bounded work queue between intake (webhooks, polls, sweeps) and the workers.

A ticket id is held at most once, from the moment it is offered until its
processing is done: a webhook and a poll that name the same ticket produce one
run. Retries wait in a delay heap and keep their place (they do not count
against capacity, which is for new work). When the queue is full, ``offer``
says so at once and the caller pushes back (webhooks answer 503 with
Retry-After; the poller keeps its cursor) instead of buffering without bound.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class Offer(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    FULL = "full"
    CLOSED = "closed"


@dataclass(slots=True)
class WorkItem:
    ticket_id: int
    source: str
    enqueued_at: float
    attempt: int = 0
    not_before: float = 0.0
    last_error: str | None = field(default=None)


class WorkQueue:
    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self._clock = clock
        self._ready: deque[WorkItem] = deque()
        self._delayed: list[tuple[float, int, WorkItem]] = []
        self._held: dict[int, WorkItem] = {}
        self._in_flight = 0
        self._closed = False
        self._seq = itertools.count()
        self._cond = threading.Condition()

    # -- intake ----------------------------------------------------------------------

    def offer(self, ticket_id: int, source: str) -> Offer:
        with self._cond:
            if self._closed:
                return Offer.CLOSED
            if ticket_id in self._held:
                return Offer.DUPLICATE
            if len(self._ready) + len(self._delayed) >= self.capacity:
                return Offer.FULL
            item = WorkItem(ticket_id, source, self._clock())
            self._held[ticket_id] = item
            self._ready.append(item)
            self._cond.notify()
            return Offer.ACCEPTED

    def close(self) -> None:
        """Accept nothing new; ``take`` returns None once nothing is ready."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- workers -----------------------------------------------------------------------

    def take(self, timeout: float | None = None) -> WorkItem | None:
        """The next item that is due, or None after ``timeout`` or once closed."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._promote_due()
                if self._ready:
                    item = self._ready.popleft()
                    self._in_flight += 1
                    return item
                if self._closed:
                    return None
                wait = None if deadline is None else deadline - self._clock()
                if self._delayed:
                    until_due = self._delayed[0][0] - self._clock()
                    wait = until_due if wait is None else min(wait, until_due)
                if wait is not None and wait <= 0:
                    if deadline is not None and self._clock() >= deadline:
                        return None
                    continue
                self._cond.wait(wait)

    def done(self, item: WorkItem) -> None:
        with self._cond:
            self._in_flight -= 1
            self._held.pop(item.ticket_id, None)
            self._cond.notify_all()

    def retry_later(self, item: WorkItem, delay: float, error: str | None = None) -> None:
        """Put an item back to run again after ``delay`` seconds; it keeps its hold."""
        self._put_back(item, delay, error, count_attempt=True)

    def defer(self, item: WorkItem, delay: float, error: str | None = None) -> None:
        """Like ``retry_later``, without counting an attempt: the failure was not the ticket's."""
        self._put_back(item, delay, error, count_attempt=False)

    def _put_back(
        self, item: WorkItem, delay: float, error: str | None, *, count_attempt: bool
    ) -> None:
        with self._cond:
            self._in_flight -= 1
            if count_attempt:
                item.attempt += 1
            item.last_error = error
            item.not_before = self._clock() + max(0.0, delay)
            if self._closed:
                # Shutting down: the helpdesk still has the ticket untriaged, and
                # the next sweep (here or in another replica) picks it up.
                self._held.pop(item.ticket_id, None)
            else:
                heapq.heappush(self._delayed, (item.not_before, next(self._seq), item))
            self._cond.notify_all()

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, item = heapq.heappop(self._delayed)
            self._ready.append(item)

    # -- observation -------------------------------------------------------------------

    def depth(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._delayed)

    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is ready, delayed or in flight; False on timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while self._ready or self._delayed or self._in_flight:
                wait = None if deadline is None else deadline - self._clock()
                if wait is not None and wait <= 0:
                    return False
                self._cond.wait(wait if wait is None else min(wait, 0.1))
            return True

    def wait_in_flight(self, timeout: float) -> bool:
        """Block until no item is in flight (used when draining); False on timeout."""
        deadline = self._clock() + timeout
        with self._cond:
            while self._in_flight:
                wait = deadline - self._clock()
                if wait <= 0:
                    return False
                self._cond.wait(min(wait, 0.1))
            return True
