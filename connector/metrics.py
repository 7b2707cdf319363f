"""Prometheus metrics, built against an injected registry.

Nothing here is created at import time: the service builds one ``Metrics`` for
its registry, tests build one per test. Names carry base units and counters end
in ``_total``; label values are fixed sets (helpdesk, endpoint template, head,
label, outcome), never ticket ids or free text.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "helpdesk_triage"

# Inference on one ticket is a few milliseconds; the default buckets start at 5 ms.
INFERENCE_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TRIAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

TICKET_OUTCOMES = (
    "applied",  # at least one field applied
    "suggested",  # nothing applied, at least one suggestion
    "review",  # nothing confident enough: needs-review
    "shadow",  # computed and recorded, nothing changed
    "already_triaged",  # marker present, nothing to do
    "ignored",  # not eligible (closed, own edit, no customer text, lost claim)
    "ticket_error",  # the helpdesk refused this ticket (404/422/...)
    "failed",  # gave up after repeated errors: marked triage-error
    "retry",  # a passing error; the ticket goes back to the queue
    "deferred",  # the helpdesk is down (circuit open): back to the queue, no attempt used
)
WEBHOOK_RESULTS = (
    "accepted",
    "duplicate",
    "bad_signature",
    "missing_signature",
    "malformed",
    "too_large",
    "overloaded",
    "ignored",
)


class Metrics:
    """Every metric the sidecar exports, on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = PREFIX
        self.tickets = Counter(
            f"{p}_tickets_total", "Tickets processed, by outcome.", ["outcome"], registry=r
        )
        self.predictions = Counter(
            f"{p}_predictions_total",
            "Head predictions, by head, predicted label and the policy's action.",
            ["head", "label", "action"],
            registry=r,
        )
        self.confidence = Histogram(
            f"{p}_prediction_confidence",
            "Confidence of the top label, per head.",
            ["head"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            f"{p}_inference_duration_seconds",
            "Time to tokenize and run the model on one batch.",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.inference_batch_size = Histogram(
            f"{p}_inference_batch_size",
            "Tickets per inference batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.helpdesk_request_seconds = Histogram(
            f"{p}_helpdesk_request_duration_seconds",
            "Helpdesk API calls by endpoint template and status (or error kind).",
            ["helpdesk", "method", "endpoint", "status"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.helpdesk_retries = Counter(
            f"{p}_helpdesk_retries_total",
            "Helpdesk API calls retried, by reason.",
            ["helpdesk", "endpoint", "reason"],
            registry=r,
        )
        self.helpdesk_errors = Counter(
            f"{p}_helpdesk_errors_total",
            "Helpdesk API calls that failed after retries, by error kind.",
            ["helpdesk", "kind"],
            registry=r,
        )
        self.circuit_state = Gauge(
            f"{p}_helpdesk_circuit_state",
            "The circuit breaker around helpdesk calls: 0 closed, 1 half-open (probing), 2 open.",
            ["helpdesk"],
            registry=r,
        )
        self.circuit_opened = Counter(
            f"{p}_helpdesk_circuit_opened_total",
            "Times the circuit breaker opened (the helpdesk counted as down).",
            ["helpdesk"],
            registry=r,
        )
        self.webhooks = Counter(
            f"{p}_webhook_requests_total",
            "Webhook deliveries, by helpdesk and result.",
            ["helpdesk", "result"],
            registry=r,
        )
        self.queue_depth = Gauge(f"{p}_queue_depth", "Tickets waiting for a worker.", registry=r)
        self.queue_capacity = Gauge(
            f"{p}_queue_capacity",
            "Most tickets that may wait before intake pushes back.",
            registry=r,
        )
        self.in_flight = Gauge(f"{p}_tickets_in_flight", "Tickets being triaged now.", registry=r)
        self.triage_seconds = Histogram(
            f"{p}_triage_duration_seconds",
            "From taking a ticket off the queue to its write-back finishing.",
            buckets=TRIAGE_BUCKETS,
            registry=r,
        )
        self.enqueue_to_written_seconds = Histogram(
            f"{p}_enqueue_to_written_seconds",
            "From a ticket entering the queue (webhook or poll) to its write-back finishing.",
            ["source"],
            buckets=TRIAGE_BUCKETS,
            registry=r,
        )
        self.polls = Counter(
            f"{p}_polls_total",
            "Poll and sweep runs, by kind and result.",
            ["kind", "result"],
            registry=r,
        )
        self.polled_tickets = Counter(
            f"{p}_polled_tickets_total", "Tickets found by polls and sweeps.", ["kind"], registry=r
        )
        self.model_info = Gauge(
            f"{p}_model_info", "The loaded model (value is always 1).", ["version"], registry=r
        )
        self.owner_conflicts = Counter(
            f"{p}_owner_conflicts_total",
            "Owners the helpdesk unassigned or a move was skipped to keep, by outcome "
            "(assignment_refused, unassigned_by_move, unassigned, move_skipped).",
            ["helpdesk", "outcome"],
            registry=r,
        )
        self.model_reloads = Counter(
            f"{p}_model_reloads_total",
            "Model reloads (SIGHUP or a changed model.path): loaded, or refused.",
            ["result"],
            registry=r,
        )
        self.ready = Gauge(f"{p}_ready", "1 when the service is ready for traffic.", registry=r)

    def preinitialise(self, helpdesk: str, heads: Iterable[str]) -> None:
        """Create the label sets that are known up front, so dashboards see zeros."""
        for outcome in TICKET_OUTCOMES:
            self.tickets.labels(outcome=outcome)
        for result in WEBHOOK_RESULTS:
            self.webhooks.labels(helpdesk=helpdesk, result=result)
        for head in heads:
            self.confidence.labels(head=head)
        self.circuit_state.labels(helpdesk=helpdesk).set(0)
        self.circuit_opened.labels(helpdesk=helpdesk)
        for source in ("webhook", "poll", "sweep", "manual"):
            self.enqueue_to_written_seconds.labels(source=source)
        for result in ("loaded", "refused"):
            self.model_reloads.labels(result=result)
