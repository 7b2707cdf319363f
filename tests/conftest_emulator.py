"""Shared helpers for tests that run the Zammad emulator over real HTTP on loopback.

Test modules load the fixtures with ``pytest_plugins = ("tests.conftest_emulator",)``
(pytest loads only ``conftest.py`` by itself).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from connector.emulator import DEMO_TOKEN, EmulatorServer

FAST_RETRIES = (0.01, 0.01, 0.01, 0.01)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A tiny HTTP endpoint that records webhook deliveries.

    ``fail_first`` answers the first N deliveries with 500; ``gate``, when set,
    holds every delivery until the test sets it; ``handle`` may replace the
    answer (status code) for a delivery.
    """

    fail_first: int = 0
    gate: threading.Event | None = None
    handle: Callable[[Delivery], int] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    url: str = ""

    def server(self, *, secret: str | None = "hook-s3cret", **kwargs: Any) -> EmulatorServer:
        """An emulator that delivers its webhooks here, retrying after 10 ms instead of 10 s."""
        return EmulatorServer(
            webhook_url=self.url,
            webhook_secret=secret,
            webhook_retry_delays=FAST_RETRIES,
            **kwargs,
        )

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        return all(self.arrived.acquire(timeout=timeout) for _ in range(count))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    state = WebhookReceiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            delivery = Delivery({k.lower(): v for k, v in self.headers.items()}, body)
            if state.gate is not None:
                state.gate.wait(10)
            with lock:
                state.deliveries.append(delivery)
                failing = len(state.deliveries) <= state.fail_first
            status = 500 if failing else 200
            if state.handle is not None:
                status = state.handle(delivery)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            state.arrived.release()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/webhook"
    try:
        yield state
    finally:
        if state.gate is not None:
            state.gate.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def api(emulator: EmulatorServer) -> Iterator[requests.Session]:
    """A session authenticated as the triage user."""
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = f"Token token={DEMO_TOKEN}"
    with session:
        yield session
