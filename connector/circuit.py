"""A circuit breaker around the helpdesk: an outage is not a property of a ticket.

Without it, every queued ticket spends its attempts against a helpdesk that is
down, ends ``triage-error``, and the sidecar keeps calling at full speed. With
it, after ``failure_threshold`` consecutive failed calls the circuit opens:
calls are rejected at once (``CircuitOpenError``, no request sent) until a
cool-down has passed; then one call is let through as a probe (half-open).
The probe's success closes the circuit; its failure opens it again with a
cool-down twice as long, up to ``open_max_seconds``.

What counts as a failure is what says "the helpdesk is down", not "this ticket
is broken": connection errors, timeouts and 408/502/503/504 always; other 5xx
(500) count once per ticket in a run of failures, so a single poison ticket
answering 500 again and again never opens the circuit for every other ticket,
while 500s from many tickets do. Any other answer (2xx, 4xx, 429) shows the
helpdesk is up and ends the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import IntEnum

from connector.errors import (
    CircuitOpenError,
    HelpdeskError,
    NetworkError,
    ServerError,
    UnavailableError,
)


class CircuitState(IntEnum):
    """The gauge's values: higher is worse."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


StateListener = Callable[[CircuitState, str], None]

# A failure that carries no ticket id counts every time.
_NO_TICKET = object()


class CircuitBreaker:
    """Thread-safe; one per helpdesk client, shared by every worker."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        open_seconds: float = 5.0,
        open_max_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.open_max_seconds = open_max_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._failed_tickets: set[object] = set()
        self._cooldown = open_seconds
        self._probe_at = 0.0
        self._probing = False
        self._listeners: list[StateListener] = []

    def on_change(self, listener: StateListener) -> None:
        """Call ``listener(state, reason)`` on every transition (outside the lock)."""
        self._listeners.append(listener)

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state

    @property
    def closed(self) -> bool:
        return self.state is CircuitState.CLOSED

    def seconds_until_probe(self) -> float:
        """How long until a call may probe again; 0 when closed or due."""
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return 0.0
            return max(0.0, self._probe_at - self._clock())

    # -- around one call ---------------------------------------------------------------

    def before_call(self, **where: object) -> None:
        """Let the call through, or raise ``CircuitOpenError`` without sending it."""
        changed: tuple[CircuitState, str] | None = None
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return
            now = self._clock()
            if self._state is CircuitState.OPEN and now >= self._probe_at:
                self._state = CircuitState.HALF_OPEN
                changed = (self._state, "probing the helpdesk")
            if self._state is CircuitState.HALF_OPEN and not self._probing:
                self._probing = True
            else:
                wait = max(0.0, self._probe_at - now)
                raise CircuitOpenError("helpdesk circuit open: not sent", retry_after=wait, **where)
        if changed is not None:
            self._notify(*changed)

    def record_success(self) -> None:
        changed = None
        with self._lock:
            self._failures = 0
            self._failed_tickets.clear()
            # A late success of a call sent before the circuit opened proves little;
            # only the probe closes an open circuit.
            if self._state is CircuitState.HALF_OPEN and self._probing:
                self._probing = False
                self._state = CircuitState.CLOSED
                self._cooldown = self.open_seconds
                changed = (self._state, "helpdesk answered the probe")
        if changed is not None:
            self._notify(*changed)

    def record_failure(self, ticket_id: int | None = None) -> None:
        changed = None
        with self._lock:
            key = _NO_TICKET if ticket_id is None else ticket_id
            repeated = key is not _NO_TICKET and key in self._failed_tickets
            if self._state is CircuitState.HALF_OPEN and self._probing:
                self._probing = False
                if not repeated:
                    self._cooldown = min(self._cooldown * 2, self.open_max_seconds)
                    changed = self._open(f"probe failed; next probe in {self._cooldown:g} s")
            elif self._state is CircuitState.CLOSED and not repeated:
                self._failed_tickets.add(key)
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    changed = self._open(
                        f"{self._failures} consecutive helpdesk failures; "
                        f"next probe in {self._cooldown:g} s"
                    )
        if changed is not None:
            self._notify(*changed)

    def record_neutral(self) -> None:
        """The call said nothing about the helpdesk (a bug, a cancelled call): free the probe."""
        with self._lock:
            if self._state is CircuitState.HALF_OPEN:
                self._probing = False

    def record(self, error: HelpdeskError) -> None:
        """Sort a failed call's error into failure (outage evidence) or success (it answered)."""
        if isinstance(error, NetworkError | UnavailableError):
            self.record_failure()
        elif isinstance(error, ServerError):
            self.record_failure(error.ticket_id)
        elif isinstance(error, CircuitOpenError):
            return
        else:
            self.record_success()

    # -- internals ---------------------------------------------------------------------

    def _open(self, reason: str) -> tuple[CircuitState, str]:
        self._state = CircuitState.OPEN
        self._probe_at = self._clock() + self._cooldown
        return self._state, reason

    def _notify(self, state: CircuitState, reason: str) -> None:
        for listener in self._listeners:
            listener(state, reason)
