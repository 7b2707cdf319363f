"""What the triage pipeline needs from a helpdesk, in the pipeline's own terms.

An adapter knows one helpdesk's API (auth, paths, pagination, field names,
error codes) and nothing else: no numpy, no model, no policy. It speaks HTTP
only through ``connector.http.HttpClient`` and raises only the errors of
``connector.errors``.

Exactly-once write-back rests on three on-ticket records, which each adapter
stores in whatever its helpdesk offers (tags, a custom field, a dynamic field):

- a **claim** (``domain.Claim``: run id and time) written before anything else,
  so a retry resumes the same run and a second worker can see it is not alone;
- a **footer** in every note or draft the run posts (``connector.footer``), so
  a retry after a partial failure finds the note and does not post it twice;
- the **marker**, written last by ``finish``, after which the ticket counts as
  triaged and is left alone until someone asks for re-triage.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from connector.domain import (
    Agent,
    ApplyResult,
    ChangeSet,
    Claim,
    ClaimResult,
    Ticket,
    TicketRef,
)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified webhook delivery, reduced to what the pipeline may trust: an id."""

    ticket_id: int
    delivery_id: str | None = None
    event: str | None = None


class WebhookRejected(Exception):
    """A webhook delivery failed verification or parsing.

    ``reason`` is one of the fixed metric label values: ``bad_signature``,
    ``missing_signature``, ``malformed``, ``ignored``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@runtime_checkable
class HelpdeskAdapter(Protocol):
    """One helpdesk, as the pipeline sees it."""

    kind: str
    """Short name used in metrics and logs: ``zammad``, ``znuny``, ``rt``."""

    supports_webhooks: bool

    def check(self) -> None:
        """Prove the helpdesk is reachable, the credentials work and the marker field exists.

        Raises ``AuthError`` or ``HelpdeskConfigError`` naming what is wrong.
        """

    def changed_since(
        self, since: datetime | None, *, page_size: int, max_pages: int
    ) -> Iterator[TicketRef]:
        """Open tickets updated at or after ``since`` (all when None) that need triage.

        "Need triage": no marker, or a re-triage request, and not marked failed;
        filtered by the helpdesk where its search allows, else after listing.
        Ordered by (updated_at, id) ascending as far as the API allows; pages
        are fetched lazily, at most ``max_pages`` per call. The caller
        de-duplicates, so overlapping the previous poll a little is expected.
        """

    def untriaged(self, *, page_size: int, max_pages: int) -> Iterator[TicketRef]:
        """Every open ticket that needs triage, whenever it changed: the reconcile sweep."""

    def get_ticket(self, ticket_id: int) -> Ticket:
        """The ticket, its first customer article, tags, marker, claims and posted footers.

        Raises ``NotFoundError`` for a missing ticket. A ticket without a customer
        article is returned with ``has_customer_article=False`` and an empty body.
        """

    def queues(self) -> list[str]:
        """Names of the queues (Zammad: groups) tickets may be moved to."""

    def priorities(self) -> list[str]:
        """Names of the priorities, as the helpdesk names them."""

    def agents(self, queue: str) -> list[Agent]:
        """Agents who may own tickets of ``queue``, with their open-ticket counts."""

    def claim(self, ticket_id: int, claim: Claim) -> ClaimResult:
        """Write ``claim`` on the ticket, then read back its claims and marker state.

        Where the marker shares one field with the claim (no tags), read the
        field first and do not write over a marker: return ``triaged=True``.
        """

    def apply(self, ticket: Ticket, change: ChangeSet) -> ApplyResult:
        """Write the change set: fields, tags, note and draft, checking each answer.

        A note or draft whose footer is already on ``ticket`` is not posted again.
        Does not write the marker; ``finish`` does, last.
        """

    def finish(self, ticket_id: int, claim: Claim, model_version: str) -> None:
        """Clear a re-triage request, write the marker, drop the claim: in that order.

        Until the claim is gone a crash leaves it behind, and the next worker
        resumes the same run (same footers, so nothing is posted twice).
        """

    def release(self, ticket_id: int, claim: Claim) -> None:
        """Drop this worker's claim without marking the ticket (lost race, gave up)."""

    def mark_failed(self, ticket_id: int, claim: Claim | None) -> None:
        """Record on the ticket that triage gave up on it (``triage-error``) and drop the claim.

        A failed ticket is left out of polls and sweeps until an admin asks
        for re-triage.
        """

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Check the delivery's signature or shared secret, then read the ticket id.

        ``headers`` keys are lower-case. Raises ``WebhookRejected``.
        """

    def close(self) -> None:
        """Release connections."""
