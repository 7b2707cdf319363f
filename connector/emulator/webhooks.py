"""Webhook deliveries as a Zammad trigger sends them: signed, in the background, retried.

What Zammad does, confirmed in its source (lib/user_agent.rb sets the
signature; the trigger webhook job spec checks the headers):

- ``POST`` with a JSON body (``Content-Type: application/json; charset=utf-8``)
  and ``User-Agent: Zammad User Agent``;
- ``X-Zammad-Trigger``: the trigger's name; ``X-Zammad-Delivery``: a unique id
  per delivery (the same on every retry of it);
- ``X-Hub-Signature: sha1=<hex>``, the HMAC-SHA1 of the exact body bytes keyed
  with the webhook's signature token, only when a token is set;
- a delivery counts as done on any 2xx; otherwise it is retried 4 times
  (Zammad waits about 10, 20, 30 and 40 seconds) and then dropped.

The delays here are configurable so tests can use milliseconds. Deliveries
run on a small thread pool, never on the API's event loop, so a slow receiver
cannot hold up a ``POST /tickets`` answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from connector.emulator.stats import Stats

ZAMMAD_RETRY_DELAYS = (10.0, 20.0, 30.0, 40.0)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: str | None = None
    trigger: str = "helpdesk-triage: ticket created"
    retry_delays: tuple[float, ...] = ZAMMAD_RETRY_DELAYS
    connect_timeout: float = 4.0
    read_timeout: float = 30.0
    workers: int = 4


@dataclass(slots=True)
class Delivery:
    """One webhook delivery and what became of it."""

    delivery_id: str
    ticket_id: int
    body: bytes
    attempts: int = 0
    statuses: list[int | None] = field(default_factory=list)
    outcome: str = "pending"  # pending, delivered, dropped


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature`` value Zammad sends for ``body``."""
    return "sha1=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha1).hexdigest()


class WebhookDispatcher:
    """Sends each submitted payload in the background, with Zammad's retry schedule."""

    def __init__(self, config: WebhookConfig, stats: Stats) -> None:
        self.config = config
        self.stats = stats
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, config.workers), thread_name_prefix="emulator-webhook"
        )
        self._local = threading.local()
        self._lock = threading.Condition()
        self._pending = 0
        self.deliveries: list[Delivery] = []

    def submit(self, ticket_id: int, payload: Mapping[str, Any]) -> Delivery:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        delivery = Delivery(str(uuid.uuid4()), ticket_id, body)
        with self._lock:
            self.deliveries.append(delivery)
            self._pending += 1
        self.stats.webhook("queued")
        self._pool.submit(self._deliver, delivery)
        return delivery

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted delivery is delivered or dropped (for tests)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _deliver(self, delivery: Delivery) -> None:
        try:
            delays = (0.0, *self.config.retry_delays)
            for delay in delays:
                if delay and self._stop.wait(delay):
                    break
                if self._stop.is_set():
                    break
                status = self._attempt(delivery)
                if status is not None and 200 <= status < 300:
                    delivery.outcome = "delivered"
                    self.stats.webhook("delivered")
                    return
                self.stats.webhook("failed_attempts")
            delivery.outcome = "dropped"
            self.stats.webhook("dropped")
        finally:
            with self._lock:
                self._pending -= 1
                self._lock.notify_all()

    def _attempt(self, delivery: Delivery) -> int | None:
        delivery.attempts += 1
        self.stats.webhook("attempts", delivery.ticket_id)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Zammad User Agent",
            "X-Zammad-Trigger": self.config.trigger,
            "X-Zammad-Delivery": delivery.delivery_id,
        }
        if self.config.secret:
            headers["X-Hub-Signature"] = sign(self.config.secret, delivery.body)
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self._local.session = session
        try:
            response = session.post(
                self.config.url,
                data=delivery.body,
                headers=headers,
                timeout=(self.config.connect_timeout, self.config.read_timeout),
                allow_redirects=False,
            )
        except requests.RequestException:
            delivery.statuses.append(None)
            return None
        delivery.statuses.append(response.status_code)
        response.close()
        return response.status_code
