"""Confidence thresholds from a target precision, as a policy snippet to review and paste.

    python scripts/thresholds.py --model model/ --data exports/test.csv \\
        --config triage.yaml --target-precision 0.9 --output thresholds.yaml

For each head (and with ``--per-label`` for each label with enough support) it
finds the lowest ``apply`` threshold at which the decisions at or above it are
right at least ``--target-precision`` of the time on the labelled file, and the
lowest ``suggest`` threshold that reaches ``--suggest-precision``. It prints the
coverage each gives (how many tickets would be applied or suggested) and a 95 %
lower bound on the precision (Wilson), and writes the ``policy.heads`` snippet.

Predictions go through ``connector.predictor.Predictor`` with ``--config``'s
policy, so queue descriptions and ``queue_map`` count exactly as in the
service. A prediction is right when its label, or the helpdesk value the
policy maps it to (``queue_map``, ``priority_map``), equals the file's value,
so an export that names queues and priorities as the helpdesk does works
unchanged.

The thresholds are chosen on this file, so the precision it reports is an
optimistic estimate: choose them on a file the model was not trained or
calibrated on (the export's test split), and watch the live figures.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.classifier import Classifier, TextInput  # noqa: E402
from connector.config import BUNDLED_MODEL, Settings, load_settings  # noqa: E402
from connector.policy import PRIORITY_HEAD, QUEUE_HEAD, Policy  # noqa: E402
from connector.predictor import Predictor  # noqa: E402

Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class Choice:
    threshold: float
    covered: int
    right: int
    total: int

    @property
    def precision(self) -> float:
        return self.right / self.covered if self.covered else 0.0

    @property
    def coverage(self) -> float:
        return self.covered / self.total if self.total else 0.0

    @property
    def lower_bound(self) -> float:
        return wilson_lower(self.right, self.covered)


def wilson_lower(right: int, n: int, z: float = Z95) -> float:
    """The lower end of the Wilson score interval for ``right`` of ``n``."""
    if n == 0:
        return 0.0
    p = right / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_threshold(
    confidences: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    target: float,
    *,
    min_support: int = 20,
    total: int | None = None,
) -> Choice | None:
    """The lowest threshold whose decisions at or above it reach ``target`` precision.

    Thresholds are the observed confidences rounded down to 4 decimals, so the
    figures are exactly what ``confidence >= threshold`` gives. None when no
    threshold keeps ``min_support`` decisions at the target.
    """
    confidence = np.asarray(confidences, dtype=float)
    right = np.asarray(correct, dtype=bool)
    if confidence.shape != right.shape:
        raise ValueError("confidences and correct differ in length")
    if confidence.size == 0:
        return None
    # On the 4-decimal grid, confidence >= t exactly when its rounded-down value is >= t.
    grid = np.floor(confidence * 10_000) / 10_000
    values, inverse = np.unique(grid, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(values))
    hits = np.bincount(inverse, weights=right, minlength=len(values))
    covered = np.cumsum(counts[::-1])[::-1]  # decisions at or above each value
    right_above = np.cumsum(hits[::-1])[::-1]
    ok = (covered >= min_support) & (right_above >= target * covered - 1e-9)
    if not ok.any():
        return None
    first = int(np.argmax(ok))
    return Choice(
        float(values[first]),
        int(covered[first]),
        round(float(right_above[first])),
        total or int(confidence.size),
    )


def coverage_at(
    confidences: np.ndarray, correct: np.ndarray, target: float, *, min_support: int = 20
) -> float:
    """The share of decisions that can be applied at ``target`` precision (0 when none)."""
    choice = choose_threshold(confidences, correct, target, min_support=min_support)
    return choice.coverage if choice else 0.0


def read_rows(path: Path, heads: Sequence[str], limit: int | None) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [
            row for row in csv.DictReader(handle) if any((row.get(h) or "").strip() for h in heads)
        ]
    return rows[:limit] if limit else rows


def is_right(policy: Policy, head: str, label: str, truth: str) -> bool:
    truth = truth.strip()
    if label == truth:
        return True
    if head == QUEUE_HEAD:
        return policy.queue_target(label) == truth
    if head == PRIORITY_HEAD:
        return policy.priority_map.get(label) == truth
    return False


def snippet(
    choices: dict[str, dict[str, Choice | None]],
    per_label: dict[str, dict[str, dict[str, Choice | None]]],
    header: list[str],
) -> str:
    heads: dict[str, Any] = {}
    for head, by_kind in choices.items():
        entry: dict[str, Any] = {}
        for kind in ("apply", "suggest"):
            choice = by_kind.get(kind)
            # Out of reach: never apply (1.0); suggest everything rather than nothing.
            entry[kind] = choice.threshold if choice else (1.0 if kind == "apply" else 0.0)
        if entry["suggest"] > entry["apply"]:
            entry["suggest"] = entry["apply"]
        classes = {}
        for label, kinds in per_label.get(head, {}).items():
            values = {k: c.threshold for k, c in kinds.items() if c is not None}
            if values:
                classes[label] = values
        if classes:
            entry["classes"] = classes
        heads[head] = entry
    body = yaml.safe_dump({"policy": {"heads": heads}}, sort_keys=False, allow_unicode=True)
    return "\n".join(f"# {line}" for line in header) + "\n" + body


def describe(choice: Choice | None, target: float) -> str:
    if choice is None:
        return f"not reachable at {target:.2f} with enough tickets"
    return (
        f"at {choice.threshold:.4f}: {choice.covered} of {choice.total} tickets "
        f"({choice.coverage:.1%}), precision {choice.precision:.3f} "
        f"(95% lower bound {choice.lower_bound:.3f})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--data", type=Path, required=True, help="labelled CSV (training format)")
    parser.add_argument("--config", type=Path, help="the service's YAML (its policy is used)")
    parser.add_argument("--heads", default="queue,priority,type,sentiment")
    parser.add_argument("--target-precision", type=float, required=True)
    parser.add_argument("--suggest-precision", type=float, default=0.6)
    parser.add_argument("--per-label", action="store_true", help="also thresholds per label")
    parser.add_argument("--min-support", type=int, default=20)
    parser.add_argument("--limit", type=int, help="only the first N labelled rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="write the snippet here (default: stdout)")
    args = parser.parse_args(argv)
    if not 0 < args.suggest_precision <= args.target_precision <= 1:
        print("need 0 < --suggest-precision <= --target-precision <= 1", file=sys.stderr)
        return 2

    settings: Settings = load_settings(args.config) if args.config else load_settings()
    classifier = Classifier.load(args.model, threads=args.threads)
    predictor = Predictor(classifier, settings.policy)
    policy = Policy(settings.policy, settings.markers, settings.helpdesk)
    heads = [h for h in (x.strip() for x in args.heads.split(",")) if h in predictor.heads]
    rows = read_rows(args.data, heads, args.limit)
    if not rows:
        print(f"{args.data}: no rows with a label for {heads}", file=sys.stderr)
        return 2
    predictions = []
    for start in range(0, len(rows), 64):
        batch = rows[start : start + 64]
        predictions += predictor.predict(
            [TextInput(r.get("subject") or "", r.get("body") or r.get("text") or "") for r in batch]
        )

    choices: dict[str, dict[str, Choice | None]] = {}
    per_label: dict[str, dict[str, dict[str, Choice | None]]] = {}
    report: list[str] = []
    for head in heads:
        labelled = [(r, p[head]) for r, p in zip(rows, predictions, strict=True) if r.get(head)]
        if not labelled:
            continue
        confidences = [guess.confidence for _, guess in labelled]
        correct = [is_right(policy, head, guess.label, row[head]) for row, guess in labelled]
        total = len(labelled)
        choices[head] = {
            "apply": choose_threshold(
                confidences, correct, args.target_precision, min_support=args.min_support
            ),
            "suggest": choose_threshold(
                confidences, correct, args.suggest_precision, min_support=args.min_support
            ),
        }
        report.append(
            f"{head} ({total} labelled, {sum(correct)} right at any confidence): "
            f"apply {describe(choices[head]['apply'], args.target_precision)}; "
            f"suggest {describe(choices[head]['suggest'], args.suggest_precision)}"
        )
        if args.per_label:
            for label in sorted({guess.label for _, guess in labelled}):
                picked = [i for i, (_, guess) in enumerate(labelled) if guess.label == label]
                conf = [confidences[i] for i in picked]
                ok = [correct[i] for i in picked]
                found = {
                    kind: choose_threshold(
                        conf, ok, target, min_support=args.min_support, total=total
                    )
                    for kind, target in (
                        ("apply", args.target_precision),
                        ("suggest", args.suggest_precision),
                    )
                }
                if any(found.values()):
                    per_label.setdefault(head, {})[label] = found
                    report.append(
                        f"  {label}: apply {describe(found['apply'], args.target_precision)}"
                    )
    header = [
        f"policy.heads thresholds for precision {args.target_precision:.2f} (apply) and "
        f"{args.suggest_precision:.2f} (suggest),",
        f"chosen on {args.data.name} ({len(rows)} rows) with model {classifier.version}, "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "Chosen on this file, so optimistic: review before pasting, then watch live precision.",
        *report,
    ]
    text = snippet(choices, per_label, header)
    for line in report:
        print(line, file=sys.stderr)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
