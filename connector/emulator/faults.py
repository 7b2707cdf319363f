"""Fault injection for reliability tests: error statuses, slow answers, dropped connections.

Rules are added with ``POST /_emulator/faults`` (or ``FaultInjector.add``) and
apply to the REST API only, never to the ``/_emulator`` admin routes. A rule:

    {"method": "GET", "path": "^/api/v1/tickets/\\d+$", "status": 429,
     "retry_after": "2", "delay_seconds": 0, "drop_connection": false, "times": 1}

``method`` (any when absent), ``path`` (a regular expression searched in the
request path, any when absent) and ``query`` (one searched in the raw query
string, such as ``o_id=7(&|$)`` for one ticket's tags) select requests; the first live rule that
matches wins and ``times`` counts down (absent: until cleared). Then:

- ``delay_seconds`` waits first (alone, it only slows the request down). The
  request is read in full before the wait and processed after it even when
  the client has given up meanwhile, as Zammad's application server does: a
  write answered after the client's read timeout still happens;
- ``drop_connection`` closes the TCP connection without answering, so the
  client sees a reset or a closed connection (``requests`` raises
  ``ConnectionError``), not an HTTP status;
- ``status`` answers with that status and Zammad's error body, plus
  ``Retry-After`` when ``retry_after`` is given (seconds or an HTTP date).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector.emulator.stats import Stats

ADMIN_PREFIX = "/_emulator"
_REASONS = {
    400: "Bad Request",
    401: "Authentication required",
    403: "Not authorized",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(slots=True)
class FaultRule:
    method: str | None
    path: re.Pattern[str] | None
    query: re.Pattern[str] | None = None
    status: int | None = None
    retry_after: str | None = None
    delay_seconds: float = 0.0
    drop_connection: bool = False
    times: int | None = None
    hits: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultRule:
        unknown = set(data) - {
            "method",
            "path",
            "query",
            "status",
            "retry_after",
            "delay_seconds",
            "drop_connection",
            "times",
        }
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        status = data.get("status")
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError("status must be an HTTP status code")
        times = data.get("times")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive integer")
        delay = float(data.get("delay_seconds") or 0.0)
        if not 0 <= delay <= 120:
            raise ValueError("delay_seconds must be between 0 and 120")
        drop = bool(data.get("drop_connection", False))
        if status is None and not drop and not delay:
            raise ValueError("a fault needs a status, drop_connection or delay_seconds")
        method = data.get("method")
        path = data.get("path")
        query = data.get("query")
        try:
            pattern = re.compile(str(path)) if path else None
            query_pattern = re.compile(str(query)) if query else None
        except re.error as error:
            raise ValueError(f"path or query is not a regular expression: {error}") from None
        retry_after = data.get("retry_after")
        return cls(
            method=str(method).upper() if method else None,
            path=pattern,
            query=query_pattern,
            status=status,
            retry_after=str(retry_after) if retry_after is not None else None,
            delay_seconds=delay,
            drop_connection=drop,
            times=times,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path.pattern if self.path else None,
            "query": self.query.pattern if self.query else None,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay_seconds": self.delay_seconds,
            "drop_connection": self.drop_connection,
            "times": self.times,
            "hits": self.hits,
        }


class FaultInjector:
    """The live rules; thread-safe, so tests may add rules while the server runs."""

    def __init__(self, stats: Stats) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._stats = stats

    def add(self, data: Mapping[str, Any]) -> FaultRule:
        rule = FaultRule.from_json(data)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._rules]

    def take(self, method: str, path: str, query: str = "") -> FaultRule | None:
        """The first live rule for this request, counted as used."""
        with self._lock:
            if not self._rules:
                return None
            for rule in self._rules:
                if rule.method and rule.method != method:
                    continue
                if rule.path and not rule.path.search(path):
                    continue
                if rule.query and not rule.query.search(query):
                    continue
                rule.hits += 1
                if rule.times is not None and rule.hits >= rule.times:
                    self._rules.remove(rule)
                break
            else:
                return None
        if rule.drop_connection:
            self._stats.fault("dropped_connection")
        elif rule.status is not None:
            self._stats.fault(f"status_{rule.status}")
        else:
            self._stats.fault("delayed")
        return rule


class FaultMiddleware:
    """An ASGI layer in front of the API that applies ``FaultInjector``'s rules."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        rule = self.injector.take(scope["method"], scope["path"], query)
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.delay_seconds:
            receive = await _read_in_full(receive)
            await asyncio.sleep(rule.delay_seconds)
        if rule.drop_connection:
            await _drop(send)
            return
        if rule.status is None:
            await self.app(scope, receive, send)
            return
        reason = _REASONS.get(rule.status, f"HTTP {rule.status}")
        body = json.dumps({"error": reason, "error_human": reason}).encode()
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if rule.retry_after is not None:
            headers.append((b"retry-after", rule.retry_after.encode()))
        await send({"type": "http.response.start", "status": rule.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _read_in_full(receive: Receive) -> Receive:
    """The request body, read now and replayed, so a client leaving later cannot cancel it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def replayed() -> Message:
        return replay.pop() if replay else {"type": "http.disconnect"}

    return replayed


async def _drop(send: Send) -> None:
    """Close the connection without a response.

    uvicorn's ``send`` is a method of the request cycle, which holds the
    connection's transport: closing that transport before any byte is written
    is what a crashed upstream looks like to the client. Without it (another
    server), announce a body and never send it, which also breaks the
    connection mid-answer.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)  # asyncio's and uvloop's transports both have it
    if callable(abort):
        abort()
        # Let the protocol see the disconnect before this request ends, so the
        # server does not try to answer on the dead connection.
        for _ in range(3):
            await asyncio.sleep(0)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"1024")],
        }
    )
