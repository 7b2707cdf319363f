"""Swapping the model under a running service: on a changed directory, on SIGHUP, never broken.

Real onnxruntime on copies of the bundled model; the second "model" is the
same graph under another version, with its manifest rewritten, which is all
the service can tell apart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.config import BUNDLED_MODEL
from connector.domain import Ticket
from connector.service import Service
from tests.test_service_e2e import BILLING, emulator_for, free_port, settings_for, wait_until

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import modeling  # noqa: E402


def model_copy(target: Path, version: str) -> Path:
    shutil.copytree(BUNDLED_MODEL, target)
    labels_path = target / "labels.json"
    labels = json.loads(labels_path.read_text())
    labels["version"] = version
    labels_path.write_text(json.dumps(labels, indent=2))
    modeling.write_manifest(target, version)
    return target


def point(link: Path, target: Path) -> None:
    """Repoint ``link`` at ``target`` in one rename, as Kubernetes updates a volume."""
    temporary = link.with_name(f".{link.name}.new")
    temporary.symlink_to(target)
    os.replace(temporary, link)


@pytest.fixture
def models(tmp_path: Path) -> Iterator[dict[str, Path]]:
    first = model_copy(tmp_path / "v1", "test-v1")
    second = model_copy(tmp_path / "v2", "test-v2")
    current = tmp_path / "current"
    current.symlink_to(first)
    yield {"v1": first, "v2": second, "current": current}


def sample(service: Service, name: str, **labels: str) -> float | None:
    value = service.metrics.registry.get_sample_value(name, labels)
    return value


class Records:
    def __init__(self) -> None:
        self.by_ticket: dict[int, Any] = {}
        self.lock = threading.Lock()

    def __call__(self, record: Any, item: Any) -> None:
        if record.decisions:
            with self.lock:
                self.by_ticket[record.ticket_id] = record


def test_a_changed_model_directory_is_loaded_and_a_broken_one_refused(
    models: dict[str, Path], tmp_path: Path
) -> None:
    port = free_port()
    records = Records()
    with emulator_for(port) as emulator:
        settings = settings_for(
            emulator,
            port,
            ingest={"poll": False, "sweep": False},
            model={"path": str(models["current"]), "reload_check_seconds": 0.1},
        )
        service = Service(settings, on_record=records)
        service.start_server_thread()
        try:
            service.check()
            service.start_background()
            first = emulator.create_customer_ticket(*BILLING)
            assert wait_until(lambda: first in records.by_ticket)
            assert records.by_ticket[first].model_version == "test-v1"

            # A broken candidate: refused, and the old model keeps serving.
            broken = shutil.copytree(models["v2"], tmp_path / "broken")
            with (broken / "model.onnx").open("r+b") as graph:
                graph.seek(1000)
                graph.write(b"\0" * 64)
            point(models["current"], broken)
            refused = "helpdesk_triage_model_reloads_total"
            assert wait_until(lambda: sample(service, refused, result="refused") == 1)
            second = emulator.create_customer_ticket(*BILLING)
            assert wait_until(lambda: second in records.by_ticket)
            assert records.by_ticket[second].model_version == "test-v1"
            time.sleep(0.5)  # the same broken files are not tried again and again
            assert sample(service, refused, result="refused") == 1

            point(models["current"], models["v2"])
            assert wait_until(lambda: service.classifier.version == "test-v2")
            third = emulator.create_customer_ticket(*BILLING)
            assert wait_until(lambda: third in records.by_ticket)
            assert records.by_ticket[third].model_version == "test-v2"
            assert sample(service, refused, result="loaded") == 1
            info = "helpdesk_triage_model_info"
            assert sample(service, info, version="test-v2") == 1
            assert sample(service, info, version="test-v1") is None
        finally:
            service.stop()


def test_a_batch_already_running_finishes_on_the_old_model(models: dict[str, Path]) -> None:
    port = free_port()
    with emulator_for(port) as emulator:
        settings = settings_for(emulator, port, model={"path": str(models["v1"])})
        service = Service(settings)
        try:
            old_predict = service.predictor.predict
            entered, release = threading.Event(), threading.Event()

            def held(items: Any) -> Any:
                entered.set()
                release.wait(10)
                return old_predict(items)

            service.predictor.predict = held  # type: ignore[method-assign]
            result: list[Any] = []
            worker = threading.Thread(
                target=lambda: result.append(service.batcher(Ticket(1, *BILLING)))
            )
            worker.start()
            assert entered.wait(10)
            service.swap_model(models["v2"])
            release.set()
            worker.join(10)
            assert result[0].model_version == "test-v1"
            assert service.batcher(Ticket(2, *BILLING)).model_version == "test-v2"
        finally:
            service.batcher.close()


def test_sighup_reloads_the_running_process(models: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    with emulator_for(port) as emulator:
        served = tmp_path / "served"
        shutil.copytree(models["v1"], served)
        config = tmp_path / "triage.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "helpdesk": "zammad",
                    "zammad": {"url": emulator.url, "token": emulator.token},
                    "server": {"host": "127.0.0.1", "port": port},
                    "ingest": {"webhooks": False, "poll": False, "sweep": False},
                    # Only the signal may trigger the reload here.
                    "model": {"path": str(served), "reload_check_seconds": 0},
                    "logging": {"format": "json", "level": "INFO"},
                }
            )
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "run", "--config", str(config)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        lines: list[dict[str, Any]] = []

        def read() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    lines.append({"message": line})

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert wait_until(lambda: any(e.get("message") == "started" for e in lines), 60)
            for path in served.iterdir():
                path.unlink()
            for path in models["v2"].iterdir():
                shutil.copy2(path, served / path.name)
            process.send_signal(signal.SIGHUP)
            assert wait_until(
                lambda: any(e.get("message") == "model reloaded" for e in lines), 60
            ), lines[-5:]
            event = next(e for e in lines if e.get("message") == "model reloaded")
            assert (event["old_version"], event["new_version"]) == ("test-v1", "test-v2")
            assert event["reason"] == "SIGHUP"
            assert process.poll() is None, "SIGHUP must not end the process"
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        assert process.returncode == 0
