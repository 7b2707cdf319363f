"""The poller's cursor, its back-off when the queue is full, shards and the sweep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from connector.adapters.base import HelpdeskAdapter
from connector.config import IngestSettings
from connector.domain import TicketRef
from connector.health import Health
from connector.ingest.poller import Poller
from connector.ingest.queue import WorkQueue
from connector.metrics import Metrics

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


class Listing:
    """Just the two listing calls of an adapter, recording how they were asked."""

    def __init__(self, refs: list[TicketRef]) -> None:
        self.refs = refs
        self.since: list[datetime | None] = []
        self.sweeps = 0

    def changed_since(
        self, since: datetime | None, *, page_size: int, max_pages: int
    ) -> Iterator[TicketRef]:
        self.since.append(since)
        return iter([r for r in self.refs if since is None or r.updated_at >= since])

    def untriaged(self, *, page_size: int, max_pages: int) -> Iterator[TicketRef]:
        self.sweeps += 1
        return iter(self.refs)


def ref(ticket_id: int, minutes: int) -> TicketRef:
    return TicketRef(ticket_id, T0 + timedelta(minutes=minutes))


def make(listing: Listing, queue: WorkQueue, **settings: Any) -> Poller:
    poller = Poller(
        cast(HelpdeskAdapter, listing),
        queue,
        IngestSettings(poll_overlap_seconds=0, **settings),
        Metrics(),
        Health(),
        now=lambda: NOW,
    )
    poller.cursor = None  # from the beginning, as after a sweep-less first start
    return poller


def test_the_cursor_moves_to_the_newest_ticket_handed_over() -> None:
    listing = Listing([ref(1, 1), ref(2, 5), ref(3, 3)])
    queue = WorkQueue(10)
    poller = make(listing, queue)
    assert poller.poll_once() == 3
    assert poller.cursor == T0 + timedelta(minutes=5)
    assert queue.depth() == 3


def test_a_full_queue_holds_the_cursor_at_the_first_ticket_it_refused() -> None:
    listing = Listing([ref(1, 1), ref(2, 2), ref(3, 3)])
    queue = WorkQueue(2)
    poller = make(listing, queue)
    assert poller.poll_once() == 2
    assert poller.cursor == T0 + timedelta(minutes=3)  # ticket 3 is asked for again


def test_no_listing_is_paged_while_the_queue_is_full() -> None:
    listing = Listing([ref(1, 1), ref(2, 2)])
    queue = WorkQueue(2)
    poller = make(listing, queue)
    poller.poll_once()
    asked = len(listing.since)
    cursor = poller.cursor
    assert poller.poll_once() == 0
    assert poller.sweep_once() == 0
    assert len(listing.since) == asked and listing.sweeps == 0
    assert poller.cursor == cursor
    item = queue.take(timeout=0)
    assert item is not None
    queue.done(item)
    assert poller.sweep_once() == 1  # room again: the sweep runs and re-offers
    assert listing.sweeps == 1


def test_each_shard_takes_only_its_own_tickets() -> None:
    listing = Listing([ref(i, i) for i in range(1, 7)])
    queue = WorkQueue(10)
    poller = make(listing, queue, shard_count=3, shard_index=1)
    assert poller.poll_once() == 2
    taken = set()
    while (item := queue.take(timeout=0)) is not None:
        taken.add(item.ticket_id)
    assert taken == {1, 4}
