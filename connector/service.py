"""The service: builds every part from the settings and runs them together.

Start-up: load the model (readiness waits for it), check the helpdesk and
validate the policy's mappings against model and helpdesk (a label routed to
a queue that does not exist stops start-up with a message naming it), then
start workers, poller and the HTTP server.

Shutdown (SIGTERM): readiness fails and webhooks answer 503 at once (the
helpdesk redelivers them elsewhere), the poller stops, in-flight tickets
finish within ``server.drain_seconds``, then the HTTP server stops and the
process exits, within ``EXIT_SECONDS`` more. A ticket still stuck in a call to
a hanging helpdesk then is left behind (workers are daemon threads): its claim
expires and the next run resumes it. Tickets still waiting in the queue are
not lost either: they are untriaged on the helpdesk, and the next sweep picks
them up.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from connector.adapters.base import HelpdeskAdapter
from connector.adapters.factory import build_adapter
from connector.batching import MicroBatcher
from connector.circuit import CircuitBreaker, CircuitState
from connector.classifier import Classifier, TextInput
from connector.config import Settings
from connector.cpu import cpu_limit
from connector.domain import Prediction, Ticket
from connector.drafts import DraftWriter
from connector.errors import AuthError, HelpdeskConfigError, HelpdeskError
from connector.health import Health
from connector.ingest.poller import Poller
from connector.ingest.queue import WorkQueue
from connector.ingest.webhooks import WebhookReceiver
from connector.metrics import Metrics
from connector.owners import OwnerPicker
from connector.pipeline import Pipeline
from connector.policy import Policy
from connector.predictor import Predictor
from connector.reload import ModelReloader
from connector.server import create_app
from connector.workers import RecordSink, WorkerPool

log = logging.getLogger("connector.service")

HELPDESK_RECHECK_SECONDS = 30.0
# After the drain, how long stopping the HTTP server may take; the chart's grace
# period adds 5 s to the preStop pause and the drain, so this stays below that.
EXIT_SECONDS = 3


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        adapter: HelpdeskAdapter | None = None,
        classifier: Classifier | None = None,
        metrics: Metrics | None = None,
        on_record: RecordSink | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.health = Health(self.metrics)
        circuit = settings.http.circuit
        self.breaker = CircuitBreaker(
            failure_threshold=circuit.failure_threshold,
            open_seconds=circuit.open_seconds,
            open_max_seconds=circuit.open_max_seconds,
        )
        self.breaker.on_change(self._on_circuit_change)
        self.adapter = adapter or build_adapter(settings, self.metrics, breaker=self.breaker)
        self.classifier = classifier or self._load_classifier(settings.model.path)
        self.predictor = Predictor(self.classifier, settings.policy)
        self.health.model_loaded()
        self.metrics.model_info.labels(version=self.classifier.version).set(1)
        self.metrics.preinitialise(self.adapter.kind, self.classifier.heads)
        self.metrics.queue_capacity.set(settings.ingest.queue_size)

        self.batcher: MicroBatcher[Ticket, Prediction] = MicroBatcher(
            self._classify_batch,
            max_batch=settings.model.max_batch,
            max_wait=settings.ingest.batch_wait_ms / 1000.0,
            on_batch=self._observe_batch,
            name="inference",
        )
        owner_picker = None
        if settings.policy.owner.strategy != "none":
            owner_picker = OwnerPicker(settings.policy.owner, self.adapter.agents)
        self.policy = Policy(
            settings.policy, settings.markers, settings.helpdesk, owner_picker=owner_picker
        )
        self.drafts = DraftWriter(settings.drafts, _embedder(self.classifier))
        self.queue = WorkQueue(settings.ingest.queue_size)
        self.pipeline = Pipeline(
            self.adapter,
            self.batcher,
            self.policy,
            settings.policy,
            settings.markers,
            self.metrics,
            draft_writer=self.drafts if settings.drafts.enabled else None,
            write_settle_seconds=settings.http.write_settle_seconds,
        )
        self.workers = WorkerPool(
            self.queue,
            self.pipeline,
            settings.ingest,
            self.metrics,
            self.health,
            on_record=on_record,
            breaker=self.breaker,
        )
        self.poller = Poller(
            self.adapter,
            self.queue,
            settings.ingest,
            self.metrics,
            self.health,
            skip=self._skip_in_polls,
        )
        self.receiver = WebhookReceiver(
            self.adapter, self.queue, settings.ingest, self.metrics, self.health
        )
        self.reloader = ModelReloader(self, check_seconds=settings.model.reload_check_seconds)
        self.app = create_app(self.receiver, self.health, self.metrics)
        self._server: uvicorn.Server | None = None
        self._server_thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self.url = ""

    # -- inference ---------------------------------------------------------------------

    def _classify_batch(self, tickets: Sequence[Ticket]) -> list[Prediction]:
        return self.predictor.predict(
            [TextInput(t.subject, t.body, t.content_type) for t in tickets]
        )

    def _load_classifier(self, path: Path) -> Classifier:
        model = self.settings.model
        return Classifier.load(
            path, threads=model.threads or cpu_limit(), spin_wait=model.spin_wait
        )

    def swap_model(self, path: Path) -> None:
        """Serve the model at ``path`` from the next batch on, once it has passed every check.

        Raises (ModelError, ConfigError, HelpdeskError) without changing anything
        when the model cannot be loaded or does not fit the policy or the helpdesk.
        """
        classifier = self._load_classifier(path)
        predictor = Predictor(classifier, self.settings.policy)
        self.policy.validate(predictor.labels, self.adapter.queues(), self.adapter.priorities())
        drafts = DraftWriter(self.settings.drafts, _embedder(classifier))
        old = self.classifier.version
        self.classifier, self.predictor, self.drafts = classifier, predictor, drafts
        if self.settings.drafts.enabled:
            self.pipeline.draft_writer = drafts
        if old != classifier.version:
            self.metrics.model_info.remove(old)
        self.metrics.model_info.labels(version=classifier.version).set(1)
        self.metrics.preinitialise(self.adapter.kind, classifier.heads)

    def _observe_batch(self, size: int, seconds: float) -> None:
        self.metrics.inference_seconds.observe(seconds)
        self.metrics.inference_batch_size.observe(size)

    def _skip_in_polls(self, ticket_id: int) -> bool:
        return self.pipeline.seen_in_shadow(ticket_id) or self.workers.gave_up_recently(ticket_id)

    # -- the helpdesk's state ------------------------------------------------------------

    def _on_circuit_change(self, state: CircuitState, reason: str) -> None:
        self.metrics.circuit_state.labels(helpdesk=self.adapter.kind).set(int(state))
        if state is CircuitState.OPEN:
            self.metrics.circuit_opened.labels(helpdesk=self.adapter.kind).inc()
            self.health.circuit_open(f"helpdesk circuit open: {reason}")
            log.warning("helpdesk circuit open", extra={"reason": reason})
        elif state is CircuitState.HALF_OPEN:
            self.health.circuit_open(f"helpdesk circuit half-open: {reason}")
        else:
            self.health.circuit_closed()
            log.info("helpdesk circuit closed", extra={"reason": reason})

    # -- start-up ----------------------------------------------------------------------

    def check(self) -> None:
        """Check the helpdesk and the mappings; raise what an operator must fix."""
        self.adapter.check()
        self.health.helpdesk_ok()
        self.policy.validate(
            self.predictor.labels, self.adapter.queues(), self.adapter.priorities()
        )
        self.health.mapping_valid()

    def start_background(self) -> None:
        """Start workers, poller and sweep (after ``check`` succeeded)."""
        self.workers.start()
        ingest = self.settings.ingest
        if ingest.poll or ingest.sweep:
            self.poller.start(poll=ingest.poll, sweep=ingest.sweep)
        self._watchdog = threading.Thread(target=self._recheck_helpdesk, daemon=True)
        self._watchdog.start()
        self.reloader.start()

    def _recheck_helpdesk(self) -> None:
        """While the helpdesk refuses us, keep asking; readiness returns when it answers."""
        while not self._stopped.wait(HELPDESK_RECHECK_SECONDS):
            if not self.health.helpdesk_failing():
                continue
            try:
                self.adapter.check()
            except HelpdeskError as error:
                log.warning("helpdesk still failing", extra={"error": str(error)})
            else:
                self.health.helpdesk_ok()
                log.info("helpdesk reachable again")

    def check_until_reachable(self, give_up_after: float | None = None) -> None:
        """``check`` with patience for a helpdesk that is not up yet.

        Credentials and mapping errors are raised at once: waiting will not fix them.
        """
        started = time.monotonic()
        delay = 1.0
        while True:
            try:
                self.check()
                return
            except (AuthError, HelpdeskConfigError):
                raise
            except HelpdeskError as error:
                self.health.helpdesk_failed(error.kind)
                if give_up_after is not None and time.monotonic() - started > give_up_after:
                    raise
                log.warning(
                    "helpdesk not reachable yet; retrying",
                    extra={"error": str(error), "retry_in_seconds": delay},
                )
                if self._stopped.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)

    # -- serving -----------------------------------------------------------------------

    def bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.server.host, self.settings.server.port))
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return sock

    def _make_server(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            # Open keep-alive connections get this long after the drain, within EXIT_SECONDS.
            timeout_graceful_shutdown=EXIT_SECONDS - 1,
            lifespan="off",
        )
        return uvicorn.Server(config)

    def start_server_thread(self) -> str:
        """Serve from a background thread (demo, tests); returns the base URL."""
        sock = self.bind()
        self._server = self._make_server()
        server = self._server
        self._server_thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="http", daemon=True
        )
        self._server_thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.url

    def drain(self) -> None:
        """Fail readiness, stop intake, finish in-flight work within the drain time."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        started = time.monotonic()
        # One deadline for every step: a poll or a ticket stuck in a call to a hanging
        # helpdesk must not stretch the drain past what the pod's grace period allows.
        deadline = started + self.settings.server.drain_seconds

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        self.health.shutting_down()
        self.reloader.stop()
        self.queue.close()
        self.poller.stop(timeout=min(5.0, remaining()))
        finished = self.workers.stop(remaining())
        self.batcher.close(timeout=min(5.0, max(0.5, remaining())))
        self.adapter.close()
        log.info(
            "drained" if finished else "drain timed out; in-flight tickets left for the next sweep",
            extra={"seconds": round(time.monotonic() - started, 2)},
        )

    def stop(self) -> None:
        """Drain, then stop the HTTP server (which answers probes until then).

        Everything after the drain is bounded by ``EXIT_SECONDS``, which the
        chart's grace period leaves room for; threads still busy then are
        daemons and do not hold the exit.
        """
        self.drain()
        if self._server is not None:
            self._server.should_exit = True
        if self._server_thread is not None:
            self._server_thread.join(timeout=EXIT_SECONDS)

    def wait_for_exit(self) -> None:
        """Block until SIGTERM or SIGINT, then stop gracefully; a second signal exits at once.

        SIGHUP reloads the model from ``model.path`` (see ``connector.reload``).
        """
        requested = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if requested.is_set():
                log.warning("second signal: exiting without draining")
                os._exit(1)
            log.info("signal received; draining", extra={"signal": signal.Signals(signum).name})
            requested.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reloader.request("SIGHUP"))
        while not requested.wait(1.0):
            pass
        self.stop()


def _embedder(classifier: Classifier) -> Callable[[Sequence[tuple[str, str]]], Any] | None:
    """The draft writer's view of one model's embedding (None when it has none)."""
    if not classifier.has_embedding:
        return None

    def embed(pairs: Sequence[tuple[str, str]]) -> Any:
        return classifier.embed([TextInput(subject, body) for subject, body in pairs])

    return embed
