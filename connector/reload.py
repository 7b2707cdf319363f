"""A new model without a restart: on SIGHUP, and when ``model.path`` changes on disk.

A candidate is checked completely before anything changes: the manifest's
checksums and the graph (``Classifier.load``), the queue descriptions against
its embedding (``Predictor``), and every label the policy routes against the
helpdesk's current queues and priorities (``Policy.validate``). A candidate
that fails any of these is refused and logged, the old model keeps serving,
and the same files are not tried again until they change.

The swap is one assignment per part: an inference batch already running
finishes on the old model, the next batch runs on the new one, and each
ticket's note and log name the version that classified it.

Watching compares a fingerprint of the directory (each file's name, size,
modification time and inode, after resolving symlinks) every
``model.reload_check_seconds``, and reloads once two readings in a row agree
on a new fingerprint, so a directory still being copied is not loaded half
written. Kubernetes updates a mounted volume by swapping a symlink, which
changes the resolved path and so the fingerprint.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from connector.errors import ConfigError, HelpdeskError, ModelError

if TYPE_CHECKING:
    from connector.service import Service

log = logging.getLogger("connector.reload")

Fingerprint = tuple[str, tuple[tuple[str, int, int, int], ...]]


def fingerprint(path: Path) -> Fingerprint | None:
    """What changes when the model directory's contents change; None when it is unreadable."""
    try:
        resolved = path.resolve(strict=True)
        entries = []
        for entry in sorted(os.scandir(resolved), key=lambda e: e.name):
            if entry.is_file():
                stat = entry.stat()
                entries.append((entry.name, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    except OSError:
        return None
    return str(resolved), tuple(entries)


class ModelReloader:
    def __init__(
        self,
        service: Service,
        *,
        check_seconds: float,
        fingerprint_of: Callable[[Path], Fingerprint | None] = fingerprint,
    ) -> None:
        self.service = service
        self.path = service.settings.model.path
        self.check_seconds = check_seconds
        self._fingerprint_of = fingerprint_of
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._requested: str | None = None
        self._thread: threading.Thread | None = None
        # The files now serving (or last refused): not loaded again until they change.
        self._settled = fingerprint_of(self.path)
        self._seen = self._settled

    def request(self, reason: str) -> None:
        """Ask for a reload (from a signal handler: only sets a flag)."""
        self._requested = reason
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="model-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reload(self, reason: str) -> bool:
        """Load, check and swap in the model at ``model.path``; False when refused."""
        with self._lock:
            current = self._fingerprint_of(self.path)
            old = self.service.classifier.version
            try:
                self.service.swap_model(self.path)
            except (ModelError, ConfigError, HelpdeskError) as error:
                self._settled = current
                self.service.metrics.model_reloads.labels(result="refused").inc()
                log.error(
                    "model reload refused; the old model keeps serving",
                    extra={"reason": reason, "version": old, "error": str(error)},
                )
                return False
            self._settled = current
            self.service.metrics.model_reloads.labels(result="loaded").inc()
            log.info(
                "model reloaded",
                extra={
                    "reason": reason,
                    "old_version": old,
                    "new_version": self.service.classifier.version,
                },
            )
            return True

    def poll_once(self) -> bool | None:
        """One check of the directory; the reload's result when one happened, else None."""
        current = self._fingerprint_of(self.path)
        stable = current is not None and current == self._seen
        self._seen = current
        if stable and current != self._settled:
            return self.reload("model.path changed")
        return None

    def _loop(self) -> None:
        timeout = self.check_seconds if self.check_seconds > 0 else None
        while not self._stopped.is_set():
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stopped.is_set():
                return
            reason, self._requested = self._requested, None
            try:
                if reason is not None:
                    self.reload(reason)
                elif self.check_seconds > 0:
                    self.poll_once()
            except Exception:  # the watcher must outlive any surprise in one attempt
                log.exception("model reload failed unexpectedly; the old model keeps serving")
