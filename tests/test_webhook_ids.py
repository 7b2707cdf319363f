"""Ticket ids in webhook deliveries: plain ASCII digits, bounded, or a 400.

The receiver runs under uvicorn on loopback with the real adapters, so what is
checked is what a helpdesk (or anyone who can reach the port) would see.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import uvicorn

from connector.adapters.base import HelpdeskAdapter
from connector.adapters.zammad import ZammadAdapter
from connector.adapters.znuny import ZnunyAdapter
from connector.config import IngestSettings, MarkerSettings, ZammadSettings, ZnunySettings
from connector.health import Health
from connector.http import HttpClient
from connector.ids import MAX_ID_DIGITS, parse_id
from connector.ingest.queue import WorkQueue
from connector.ingest.webhooks import WebhookReceiver
from connector.metrics import Metrics
from connector.server import create_app

SECRET = "hook-s3cret"


@dataclass
class Endpoint:
    url: str
    metrics: Metrics
    queue: WorkQueue
    envelope: Callable[[str], bytes]  # the raw JSON text of an id -> a delivery body
    headers: Callable[[bytes], dict[str, str]]

    def post(self, raw_id: str) -> requests.Response:
        body = self.envelope(raw_id)
        return requests.post(self.url, data=body, headers=self.headers(body), timeout=5)

    def count(self, result: str) -> float:
        kind = self.url.rsplit("/", 1)[-1]
        value = self.metrics.registry.get_sample_value(
            "helpdesk_triage_webhook_requests_total", {"helpdesk": kind, "result": result}
        )
        return value or 0.0


def _zammad() -> tuple[HelpdeskAdapter, Callable[[str], bytes], Callable[[bytes], dict[str, str]]]:
    adapter = ZammadAdapter(
        ZammadSettings(url="http://127.0.0.1:9", token="t", webhook_secret=SECRET),
        MarkerSettings(),
    )

    def headers(body: bytes) -> dict[str, str]:
        digest = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
        return {"X-Hub-Signature": f"sha1={digest}", "Content-Type": "application/json"}

    return adapter, (lambda raw: b'{"ticket": {"id": ' + raw.encode() + b"}}"), headers


def _znuny() -> tuple[HelpdeskAdapter, Callable[[str], bytes], Callable[[bytes], dict[str, str]]]:
    settings = ZnunySettings(
        url="http://127.0.0.1:9", username="triage", password="pw", webhook_secret=SECRET
    )
    adapter = ZnunyAdapter(settings, HttpClient(helpdesk="znuny", base_url=settings.url))

    def envelope(raw: str) -> bytes:
        return b'{"Ticket": {"TicketID": ' + raw.encode() + b'}, "Event": {"Event": "x"}}'

    return adapter, envelope, lambda body: {"X-Triage-Secret": SECRET}


@contextmanager
def serving(build: Callable[[], tuple[HelpdeskAdapter, Any, Any]]) -> Iterator[Endpoint]:
    adapter, envelope, headers = build()
    metrics = Metrics()
    health = Health(metrics)
    queue = WorkQueue(100)
    receiver = WebhookReceiver(adapter, queue, IngestSettings(), metrics, health)
    app = create_app(receiver, health, metrics)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield Endpoint(
            f"http://127.0.0.1:{port}/webhooks/{adapter.kind}", metrics, queue, envelope, headers
        )
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


BAD_IDS = [
    pytest.param(json.dumps("\u00b2"), id="superscript-two"),
    pytest.param(json.dumps("\u0661"), id="arabic-indic-one"),
    pytest.param(json.dumps("\uff11\uff12"), id="fullwidth-digits"),
    pytest.param(json.dumps("9" * 5000), id="5000-digit-string"),
    pytest.param("9" * 5000, id="5000-digit-number"),
    pytest.param(json.dumps("1" * (MAX_ID_DIGITS + 1)), id="19-digit-string"),
    pytest.param(str(10**MAX_ID_DIGITS), id="19-digit-number"),
    pytest.param("-3", id="negative"),
    pytest.param(json.dumps("-3"), id="negative-string"),
    pytest.param("0", id="zero"),
    pytest.param(json.dumps("0"), id="zero-string"),
    pytest.param("12.0", id="float"),
    pytest.param("1.5", id="fraction"),
    pytest.param("1e3", id="exponent"),
    pytest.param(json.dumps("12.0"), id="float-string"),
    pytest.param("true", id="true"),
    pytest.param("false", id="false"),
    pytest.param("null", id="null"),
    pytest.param(json.dumps(""), id="empty-string"),
    pytest.param(json.dumps("12\n"), id="trailing-newline"),
    pytest.param("[12]", id="list"),
]


@pytest.mark.parametrize("helpdesk", [_zammad, _znuny], ids=["zammad", "znuny"])
@pytest.mark.parametrize("raw_id", BAD_IDS)
def test_an_id_that_is_not_plain_ascii_digits_is_a_400(
    helpdesk: Callable[[], Any], raw_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serving(helpdesk) as endpoint:
        answer = endpoint.post(raw_id)
        assert answer.status_code == 400
        assert answer.json()["error"] == "malformed"
        assert "ticket id" in answer.json()["detail"]
        assert endpoint.count("malformed") == 1
        assert endpoint.queue.depth() == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("helpdesk", [_zammad, _znuny], ids=["zammad", "znuny"])
@pytest.mark.parametrize("raw_id", ["42", '"42"', str(10**MAX_ID_DIGITS - 1)])
def test_a_plain_positive_id_is_queued(helpdesk: Callable[[], Any], raw_id: str) -> None:
    with serving(helpdesk) as endpoint:
        answer = endpoint.post(raw_id)
        assert answer.status_code == 202
        assert answer.json()["ticket_id"] == int(json.loads(raw_id))
        assert endpoint.count("accepted") == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, 42),
        ("42", 42),
        (" 42 ", 42),
        ("007", 7),
        (10**MAX_ID_DIGITS - 1, 10**MAX_ID_DIGITS - 1),
        ("\u0661", None),
        ("\u00b2", None),
        ("\u0967", None),  # Devanagari one
        ("4\u00a02", None),
        ("9" * 5000, None),
        (10**MAX_ID_DIGITS, None),
        (-1, None),
        (0, None),
        ("0", None),
        ("+4", None),
        (4.0, None),
        (True, None),
        (None, None),
        ("", None),
    ],
)
def test_parse_id(value: object, expected: int | None) -> None:
    assert parse_id(value) == expected
