"""Micro-batching: many threads ask for one prediction each, the model sees batches.

Each worker thread submits its ticket's text and blocks on a future; one
background thread gathers whatever is waiting (up to ``max_batch``, lingering
at most ``max_wait`` seconds for company once the first item arrives) and runs
the batch function once. Idle, a ticket waits only for its own inference;
under load, inference cost is shared across the batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class BatcherClosed(RuntimeError):
    """The batcher was closed before the item could be processed."""


class MicroBatcher(Generic[In, Out]):
    def __init__(
        self,
        fn: Callable[[Sequence[In]], Sequence[Out]],
        *,
        max_batch: int = 64,
        max_wait: float = 0.002,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._fn = fn
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._on_batch = on_batch
        self._pending: deque[tuple[In, Future[Out]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: In) -> Future[Out]:
        future: Future[Out] = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("batcher is closed")
            self._pending.append((item, future))
            self._cond.notify()
        return future

    def __call__(self, item: In) -> Out:
        return self.submit(item).result()

    def close(self, timeout: float | None = 5.0) -> None:
        """Finish what was submitted, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _take_batch(self) -> list[tuple[In, Future[Out]]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self._max_wait
            while len(self._pending) < self._max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(len(self._pending), self._max_batch)
            return [self._pending.popleft() for _ in range(count)]

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                results = self._fn([item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} for {len(live)}")
            except BaseException as error:  # the waiting threads must hear of any failure
                for _, fut in live:
                    fut.set_exception(error)
                continue
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - started)
            for (_, fut), result in zip(live, results, strict=True):
                fut.set_result(result)
