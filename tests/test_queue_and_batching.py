"""The work queue (hold once, capacity, delays) and the micro-batcher."""

from __future__ import annotations

import threading

import pytest

from connector.batching import BatcherClosed, MicroBatcher
from connector.ingest.queue import Offer, WorkQueue


def test_a_ticket_is_held_once_until_done() -> None:
    queue = WorkQueue(10)
    assert queue.offer(1, "webhook") is Offer.ACCEPTED
    assert queue.offer(1, "poll") is Offer.DUPLICATE
    item = queue.take(timeout=0)
    assert item is not None and item.source == "webhook"
    assert queue.offer(1, "sweep") is Offer.DUPLICATE  # in flight
    queue.done(item)
    assert queue.offer(1, "sweep") is Offer.ACCEPTED


def test_capacity_pushes_back_without_losing_held_items() -> None:
    queue = WorkQueue(2)
    assert queue.offer(1, "poll") is Offer.ACCEPTED
    assert queue.offer(2, "poll") is Offer.ACCEPTED
    assert queue.offer(3, "poll") is Offer.FULL
    assert queue.depth() == 2
    item = queue.take(timeout=0)
    assert item is not None
    assert queue.offer(3, "poll") is Offer.ACCEPTED  # in-flight items do not use capacity


def test_retry_waits_its_delay_and_keeps_the_hold() -> None:
    queue = WorkQueue(10)
    queue.offer(5, "poll")
    item = queue.take(timeout=0)
    assert item is not None
    queue.retry_later(item, 0.2, "unavailable")
    assert queue.offer(5, "webhook") is Offer.DUPLICATE
    assert queue.take(timeout=0.05) is None
    again = queue.take(timeout=2)
    assert again is item and again.attempt == 1 and again.last_error == "unavailable"


def test_close_rejects_new_work_and_releases_retries() -> None:
    queue = WorkQueue(10)
    queue.offer(1, "poll")
    item = queue.take(timeout=0)
    assert item is not None
    queue.close()
    assert queue.offer(2, "poll") is Offer.CLOSED
    queue.retry_later(item, 10, "shutdown")
    assert queue.depth() == 0
    assert queue.take(timeout=0.01) is None


def test_wait_idle_sees_in_flight_work() -> None:
    queue = WorkQueue(10)
    queue.offer(1, "poll")
    item = queue.take(timeout=0)
    assert item is not None
    assert queue.wait_idle(timeout=0.05) is False
    threading.Timer(0.05, queue.done, args=(item,)).start()
    assert queue.wait_idle(timeout=2) is True


def test_batcher_groups_concurrent_items_and_keeps_order() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def double(items: list[int]) -> list[int]:
        gate.wait(1)
        calls.append(list(items))
        return [x * 2 for x in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(double, max_batch=8, max_wait=0.05)
    futures = [batcher.submit(i) for i in range(5)]
    gate.set()
    assert [f.result(timeout=2) for f in futures] == [0, 2, 4, 6, 8]
    assert sum(len(c) for c in calls) == 5
    assert len(calls) <= 2  # the first may run alone; the rest ride together
    batcher.close()


def test_batcher_respects_max_batch() -> None:
    sizes: list[int] = []
    release = threading.Event()

    def record(items: list[int]) -> list[int]:
        release.wait(1)
        sizes.append(len(items))
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(record, max_batch=3, max_wait=0.05)
    futures = [batcher.submit(i) for i in range(10)]
    release.set()
    for f in futures:
        f.result(timeout=2)
    assert max(sizes) <= 3 and sum(sizes) == 10
    batcher.close()


def test_batcher_passes_errors_to_every_waiter() -> None:
    def broken(items: list[int]) -> list[int]:
        raise ValueError("model failed")

    batcher: MicroBatcher[int, int] = MicroBatcher(broken, max_batch=4, max_wait=0.01)
    futures = [batcher.submit(i) for i in range(3)]
    for f in futures:
        with pytest.raises(ValueError, match="model failed"):
            f.result(timeout=2)
    batcher.close()


def test_batcher_rejects_wrong_result_counts_and_closed_submits() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [], max_batch=4, max_wait=0)
    with pytest.raises(RuntimeError, match="returned 0 for 1"):
        batcher(1)
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit(2)


def test_batcher_call_returns_the_result_of_its_own_item() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(
        lambda items: [x + 100 for x in items], max_batch=64, max_wait=0.001
    )
    assert batcher(3) == 103
    batcher.close()
