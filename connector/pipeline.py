"""One ticket's path: fetch, check, claim, classify, decide, write back, finish.

The pipeline sees the helpdesk only through its adapter and the model only
through a predictor callable; it never sees HTTP or tensors. Errors from the
helpdesk propagate to the worker, which decides between retrying later and
giving up; everything the pipeline decides on its own ends in a
``TriageRecord``.

Exactly once, step by step:

1. A ticket that carries the marker is left alone (unless re-triage was asked).
2. A live claim by another worker means someone is on it: try again later.
   A claim older than the time-to-live belongs to a run that died: resume it,
   under its run id, so its note (found by footer) is not posted again.
3. Write our claim and read the claims back; if another worker's live claim
   comes first in the helpdesk's order, step back.
4. Apply the change set, then ``finish``: marker on, claim off. A crash
   anywhere before that leaves the claim, and step 2 resumes it.
5. A write that failed in a way that may still have reached the helpdesk (a
   read timeout, a dropped connection, a gateway error) is not repeated at
   once: the run waits ``write_settle_seconds``, so a helpdesk still working
   on the request the client gave up on can finish it, then reads the ticket
   back. If the run's note is there, its field changes landed with it (every
   adapter writes the fields before or with the note); only what is missing is
   written. Either way the retry finishes the decision it started instead of
   deciding again against a ticket it has already moved, so note, tags, log
   and metrics agree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from connector.adapters.base import HelpdeskAdapter
from connector.config import MarkerSettings, PolicySettings
from connector.domain import ApplyResult, ChangeSet, Claim, Decision, Prediction, Ticket
from connector.errors import NetworkError, RetryableError, UnavailableError
from connector.footer import NOTE, footer, new_run_id
from connector.metrics import Metrics
from connector.policy import Plan, Policy

log = logging.getLogger("connector.pipeline")

Predictor = Callable[[Ticket], Prediction]
DraftWriter = Callable[[Ticket, Prediction, Plan], str | None]

SHADOW_MEMORY = 100_000
PENDING_MEMORY = 10_000
OUTCOME_ALREADY = "already_triaged"
OUTCOME_IGNORED = "ignored"
_FIELDS = ("queue", "priority", "owner")


class TryLater(RetryableError):
    """Not now, and not the ticket's fault: look again after ``retry_after`` seconds."""

    def __init__(self, reason: str, ticket_id: int, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(reason, ticket_id=ticket_id)


class ClaimedElsewhere(TryLater):
    """Another worker holds a live claim on the ticket."""

    def __init__(self, ticket_id: int, retry_after: float) -> None:
        super().__init__("claimed by another worker", ticket_id, retry_after)


class WriteUnsettled(TryLater):
    """A write of this run may still land on the helpdesk: read the ticket back later."""

    def __init__(self, ticket_id: int, retry_after: float) -> None:
        super().__init__("an unanswered write may still land", ticket_id, retry_after)


@dataclass(frozen=True, slots=True)
class _Unfinished:
    """A run whose write-back failed part-way: what it decided, and what already landed."""

    run_id: str
    prediction: Prediction
    plan: Plan
    change: ChangeSet
    landed: tuple[str, ...]
    settles_at: float


@dataclass(frozen=True, slots=True)
class TriageRecord:
    """What happened to one ticket: for metrics, logs and the demo. Never ticket text."""

    ticket_id: int
    outcome: str
    run_id: str = ""
    reason: str = ""
    decisions: tuple[Decision, ...] = ()
    escalations: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    model_version: str = ""
    seconds: float = 0.0


class Pipeline:
    def __init__(
        self,
        adapter: HelpdeskAdapter,
        predict: Predictor,
        policy: Policy,
        policy_settings: PolicySettings,
        markers: MarkerSettings,
        metrics: Metrics,
        *,
        draft_writer: DraftWriter | None = None,
        write_settle_seconds: float = 0.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.adapter = adapter
        self.predict = predict
        self.policy = policy
        self.shadow = policy_settings.mode == "shadow"
        self.markers = markers
        self.metrics = metrics
        self.draft_writer = draft_writer
        self.write_settle_seconds = write_settle_seconds
        self._now = now
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # Claims this process holds, so a retry here resumes its own claim
        # instead of mistaking it for another worker's.
        self._held: dict[int, Claim] = {}
        # Shadow mode writes no marker, so it remembers what it has evaluated
        # (bounded), and sweeps do not evaluate and count the same tickets again.
        self._shadowed: OrderedDict[int, None] = OrderedDict()
        # Runs whose write-back failed part-way, so the retry finishes the same decision.
        self._unfinished: OrderedDict[int, _Unfinished] = OrderedDict()

    def held_claim(self, ticket_id: int) -> Claim | None:
        with self._lock:
            return self._held.get(ticket_id)

    def process(self, ticket_id: int) -> TriageRecord:
        started = time.perf_counter()
        with self._lock:
            unfinished = self._unfinished.get(ticket_id)
        if unfinished is not None:
            wait = unfinished.settles_at - self._monotonic()
            if wait > 0:
                raise WriteUnsettled(ticket_id, wait)
        ticket = self.adapter.get_ticket(ticket_id)
        record = self._process(ticket)
        record = replace(record, seconds=time.perf_counter() - started)
        self._observe(record)
        return record

    def seen_in_shadow(self, ticket_id: int) -> bool:
        with self._lock:
            return ticket_id in self._shadowed

    def give_up(self, ticket_id: int) -> None:
        """Mark the ticket as failed on the helpdesk and drop this process's claim."""
        claim = self.held_claim(ticket_id)
        self.adapter.mark_failed(ticket_id, claim)
        with self._lock:
            self._held.pop(ticket_id, None)
            self._unfinished.pop(ticket_id, None)

    # -- the steps ---------------------------------------------------------------------

    def _process(self, ticket: Ticket) -> TriageRecord:
        if ticket.failed and not ticket.retriage_requested:
            return TriageRecord(ticket.id, OUTCOME_IGNORED, reason="marked failed")
        if ticket.is_triaged and not ticket.retriage_requested:
            return TriageRecord(ticket.id, OUTCOME_ALREADY)
        if self.shadow:
            return self._shadow(ticket)

        # Whole seconds: field-based markers store claims to the second, and a
        # claim must compare equal to itself after a round trip.
        now = self._now().replace(microsecond=0)
        ttl = self.markers.claim_ttl_seconds
        own = self.held_claim(ticket.id)
        live_foreign = [c for c in ticket.claims if c != own and _age(c, now) < ttl]
        if live_foreign:
            youngest = min(_age(c, now) for c in live_foreign)
            raise ClaimedElsewhere(ticket.id, retry_after=max(1.0, ttl - youngest))
        stale = [c for c in ticket.claims if c != own and _age(c, now) >= ttl]

        if own is not None and own in ticket.claims:
            claim = own
        else:
            run_id = stale[0].run_id if stale else new_run_id()
            claim = Claim(created_at=now, run_id=run_id)
            claimed = self.adapter.claim(ticket.id, claim)
            with self._lock:
                self._held[ticket.id] = claim
            first_live = next((c for c in claimed.claims if _age(c, now) < ttl), None)
            lost = first_live is not None and first_live != claim
            if lost or claimed.done_elsewhere:
                self.adapter.release(ticket.id, claim)
                with self._lock:
                    self._held.pop(ticket.id, None)
                reason = (
                    "finished by another worker" if claimed.done_elsewhere else "lost claim race"
                )
                return TriageRecord(ticket.id, OUTCOME_IGNORED, claim.run_id, reason)

        with self._lock:
            unfinished = self._unfinished.get(ticket.id)
        landed: tuple[str, ...] = ()
        if unfinished is not None and unfinished.run_id == claim.run_id:
            prediction, plan, change = unfinished.prediction, unfinished.plan, unfinished.change
            landed = unfinished.landed
            if change.note and footer(NOTE, claim.run_id) in ticket.footers:
                # The note landed, so did the fields: writing them again could undo
                # a person's change made since.
                landed += (*(f for f in _FIELDS if getattr(change, f)), "note")
                change = replace(change, queue=None, priority=None, owner=None)
        else:
            prediction = self.predict(ticket)
            plan = self.policy.decide(ticket, prediction, claim.run_id)
            change = plan.change
            if self.draft_writer is not None:
                draft = self.draft_writer(ticket, prediction, plan)
                if draft:
                    change = replace(change, draft=draft)
        result: ApplyResult | None = None
        try:
            result = self.adapter.apply(ticket, change)
            self.adapter.finish(ticket.id, claim, prediction.model_version)
        except RetryableError as error:
            settles_at = self._monotonic()
            if result is not None:  # everything but the marker is written
                landed += result.changed
                change = replace(change, queue=None, priority=None, owner=None)
            elif _may_have_landed(error):
                settles_at += self.write_settle_seconds
            self._remember(
                ticket.id, _Unfinished(claim.run_id, prediction, plan, change, landed, settles_at)
            )
            raise
        with self._lock:
            self._held.pop(ticket.id, None)
            self._unfinished.pop(ticket.id, None)
        for leftover in stale:
            self.adapter.release(ticket.id, leftover)
        if landed:
            changed = tuple(dict.fromkeys(landed + result.changed))
            result = replace(result, changed=changed)
        return self._record(ticket, plan, prediction, claim.run_id, result)

    def _remember(self, ticket_id: int, unfinished: _Unfinished) -> None:
        with self._lock:
            self._unfinished[ticket_id] = unfinished
            self._unfinished.move_to_end(ticket_id)
            while len(self._unfinished) > PENDING_MEMORY:
                self._unfinished.popitem(last=False)

    def _shadow(self, ticket: Ticket) -> TriageRecord:
        with self._lock:
            self._shadowed[ticket.id] = None
            while len(self._shadowed) > SHADOW_MEMORY:
                self._shadowed.popitem(last=False)
        run_id = new_run_id()
        prediction = self.predict(ticket)
        plan = self.policy.decide(ticket, prediction, run_id)
        result = ApplyResult(ticket.id)
        already_noted = any(f.startswith(f"helpdesk-triage {NOTE} ") for f in ticket.footers)
        if plan.change.note and not already_noted:
            result = self.adapter.apply(ticket, plan.change)
        return self._record(ticket, plan, prediction, run_id, result)

    def _record(
        self,
        ticket: Ticket,
        plan: Plan,
        prediction: Prediction,
        run_id: str,
        result: ApplyResult,
    ) -> TriageRecord:
        return TriageRecord(
            ticket_id=ticket.id,
            outcome=plan.outcome,
            run_id=run_id,
            decisions=plan.decisions,
            escalations=plan.escalations,
            changed=result.changed,
            model_version=prediction.model_version,
        )

    def _observe(self, record: TriageRecord) -> None:
        self.metrics.tickets.labels(outcome=record.outcome).inc()
        for d in record.decisions:
            self.metrics.predictions.labels(head=d.head, label=d.label, action=d.action.value).inc()
            self.metrics.confidence.labels(head=d.head).observe(d.confidence)
        if record.decisions:
            self.metrics.triage_seconds.observe(record.seconds)
        log.info(
            "ticket processed",
            extra={
                "ticket_id": record.ticket_id,
                "outcome": record.outcome,
                "run_id": record.run_id,
                "reason": record.reason or None,
                "predictions": {
                    d.head: {
                        "label": d.label,
                        "confidence": round(d.confidence, 4),
                        "action": d.action.value,
                    }
                    for d in record.decisions
                }
                or None,
                "escalations": list(record.escalations) or None,
                "changed": list(record.changed) or None,
                "duration_ms": round(record.seconds * 1000, 2),
            },
        )


def _summary(decisions: tuple[Decision, ...]) -> dict[str, dict[str, object]]:
    return {
        d.head: {"label": d.label, "confidence": round(d.confidence, 4), "action": d.action.value}
        for d in decisions
    }


def _may_have_landed(error: RetryableError) -> bool:
    """Whether the helpdesk may have acted on a request whose answer never came."""
    if isinstance(error, NetworkError):
        return error.request_sent
    # A gateway that gave up waiting (504) or lost the upstream mid-answer (502); a 503
    # or 408 means the request was turned away before the application saw it.
    return isinstance(error, UnavailableError) and error.status in (502, 504)


def _age(claim: Claim, now: datetime) -> float:
    return (now - claim.created_at).total_seconds()
