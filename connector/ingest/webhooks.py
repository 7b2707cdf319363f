"""The webhook receiver: verify, take the ticket id, enqueue, answer at once.

A delivery is a hint, never content: the adapter checks its signature (or
shared secret) on the raw bytes and reads only the ticket id; the worker
re-reads the ticket over REST. The body is capped while it is read, so an
oversized delivery costs at most the cap. Every rejection has its own status
and metric label, and nothing a rejected delivery says is kept.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connector.adapters.base import HelpdeskAdapter, WebhookRejected
from connector.config import IngestSettings
from connector.health import Health
from connector.ingest.queue import Offer, WorkQueue
from connector.metrics import Metrics

log = logging.getLogger("connector.webhooks")

REJECTION_STATUS = {
    "bad_signature": 401,
    "missing_signature": 401,
    "malformed": 400,
    "ignored": 202,
}
SIGNATURE_REASONS = frozenset({"bad_signature", "missing_signature"})
OVERLOAD_RETRY_AFTER_SECONDS = 5


class DeliveryLog:
    """Recently accepted delivery ids, so a redelivered webhook is answered, not re-queued."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, delivery_id: str) -> bool:
        with self._lock:
            if delivery_id in self._seen:
                self._seen.move_to_end(delivery_id)
                return True
            return False

    def remember(self, delivery_id: str) -> None:
        with self._lock:
            self._seen[delivery_id] = None
            self._seen.move_to_end(delivery_id)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)


class BodyTooLarge(Exception):
    pass


class WebhookReceiver:
    def __init__(
        self,
        adapter: HelpdeskAdapter,
        queue: WorkQueue,
        settings: IngestSettings,
        metrics: Metrics,
        health: Health,
    ) -> None:
        self.adapter = adapter
        self.queue = queue
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.deliveries = DeliveryLog()

    async def handle(self, request: Request) -> Response:
        kind = request.path_params.get("kind", "")
        if not self.settings.webhooks or kind != self.adapter.kind:
            return JSONResponse({"error": f"no webhook endpoint for {kind!r}"}, status_code=404)
        if not self.adapter.supports_webhooks:
            return JSONResponse({"error": f"{kind} has no webhooks"}, status_code=404)
        if self.health.is_shutting_down:
            return self._overloaded("shutting down")
        try:
            body = await self._read_body(request)
        except BodyTooLarge:
            self._count("too_large")
            return JSONResponse(
                {"error": f"body larger than {self.settings.max_body_bytes} bytes"},
                status_code=413,
            )
        headers = {key.lower(): value for key, value in request.headers.items()}
        try:
            event = self.adapter.verify_webhook(headers, body)
        except WebhookRejected as rejected:
            self._count(rejected.reason)
            status = REJECTION_STATUS.get(rejected.reason, 400)
            log.warning("webhook rejected", extra={"reason": rejected.reason, "status": status})
            answer = {"error": rejected.reason}
            if rejected.detail and rejected.reason not in SIGNATURE_REASONS:
                # Says what is wrong with the body, so a helpdesk admin can fix the trigger;
                # a signature failure gets no hints.
                answer["detail"] = rejected.detail
            return JSONResponse(answer, status_code=status)
        if event.delivery_id and self.deliveries.seen(event.delivery_id):
            self._count("duplicate")
            return JSONResponse({"status": "duplicate", "ticket_id": event.ticket_id})
        result = self.queue.offer(event.ticket_id, "webhook")
        self.metrics.queue_depth.set(self.queue.depth())
        if result in (Offer.FULL, Offer.CLOSED):
            # Not remembered: the helpdesk's redelivery must be allowed through.
            return self._overloaded("queue full" if result is Offer.FULL else "shutting down")
        if event.delivery_id:
            self.deliveries.remember(event.delivery_id)
        self._count("accepted" if result is Offer.ACCEPTED else "duplicate")
        return JSONResponse({"status": "queued", "ticket_id": event.ticket_id}, status_code=202)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise BodyTooLarge
        return bytes(body)

    def _overloaded(self, why: str) -> Response:
        self._count("overloaded")
        return JSONResponse(
            {"error": why},
            status_code=503,
            headers={"Retry-After": str(OVERLOAD_RETRY_AFTER_SECONDS)},
        )

    def _count(self, result: str) -> None:
        self.metrics.webhooks.labels(helpdesk=self.adapter.kind, result=result).inc()
