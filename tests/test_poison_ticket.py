"""A poison ticket (its every read answers 500) is retried, marked and counted alone.

End to end against the emulator over loopback HTTP, without Elasticsearch, where
the poll reads each candidate's tags: the poll and the sweep must go on with the
other tickets, and the poison ticket's 500s must not open the circuit.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from connector.adapters.zammad import ZammadAdapter
from connector.config import load_settings
from connector.emulator import EmulatorServer
from tests.test_service_e2e import (
    emulator_for,
    free_port,
    running,
    settings_for,
    triaged,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier() -> Any:
    from connector.classifier import Classifier

    return Classifier.load(load_settings().model.path, threads=1)


def poison(emulator: EmulatorServer, ticket_id: int) -> None:
    """Every read of the ticket, and of its tags, answers 500; writes still work."""
    emulator.faults.add({"method": "GET", "path": rf"^/api/v1/tickets/{ticket_id}$", "status": 500})
    emulator.faults.add(
        {
            "method": "GET",
            "path": r"^/api/v1/tags$",
            "query": rf"o_id={ticket_id}(&|$)",
            "status": 500,
        }
    )


def test_a_poison_ticket_does_not_stall_polls_and_ends_marked(classifier: Any) -> None:
    port = free_port()
    with emulator_for(None, seed=False) as emulator:
        bad = emulator.create_customer_ticket("Broken ticket", "Reading this one fails.")
        poison(emulator, bad)
        settings = settings_for(
            emulator,
            port,
            zammad={"url": emulator.url, "token": emulator.token, "use_search": False},
            ingest={"webhooks": False, "max_attempts": 3, "retry_backoff_seconds": 0.05},
            http={"circuit": {"failure_threshold": 3}},
        )
        with running(settings, classifier) as service:
            time.sleep(0.5)  # a few polls run with the poison ticket among the candidates
            good = [
                emulator.create_customer_ticket(f"Invoice {n} charged twice", "Please refund.")
                for n in range(3)
            ]
            assert wait_until(lambda: all(triaged(emulator, t) for t in good), timeout=20)

            def sample(name: str, **labels: str) -> float:
                return service.metrics.registry.get_sample_value(name, labels) or 0.0

            assert wait_until(
                lambda: sample("helpdesk_triage_tickets_total", outcome="failed") == 1, timeout=10
            )
            assert sample("helpdesk_triage_polls_total", kind="poll", result="server") == 0
            assert sample("helpdesk_triage_polls_total", kind="sweep", result="server") == 0
            assert sample("helpdesk_triage_polls_total", kind="poll", result="ok") > 0
            # One ticket's 500s are its own trouble: the helpdesk is not taken to be down.
            opened = sample("helpdesk_triage_helpdesk_circuit_opened_total", helpdesk="zammad")
            assert opened == 0
            emulator.faults.clear()
            reader_settings = load_settings(zammad={"url": emulator.url, "token": emulator.token})
            adapter = ZammadAdapter(reader_settings.zammad, reader_settings.markers)
            assert "triage-error" in adapter.get_ticket(bad).tags
