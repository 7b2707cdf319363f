"""The unambiguous evaluation set and its scorer (scripts/evaluate_unambiguous.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import evaluate_unambiguous as ev  # noqa: E402

from connector.config import HeadPolicy, PolicySettings  # noqa: E402

SET = ROOT / "evaluation" / "unambiguous" / "tickets.jsonl"
MODEL = ROOT / "model"
SCRIPT = ROOT / "scripts" / "evaluate_unambiguous.py"


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return ev.load_eval_set(SET)


# -- the set meets its own rules -------------------------------------------------------


def test_set_size_and_languages(records: list[dict[str, Any]]) -> None:
    assert len(records) >= 150
    languages = Counter(r["language"] for r in records)
    assert set(languages) == {"de", "en"}
    # roughly half each
    assert min(languages.values()) >= 0.4 * len(records)


def test_every_queue_is_the_best_queue_of_at_least_15(records: list[dict[str, Any]]) -> None:
    best = Counter(r["queues"][0] for r in records)
    assert set(best) == set(ev.QUEUES)
    assert all(count >= 15 for count in best.values()), best


def test_priority_extremes(records: list[dict[str, Any]]) -> None:
    must = [r for r in records if r["must_be_high"]]
    assert len(must) >= 30
    assert all(r["priority"] == ["high"] for r in must)
    low = [r for r in records if r["priority"] in (["low"], ["low", "medium"])]
    assert sum(r["priority"] == ["low"] for r in records) >= 30
    assert len(low) >= 30


def test_sentiments_cover_all_three(records: list[dict[str, Any]]) -> None:
    clear = Counter(tuple(r["sentiment"]) for r in records)
    for label in ev.SENTIMENTS:
        assert clear[(label,)] >= 10, label


def test_labels_valid_ids_unique_bodies_distinct(records: list[dict[str, Any]]) -> None:
    for record in records:
        assert set(record["queues"]) <= set(ev.QUEUES)
        assert set(record["priority"]) <= set(ev.PRIORITIES)
        assert set(record["sentiment"]) <= set(ev.SENTIMENTS)
        assert record["queues"] and record["priority"] and record["sentiment"]
        assert isinstance(record["subject"], str) and record["subject"].strip()
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    bodies = [" ".join(str(r["body"]).split()).lower() for r in records]
    assert len(set(bodies)) == len(bodies)


# -- load_eval_set rejects bad records -------------------------------------------------


def good_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "x1",
        "language": "en",
        "subject": "Invoice copy",
        "body": "Please send me a copy of the May invoice.",
        "queues": ["Billing and Payments"],
        "priority": ["low"],
        "sentiment": ["neutral"],
        "must_be_high": False,
    }
    record.update(changes)
    return record


def write_set(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (good_record(id="x3", queues=["Billing"]), "unknown queue 'Billing'"),
        (good_record(id="x3", sentiment=[]), "'sentiment' has no acceptable label"),
        (good_record(id="x3", priority=["urgent"]), "unknown priority label 'urgent'"),
        (good_record(id="x3", language="fr"), "unknown language 'fr'"),
        (good_record(id="x3", must_be_high=True), "must_be_high needs priority"),
        (good_record(id="x1"), "duplicate id 'x1' (first on line 1)"),
    ],
)
def test_bad_record_is_rejected_with_its_line(
    tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    path = write_set(tmp_path / "set.jsonl", [good_record(), good_record(id="x2"), bad])
    with pytest.raises(ev.EvalSetError) as caught:
        ev.load_eval_set(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert message in str(caught.value)


def test_missing_field_is_named_with_its_line(tmp_path: Path) -> None:
    broken = good_record(id="x2")
    del broken["body"]
    path = tmp_path / "set.jsonl"
    # a blank line in between still counts for the line number
    path.write_text(json.dumps(good_record()) + "\n\n" + json.dumps(broken) + "\n")
    with pytest.raises(ev.EvalSetError, match=r"set\.jsonl:3: missing field 'body'"):
        ev.load_eval_set(path)


def test_not_json_is_rejected_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(good_record()) + "\n{not json\n")
    with pytest.raises(ev.EvalSetError, match=r"set\.jsonl:2: not valid JSON"):
        ev.load_eval_set(path)


def test_good_records_load_in_order(tmp_path: Path) -> None:
    path = write_set(tmp_path / "set.jsonl", [good_record(), good_record(id="x2")])
    assert [r["id"] for r in ev.load_eval_set(path)] == ["x1", "x2"]


# -- score() on a hand-computed example ------------------------------------------------


def tiny() -> tuple[list[dict[str, Any]], list[dict[str, tuple[str, float]]]]:
    records = [
        good_record(id="a", queues=["IT Support", "Technical Support"], priority=["medium"]),
        good_record(id="b", queues=["Billing and Payments"], priority=["high"], must_be_high=True),
        good_record(id="c", queues=["Sales and Pre-Sales"], priority=["high"], must_be_high=True),
        good_record(id="d", queues=["General Inquiry"], priority=["low", "medium"]),
    ]
    predictions = [
        # second acceptable queue, applied; priority right but below 0.8
        {"queue": ("Technical Support", 0.90), "priority": ("medium", 0.60)},
        # right queue below the threshold; must-be-high predicted high
        {"queue": ("Billing and Payments", 0.50), "priority": ("high", 0.85)},
        # wrong queue, applied: the costly case; must-be-high missed (applied wrong)
        {"queue": ("Product Support", 0.95), "priority": ("low", 0.81)},
        # wrong queue at exactly the threshold counts as applied; priority right, applied
        {"queue": ("Customer Service", 0.80), "priority": ("low", 0.80)},
    ]
    return records, predictions


def test_score_counts_right_applied_and_wrong() -> None:
    records, predictions = tiny()
    scores = ev.score(records, predictions, {"queue": 0.8, "priority": 0.8})
    assert set(scores) == {"queue", "priority"}  # no sentiment predicted: left out
    queue = scores["queue"]
    assert (queue["n"], queue["right"], queue["applied_right"], queue["applied_wrong"]) == (
        4,
        2,
        1,
        2,
    )
    assert queue["applied"] == 3
    assert queue["applied_precision"] == pytest.approx(1 / 3)
    priority = scores["priority"]
    assert (priority["n"], priority["right"]) == (4, 3)
    assert (priority["applied_right"], priority["applied_wrong"]) == (2, 1)
    assert priority["must_be_high_n"] == 2
    assert priority["must_be_high_right"] == pytest.approx(0.5)


def test_score_uses_per_label_overrides_of_a_head_policy() -> None:
    records, predictions = tiny()
    policy = HeadPolicy(apply=0.8, suggest=0.5, classes={"Product Support": {"apply": 0.99}})
    scores = ev.score(records, predictions, {"queue": policy, "priority": 0.9})
    # Product Support at 0.95 is no longer applied
    assert (scores["queue"]["applied_right"], scores["queue"]["applied_wrong"]) == (1, 1)
    # nothing reaches 0.9 for priority
    assert scores["priority"]["applied"] == 0
    assert scores["priority"]["applied_precision"] is None


def test_a_disabled_head_applies_nothing() -> None:
    records, predictions = tiny()
    off = HeadPolicy(enabled=False)
    scores = ev.score(records, predictions, {"queue": off, "priority": 0.8})
    assert scores["queue"]["right"] == 2
    assert scores["queue"]["applied"] == 0


def test_heads_missing_from_a_policy_get_the_head_defaults() -> None:
    policy = PolicySettings(heads={"queue": HeadPolicy(apply=0.3, suggest=0.2)})
    thresholds = ev.default_thresholds(policy)
    assert thresholds["queue"].apply == 0.3
    assert thresholds["priority"].apply == HeadPolicy().apply
    assert thresholds["sentiment"].apply == HeadPolicy().apply


def test_default_thresholds_are_the_policy_defaults() -> None:
    defaults = PolicySettings().heads
    thresholds = ev.default_thresholds()
    assert set(thresholds) == {"queue", "priority", "sentiment"}
    for head, policy in thresholds.items():
        assert policy.apply == defaults[head].apply


def test_priority_names_are_normalised() -> None:
    assert ev.normalise_priority("High") == "high"
    assert ev.normalise_priority("2 normal") == "medium"
    assert ev.normalise_priority("critical") == "high"
    assert ev.normalise_priority("whatever") == "whatever"


def test_format_report_is_a_table_of_the_scores() -> None:
    records, predictions = tiny()
    report = ev.format_report(ev.score(records, predictions, {"queue": 0.8, "priority": 0.8}))
    lines = report.splitlines()
    assert lines[0].split()[:3] == ["head", "n", "right"]
    queue_row = next(line for line in lines if line.startswith("queue"))
    assert queue_row.split() == ["queue", "4", "2", "50.0%", "0.80", "3", "1", "2", "33.3%"]
    assert "must-be-high tickets predicted high: 50.0% of 2" in report


# -- end to end on the bundled model ---------------------------------------------------


def test_predict_records_gives_every_head_a_known_label(records: list[dict[str, Any]]) -> None:
    sample = records[:5]
    predictions = ev.predict_records(MODEL, sample, threads=1)
    assert len(predictions) == len(sample)
    for prediction in predictions:
        assert prediction["queue"][0] in ev.QUEUES
        assert prediction["priority"][0] in ev.PRIORITIES
        assert prediction["sentiment"][0] in ev.SENTIMENTS
        assert all(0.0 <= confidence <= 1.0 for _, confidence in prediction.values())


def test_cli_runs_end_to_end_on_the_bundled_model(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    out = tmp_path / "out.json"
    config = tmp_path / "triage.yaml"
    config.write_text("policy:\n  heads:\n    queue:\n      apply: 0.3\n      suggest: 0.2\n")
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model",
            str(MODEL),
            "--config",
            str(config),
            "--json",
            str(out),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[0] == "head"
    assert "must-be-high tickets predicted high" in result.stdout
    data = json.loads(out.read_text())
    assert data["records"] == len(records)
    assert len(data["tickets"]) == len(records)
    scores = data["scores"]
    assert scores["queue"]["apply_threshold"] == 0.3  # from --config
    assert scores["priority"]["apply_threshold"] == PolicySettings().heads["priority"].apply
    for head in ("queue", "priority", "sentiment"):
        entry = scores[head]
        assert entry["n"] == len(records)
        assert entry["applied_right"] + entry["applied_wrong"] == entry["applied"]
        assert entry["applied_right"] <= entry["right"] <= entry["n"]
        # the stored per-ticket verdicts add up to the head's count
        assert sum(t["predictions"][head]["right"] for t in data["tickets"]) == entry["right"]
        assert f"{head} " in result.stdout
    assert scores["priority"]["must_be_high_n"] == sum(bool(r["must_be_high"]) for r in records)


def test_cli_reports_a_bad_set_and_fails(tmp_path: Path) -> None:
    path = write_set(tmp_path / "set.jsonl", [good_record(queues=["Nope"])])
    code = ev.main(["--model", str(MODEL), "--set", str(path)])
    assert code == 1
