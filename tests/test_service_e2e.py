"""The service end to end over real HTTP: emulator <-> sidecar, bundled model, real onnxruntime.

Webhook path, poll path, shadow mode, thresholds, start-up mapping errors,
retries and faults, two racing instances, re-triage, webhook rejections.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from connector.adapters.zammad import ZammadAdapter
from connector.config import Settings, load_settings
from connector.emulator import EmulatorServer
from connector.errors import ConfigError
from connector.footer import NOTE
from connector.service import Service

SECRET = "e2e-hook-secret"
FAST_RETRIES = (0.05, 0.05, 0.05, 0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def classifier() -> Any:
    from connector.classifier import Classifier

    return Classifier.load(load_settings().model.path, threads=1)


@contextmanager
def emulator_for(port: int | None, *, seed: bool = False) -> Iterator[EmulatorServer]:
    server = EmulatorServer(
        seed=seed,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/zammad" if port else None,
        webhook_secret=SECRET if port else None,
        webhook_retry_delays=FAST_RETRIES,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def settings_for(emulator: EmulatorServer, port: int, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "helpdesk": "zammad",
        "zammad": {"url": emulator.url, "token": emulator.token, "webhook_secret": SECRET},
        "server": {"host": "127.0.0.1", "port": port, "drain_seconds": 5},
        "ingest": {
            "poll_interval_seconds": 0.2,
            "poll_overlap_seconds": 2,
            "sweep_interval_seconds": 3600,
            "retry_backoff_seconds": 0.05,
            "retry_backoff_max_seconds": 0.2,
            "concurrency": 4,
        },
        "http": {"retry_backoff_initial_seconds": 0.01, "retry_backoff_max_seconds": 0.05},
        "logging": {"level": "WARNING", "format": "text"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_settings(**base)


@contextmanager
def running(settings: Settings, classifier: Any) -> Iterator[Service]:
    service = Service(settings, classifier=classifier)
    service.start_server_thread()
    try:
        service.check()
        service.start_background()
        yield service
    finally:
        service.stop()


def reader(emulator: EmulatorServer) -> ZammadAdapter:
    settings = load_settings(zammad={"url": emulator.url, "token": emulator.token})
    return ZammadAdapter(settings.zammad, settings.markers, settings.http)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def triaged(emulator: EmulatorServer, ticket_id: int) -> bool:
    return ticket_id not in emulator.ticket_ids()


def notes(emulator: EmulatorServer, ticket_id: int) -> int:
    ticket = reader(emulator).get_ticket(ticket_id)
    return sum(1 for f in ticket.footers if f.startswith(f"helpdesk-triage {NOTE} "))


BILLING = (
    "Invoice charged twice",
    "Hello, my credit card was charged twice for the October invoice. Please refund the "
    "duplicate payment and send a corrected invoice.",
)


def test_webhook_path_triages_a_new_ticket_once(classifier: Any) -> None:
    port = free_port()
    with emulator_for(port) as emulator:
        settings = settings_for(emulator, port, ingest={"poll": False, "sweep": False})
        with running(settings, classifier) as service:
            ticket_id = emulator.create_customer_ticket(*BILLING)
            assert wait_until(lambda: triaged(emulator, ticket_id))
            ticket = reader(emulator).get_ticket(ticket_id)
            assert "ai-triaged" in ticket.tags
            assert any(
                t.startswith("ai:queue:") or t.startswith("ai:suggest:queue:") for t in ticket.tags
            )
            assert not ticket.claims
            assert notes(emulator, ticket_id) == 1
            accepted = service.metrics.registry.get_sample_value(
                "helpdesk_triage_webhook_requests_total",
                {"helpdesk": "zammad", "result": "accepted"},
            )
            assert accepted == 1


def test_poll_path_finds_tickets_without_webhooks(classifier: Any) -> None:
    port = free_port()
    with emulator_for(None) as emulator:
        settings = settings_for(emulator, port, ingest={"webhooks": False})
        with running(settings, classifier):
            ids = [emulator.create_customer_ticket(*BILLING) for _ in range(3)]
            assert wait_until(lambda: all(triaged(emulator, i) for i in ids))
            assert [notes(emulator, i) for i in ids] == [1, 1, 1]


def test_startup_sweep_triages_what_was_waiting(classifier: Any) -> None:
    port = free_port()
    with emulator_for(None, seed=True) as emulator:
        waiting = emulator.ticket_ids()
        assert len(waiting) > 10
        settings = settings_for(emulator, port, ingest={"webhooks": False, "poll": False})
        with running(settings, classifier):
            assert wait_until(lambda: not emulator.ticket_ids(), timeout=60)
        for ticket_id in waiting[:5]:
            assert notes(emulator, ticket_id) == 1


def test_shadow_mode_changes_nothing(classifier: Any) -> None:
    port = free_port()
    with emulator_for(port) as emulator:
        settings = settings_for(emulator, port, policy={"mode": "shadow"})
        with running(settings, classifier) as service:
            ticket_id = emulator.create_customer_ticket(*BILLING)
            assert wait_until(
                lambda: (
                    service.metrics.registry.get_sample_value(
                        "helpdesk_triage_tickets_total", {"outcome": "shadow"}
                    )
                    == 1
                )
            )
            writes = emulator.stats.for_ticket(ticket_id)
            assert writes["ticket_updates"] == writes["tags_added"] == 0
            assert writes["internal_notes_created"] == writes["shared_drafts_written"] == 0
            ticket = reader(emulator).get_ticket(ticket_id)
            assert ticket.queue == "Users"
            assert not ticket.tags


@pytest.mark.parametrize(
    ("heads", "expect_tag", "outcome"),
    [
        ({"queue": {"apply": 0.0, "suggest": 0.0}}, "ai:queue:", "applied"),
        ({"queue": {"apply": 1.0, "suggest": 1.0}}, "needs-review", "review"),
        (
            {
                "queue": {"apply": 1.0, "suggest": 0.0},
                "type": {"apply": 1.0, "suggest": 1.0, "review_when_unsure": False},
                "sentiment": {"apply": 1.0, "suggest": 1.0, "review_when_unsure": False},
            },
            "ai:suggest:queue:",
            "suggested",
        ),
    ],
)
def test_thresholds_decide_between_apply_and_review(
    classifier: Any, heads: dict[str, Any], expect_tag: str, outcome: str
) -> None:
    port = free_port()
    with emulator_for(port) as emulator:
        policy = {
            "heads": {
                **heads,
                "priority": {"apply": 1.0, "suggest": 1.0, "review_when_unsure": False},
            }
        }
        settings = settings_for(emulator, port, policy=policy)
        with running(settings, classifier) as service:
            ticket_id = emulator.create_customer_ticket(*BILLING)
            assert wait_until(lambda: triaged(emulator, ticket_id))
            ticket = reader(emulator).get_ticket(ticket_id)
            assert any(t.startswith(expect_tag) for t in ticket.tags)
            if outcome == "applied":
                assert ticket.queue != "Users"
            else:
                assert ticket.queue == "Users"
            count = service.metrics.registry.get_sample_value(
                "helpdesk_triage_tickets_total", {"outcome": outcome}
            )
            assert count == 1


def test_a_label_mapped_to_a_missing_queue_stops_startup(classifier: Any) -> None:
    port = free_port()
    with emulator_for(None) as emulator:
        settings = settings_for(
            emulator, port, policy={"queue_map": {"Billing and Payments": "Finance"}}
        )
        service = Service(settings, classifier=classifier)
        try:
            with pytest.raises(ConfigError, match="'Billing and Payments' maps to queue 'Finance'"):
                service.check()
            ready, problems = service.health.status()
            assert not ready and "mapping" in problems
        finally:
            service.stop()


def test_faults_and_rate_limits_still_give_exactly_one_effect(classifier: Any) -> None:
    port = free_port()
    with emulator_for(port) as emulator:
        emulator.faults.add(
            {"method": "PUT", "path": r"^/api/v1/tickets/\d+$", "status": 503, "times": 1}
        )
        emulator.faults.add(
            {
                "method": "GET",
                "path": r"^/api/v1/tickets/\d+",
                "status": 429,
                "retry_after": "0",
                "times": 2,
            }
        )
        emulator.faults.add(
            {"method": "POST", "path": "^/api/v1/tags/add$", "drop_connection": True, "times": 1}
        )
        settings = settings_for(emulator, port)
        with running(settings, classifier):
            ticket_id = emulator.create_customer_ticket(*BILLING)
            assert wait_until(lambda: triaged(emulator, ticket_id))
        assert notes(emulator, ticket_id) == 1
        assert emulator.stats.for_ticket(ticket_id)["internal_notes_created"] == 1
        assert sum(emulator.stats.faults.values()) == 4


def test_two_instances_polling_the_same_helpdesk_triage_each_ticket_once(classifier: Any) -> None:
    with emulator_for(None) as emulator:
        ids = [emulator.create_customer_ticket(*BILLING) for _ in range(12)]
        first = settings_for(emulator, free_port(), ingest={"webhooks": False})
        second = settings_for(emulator, free_port(), ingest={"webhooks": False})
        with running(first, classifier), running(second, classifier):
            assert wait_until(lambda: all(triaged(emulator, i) for i in ids), timeout=60)
            time.sleep(1.0)  # let any loser finish stepping back
        assert [emulator.stats.for_ticket(i)["internal_notes_created"] for i in ids] == [1] * 12
        for ticket_id in ids:
            assert not reader(emulator).get_ticket(ticket_id).claims


def test_retriage_on_request_runs_again_and_consumes_the_request(classifier: Any) -> None:
    port = free_port()
    with emulator_for(None) as emulator:
        settings = settings_for(emulator, port, ingest={"webhooks": False})
        with running(settings, classifier):
            ticket_id = emulator.create_customer_ticket(*BILLING)
            assert wait_until(lambda: triaged(emulator, ticket_id))
            session = requests.Session()
            session.headers["Authorization"] = f"Token token={emulator.token}"
            session.post(
                f"{emulator.api_url}/tags/add",
                json={"object": "Ticket", "o_id": ticket_id, "item": "retriage"},
                timeout=5,
            ).raise_for_status()
            assert wait_until(lambda: notes(emulator, ticket_id) == 2)
            assert wait_until(lambda: "retriage" not in reader(emulator).get_ticket(ticket_id).tags)
        assert notes(emulator, ticket_id) == 2


def sign(body: bytes) -> str:
    return "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()


def test_webhook_rejections_have_their_own_status(classifier: Any) -> None:
    port = free_port()
    with emulator_for(None) as emulator:
        settings = settings_for(
            emulator, port, ingest={"poll": False, "sweep": False, "max_body_bytes": 2048}
        )
        with running(settings, classifier) as service:
            url = f"{service.url}/webhooks/zammad"
            body = json.dumps({"ticket": {"id": 999}}).encode()
            bad = requests.post(url, data=body, headers={"X-Hub-Signature": "sha1=00"}, timeout=5)
            assert bad.status_code == 401
            missing = requests.post(url, data=body, timeout=5)
            assert missing.status_code == 401
            tampered = body.replace(b"999", b"998")
            replay = requests.post(
                url, data=tampered, headers={"X-Hub-Signature": sign(body)}, timeout=5
            )
            assert replay.status_code == 401
            junk = b"{not json"
            malformed = requests.post(
                url, data=junk, headers={"X-Hub-Signature": sign(junk)}, timeout=5
            )
            assert malformed.status_code == 400
            huge = b'{"ticket": {"id": 1}, "pad": "' + b"x" * 4096 + b'"}'
            too_large = requests.post(
                url, data=huge, headers={"X-Hub-Signature": sign(huge)}, timeout=5
            )
            assert too_large.status_code == 413
            wrong_kind = requests.post(f"{service.url}/webhooks/rt", data=body, timeout=5)
            assert wrong_kind.status_code == 404
            good = requests.post(
                url,
                data=body,
                headers={"X-Hub-Signature": sign(body), "X-Zammad-Delivery": "d-1"},
                timeout=5,
            )
            assert good.status_code == 202
            again = requests.post(
                url,
                data=body,
                headers={"X-Hub-Signature": sign(body), "X-Zammad-Delivery": "d-1"},
                timeout=5,
            )
            assert again.json()["status"] == "duplicate"
            value = service.metrics.registry.get_sample_value
            labels = {"helpdesk": "zammad"}
            assert (
                value(
                    "helpdesk_triage_webhook_requests_total", {**labels, "result": "bad_signature"}
                )
                == 2
            )
            assert (
                value(
                    "helpdesk_triage_webhook_requests_total",
                    {**labels, "result": "missing_signature"},
                )
                == 1
            )
            assert (
                value("helpdesk_triage_webhook_requests_total", {**labels, "result": "malformed"})
                == 1
            )
            assert (
                value("helpdesk_triage_webhook_requests_total", {**labels, "result": "too_large"})
                == 1
            )


def test_a_full_queue_answers_503_with_retry_after(classifier: Any) -> None:
    port = free_port()
    with emulator_for(None) as emulator:
        settings = settings_for(
            emulator, port, ingest={"poll": False, "sweep": False, "queue_size": 1}
        )
        service = Service(settings, classifier=classifier)
        service.start_server_thread()  # workers not started: the queue only fills
        try:
            url = f"{service.url}/webhooks/zammad"
            answers = []
            for ticket_id in (1, 2):
                body = json.dumps({"ticket": {"id": ticket_id}}).encode()
                answers.append(
                    requests.post(
                        url, data=body, headers={"X-Hub-Signature": sign(body)}, timeout=5
                    )
                )
            assert answers[0].status_code == 202
            assert answers[1].status_code == 503
            assert answers[1].headers["Retry-After"] == "5"
        finally:
            service.stop()


def test_health_metrics_and_readiness_endpoints(classifier: Any) -> None:
    port = free_port()
    with emulator_for(None) as emulator:
        settings = settings_for(emulator, port, ingest={"webhooks": False})
        service = Service(settings, classifier=classifier)
        service.start_server_thread()
        try:
            assert requests.get(f"{service.url}/healthz", timeout=5).status_code == 200
            not_ready = requests.get(f"{service.url}/readyz", timeout=5)
            assert not_ready.status_code == 503
            assert "helpdesk" in not_ready.json()["problems"]
            service.check()
            assert requests.get(f"{service.url}/readyz", timeout=5).status_code == 200
            metrics = requests.get(f"{service.url}/metrics", timeout=5).text
            assert "helpdesk_triage_model_info{" in metrics
            service.drain()
            assert requests.get(f"{service.url}/readyz", timeout=5).json()["problems"] == {
                "shutdown": "shutting down"
            }
        finally:
            service.stop()


def test_an_agent_only_token_on_zammad_before_6_5_triages(classifier: Any) -> None:
    port = free_port()
    emulator = EmulatorServer(
        seed=False,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/zammad",
        webhook_secret=SECRET,
        webhook_retry_delays=FAST_RETRIES,
        groups_need_admin=True,
    )
    emulator.start()
    try:
        settings = settings_for(emulator, port, ingest={"poll": False, "sweep": False})
        with running(settings, classifier):
            ticket_id = emulator.create_customer_ticket(*BILLING)
            assert wait_until(lambda: triaged(emulator, ticket_id))
        assert notes(emulator, ticket_id) == 1
    finally:
        emulator.stop()
