"""The circuit breaker: an outage of the helpdesk must not use up the tickets' attempts.

Unit tests drive the breaker with a fake clock; the end-to-end tests run the
service against the emulator over loopback HTTP with the helpdesk failing.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from connector.circuit import CircuitBreaker, CircuitState
from connector.errors import (
    CircuitOpenError,
    ConflictError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnavailableError,
)
from connector.ingest.queue import WorkQueue
from tests.test_service_e2e import (
    emulator_for,
    free_port,
    reader,
    running,
    settings_for,
    wait_until,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=threshold, open_seconds=5.0, open_max_seconds=20.0, clock=clock
    )


def test_consecutive_failures_open_the_circuit_and_calls_are_rejected_fast() -> None:
    clock = Clock()
    circuit = breaker(clock)
    changes: list[CircuitState] = []
    circuit.on_change(lambda state, reason: changes.append(state))
    for _ in range(2):
        circuit.before_call()
        circuit.record(UnavailableError("unavailable", status=503))
    assert circuit.state is CircuitState.CLOSED
    circuit.before_call()
    circuit.record(NetworkError("timed out"))
    assert circuit.state is CircuitState.OPEN
    assert changes == [CircuitState.OPEN]
    with pytest.raises(CircuitOpenError) as rejected:
        circuit.before_call(endpoint="/tickets/{id}")
    assert rejected.value.retry_after == pytest.approx(5.0)


def test_a_success_in_between_resets_the_count() -> None:
    circuit = breaker(Clock())
    for _ in range(5):
        circuit.record(UnavailableError("unavailable", status=503))
        circuit.record(UnavailableError("unavailable", status=503))
        circuit.record_success()
    assert circuit.closed


def test_answers_that_show_the_helpdesk_is_up_do_not_count() -> None:
    circuit = breaker(Clock(), threshold=1)
    for error in (
        NotFoundError("not found", status=404),
        ConflictError("conflict", status=422),
        RateLimitedError("rate limited", status=429),
    ):
        circuit.record(error)
    assert circuit.closed


def test_one_tickets_repeated_500_never_opens_the_circuit_but_many_tickets_500s_do() -> None:
    circuit = breaker(Clock())
    for _ in range(20):
        circuit.record(ServerError("server error", status=500, ticket_id=7))
    assert circuit.closed
    circuit.record(ServerError("server error", status=500, ticket_id=8))
    circuit.record(ServerError("server error", status=500, ticket_id=9))
    assert circuit.state is CircuitState.OPEN


def test_after_the_cool_down_one_probe_goes_and_its_success_closes() -> None:
    clock = Clock()
    circuit = breaker(clock, threshold=1)
    circuit.record(NetworkError("connection failed"))
    clock.now += 5.0
    circuit.before_call()  # the probe
    assert circuit.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        circuit.before_call()  # only one probe at a time
    circuit.record_success()
    assert circuit.closed
    circuit.before_call()


def test_a_failed_probe_opens_again_with_a_longer_cool_down_up_to_the_cap() -> None:
    clock = Clock()
    circuit = breaker(clock, threshold=1)
    circuit.record(NetworkError("connection failed"))
    waits = []
    for _ in range(4):
        clock.now += circuit.seconds_until_probe()
        circuit.before_call()
        circuit.record(NetworkError("connection failed"))
        assert circuit.state is CircuitState.OPEN
        waits.append(circuit.seconds_until_probe())
    assert waits == [10.0, 20.0, 20.0, 20.0]
    clock.now += 20.0
    circuit.before_call()
    circuit.record_success()
    circuit.record(NetworkError("connection failed"))
    assert circuit.seconds_until_probe() == 5.0  # closing resets the cool-down


def test_a_deferred_item_keeps_its_attempt_count() -> None:
    queue = WorkQueue(10, clock=lambda: 0.0)
    queue.offer(1, "poll")
    item = queue.take(timeout=0)
    assert item is not None
    queue.defer(item, 0.0, "circuit_open")
    again = queue.take(timeout=0)
    assert again is item and again.attempt == 0


# -- end to end, against the emulator ----------------------------------------------------------

FAST_CIRCUIT: dict[str, Any] = {
    "retry_backoff_initial_seconds": 0.01,
    "retry_backoff_max_seconds": 0.05,
    "circuit": {"failure_threshold": 5, "open_seconds": 0.3, "open_max_seconds": 0.6},
}


def _sample(service: Any, name: str, **labels: str) -> float:
    return service.metrics.registry.get_sample_value(name, labels) or 0.0


def _readiness(base: str) -> tuple[int, dict[str, Any]]:
    answer = requests.get(f"{base}/readyz", timeout=2)
    return answer.status_code, answer.json()


@pytest.mark.slow
def test_a_ticket_read_outage_leaves_tickets_queued_and_triaged_after_recovery(
    classifier: Any,
) -> None:
    port = free_port()
    with emulator_for(None, seed=False) as emulator:
        # Every ticket read answers 503, as when the helpdesk's app servers are down
        # behind a working proxy; searches still answer, so the poll finds the tickets.
        emulator.faults.add({"method": "GET", "path": r"^/api/v1/tickets/\d+$", "status": 503})
        settings = settings_for(
            emulator,
            port,
            http=FAST_CIRCUIT,
            ingest={"webhooks": False, "max_attempts": 2, "retry_backoff_seconds": 0.01},
        )
        with running(settings, classifier) as service:
            ids = [
                emulator.create_customer_ticket(f"Invoice {n} charged twice", "Please refund.")
                for n in range(12)
            ]
            assert wait_until(lambda: _readiness(service.url)[0] == 503, timeout=10)
            _, body = _readiness(service.url)
            assert "circuit" in body["problems"], body
            assert "helpdesk circuit" in body["problems"]["circuit"]
            time.sleep(2.0)  # the outage lasts; tickets must keep waiting, not fail
            assert _sample(service, "helpdesk_triage_tickets_total", outcome="failed") == 0
            emulator.faults.clear()
            assert wait_until(lambda: not emulator.ticket_ids(), timeout=30)
            adapter = reader(emulator)
            for ticket_id in ids:
                tags = adapter.get_ticket(ticket_id).tags
                assert "ai-triaged" in tags and "triage-error" not in tags, (ticket_id, tags)
            assert _sample(service, "helpdesk_triage_tickets_total", outcome="failed") == 0
            assert _sample(service, "helpdesk_triage_tickets_total", outcome="deferred") > 0
            assert (
                _sample(service, "helpdesk_triage_helpdesk_circuit_opened_total", helpdesk="zammad")
                >= 1
            )
            assert wait_until(lambda: _readiness(service.url)[0] == 200, timeout=10)
            assert (
                _sample(service, "helpdesk_triage_helpdesk_circuit_state", helpdesk="zammad") == 0
            )


@pytest.mark.slow
def test_with_the_whole_api_down_the_sidecar_backs_off_instead_of_hammering(
    classifier: Any,
) -> None:
    port = free_port()
    with emulator_for(None, seed=False) as emulator:
        settings = settings_for(
            emulator, port, http=FAST_CIRCUIT, ingest={"webhooks": False, "concurrency": 8}
        )
        with running(settings, classifier) as service:
            for n in range(20):
                emulator.create_customer_ticket(f"Printer {n} offline", "It does not print.")
            emulator.faults.add({"status": 503})
            assert wait_until(lambda: _readiness(service.url)[0] == 503, timeout=10)
            started = sum(emulator.stats.faults.values())
            time.sleep(3.0)
            during = sum(emulator.stats.faults.values()) - started
            # Open, only one probe per cool-down (0.3 s doubling to 0.6 s): a handful of
            # calls in 3 s, not hundreds.
            assert during <= 12, during
            assert _readiness(service.url)[0] == 503
            emulator.faults.clear()
            assert wait_until(lambda: not emulator.ticket_ids(), timeout=30)
            assert wait_until(lambda: _readiness(service.url)[0] == 200, timeout=10)
            assert _sample(service, "helpdesk_triage_tickets_total", outcome="failed") == 0


@pytest.fixture(scope="module")
def classifier() -> Any:
    from connector.classifier import Classifier
    from connector.config import load_settings

    return Classifier.load(load_settings().model.path, threads=1)
