"""Score a model directory on the hand-written unambiguous tickets.

    python scripts/evaluate_unambiguous.py --model model/ [--config triage.yaml] [--json out.json]

The set (``evaluation/unambiguous/tickets.jsonl``, see its README) gives every
ticket a list of acceptable labels per head instead of one gold label, so a
prediction counts as right when it is any of them. Per head the report shows
how many predictions were right, and how many would have been applied (the
confidence at or above the head's apply threshold) right and wrong: the wrong
applied ones are the changes a helpdesk would have made by itself and a person
would have had to undo. For priority it also shows the share of the tickets
that must be high (outages, data loss, security breaches) that the model put
at high.

Thresholds are the defaults of ``connector.config.PolicySettings``, or the
policy of ``--config`` (per-label overrides included). Predictions come from
the production path, ``connector.classifier.Classifier``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.config import BUNDLED_MODEL, HeadPolicy, PolicySettings, Settings, load_settings
from connector.errors import ConfigError, ModelError

QUEUES = (
    "Billing and Payments",
    "Customer Service",
    "General Inquiry",
    "Human Resources",
    "IT Support",
    "Product Support",
    "Returns and Exchanges",
    "Sales and Pre-Sales",
    "Service Outages and Maintenance",
    "Technical Support",
)
PRIORITIES = ("low", "medium", "high")
SENTIMENTS = ("negative", "neutral", "positive")
LANGUAGES = ("de", "en")

# Model head -> the record field that lists its acceptable labels, and those labels.
HEAD_FIELDS: dict[str, str] = {"queue": "queues", "priority": "priority", "sentiment": "sentiment"}
VALID_LABELS: dict[str, tuple[str, ...]] = {
    "queue": QUEUES,
    "priority": PRIORITIES,
    "sentiment": SENTIMENTS,
}
PRIORITY_HEAD = "priority"
HIGH = "high"

# Priority label names a model may use instead of low/medium/high (compared in lower case).
PRIORITY_ALIASES: dict[str, str] = {
    "1 low": "low",
    "2 low": "low",
    "minor": "low",
    "normal": "medium",
    "2 normal": "medium",
    "3 normal": "medium",
    "moderate": "medium",
    "3 high": "high",
    "4 high": "high",
    "urgent": "high",
    "critical": "high",
    "very high": "high",
}

DEFAULT_SET = Path(__file__).resolve().parents[1] / "evaluation" / "unambiguous" / "tickets.jsonl"

Predictions = list[dict[str, tuple[str, float]]]


class EvalSetError(ValueError):
    """A record of the evaluation set is malformed; the message starts with ``FILE:LINE:``."""


# -- the set ---------------------------------------------------------------------------


def load_eval_set(path: Path | str) -> list[dict[str, Any]]:
    """The records of a JSONL evaluation set, each checked; ``EvalSetError`` names the line.

    Blank lines are skipped. A record needs ``id``, ``language`` (de/en),
    ``subject``, ``body``, non-empty lists ``queues``, ``priority`` and
    ``sentiment`` of known labels without repeats, and a boolean
    ``must_be_high`` (which requires ``priority`` to be ``["high"]``). Ids
    must be unique.
    """
    path = Path(path)
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise EvalSetError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise EvalSetError(f"{where}: a record must be a JSON object")
            _check_record(record, where)
            if record["id"] in seen:
                raise EvalSetError(
                    f"{where}: duplicate id {record['id']!r} (first on line {seen[record['id']]})"
                )
            seen[record["id"]] = number
            records.append(record)
    if not records:
        raise EvalSetError(f"{path}: no records")
    return records


def _check_record(record: dict[str, Any], where: str) -> None:
    for field in ("id", "language", "subject", "body"):
        if field not in record:
            raise EvalSetError(f"{where}: missing field {field!r}")
        if not isinstance(record[field], str):
            raise EvalSetError(f"{where}: field {field!r} must be a string")
    if not record["id"].strip():
        raise EvalSetError(f"{where}: field 'id' is empty")
    if not record["body"].strip():
        raise EvalSetError(f"{where}: field 'body' is empty")
    if record["language"] not in LANGUAGES:
        raise EvalSetError(
            f"{where}: unknown language {record['language']!r} (expected one of {LANGUAGES})"
        )
    for head, field in HEAD_FIELDS.items():
        if field not in record:
            raise EvalSetError(f"{where}: missing field {field!r}")
        values = record[field]
        if not isinstance(values, list):
            raise EvalSetError(f"{where}: field {field!r} must be a list of labels")
        if not values:
            raise EvalSetError(f"{where}: field {field!r} has no acceptable label")
        for value in values:
            if value not in VALID_LABELS[head]:
                kind = "queue" if head == "queue" else f"{head} label"
                raise EvalSetError(f"{where}: unknown {kind} {value!r} in {field!r}")
        if len(set(values)) != len(values):
            raise EvalSetError(f"{where}: field {field!r} lists a label twice")
    if "must_be_high" not in record:
        raise EvalSetError(f"{where}: missing field 'must_be_high'")
    if not isinstance(record["must_be_high"], bool):
        raise EvalSetError(f"{where}: field 'must_be_high' must be true or false")
    if record["must_be_high"] and record["priority"] != [HIGH]:
        raise EvalSetError(f'{where}: must_be_high needs priority ["high"]')


# -- predictions -----------------------------------------------------------------------


def normalise_priority(label: str) -> str:
    """A model's priority label as low/medium/high (unknown names are kept as they are)."""
    lowered = label.strip().lower()
    if lowered in PRIORITIES:
        return lowered
    return PRIORITY_ALIASES.get(lowered, label)


def predict_records(
    model_dir: Path | str,
    records: Sequence[Mapping[str, Any]],
    config: Settings | None = None,
    *,
    threads: int | None = None,
) -> Predictions:
    """Per record, head -> (label, confidence) from the model in ``model_dir``.

    Every head of the model is returned; priority labels are normalised to
    low/medium/high. ``config`` supplies the inference threads when
    ``threads`` is not given, and its ``policy.queues`` route the queue head
    exactly as the service would (``connector.predictor.Predictor``).
    """
    from connector.classifier import Classifier, TextInput  # onnxruntime: only when predicting
    from connector.predictor import Predictor

    if threads is None and config is not None:
        threads = config.model.threads
    policy = config.policy if config is not None else PolicySettings()
    classifier = Predictor(Classifier.load(Path(model_dir), threads=threads), policy)
    items = [TextInput(subject=str(r["subject"]), body=str(r["body"])) for r in records]
    results: Predictions = []
    for prediction in classifier.predict(items):
        heads: dict[str, tuple[str, float]] = {}
        for head, value in prediction.heads.items():
            label = normalise_priority(value.label) if head == PRIORITY_HEAD else value.label
            heads[head] = (label, float(value.confidence))
        results.append(heads)
    return results


# -- scoring ---------------------------------------------------------------------------


def default_thresholds(policy: PolicySettings | None = None) -> dict[str, HeadPolicy]:
    """Head -> its policy (apply/suggest thresholds): ``policy``'s, else the defaults.

    A head the policy does not list gets ``HeadPolicy``'s defaults, as
    ``connector.policy.Policy`` gives it.
    """
    heads = (policy or PolicySettings()).heads
    return {head: heads.get(head) or HeadPolicy(review_when_unsure=False) for head in HEAD_FIELDS}


def apply_threshold(threshold: HeadPolicy | float, label: str) -> float:
    """The confidence at or above which ``label`` is applied (above 1: never)."""
    if isinstance(threshold, HeadPolicy):
        return threshold.thresholds(label)[0] if threshold.enabled else float("inf")
    return float(threshold)


def score(
    records: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, tuple[str, float]]],
    thresholds: Mapping[str, HeadPolicy | float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per head: n, right, applied, applied_right, applied_wrong (and rates).

    A prediction is right when its label is among the record's acceptable
    ones, applied when its confidence is at or above the head's apply
    threshold (a ``HeadPolicy``, whose per-label overrides count, or a
    number). Priority also gets ``must_be_high_n`` and
    ``must_be_high_right``, the fraction of must-be-high records predicted
    high (None when there are none). Heads the predictions lack are left out.
    """
    if len(records) != len(predictions):
        raise ValueError(f"{len(records)} records but {len(predictions)} predictions")
    if thresholds is None:
        thresholds = default_thresholds()
    scores: dict[str, dict[str, Any]] = {}
    for head, field in HEAD_FIELDS.items():
        pairs = [(r, p[head]) for r, p in zip(records, predictions, strict=True) if head in p]
        if not pairs:
            continue
        if head not in thresholds:
            raise ValueError(f"no apply threshold for head {head!r}")
        n = right = applied_right = applied_wrong = 0
        for record, (label, confidence) in pairs:
            n += 1
            correct = label in record[field]
            right += correct
            if confidence >= apply_threshold(thresholds[head], label):
                applied_right += correct
                applied_wrong += not correct
        applied = applied_right + applied_wrong
        entry: dict[str, Any] = {
            "n": n,
            "right": right,
            "right_rate": right / n,
            "applied": applied,
            "applied_right": applied_right,
            "applied_wrong": applied_wrong,
            "applied_precision": applied_right / applied if applied else None,
        }
        threshold = thresholds[head]
        entry["apply_threshold"] = (
            threshold.apply if isinstance(threshold, HeadPolicy) else float(threshold)
        )
        if head == PRIORITY_HEAD:
            must = [label for record, (label, _) in pairs if record["must_be_high"]]
            entry["must_be_high_n"] = len(must)
            entry["must_be_high_right"] = (
                sum(label == HIGH for label in must) / len(must) if must else None
            )
        scores[head] = entry
    return scores


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_report(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """The scores as a plain-text table, one row per head."""
    header = (
        "head",
        "n",
        "right",
        "right%",
        "apply>=",
        "applied",
        "applied_right",
        "applied_wrong",
        "precision",
    )
    rows = [header]
    for head, entry in scores.items():
        rows.append(
            (
                head,
                str(entry["n"]),
                str(entry["right"]),
                _percent(entry["right_rate"]),
                f"{entry['apply_threshold']:.2f}",
                str(entry["applied"]),
                str(entry["applied_right"]),
                str(entry["applied_wrong"]),
                _percent(entry["applied_precision"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    priority = scores.get(PRIORITY_HEAD)
    if priority is not None and priority.get("must_be_high_n"):
        lines.append("")
        lines.append(
            f"must-be-high tickets predicted high: {_percent(priority['must_be_high_right'])}"
            f" of {priority['must_be_high_n']}"
        )
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score a model on the hand-written unambiguous evaluation set."
    )
    parser.add_argument(
        "--model", type=Path, default=BUNDLED_MODEL, help="model directory (default: bundled)"
    )
    parser.add_argument(
        "--set", type=Path, default=DEFAULT_SET, dest="eval_set", help="evaluation set (JSONL)"
    )
    parser.add_argument("--config", type=Path, help="triage YAML whose policy thresholds to use")
    parser.add_argument("--json", type=Path, help="also write scores and per-ticket predictions")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        records = load_eval_set(args.eval_set)
        settings = load_settings(args.config) if args.config else None
        predictions = predict_records(args.model, records, settings, threads=args.threads)
    except (EvalSetError, ConfigError, ModelError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    thresholds = default_thresholds(settings.policy if settings else None)
    scores = score(records, predictions, thresholds)
    print(format_report(scores))
    if args.json:
        rows = [
            {
                "id": record["id"],
                "predictions": {
                    head: {
                        "label": label,
                        "confidence": round(confidence, 6),
                        **(
                            {"right": label in record[HEAD_FIELDS[head]]}
                            if head in HEAD_FIELDS
                            else {}
                        ),
                    }
                    for head, (label, confidence) in prediction.items()
                },
            }
            for record, prediction in zip(records, predictions, strict=True)
        ]
        payload = {
            "model": str(args.model),
            "set": str(args.eval_set),
            "config": str(args.config) if args.config else None,
            "records": len(records),
            "scores": scores,
            "tickets": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
