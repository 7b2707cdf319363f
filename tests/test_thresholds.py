"""Thresholds from a target precision: the choice, its figures, and a snippet that loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import thresholds  # noqa: E402

from connector.config import load_settings  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def test_wilson_lower_bound_matches_the_textbook_values() -> None:
    assert thresholds.wilson_lower(8, 10) == pytest.approx(0.4902, abs=1e-4)
    assert thresholds.wilson_lower(0, 0) == 0.0
    assert thresholds.wilson_lower(100, 100) == pytest.approx(0.9630, abs=1e-4)


def test_the_lowest_threshold_that_reaches_the_target_is_chosen() -> None:
    # 30 confident and right, then 20 in the middle half right, then 50 unsure and wrong.
    confidences = [0.95] * 30 + [0.7] * 20 + [0.3] * 50
    correct = [True] * 30 + [True, False] * 10 + [False] * 50
    choice = thresholds.choose_threshold(confidences, correct, 0.8, min_support=10)
    assert choice is not None
    assert choice.threshold == 0.7  # 40 of 50 right: 0.8, the most coverage at the target
    assert (choice.covered, choice.right, choice.total) == (50, 40, 100)
    assert choice.precision == 0.8 and choice.coverage == 0.5
    strict = thresholds.choose_threshold(confidences, correct, 0.95, min_support=10)
    assert strict is not None and strict.threshold == 0.95 and strict.covered == 30


def test_a_target_out_of_reach_or_without_support_gives_nothing() -> None:
    assert thresholds.choose_threshold([0.9, 0.8], [False, True], 0.99, min_support=1) is None
    assert thresholds.choose_threshold([0.9] * 5, [True] * 5, 0.9, min_support=10) is None


def test_thresholds_are_exact_for_confidence_at_or_above() -> None:
    choice = thresholds.choose_threshold([0.123456, 0.9], [True, True], 0.9, min_support=2)
    assert choice is not None and choice.threshold == 0.1234 and choice.covered == 2


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")
def test_the_snippet_loads_and_its_thresholds_reach_the_target(tmp_path: Path) -> None:
    output = tmp_path / "thresholds.yaml"
    code = thresholds.main(
        [
            "--data", str(DATA / "tickets" / "test.csv"),
            "--heads", "queue,type",
            "--target-precision", "0.85",
            "--suggest-precision", "0.6",
            "--limit", "300",
            "--threads", "1",
            "--output", str(output),
        ]
    )  # fmt: skip
    assert code == 0
    text = output.read_text()
    assert text.startswith("# policy.heads thresholds for precision 0.85")
    snippet = yaml.safe_load(text)
    settings = load_settings(policy=snippet["policy"])  # what an admin pastes loads
    queue = settings.policy.heads["queue"]
    assert 0 < queue.suggest <= queue.apply <= 1

    # Independently: decisions at or above the apply threshold reach the target.
    from connector.classifier import Classifier, TextInput
    from connector.config import BUNDLED_MODEL

    rows = thresholds.read_rows(DATA / "tickets" / "test.csv", ["queue"], 300)
    model = Classifier.load(BUNDLED_MODEL, threads=1)
    predictions = model.predict([TextInput(r["subject"], r["body"]) for r in rows])
    applied = [
        p["queue"].label == r["queue"]
        for r, p in zip(rows, predictions, strict=True)
        if p["queue"].confidence >= queue.apply
    ]
    assert queue.apply < 1.0, "0.85 is within the bundled model's reach on this file"
    assert len(applied) >= 20
    assert sum(applied) / len(applied) >= 0.85


def test_the_verdict_says_better_worse_mixed_or_unclear() -> None:
    import evaluate

    def row(head: str, f1: list[float], coverage: list[float]) -> dict[str, object]:
        return {
            "head": head,
            "against": "tfidf+lr",
            "difference": sum(f1) / 2,
            "interval_95": f1,
            "target_precision": 0.9,
            "coverage_difference": sum(coverage) / 2,
            "coverage_interval_95": coverage,
        }

    (line,) = evaluate.verdict(
        [
            row("queue", [0.01, 0.05], [0.02, 0.10]),
            row("priority", [-0.06, -0.01], [-0.2, 0.0]),
            row("type", [0.01, 0.03], [-0.3, -0.1]),
            row("sentiment", [-0.02, 0.02], [-0.05, 0.05]),
        ]
    )
    assert line.startswith("Verdict against tfidf+lr: better on queue (macro-F1 +0.030")
    assert "worse on priority (macro-F1 -0.035" in line
    assert "mixed on type" in line
    assert line.endswith("no clear difference on sentiment.")
