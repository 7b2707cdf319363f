"""The whole service against the real Request Tracker: poll, triage, and check RT's own record.

RT has no webhooks, so the poller and the sweep find the tickets. With thresholds
at zero every prediction is applied, so what RT must show follows from the
policy: the mapped queue, the mapped priority, one internal comment (never a
correspondence to the requestor), label tags, and the marker custom field.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from connector.classifier import Classifier, TextInput
from connector.config import load_settings
from connector.service import Service
from tests.integration.rt_server import RTAdmin, RTServer, require_server
from tests.lost_answers import lose_answers

pytestmark = pytest.mark.rt

SUBJECT = "Refund for a double charge"
TEXT = (
    "Hello, my credit card was charged twice for the last invoice. "
    "Please refund the duplicate payment as soon as possible."
)


@pytest.fixture(scope="module")
def server() -> RTServer:
    return require_server()


@pytest.fixture(scope="module")
def admin(server: RTServer) -> Iterator[RTAdmin]:
    client = RTAdmin(server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load(load_settings().model.path, threads=1)


def settings_for(server: RTServer, classifier: Classifier, target: str) -> Any:
    # Every queue label goes to one RT queue, so the expected queue does not
    # depend on which label the model picks.
    queue_map = {label: target for label in classifier.labels["queue"]}
    return load_settings(
        helpdesk="rt",
        rt={
            "url": server.url,
            "token": server.token,
            "marker_field": server.marker_field,
            "tags_field": server.tags_field,
        },
        server={"host": "127.0.0.1", "port": 0, "drain_seconds": 5},
        ingest={
            "webhooks": False,
            "poll_interval_seconds": 0.5,
            "sweep_interval_seconds": 3600,
            "retry_backoff_seconds": 0.1,
            "retry_backoff_max_seconds": 0.5,
        },
        policy={
            "queue_map": queue_map,
            "heads": {
                "queue": {"apply": 0.0, "suggest": 0.0},
                "priority": {"apply": 0.0, "suggest": 0.0},
            },
        },
        logging={"level": "WARNING", "format": "text"},
    )


def wait_for(condition: Any, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return bool(condition())


def run_until_marked(service: Service, server: RTServer, admin: RTAdmin, ticket_id: int) -> None:
    """Run the service until RT shows the ticket's triaged marker, then stop it."""
    service.start_server_thread()
    try:
        service.check()
        service.start_background()
        assert wait_for(
            lambda: (
                admin.custom_field(ticket_id, server.marker_field)[:1] != []
                and admin.custom_field(ticket_id, server.marker_field)[0].startswith("triaged ")
            )
        ), "RT never received the triaged marker"
    finally:
        service.stop()


def test_the_service_triages_an_rt_ticket_as_the_policy_says(
    server: RTServer, admin: RTAdmin, classifier: Classifier
) -> None:
    start_queue, target = server.queues[0], server.queues[1]
    ticket_id = admin.create_ticket(queue=start_queue, subject=SUBJECT, content=TEXT)
    predicted = classifier.predict([TextInput(SUBJECT, TEXT)])[0]
    settings = settings_for(server, classifier, target)
    expected_priority = settings.rt.priority_levels[
        {"low": "Low", "medium": "Medium", "high": "High"}[predicted["priority"].label]
    ]

    service = Service(settings, classifier=classifier)
    run_until_marked(service, server, admin, ticket_id)

    ticket = admin.ticket(ticket_id)
    assert ticket["Queue"]["Name"] == target
    assert int(ticket["Priority"]) == expected_priority
    kinds = [t["Type"] for t in admin.transactions(ticket_id)]
    assert kinds.count("Comment") == 1
    assert "Correspond" not in kinds
    comment = next(t for t in admin.transactions(ticket_id) if t["Type"] == "Comment")
    text = admin.transaction_text(int(comment["id"]))
    assert f"queue: {predicted['queue'].label}" in text
    assert "helpdesk-triage note " in text
    labels = admin.custom_field(ticket_id, server.tags_field)
    assert any(value.startswith("ai:queue:") for value in labels)


def test_a_comment_rt_took_but_did_not_confirm_is_finished_as_decided(
    server: RTServer, admin: RTAdmin, classifier: Classifier
) -> None:
    start_queue, target = server.queues[0], server.queues[1]
    ticket_id = admin.create_ticket(queue=start_queue, subject=SUBJECT, content=TEXT)
    settings = settings_for(server, classifier, target)
    settings = settings.model_copy(
        update={"http": settings.http.model_copy(update={"write_settle_seconds": 1.0})}
    )
    records: list[Any] = []
    service = Service(
        settings,
        classifier=classifier,
        on_record=lambda record, item: records.append(record) if record.decisions else None,
    )
    # RT writes the comment; the answer never reaches the sidecar.
    lost = lose_answers(service.adapter._http, "POST", rf"/ticket/{ticket_id}/comment$")
    run_until_marked(service, server, admin, ticket_id)

    assert lost, "the comment was never sent"
    kinds = [t["Type"] for t in admin.transactions(ticket_id)]
    assert kinds.count("Comment") == 1
    assert admin.ticket(ticket_id)["Queue"]["Name"] == target
    (record,) = [r for r in records if r.ticket_id == ticket_id]
    assert {d.head: d.action.value for d in record.decisions}["queue"] == "apply"
    assert "queue" in record.changed
    labels = admin.custom_field(ticket_id, server.tags_field)
    assert any(value.startswith("ai:queue:") for value in labels)
    assert not any(value.startswith("ai:suggest:queue:") for value in labels)
