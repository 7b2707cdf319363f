"""The sidecar's HTTP surface: webhooks, /metrics, /healthz, /readyz.

Built on Starlette and served by uvicorn: an ASGI server made for long-running
services (keep-alive, graceful shutdown, httptools parsing), so a webhook is
answered in well under a millisecond of work while the workers, on their own
threads, do the slow part.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connector.health import Health
from connector.ingest.webhooks import WebhookReceiver
from connector.metrics import Metrics


def create_app(receiver: WebhookReceiver, health: Health, metrics: Metrics) -> Starlette:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        ready, problems = health.status()
        if ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "problems": problems}, status_code=503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/webhooks/{kind}", receiver.handle, methods=["POST"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )
