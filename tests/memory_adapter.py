"""An in-memory adapter for unit tests of the pipeline and workers.

It keeps claims as an ordered list (like Zammad's tags), records every write,
and can fail a chosen step a chosen number of times. End-to-end behaviour is
tested against the emulator and the real RT server; this double exists to
put a crash exactly between two steps.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from connector.adapters.base import WebhookEvent, WebhookRejected
from connector.domain import Agent, ApplyResult, ChangeSet, Claim, ClaimResult, Ticket, TicketRef
from connector.errors import HelpdeskError
from connector.footer import find_footers


@dataclass
class Stored:
    ticket: Ticket
    claims: list[Claim] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drafts: list[str] = field(default_factory=list)
    marker: str | None = None
    failed: bool = False


class MemoryAdapter:
    kind = "zammad"
    supports_webhooks = True

    def __init__(self, tickets: list[Ticket]) -> None:
        self.store = {t.id: Stored(t) for t in tickets}
        self.writes: Counter[str] = Counter()
        self.failures: dict[str, list[HelpdeskError]] = {}
        self.lock = threading.Lock()

    def fail(self, step: str, *errors: HelpdeskError) -> None:
        self.failures.setdefault(step, []).extend(errors)

    def _maybe_fail(self, step: str) -> None:
        pending = self.failures.get(step)
        if pending:
            raise pending.pop(0)

    def check(self) -> None:
        self._maybe_fail("check")

    def changed_since(
        self, since: datetime | None, *, page_size: int, max_pages: int
    ) -> Iterator[TicketRef]:
        for s in sorted(self.store.values(), key=lambda s: s.ticket.id):
            updated = s.ticket.updated_at or datetime(2026, 1, 1, tzinfo=UTC)
            if s.marker is None and not s.failed and (since is None or updated >= since):
                yield TicketRef(s.ticket.id, updated)

    def untriaged(self, *, page_size: int, max_pages: int) -> Iterator[TicketRef]:
        return self.changed_since(None, page_size=page_size, max_pages=max_pages)

    def get_ticket(self, ticket_id: int) -> Ticket:
        self._maybe_fail("get_ticket")
        with self.lock:
            s = self.store[ticket_id]
            return replace(
                s.ticket,
                claims=tuple(s.claims),
                marker=s.marker,
                failed=s.failed,
                footers=find_footers(s.notes + s.drafts),
            )

    def queues(self) -> list[str]:
        return ["Users", "Billing and Payments", "Technical Support"]

    def priorities(self) -> list[str]:
        return ["1 low", "2 normal", "3 high"]

    def agents(self, queue: str) -> list[Agent]:
        return [Agent("1", "anna", 3), Agent("2", "ben", 1)]

    def claim(self, ticket_id: int, claim: Claim) -> ClaimResult:
        self._maybe_fail("claim")
        with self.lock:
            s = self.store[ticket_id]
            self.writes["claim"] += 1
            s.claims.append(claim)
            return ClaimResult(tuple(s.claims), s.marker is not None, s.ticket.retriage_requested)

    def apply(self, ticket: Ticket, change: ChangeSet) -> ApplyResult:
        with self.lock:
            s = self.store[ticket.id]
            changed = []
            fields = {}
            if change.queue:
                fields["queue"] = change.queue
            if change.priority:
                fields["priority"] = change.priority
            if change.owner:
                fields["owner"] = change.owner
            if fields:
                self.writes["update"] += 1
                s.ticket = replace(s.ticket, **fields)
                changed.extend(fields)
            note_created = False
            if change.note and not (find_footers([change.note]) & ticket.footers):
                self.writes["note"] += 1
                s.notes.append(change.note)
                note_created = True
        self._maybe_fail("after_note")
        with self.lock:
            tags = (s.ticket.tags | change.add_tags) - change.remove_tags
            if tags != s.ticket.tags:
                self.writes["tags"] += 1
                s.ticket = replace(s.ticket, tags=frozenset(tags))
                changed.append("tags")
            draft_created = False
            if change.draft and not (find_footers([change.draft]) & ticket.footers):
                self.writes["draft"] += 1
                s.drafts.append(change.draft)
                draft_created = True
        return ApplyResult(ticket.id, tuple(changed), (), note_created, draft_created)

    def finish(self, ticket_id: int, claim: Claim, model_version: str) -> None:
        self._maybe_fail("finish")
        with self.lock:
            s = self.store[ticket_id]
            self.writes["finish"] += 1
            s.marker = "ai-triaged"
            s.ticket = replace(s.ticket, retriage_requested=False)
            if claim in s.claims:
                s.claims.remove(claim)

    def release(self, ticket_id: int, claim: Claim) -> None:
        with self.lock:
            s = self.store[ticket_id]
            if claim in s.claims:
                s.claims.remove(claim)

    def mark_failed(self, ticket_id: int, claim: Claim | None) -> None:
        with self.lock:
            s = self.store[ticket_id]
            self.writes["failed"] += 1
            s.failed = True
            if claim in s.claims:
                s.claims.remove(claim)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        if headers.get("x-test-secret") != "s3cret":
            raise WebhookRejected("bad_signature")
        try:
            return WebhookEvent(int(body.decode()), headers.get("x-delivery"))
        except ValueError:
            raise WebhookRejected("malformed") from None

    def close(self) -> None:
        pass
