"""``helpdesk-triage run`` as a process: SIGTERM drains in-flight work, then exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from connector.emulator import DEMO_TOKEN
from tests.test_service_e2e import free_port, wait_until

pytestmark = pytest.mark.slow


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector.cli", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = start(
        ["emulator", "--port", str(port), "--empty"], dict(os.environ), tmp_path / "emu.log"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _answers(f"{url}/_emulator/health"), timeout=20)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # still sleeping through an injected delay
            process.kill()
            process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_sigterm_fails_readiness_finishes_in_flight_work_and_exits_zero(
    emulator_process: str, tmp_path: Path
) -> None:
    api = requests.Session()
    api.headers["Authorization"] = f"Token token={DEMO_TOKEN}"
    # Every ticket update takes 3 s, so a ticket is in flight when SIGTERM arrives.
    api.post(
        f"{emulator_process}/_emulator/faults",
        json={"method": "PUT", "path": r"^/api/v1/tickets/\d+$", "delay_seconds": 3},
        timeout=5,
    ).raise_for_status()
    port = free_port()
    env = {
        **os.environ,
        "TRIAGE_HELPDESK": "zammad",
        "TRIAGE_ZAMMAD__URL": emulator_process,
        "TRIAGE_ZAMMAD__TOKEN": DEMO_TOKEN,
        "TRIAGE_SERVER__PORT": str(port),
        "TRIAGE_SERVER__DRAIN_SECONDS": "15",
        "TRIAGE_INGEST__WEBHOOKS": "false",
        "TRIAGE_INGEST__POLL_INTERVAL_SECONDS": "0.2",
        "TRIAGE_LOGGING__FORMAT": "json",
    }
    service = start(["run"], env, tmp_path / "service.log")
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _answers(f"{base}/readyz"), timeout=60), (
            tmp_path / "service.log"
        ).read_text()
        created = api.post(
            f"{emulator_process}/api/v1/tickets",
            json={
                "title": "Invoice charged twice",
                "group": "Users",
                "customer_id": "guess:kunde@example.com",
                "article": {"body": "Please refund the double charge.", "type": "email"},
            },
            timeout=5,
        )
        created.raise_for_status()
        ticket_id = created.json()["id"]
        # Wait until the slow update is under way, then ask the service to stop.
        stats = f"{emulator_process}/_emulator/stats"
        assert wait_until(lambda: api.get(stats, timeout=5).json()["faults"], timeout=30), (
            tmp_path / "service.log"
        ).read_text()
        service.send_signal(signal.SIGTERM)
        assert wait_until(
            lambda: requests.get(f"{base}/readyz", timeout=1).status_code == 503, timeout=5
        )
        assert service.wait(timeout=30) == 0
        tags = api.get(
            f"{emulator_process}/api/v1/tags",
            params={"object": "Ticket", "o_id": ticket_id},
            timeout=5,
        ).json()["tags"]
        assert "ai-triaged" in tags, "the in-flight ticket was not finished before exit"
        log = (tmp_path / "service.log").read_text()
        assert "drained" in log
        assert "Invoice charged twice" not in log
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(timeout=10)


def test_with_the_helpdesk_hanging_the_process_exits_soon_after_the_drain_time(
    emulator_process: str, tmp_path: Path
) -> None:
    api = requests.Session()
    api.headers["Authorization"] = f"Token token={DEMO_TOKEN}"
    port = free_port()
    drain_seconds = 2.0
    env = {
        **os.environ,
        "TRIAGE_HELPDESK": "zammad",
        "TRIAGE_ZAMMAD__URL": emulator_process,
        "TRIAGE_ZAMMAD__TOKEN": DEMO_TOKEN,
        "TRIAGE_SERVER__PORT": str(port),
        "TRIAGE_SERVER__DRAIN_SECONDS": str(drain_seconds),
        # The ticket read hangs for longer than the whole test; nothing times it out first.
        "TRIAGE_HTTP__READ_TIMEOUT_SECONDS": "60",
        "TRIAGE_INGEST__WEBHOOKS": "false",
        "TRIAGE_INGEST__POLL_INTERVAL_SECONDS": "0.2",
        "TRIAGE_LOGGING__FORMAT": "json",
    }
    service = start(["run"], env, tmp_path / "service.log")
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _answers(f"{base}/readyz"), timeout=60), (
            tmp_path / "service.log"
        ).read_text()
        api.post(
            f"{emulator_process}/_emulator/faults",
            json={"method": "GET", "path": r"^/api/v1/tickets/\d+$", "delay_seconds": 45},
            timeout=5,
        ).raise_for_status()
        api.post(
            f"{emulator_process}/api/v1/tickets",
            json={
                "title": "Printer offline",
                "group": "Users",
                "customer_id": "guess:kunde@example.com",
                "article": {"body": "It does not print.", "type": "email"},
            },
            timeout=5,
        ).raise_for_status()
        stats = f"{emulator_process}/_emulator/stats"
        assert wait_until(lambda: api.get(stats, timeout=5).json()["faults"], timeout=30), (
            tmp_path / "service.log"
        ).read_text()
        signalled = time.monotonic()
        service.send_signal(signal.SIGTERM)
        # The drain, then at most a few seconds to stop the HTTP server and exit.
        service.wait(timeout=drain_seconds + 6)
        elapsed = time.monotonic() - signalled
        assert elapsed < drain_seconds + 4, elapsed
        assert elapsed >= drain_seconds - 0.5, "the drain did not wait for the in-flight ticket"
        assert "drain timed out" in (tmp_path / "service.log").read_text()
    finally:
        api.delete(f"{emulator_process}/_emulator/faults", timeout=5)
        if service.poll() is None:
            service.kill()
            service.wait(timeout=10)
