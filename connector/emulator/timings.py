"""When each ticket was created and when it was first marked triaged, as the helpdesk saw it.

Benchmarks read these through ``GET /_emulator/timings`` to measure
webhook-to-written latency from the helpdesk's side: from the moment a ticket
exists to the moment the triage marker tag lands on it, whatever path (webhook,
poll, sweep) brought the ticket to the sidecar. Both times come from one wall
clock (``time.time`` unless injected) in the emulator's process, so the
difference needs no clock agreement between processes.

Only the first marking counts: a re-triage that removes and re-adds the tag
keeps the first time. Times are kept for every ticket until the store is
cleared; a float pair per ticket is small enough for the hundred thousand
tickets a bulk creation allows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

DEFAULT_TRIAGED_TAG = "ai-triaged"


class Timings:
    """Creation and first-triaged wall-clock times per ticket id."""

    def __init__(
        self,
        triaged_tag: str = DEFAULT_TRIAGED_TAG,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.triaged_tag = triaged_tag
        self._triaged_lower = triaged_tag.lower()
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._created: dict[int, float] = {}
        self._triaged: dict[int, float] = {}

    def created(self, ticket_id: int) -> None:
        now = self._wall_clock()
        with self._lock:
            self._created.setdefault(ticket_id, now)

    def tag_added(self, ticket_id: int, tag: str) -> None:
        """Note the first time the triaged tag is added; other tags are ignored."""
        if tag.lower() != self._triaged_lower:
            return
        now = self._wall_clock()
        with self._lock:
            self._triaged.setdefault(ticket_id, now)

    def clear(self) -> None:
        with self._lock:
            self._created.clear()
            self._triaged.clear()

    def snapshot(
        self,
        *,
        per_ticket: bool = True,
        from_id: int | None = None,
        to_id: int | None = None,
    ) -> dict[str, Any]:
        """Counts, and per ticket ``{"created": t, "triaged": t or None}`` (epoch seconds).

        ``from_id`` and ``to_id`` (inclusive) narrow both to a range of ticket
        ids, so a benchmark can follow one batch of new tickets cheaply.
        """
        low = from_id if from_id is not None else -1
        high = to_id if to_id is not None else float("inf")
        with self._lock:
            created = {i: t for i, t in self._created.items() if low <= i <= high}
            triaged = {i: self._triaged[i] for i in created if i in self._triaged}
        answer: dict[str, Any] = {
            "triaged_tag": self.triaged_tag,
            "created_count": len(created),
            "triaged_count": len(triaged),
        }
        if per_ticket:
            answer["tickets"] = {
                str(ticket_id): {"created": when, "triaged": triaged.get(ticket_id)}
                for ticket_id, when in sorted(created.items())
            }
        return answer


__all__ = ["DEFAULT_TRIAGED_TAG", "Timings"]
