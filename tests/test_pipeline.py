"""The pipeline's exactly-once steps, with a crash placed between any two of them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from connector.config import DraftSettings, MarkerSettings, PolicySettings
from connector.domain import ChangeSet, HeadPrediction, Prediction, Ticket
from connector.drafts import DraftWriter
from connector.errors import UnavailableError
from connector.health import Health
from connector.ingest.queue import WorkQueue
from connector.metrics import Metrics
from connector.pipeline import ClaimedElsewhere, Pipeline
from connector.policy import Policy
from connector.workers import WorkerPool
from tests.memory_adapter import MemoryAdapter

MARKERS = MarkerSettings(claim_ttl_seconds=300)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def predict(ticket: Ticket) -> Prediction:
    return Prediction(
        {
            "queue": HeadPrediction(
                "Billing and Payments",
                0.93,
                {"Billing and Payments": 0.93, "Technical Support": 0.07},
            ),
            "priority": HeadPrediction("high", 0.88, {"high": 0.88, "low": 0.12}),
        },
        "model-v1",
    )


def make_pipeline(
    adapter: MemoryAdapter,
    *,
    mode: str = "live",
    shadow_note: bool = False,
    now: datetime = NOW,
    metrics: Metrics | None = None,
) -> Pipeline:
    settings = PolicySettings(mode=mode, shadow_note=shadow_note)  # type: ignore[arg-type]
    policy = Policy(settings, MARKERS, "zammad")  # type: ignore[arg-type]
    return Pipeline(
        adapter, predict, policy, settings, MARKERS, metrics or Metrics(), now=lambda: now
    )


def new_ticket(ticket_id: int = 1, **fields: object) -> Ticket:
    values: dict[str, object] = {
        "subject": "Invoice wrong",
        "body": "Please fix",
        "queue": "Users",
        "priority": "2 normal",
        **fields,
    }
    return Ticket(id=ticket_id, **values)  # type: ignore[arg-type]


def test_fresh_ticket_is_claimed_changed_noted_and_marked_once() -> None:
    adapter = MemoryAdapter([new_ticket()])
    record = make_pipeline(adapter).process(1)
    assert record.outcome == "applied"
    stored = adapter.store[1]
    assert stored.ticket.queue == "Billing and Payments"
    assert stored.ticket.priority == "3 high"
    assert {"ai:queue:billing-and-payments", "ai:priority:high"} <= stored.ticket.tags
    assert stored.marker == "ai-triaged"
    assert stored.claims == []
    assert len(stored.notes) == 1 and record.run_id in stored.notes[0]
    assert adapter.writes == {"claim": 1, "update": 1, "note": 1, "tags": 1, "finish": 1}


def test_a_triaged_ticket_is_left_alone() -> None:
    adapter = MemoryAdapter([new_ticket()])
    pipeline = make_pipeline(adapter)
    pipeline.process(1)
    before = dict(adapter.writes)
    record = pipeline.process(1)
    assert record.outcome == "already_triaged"
    assert adapter.writes == before


def test_retriage_on_request_posts_a_new_note() -> None:
    adapter = MemoryAdapter([new_ticket()])
    pipeline = make_pipeline(adapter)
    first = pipeline.process(1)
    stored = adapter.store[1]
    stored.ticket = stored.ticket.__class__(
        **{**_fields(stored.ticket), "retriage_requested": True}
    )
    second = pipeline.process(1)
    assert second.outcome == "applied"
    assert second.run_id != first.run_id
    assert len(stored.notes) == 2
    assert adapter.writes["finish"] == 2


def test_retry_in_the_same_process_after_a_partial_failure_does_not_post_twice() -> None:
    adapter = MemoryAdapter([new_ticket()])
    adapter.fail("after_note", UnavailableError("down"))
    pipeline = make_pipeline(adapter)
    with pytest.raises(UnavailableError):
        pipeline.process(1)
    assert len(adapter.store[1].notes) == 1
    assert adapter.store[1].marker is None
    record = pipeline.process(1)  # resumes its own claim
    assert record.outcome == "applied"
    assert len(adapter.store[1].notes) == 1
    assert adapter.writes["claim"] == 1
    assert adapter.store[1].claims == []


def test_a_run_that_died_is_resumed_under_its_run_id_after_the_claim_expires() -> None:
    adapter = MemoryAdapter([new_ticket()])
    adapter.fail("after_note", UnavailableError("down"))
    with pytest.raises(UnavailableError):
        make_pipeline(adapter).process(1)  # this "process" dies here
    dead_run = adapter.store[1].claims[0].run_id
    # A new process before the claim expired: someone is on it.
    with pytest.raises(ClaimedElsewhere) as busy:
        make_pipeline(adapter, now=NOW + timedelta(seconds=10)).process(1)
    assert 289 <= busy.value.retry_after <= 291
    # After it expired: resumed under the same run id, so its note is recognised.
    later = make_pipeline(adapter, now=NOW + timedelta(seconds=301))
    record = later.process(1)
    assert record.run_id == dead_run
    assert len(adapter.store[1].notes) == 1
    assert adapter.store[1].marker == "ai-triaged"
    assert adapter.store[1].claims == []


def test_two_replicas_racing_on_one_ticket_produce_one_effect() -> None:
    adapter = MemoryAdapter([new_ticket()])
    both_read = threading.Barrier(2)
    original_get = adapter.get_ticket

    def get_then_wait(ticket_id: int) -> Ticket:
        ticket = original_get(ticket_id)
        both_read.wait(timeout=5)
        return ticket

    adapter.get_ticket = get_then_wait  # type: ignore[method-assign]
    records = []
    threads = [
        threading.Thread(target=lambda: records.append(make_pipeline(adapter).process(1)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    outcomes = sorted(r.outcome for r in records)
    assert outcomes == ["applied", "ignored"]
    assert len(adapter.store[1].notes) == 1
    assert adapter.writes["finish"] == 1
    assert adapter.store[1].claims == []


def test_shadow_mode_writes_nothing_but_one_optional_note() -> None:
    adapter = MemoryAdapter([new_ticket()])
    record = make_pipeline(adapter, mode="shadow").process(1)
    assert record.outcome == "shadow"
    assert sum(adapter.writes.values()) == 0
    noting = make_pipeline(adapter, mode="shadow", shadow_note=True)
    noting.process(1)
    noting.process(1)
    assert adapter.writes == {"note": 1}
    assert noting.seen_in_shadow(1)
    assert adapter.store[1].ticket.queue == "Users"
    assert adapter.store[1].marker is None


def test_failed_tickets_are_skipped_until_retriage() -> None:
    adapter = MemoryAdapter([new_ticket()])
    pipeline = make_pipeline(adapter)
    pipeline.give_up(1)
    assert adapter.store[1].failed
    assert pipeline.process(1).outcome == "ignored"


def test_metrics_count_outcomes_and_predictions() -> None:
    metrics = Metrics()
    adapter = MemoryAdapter([new_ticket()])
    make_pipeline(adapter, metrics=metrics).process(1)
    value = metrics.registry.get_sample_value
    assert value("helpdesk_triage_tickets_total", {"outcome": "applied"}) == 1
    assert (
        value(
            "helpdesk_triage_predictions_total",
            {"head": "queue", "label": "Billing and Payments", "action": "apply"},
        )
        == 1
    )


# -- the worker pool around it -------------------------------------------------------------


def run_pool(
    adapter: MemoryAdapter, ids: list[int], max_attempts: int = 3
) -> tuple[WorkQueue, Health, Metrics]:
    from connector.config import IngestSettings

    metrics = Metrics()
    health = Health(metrics)
    health.helpdesk_ok()
    queue = WorkQueue(100)
    settings = IngestSettings(
        max_attempts=max_attempts,
        retry_backoff_seconds=0.01,
        retry_backoff_max_seconds=0.05,
        concurrency=4,
    )
    pool = WorkerPool(queue, make_pipeline(adapter, metrics=metrics), settings, metrics, health)
    pool.start()
    for i in ids:
        queue.offer(i, "poll")
    assert queue.wait_idle(timeout=10)
    pool.stop(timeout=5)
    return queue, health, metrics


def test_worker_retries_passing_errors_then_succeeds() -> None:
    adapter = MemoryAdapter([new_ticket()])
    adapter.fail("get_ticket", UnavailableError("down"), UnavailableError("down"))
    _, _, metrics = run_pool(adapter, [1])
    assert adapter.store[1].marker == "ai-triaged"
    assert (
        metrics.registry.get_sample_value("helpdesk_triage_tickets_total", {"outcome": "retry"})
        == 2
    )


def test_worker_gives_up_after_max_attempts_and_marks_the_ticket() -> None:
    adapter = MemoryAdapter([new_ticket()])
    adapter.fail("get_ticket", *[UnavailableError("down") for _ in range(3)])
    _, _, metrics = run_pool(adapter, [1], max_attempts=3)
    assert adapter.store[1].failed
    assert adapter.store[1].marker is None
    assert (
        metrics.registry.get_sample_value("helpdesk_triage_tickets_total", {"outcome": "failed"})
        == 1
    )


def test_worker_fails_readiness_on_auth_errors_without_using_up_attempts() -> None:
    from connector.errors import AuthError

    adapter = MemoryAdapter([new_ticket()])
    adapter.fail("get_ticket", AuthError("token revoked"))
    metrics = Metrics()
    health = Health(metrics)
    health.helpdesk_ok()
    queue = WorkQueue(10)
    from connector.config import IngestSettings

    settings = IngestSettings(retry_backoff_max_seconds=0.05, max_attempts=1)
    pool = WorkerPool(queue, make_pipeline(adapter, metrics=metrics), settings, metrics, health)
    pool.start()
    queue.offer(1, "poll")
    assert queue.wait_idle(timeout=10)
    pool.stop(timeout=5)
    # It waited and then succeeded, instead of being marked failed.
    assert not adapter.store[1].failed
    assert adapter.store[1].marker == "ai-triaged"
    assert not health.helpdesk_failing()


def _fields(ticket: Ticket) -> dict[str, object]:
    return {name: getattr(ticket, name) for name in ticket.__dataclass_fields__}


C0_CONTROLS = {chr(c) for c in range(0x20)} - {"\t", "\n", "\r"}


def test_control_characters_from_the_ticket_never_reach_the_helpdesk() -> None:
    ticket = new_ticket(subject="Printer\x00 on \x1b[31mfire\x07", body="it\x00 burns\x1b[0m")
    adapter = MemoryAdapter([ticket])
    settings = PolicySettings()
    writer = DraftWriter(DraftSettings(templates={"Billing and Payments": "Re: {title}\tthanks"}))
    pipeline = Pipeline(
        adapter,
        predict,
        Policy(settings, MARKERS, "zammad"),  # type: ignore[arg-type]
        settings,
        MARKERS,
        Metrics(),
        draft_writer=writer,
        now=lambda: NOW,
    )
    pipeline.process(1)
    stored = adapter.store[1]
    assert len(stored.drafts) == 1 and len(stored.notes) == 1
    assert "Re: Printer on [31mfire\tthanks" in stored.drafts[0]
    written = [*stored.notes, *stored.drafts, *stored.ticket.tags]
    assert not [text for text in written if C0_CONTROLS & set(text)]


def test_a_change_set_strips_controls_from_what_it_writes_but_removes_tags_exactly() -> None:
    change = ChangeSet(
        ticket_id=1,
        note="a\x00b\r\n\tc\x1b",
        draft="\x0bd\x1fe",
        add_tags=frozenset({"ai:\x00x", "\x1b"}),
        remove_tags=frozenset({"odd\x1btag"}),
    )
    assert change.note == "ab\r\n\tc"
    assert change.draft == "de"
    assert change.add_tags == {"ai:x"}
    assert change.remove_tags == {"odd\x1btag"}
