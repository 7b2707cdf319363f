"""Faults a deployment meets, against the service as a real process: each ticket triaged once.

The emulator runs in this process, the sidecar as ``helpdesk-triage run`` in
another, over real HTTP on loopback:

- the sidecar killed with SIGKILL in the middle of a batch, then started again;
- the helpdesk answering 503 to every call for a while, then back;
- a burst of 2,000 webhooks into a small queue, so the sidecar pushes back.

After each, every ticket carries the marker and exactly one triage note, and no
ticket was given up on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from connector.emulator import EmulatorServer
from tests.test_service_e2e import SECRET, free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def triaged_count(emulator: EmulatorServer) -> int:
    return int(emulator.timings.snapshot(per_ticket=False)["triaged_count"])


def assert_each_triaged_once(emulator: EmulatorServer, ids: list[int]) -> None:
    stats = emulator.stats.snapshot()["tickets"]
    notes = {i: stats.get(str(i), {}).get("internal_notes_created", 0) for i in ids}
    assert [i for i, n in notes.items() if n != 1] == [], "tickets without exactly one note"
    assert emulator.ticket_ids() == [], "tickets still waiting for triage"
    failed = [i for i in ids if "triage-error" in emulator.store.tickets[i].tags]
    assert failed == [], "tickets given up on"


class Sidecar:
    """``helpdesk-triage run`` against the emulator, as its own process."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "run", "--config", str(self.config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for(self.ready, 60, "sidecar ready")

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()


@contextmanager
def sidecar_for(
    emulator: EmulatorServer, tmp_path: Path, port: int, **overrides: Any
) -> Iterator[Sidecar]:
    config: dict[str, Any] = {
        "helpdesk": "zammad",
        "zammad": {"url": emulator.url, "token": emulator.token, "webhook_secret": SECRET},
        "server": {"host": "127.0.0.1", "port": port, "drain_seconds": 5},
        "ingest": {
            "poll_interval_seconds": 1.0,
            "sweep_interval_seconds": 3600,
            "retry_backoff_seconds": 0.2,
            "retry_backoff_max_seconds": 1.0,
        },
        # A run killed mid-ticket leaves its claim; the restarted sidecar resumes it once
        # the claim is this old.
        "markers": {"claim_ttl_seconds": 3},
        "http": {"write_settle_seconds": 1.0},
        "logging": {"level": "WARNING", "format": "json"},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(config))
    sidecar = Sidecar(path, port)
    try:
        yield sidecar
    finally:
        sidecar.stop()


@contextmanager
def emulator_running(port: int | None = None, **kwargs: Any) -> Iterator[EmulatorServer]:
    server = EmulatorServer(
        seed=False,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/zammad" if port else None,
        webhook_secret=SECRET if port else None,
        **kwargs,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def bulk(emulator: EmulatorServer, count: int, *, webhooks: bool = False) -> list[int]:
    answer = requests.post(
        f"{emulator.url}/_emulator/tickets/bulk",
        json={"count": count, "webhooks": webhooks},
        timeout=60,
    )
    answer.raise_for_status()
    return [int(i) for i in answer.json()["ticket_ids"]]


def test_sigkill_in_the_middle_of_a_batch_and_a_restart(tmp_path: Path) -> None:
    port = free_port()
    with (
        emulator_running() as emulator,
        sidecar_for(emulator, tmp_path, port, ingest={"webhooks": False}) as sidecar,
    ):
        sidecar.start()
        ids = bulk(emulator, 400)
        wait_for(lambda: triaged_count(emulator) >= 100, 60, "a quarter triaged")
        sidecar.kill()
        killed_at = triaged_count(emulator)
        assert killed_at < len(ids), "the batch finished before the kill"
        sidecar.start()
        wait_for(lambda: triaged_count(emulator) == len(ids), 120, "every ticket triaged")
        time.sleep(1.0)  # a last resumed run finishing its marker
    assert_each_triaged_once(emulator, ids)


def test_a_helpdesk_down_for_a_while_and_back(tmp_path: Path) -> None:
    port = free_port()
    with emulator_running(port, webhook_retry_delays=(0.5, 1.0, 2.0, 4.0)) as emulator:
        with sidecar_for(emulator, tmp_path, port) as sidecar:
            sidecar.start()
            emulator.faults.add({"path": "^/api/v1/", "status": 503})
            not_ready: list[int] = []
            ids = bulk(emulator, 60, webhooks=True)

            def watch() -> None:
                for _ in range(40):
                    try:
                        if requests.get(f"{sidecar.url}/readyz", timeout=1).status_code == 503:
                            not_ready.append(1)
                    except requests.RequestException:
                        pass
                    time.sleep(0.25)

            watcher = threading.Thread(target=watch)
            watcher.start()
            time.sleep(10)  # the outage
            emulator.faults.clear()
            watcher.join()
            wait_for(lambda: triaged_count(emulator) == len(ids), 120, "every ticket triaged")
            assert not_ready, "/readyz never said not ready during the outage"
            metrics = requests.get(f"{sidecar.url}/metrics", timeout=5).text
        assert_each_triaged_once(emulator, ids)
    opened = [
        line
        for line in metrics.splitlines()
        if line.startswith("helpdesk_triage_helpdesk_circuit_opened_total{")
    ]
    assert opened and float(opened[0].rsplit(" ", 1)[1]) >= 1


def test_a_burst_of_2000_webhooks_into_a_small_queue(tmp_path: Path) -> None:
    port = free_port()
    small = {"queue_size": 20, "concurrency": 2, "poll_interval_seconds": 2.0}
    with (
        emulator_running(
            port, webhook_retry_delays=(0.5, 1.0, 1.0, 1.0), webhook_workers=16
        ) as emulator,
        sidecar_for(emulator, tmp_path, port, ingest=small) as sidecar,
    ):
        sidecar.start()
        ids = bulk(emulator, 2000, webhooks=True)
        wait_for(lambda: triaged_count(emulator) == len(ids), 240, "every ticket triaged")
        metrics = requests.get(f"{sidecar.url}/metrics", timeout=5).text
    assert_each_triaged_once(emulator, ids)
    pushed_back = [
        line
        for line in metrics.splitlines()
        if line.startswith("helpdesk_triage_webhook_requests_total{")
        and 'result="overloaded"' in line
    ]
    assert pushed_back and float(pushed_back[0].rsplit(" ", 1)[1]) > 0, "no backpressure seen"
    deliveries = emulator.stats.snapshot()["webhooks"]
    assert deliveries["failed_attempts"] > 0, deliveries  # the 503s the emulator retried
