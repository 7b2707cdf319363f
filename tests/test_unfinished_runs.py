"""A write-back that failed part-way is finished as decided, never decided or posted again.

The unit tests put the failure exactly after the note (the write landed, the
answer was lost) or after everything but the marker, with a fake clock. The
end-to-end test makes the emulator commit a ticket update only after the
client's read timeout, as a busy Zammad does, over real HTTP.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest

from connector.domain import Ticket
from connector.errors import NetworkError, RateLimitedError, UnavailableError
from connector.footer import NOTE
from connector.metrics import Metrics
from connector.pipeline import Pipeline, WriteUnsettled
from connector.policy import Policy
from tests.memory_adapter import MemoryAdapter
from tests.test_pipeline import MARKERS, NOW, new_ticket, predict
from tests.test_service_e2e import (
    BILLING,
    emulator_for,
    free_port,
    notes,
    reader,
    settings_for,
    wait_until,
)

SETTLE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingPredictor:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ticket: Ticket) -> Any:
        self.calls += 1
        return predict(ticket)


def pipeline_for(adapter: MemoryAdapter, clock: Clock, predictor: CountingPredictor) -> Pipeline:
    from connector.config import PolicySettings

    settings = PolicySettings()
    policy = Policy(settings, MARKERS, "zammad")  # type: ignore[arg-type]
    return Pipeline(
        adapter,
        predictor,
        policy,
        settings,
        MARKERS,
        Metrics(),
        write_settle_seconds=SETTLE,
        now=lambda: NOW,
        monotonic=clock,
    )


def failed_once(
    step: str, error: Exception
) -> tuple[MemoryAdapter, Clock, CountingPredictor, Pipeline]:
    """A fresh ticket whose first run failed at ``step`` with ``error``."""
    adapter = MemoryAdapter([new_ticket()])
    clock, predictor = Clock(), CountingPredictor()
    pipeline = pipeline_for(adapter, clock, predictor)
    adapter.fail(step, error)  # type: ignore[arg-type]
    with pytest.raises(type(error)):
        pipeline.process(1)
    return adapter, clock, predictor, pipeline


def label_tags(adapter: MemoryAdapter) -> set[str]:
    return {t for t in adapter.store[1].ticket.tags if t.startswith("ai:")}


def test_an_unanswered_write_waits_then_finishes_the_decision_it_started() -> None:
    adapter, clock, predictor, pipeline = failed_once("after_note", NetworkError("read timed out"))
    moved_to = adapter.store[1].ticket.queue
    assert moved_to == "Billing and Payments"
    reads = adapter.writes.copy()

    clock.now += 1
    with pytest.raises(WriteUnsettled) as unsettled:
        pipeline.process(1)
    assert unsettled.value.retry_after == pytest.approx(SETTLE - 1)
    assert adapter.writes == reads

    clock.now += SETTLE
    record = pipeline.process(1)
    assert predictor.calls == 1, "decided again"
    assert record.outcome == "applied"
    assert {d.head: d.action.value for d in record.decisions}["queue"] == "apply"
    assert "queue" in record.changed and "note" in record.changed
    assert len(adapter.store[1].notes) == 1
    assert adapter.writes["update"] == 1
    # The tags say what the note says: applied, not a suggestion to keep the queue.
    assert any(t.startswith("ai:queue:") for t in label_tags(adapter))
    assert not any(t.startswith("ai:suggest:queue:") for t in label_tags(adapter))
    assert adapter.store[1].marker == "ai-triaged"


def test_a_change_made_by_a_person_meanwhile_is_not_undone() -> None:
    adapter, clock, _predictor, pipeline = failed_once("after_note", NetworkError("read timed out"))
    stored = adapter.store[1]
    stored.ticket = replace(stored.ticket, queue="Technical Support")  # an agent moves it
    clock.now += SETTLE + 1
    pipeline.process(1)
    assert stored.ticket.queue == "Technical Support"
    assert adapter.writes["update"] == 1
    assert len(stored.notes) == 1


def test_a_write_that_never_landed_is_sent_again_after_the_wait() -> None:
    adapter = MemoryAdapter([new_ticket()])
    clock, predictor = Clock(), CountingPredictor()
    pipeline = pipeline_for(adapter, clock, predictor)
    original_apply = adapter.apply
    calls = []

    def lost_on_the_way(ticket: Ticket, change: Any) -> Any:
        calls.append(change)
        if len(calls) == 1:
            raise NetworkError("connection reset")
        return original_apply(ticket, change)

    adapter.apply = lost_on_the_way  # type: ignore[method-assign]
    with pytest.raises(NetworkError):
        pipeline.process(1)
    clock.now += SETTLE + 1
    record = pipeline.process(1)
    assert calls[1] == calls[0], "the same change, note footer included"
    assert predictor.calls == 1
    assert record.outcome == "applied"
    assert adapter.store[1].ticket.queue == "Billing and Payments"
    assert len(adapter.store[1].notes) == 1


@pytest.mark.parametrize(
    "refusal",
    [
        RateLimitedError("429", retry_after=1),
        UnavailableError("service unavailable", status=503),
        NetworkError("connect timed out", request_sent=False),
    ],
    ids=["429", "503", "connect-timeout"],
)
def test_a_refusal_that_wrote_nothing_is_retried_without_the_wait(refusal: Exception) -> None:
    adapter = MemoryAdapter([new_ticket()])
    clock, predictor = Clock(), CountingPredictor()
    pipeline = pipeline_for(adapter, clock, predictor)
    original_apply = adapter.apply
    calls = []

    def refused_once(ticket: Ticket, change: Any) -> Any:
        calls.append(change)
        if len(calls) == 1:
            raise refusal
        return original_apply(ticket, change)

    adapter.apply = refused_once  # type: ignore[method-assign]
    with pytest.raises(type(refusal)):
        pipeline.process(1)
    record = pipeline.process(1)  # no clock advance: nothing can land late
    assert record.outcome == "applied"
    assert predictor.calls == 1


def test_a_failed_marker_write_is_finished_without_deciding_again() -> None:
    adapter, _clock, predictor, pipeline = failed_once("finish", NetworkError("read timed out"))
    writes = adapter.writes.copy()
    record = pipeline.process(1)
    assert predictor.calls == 1
    assert record.outcome == "applied"
    assert "queue" in record.changed
    assert adapter.writes["update"] == writes["update"] == 1
    assert adapter.writes["note"] == 1
    assert adapter.store[1].marker == "ai-triaged"


def test_a_ticket_given_up_forgets_its_unfinished_run() -> None:
    adapter, _clock, predictor, pipeline = failed_once("after_note", NetworkError("read timed out"))
    pipeline.give_up(1)
    assert adapter.store[1].failed
    # A later re-triage request starts afresh, without waiting for the old write.
    adapter.store[1].ticket = replace(adapter.store[1].ticket, retriage_requested=True)
    adapter.store[1].failed = False
    pipeline.process(1)
    assert predictor.calls == 2


@pytest.fixture(scope="module")
def classifier() -> Any:
    from connector.classifier import Classifier
    from connector.config import load_settings

    return Classifier.load(load_settings().model.path, threads=1)


def test_updates_committed_after_the_client_timed_out_post_one_note_each(classifier: Any) -> None:
    port = free_port()
    with emulator_for(port) as emulator:
        ids = [emulator.create_customer_ticket(*BILLING) for _ in range(5)]
        for ticket_id in ids:
            # Zammad busy: the update is processed only after the client gave up on it.
            emulator.faults.add(
                {
                    "method": "PUT",
                    "path": rf"^/api/v1/tickets/{ticket_id}$",
                    "delay_seconds": 1.2,
                    "times": 1,
                }
            )
        records: dict[int, Any] = {}
        lock = threading.Lock()
        settings = settings_for(
            emulator,
            port,
            ingest={"webhooks": False},
            http={"read_timeout_seconds": 0.5, "write_settle_seconds": 2.0},
        )
        from connector.service import Service

        def on_record(record: Any, item: Any) -> None:
            with lock:
                if record.decisions:
                    records[record.ticket_id] = record

        service = Service(settings, classifier=classifier, on_record=on_record)
        service.start_server_thread()
        try:
            service.check()
            service.start_background()
            assert wait_until(lambda: all(i in records for i in ids), timeout=60)
            assert wait_until(lambda: not set(ids) & set(emulator.ticket_ids()), timeout=10)
        finally:
            service.stop()
        assert sum(emulator.stats.faults.values()) >= 5
        for ticket_id in ids:
            assert emulator.stats.for_ticket(ticket_id)["internal_notes_created"] == 1
            assert notes(emulator, ticket_id) == 1
            ticket = reader(emulator).get_ticket(ticket_id)
            record = records[ticket_id]
            queue = {d.head: d for d in record.decisions}["queue"]
            note = next(f for f in ticket.footers if f.startswith(f"helpdesk-triage {NOTE}"))
            assert note.endswith(record.run_id)
            if queue.action.value == "apply":
                assert ticket.queue == queue.label
                assert "queue" in record.changed
                assert not any(t.startswith("ai:suggest:queue:") for t in ticket.tags)
            assert not ticket.claims


@pytest.mark.parametrize(
    "error",
    [NetworkError("timed out"), UnavailableError("bad gateway", status=502)],
    ids=["read-timeout", "502"],
)
def test_errors_after_which_the_write_may_have_landed_wait(error: Exception) -> None:
    _adapter, _clock, _predictor, pipeline = failed_once("after_note", error)
    with pytest.raises(WriteUnsettled):
        pipeline.process(1)
