"""Request and write accounting, so tests can assert that something happened exactly once.

Counters are plain integers under one lock: the emulator's handlers run on one
event loop, and tests read the numbers from another thread.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

# Per-ticket write kinds, as reported by ``GET /_emulator/stats``.
TICKET_WRITE_KINDS = (
    "ticket_updates",
    "articles_created",
    "notes_created",
    "internal_notes_created",
    "tags_added",
    "tags_removed",
    "shared_drafts_written",
    "shared_drafts_deleted",
    "webhook_deliveries",
)


class Stats:
    """Counts requests per endpoint template, writes per ticket, and webhook deliveries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()
        self.tickets: dict[int, Counter[str]] = {}
        self.webhooks: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()

    def request(self, method: str, template: str, *, write: bool) -> None:
        key = f"{method} {template}"
        with self._lock:
            self.requests[key] += 1
            if write:
                self.writes[key] += 1

    def ticket(self, ticket_id: int, kind: str, amount: int = 1) -> None:
        with self._lock:
            self.tickets.setdefault(ticket_id, Counter())[kind] += amount

    def webhook(self, outcome: str, ticket_id: int | None = None) -> None:
        with self._lock:
            self.webhooks[outcome] += 1
            if ticket_id is not None and outcome == "attempts":
                self.tickets.setdefault(ticket_id, Counter())["webhook_deliveries"] += 1

    def fault(self, name: str) -> None:
        with self._lock:
            self.faults[name] += 1

    def for_ticket(self, ticket_id: int) -> dict[str, int]:
        with self._lock:
            counts = self.tickets.get(ticket_id, Counter())
            return {kind: counts.get(kind, 0) for kind in TICKET_WRITE_KINDS}

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.writes.clear()
            self.tickets.clear()
            self.webhooks.clear()
            self.faults.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "writes": dict(self.writes),
                "requests_total": sum(self.requests.values()),
                "writes_total": sum(self.writes.values()),
                "tickets": {
                    str(ticket_id): {kind: counts.get(kind, 0) for kind in TICKET_WRITE_KINDS}
                    for ticket_id, counts in sorted(self.tickets.items())
                },
                "webhooks": {
                    key: self.webhooks.get(key, 0)
                    for key in ("queued", "attempts", "delivered", "failed_attempts", "dropped")
                },
                "faults": dict(self.faults),
            }
