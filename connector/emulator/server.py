"""Run the emulator in-process: uvicorn on a background thread, on loopback.

The HTTP server is uvicorn with the ``httptools`` parser, serving a Starlette
application. Both are already dependencies of the sidecar (its own webhook and
metrics server). Measured against the Zammad adapter, the emulator spends about
0.15 to 0.25 ms of CPU per request (most of it in uvicorn's protocol handling,
not in the handlers), so one core serves several thousand small JSON requests a
second, which the end-to-end benchmark needs (about 8.5 requests per triaged
ticket, see docs/benchmarks.md). The standard library's
``http.server`` would add no dependency, but it parses every request in Python
on a thread per connection and cannot abort a connection before answering,
which the fault injection needs.

Typical use in a test::

    with EmulatorServer(webhook_url=receiver_url, webhook_secret="s3cret") as emulator:
        adapter = ZammadAdapter(ZammadSettings(url=emulator.url, token=emulator.token), ...)
        ...
        assert emulator.stats.for_ticket(7)["internal_notes_created"] == 1
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from connector.emulator import DEMO_TOKEN
from connector.emulator import seed as seeding
from connector.emulator.api import EmulatorApp
from connector.emulator.faults import FaultInjector
from connector.emulator.stats import Stats
from connector.emulator.store import Store, User
from connector.emulator.timings import DEFAULT_TRIAGED_TAG, Timings
from connector.emulator.webhooks import ZAMMAD_RETRY_DELAYS, WebhookConfig, WebhookDispatcher

DEFAULT_PORT = 8765


class EmulatorServer:
    """A Zammad-compatible helpdesk in memory, served over HTTP on loopback.

    ``seed``: True for the bundled sample tickets, False for groups and users
    only, or a path to / the contents of a file shaped like ``sample_tickets.json``.
    ``triaged_tag``: the marker tag whose first arrival ``timings`` records.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: bool | str | Path | Mapping[str, Any] = True,
        token: str = DEMO_TOKEN,
        password: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_retry_delays: tuple[float, ...] = ZAMMAD_RETRY_DELAYS,
        webhook_trigger: str = "helpdesk-triage: ticket created",
        webhook_workers: int = 4,
        triaged_tag: str = DEFAULT_TRIAGED_TAG,
        clock: Callable[[], datetime] | None = None,
        log_level: str = "warning",
        groups_need_admin: bool = False,
    ) -> None:
        self.host = host
        self.token = token
        self._password = password
        self._log_level = log_level
        self.stats = Stats()
        self.timings = Timings(triaged_tag)
        self.store = Store(
            clock=clock,
            stats=self.stats,
            timings=self.timings,
            groups_need_admin=groups_need_admin,
        )
        self.faults = FaultInjector(self.stats)
        self._seed_data = self._seed_source(seed)
        self.triage_user = self._reseed()
        self.webhooks: WebhookDispatcher | None = None
        if webhook_url:
            self.webhooks = WebhookDispatcher(
                WebhookConfig(
                    url=webhook_url,
                    secret=webhook_secret,
                    trigger=webhook_trigger,
                    retry_delays=tuple(webhook_retry_delays),
                    workers=webhook_workers,
                ),
                self.stats,
            )
        payload_source = (
            self._seed_data if self._seed_data and self._seed_data.get("tickets") else None
        )
        self._api = EmulatorApp(
            self.store,
            self.stats,
            self.faults,
            webhooks=self.webhooks,
            reseed=self._reseed,
            bulk_payloads=seeding.create_payloads(payload_source),
        )
        self.app = self._api.build()
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this. Without it the asyncio loop leaves Nagle on
        # for sockets handed to uvicorn, and every answer waits ~40 ms for a delayed ACK.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind((host, port))
        # Listening from here on: requests sent before uvicorn runs wait in the backlog.
        self._socket.listen(1024)
        self.port: int = self._socket.getsockname()[1]
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _seed_source(seed: bool | str | Path | Mapping[str, Any]) -> dict[str, Any] | None:
        if seed is True:
            return seeding.load()
        if seed is False:
            return None
        if isinstance(seed, Mapping):
            return dict(seed)
        return seeding.load(seed)

    def _reseed(self) -> User:
        triage = seeding.seed(
            self.store, self._seed_data, token=self.token, password=self._password
        )
        self.triage_user = triage
        return triage

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v1"

    def reset(self) -> None:
        """Reseed the store and clear faults and counters (as ``POST /_emulator/reset``)."""
        self.faults.clear()
        self._reseed()
        self.stats.reset()

    # -- conveniences for the demo and benchmarks (no HTTP involved) ------------------------

    def ticket_ids(
        self,
        *,
        needs_triage: bool = True,
        open_states: tuple[str, ...] = ("new", "open"),
        triaged_tag: str = "ai-triaged",
        error_tag: str = "triage-error",
        retriage_tag: str = "retriage",
    ) -> list[int]:
        """Ids of the tickets, by id; by default those triage should pick up.

        "Should pick up" uses the default marker names: an open ticket without
        the triaged or error tag, or with a re-triage request.
        """
        store = self.store
        with store.lock:
            ids = []
            for ticket in sorted(store.tickets.values(), key=lambda t: t.id):
                if needs_triage:
                    tags = {t.lower() for t in ticket.tags}
                    if store.states[ticket.state_id].name not in open_states:
                        continue
                    if retriage_tag not in tags and tags & {triaged_tag, error_tag}:
                        continue
                ids.append(ticket.id)
            return ids

    def ticket_subject(self, ticket_id: int) -> str:
        with self.store.lock:
            ticket = self.store.tickets.get(ticket_id)
            return ticket.title if ticket is not None else ""

    def create_customer_ticket(
        self, subject: str, body: str, *, customer: str | None = None, group: str = "Users"
    ) -> int:
        """A new ticket written in by a customer, as by e-mail; fires the webhook like the API."""
        store = self.store
        with store.lock:
            customers = sorted(
                (u for u in store.users.values() if u.has("ticket.customer")), key=lambda u: u.id
            )
            if customer is not None:
                author = store.find_user(customer)
            elif customers:
                author = customers[len(store.tickets) % len(customers)]
            else:
                raise ValueError("the emulator has no customers to write a ticket")
        payload = {
            "title": subject,
            "group": group,
            "article": {
                "subject": subject,
                "body": body,
                "type": "email",
                "sender": "Customer",
                "content_type": "text/plain",
            },
        }
        return self._api.create_ticket(author, payload).id

    def _build_server(self) -> Any:
        import uvicorn  # heavy import kept out of module import time

        config = uvicorn.Config(
            self.app,
            http="httptools",
            loop="auto",  # uvloop when installed, else asyncio
            lifespan="off",
            log_level=self._log_level,
            access_log=False,
            timeout_keep_alive=30,
            backlog=1024,
        )
        return uvicorn.Server(config)

    def serve_forever(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop cleanly (the command line's way).

        The server runs on its thread as in tests; this thread only waits for a
        signal, so the process exits with status 0 after a graceful stop.
        """
        stop = threading.Event()
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in handled}
        try:
            self.start()
            while not stop.wait(0.2):
                if self._thread is None or not self._thread.is_alive():
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        """Serve on a background thread; return once the socket accepts requests."""
        self._server = self._build_server()
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="zammad-emulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator did not start on {self.url} within {timeout} s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.webhooks is not None:
            self.webhooks.close()
        self._socket.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
