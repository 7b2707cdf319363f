"""Readiness: what must hold before the service takes traffic.

Ready means: the model is loaded, the helpdesk answered the start-up check
and has not refused the credentials since, the circuit breaker around it is
closed (it is not down right now), the policy's mappings fit the model and
the helpdesk, and the process is not shutting down.
"""

from __future__ import annotations

import threading

from connector.metrics import Metrics


class Health:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {
            "model": "not loaded",
            "helpdesk": "not checked",
            "mapping": "not checked",
        }
        self._update()

    def model_loaded(self) -> None:
        self._clear("model")

    def mapping_valid(self) -> None:
        self._clear("mapping")

    def helpdesk_ok(self) -> None:
        self._clear("helpdesk")

    def helpdesk_failed(self, reason: str) -> None:
        self._set("helpdesk", reason)

    def circuit_open(self, reason: str) -> None:
        self._set("circuit", reason)

    def circuit_closed(self) -> None:
        self._clear("circuit")

    def shutting_down(self) -> None:
        self._set("shutdown", "shutting down")

    @property
    def is_shutting_down(self) -> bool:
        with self._lock:
            return "shutdown" in self._problems

    def helpdesk_failing(self) -> bool:
        with self._lock:
            return "helpdesk" in self._problems

    def status(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            problems = dict(self._problems)
        return not problems, problems

    def _set(self, key: str, reason: str) -> None:
        with self._lock:
            self._problems[key] = reason
        self._update()

    def _clear(self, key: str) -> None:
        with self._lock:
            if key not in self._problems:
                return
            del self._problems[key]
        self._update()

    def _update(self) -> None:
        if self._metrics is not None:
            ready, _ = self.status()
            self._metrics.ready.set(1 if ready else 0)
