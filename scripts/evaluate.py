"""Evaluate a model directory on held-out CSVs, beside a TF-IDF baseline (and another model).

    python scripts/evaluate.py --model model/ \\
        --test ../shared/data/tickets/test.csv --test ../shared/data/sentiment/test.csv \\
        --train ../shared/data/tickets/train.csv --train ../shared/data/sentiment/train.csv \\
        --output runs/eval [--compare OTHER_MODEL_DIR] [--card]

Per head: accuracy, macro-F1, per-class precision/recall/F1, the confusion
matrix, expected calibration error (top label, 15 bins) beside the ECE a
perfectly calibrated system would show on as many rows, and precision and
coverage at a range of confidence thresholds: what an admin needs to choose
apply/suggest thresholds. Predictions come from the production path
(``connector.classifier.Classifier``: text preparation, tokenizer, ONNX), not
from PyTorch.

The baseline is TF-IDF (word 1-2-grams + character 2-5-grams within word
boundaries, sublinear tf, min_df 2) with a class-balanced logistic regression,
trained on ``--train`` and scored on the same test rows. ``--compare`` adds a
second model directory (e.g. the deployed model beside a retrained one).

Writes ``evaluation.md``, ``evaluation.json`` and ``precision_coverage.png`` to
``--output``; ``--card`` also puts the Markdown into the model's MODEL_CARD.md
(and refreshes its manifest).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling
import thresholds as threshold_choice
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.pipeline import FeatureUnion

from connector.classifier import (
    Classifier,
    TextInput,
    expected_calibration_error,
    precision_coverage,
)
from connector.text import prepare_ticket_text

DEFAULT_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0, 0.05))
BASELINE = "tfidf+lr"


@dataclass
class LabelledSet:
    """Test rows of one or more files: raw inputs and labels per head (None = unlabelled)."""

    items: list[TextInput] = field(default_factory=list)
    labels: dict[str, list[str | None]] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate a model directory beside a TF-IDF + logistic regression baseline."
    )
    parser.add_argument("--model", type=Path, required=True, help="model directory to evaluate")
    parser.add_argument(
        "--test", type=Path, action="append", required=True, help="test CSV (repeatable)"
    )
    parser.add_argument(
        "--train",
        type=Path,
        action="append",
        default=[],
        help="train CSV for the baseline (repeatable)",
    )
    parser.add_argument("--compare", type=Path, help="a second model directory to put beside it")
    parser.add_argument("--output", type=Path, required=True, help="directory for the reports")
    parser.add_argument(
        "--thresholds",
        default=",".join(str(t) for t in DEFAULT_THRESHOLDS),
        help="comma-separated confidence thresholds for the precision/coverage table",
    )
    parser.add_argument(
        "--target-precision",
        type=float,
        default=0.9,
        help="coverage at this precision is compared too (the share a head could apply)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    parser.add_argument("--card", action="store_true", help="write the results into MODEL_CARD.md")
    parser.add_argument(
        "--keep-rows",
        action="store_true",
        help="also write the model's per-row probabilities into evaluation.json",
    )
    parser.add_argument("--threads", type=int, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    classifier = Classifier.load(args.model, threads=args.threads)
    systems: dict[str, Classifier] = {f"model {classifier.version}": classifier}
    if args.compare:
        other = Classifier.load(args.compare, threads=args.threads)
        systems[f"compare {other.version}"] = other
    heads = list(classifier.labels)
    try:
        test = read_labelled(args.test, heads)
    except modeling.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    results: dict[str, dict[str, Any]] = {}
    for name, system in systems.items():
        started = time.perf_counter()
        predictions = system.predict(test.items)
        print(f"{name}: {len(test.items)} tickets in {time.perf_counter() - started:.1f} s")
        results[name] = {
            head: score_head(
                system.labels[head],
                test.labels[head],
                [p.heads[head].probabilities for p in predictions],
                thresholds,
                multilabel=system.spec.heads[system.heads.index(head)].kind == "multilabel",
                keep_rows=args.keep_rows and system is classifier,
                target_precision=args.target_precision,
            )
            for head in heads
            if head in system.labels and any(v is not None for v in test.labels[head])
        }
    if not args.no_baseline and args.train:
        started = time.perf_counter()
        results[BASELINE] = baseline_results(
            args.train, test, heads, classifier, thresholds, target_precision=args.target_precision
        )
        print(f"{BASELINE}: trained and scored in {time.perf_counter() - started:.1f} s")

    paired = paired_comparison(results)
    command = "python scripts/evaluate.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    report = {
        "command": command,
        "machine": modeling.machine_description(),
        "test_files": test.files,
        "systems": results,
        "paired": paired,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    modeling.write_json(args.output / "evaluation.json", report)
    markdown = render_markdown(report)
    (args.output / "evaluation.md").write_text(markdown + "\n", encoding="utf-8")
    plot_precision_coverage(results, args.output / "precision_coverage.png")
    print(summary_table(results))
    if paired:
        print(paired_table(paired))
        for line in verdict(paired):
            print(line)
    print(f"wrote {args.output}/evaluation.md, evaluation.json, precision_coverage.png")
    if args.card:
        modeling.update_card(args.model, "evaluation", markdown)
        print(f"updated {args.model / modeling.CARD_FILE} and its manifest")
    return 0


# -- data ------------------------------------------------------------------------------


def read_labelled(paths: Sequence[Path], heads: Sequence[str]) -> LabelledSet:
    """Raw subject/body (or text) and the labels of ``heads`` from each CSV."""
    csv.field_size_limit(sys.maxsize)
    result = LabelledSet(labels={head: [] for head in heads})
    for path in paths:
        try:
            handle = path.open(encoding="utf-8-sig", newline="")
        except OSError as error:
            raise modeling.DataError(f"{path}: cannot read: {error.strerror}") from None
        with handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            present = [head for head in heads if head in columns]
            if not present:
                raise modeling.DataError(
                    f"{path}:1: none of the model's heads {list(heads)} is a column"
                )
            count = 0
            for record in reader:
                if "subject" in columns or "body" in columns:
                    item = TextInput(record.get("subject") or "", record.get("body") or "")
                else:
                    item = TextInput("", record.get("text") or "")
                result.items.append(item)
                for head in heads:
                    value = (record.get(head) or "").strip() if head in present else ""
                    result.labels[head].append(value or None)
                count += 1
        result.files.append(
            {
                "file": f"{path.parent.name}/{path.name}",
                "sha256": modeling.sha256_file(path),
                "rows": count,
                "heads": present,
            }
        )
    return result


# -- scoring ---------------------------------------------------------------------------


def score_head(
    labels: Sequence[str],
    truth: Sequence[str | None],
    probabilities: Sequence[dict[str, float]] | np.ndarray,
    thresholds: Sequence[float],
    *,
    multilabel: bool = False,
    keep_rows: bool = False,
    target_precision: float = 0.9,
) -> dict[str, Any]:
    """All figures for one head on the rows that carry its label.

    ``keep_rows`` adds each row's probabilities and true label index (rows
    whose label the system does not know are left out): what
    cross_validate.py fits calibration corrections on.
    """
    rows = [i for i, value in enumerate(truth) if value is not None]
    if isinstance(probabilities, np.ndarray):
        matrix = probabilities[rows]
    else:
        matrix = np.array([[probabilities[i][label] for label in labels] for i in rows])
    if multilabel:
        return score_multilabel(labels, [str(truth[i]) for i in rows], matrix, thresholds)
    gold = [str(truth[i]) for i in rows]
    predicted = [labels[j] for j in matrix.argmax(1)]
    confidence = matrix.max(1)
    correct = np.array([p == g for p, g in zip(predicted, gold, strict=True)])
    classes = list(labels) + sorted(set(gold) - set(labels))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=classes, zero_division=0
    )
    ece = expected_calibration_error(confidence, correct)
    figures: dict[str, Any] = {
        "kind": "multiclass",
        "_gold": gold,  # for the paired comparison; dropped before the report is written
        "_predicted": predicted,
        "_confidence": confidence,
        "_correct": correct,
        "rows": len(rows),
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "ece": ece,
        "ece_if_calibrated": ece_if_calibrated(confidence, ece),
        "mean_confidence": float(confidence.mean()),
        "temperature_factor": temperature_factor(labels, gold, matrix),
        "per_class": {
            label: {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for label, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion": {
            "labels": classes,
            "matrix": confusion_matrix(gold, predicted, labels=classes).tolist(),
        },
        "precision_coverage": [
            _point(point) for point in precision_coverage(confidence, correct, thresholds)
        ],
        "at_target": _at_target(confidence, correct, target_precision),
    }
    if keep_rows:
        index = {label: i for i, label in enumerate(labels)}
        known = [i for i, g in enumerate(gold) if g in index]
        figures["rows_kept"] = {
            "probabilities": np.round(matrix[known], 6).tolist(),
            "target": [index[gold[i]] for i in known],
        }
    return figures


def temperature_factor(
    labels: Sequence[str], gold: Sequence[str], matrix: np.ndarray
) -> float | None:
    """What these rows would multiply the system's temperature by: NLL-optimal rescaling.

    Probabilities ``p`` rescaled as softmax(log p / f); f > 1 means the system
    is overconfident on these rows, f < 1 underconfident. A diagnostic of how
    well calibration carries over from where it was fitted, not a refit.
    """
    index = {label: i for i, label in enumerate(labels)}
    known = [i for i, g in enumerate(gold) if g in index]
    if not known:
        return None
    log_probabilities = np.log(np.clip(matrix[known], 1e-12, 1.0))
    target = np.array([index[gold[i]] for i in known])
    return modeling.fit_temperature(log_probabilities, target)


def ece_if_calibrated(
    confidence: np.ndarray, observed: float, draws: int = 2000, seed: int = 0
) -> dict[str, float]:
    """The ECE a perfectly calibrated system with these confidences would show on these rows.

    Binned ECE is biased upwards on a few hundred rows: even when every
    confidence is exactly the chance of being right, the bins' accuracies
    scatter around their confidences. Drawing each row's correctness with
    probability equal to its confidence gives that floor's distribution, and
    the share of draws at or above the observed ECE says how unusual it is
    for a calibrated system (small: evidence of miscalibration).
    """
    rng = np.random.default_rng(seed)
    simulated = np.array(
        [
            expected_calibration_error(confidence, rng.random(confidence.size) < confidence)
            for _ in range(draws)
        ]
    )
    return {
        "mean": float(simulated.mean()),
        "p95": float(np.percentile(simulated, 95)),
        "share_at_or_above_observed": float(np.mean(simulated >= observed)),
    }


def score_multilabel(
    labels: Sequence[str], truth: Sequence[str], matrix: np.ndarray, thresholds: Sequence[float]
) -> dict[str, Any]:
    """Tags: micro/macro-F1 of the tags at probability >= 0.5; each (ticket, tag) is a decision."""
    index = {label: j for j, label in enumerate(labels)}
    gold = np.zeros_like(matrix, dtype=bool)
    for row, value in enumerate(truth):
        for tag in value.split(";"):
            if tag.strip() in index:
                gold[row, index[tag.strip()]] = True
    chosen = matrix >= 0.5
    flat_confidence = matrix.ravel()
    flat_correct = gold.ravel()
    return {
        "kind": "multilabel",
        "rows": len(truth),
        "micro_f1": float(f1_score(gold, chosen, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold, chosen, average="macro", zero_division=0)),
        "ece": expected_calibration_error(flat_confidence, flat_correct.astype(float)),
        "precision_coverage": [
            _point(point)
            for point in precision_coverage(
                flat_confidence[flat_confidence >= 0.05],
                flat_correct[flat_confidence >= 0.05],
                thresholds,
            )
        ],
    }


def _point(point: Any) -> dict[str, Any]:
    return {
        "threshold": point.threshold,
        "coverage": point.coverage,
        "precision": point.precision,
        "count": point.count,
    }


# -- baseline --------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineRecipe:
    """The TF-IDF + LR baseline's details that the data's README does not pin down."""

    char_analyzer: str = "char_wb"  # "char_wb": n-grams within words; "char": across them
    min_df: int = 2
    sublinear_tf: bool = True

    def describe(self) -> str:
        return (
            f"{self.char_analyzer}, min_df {self.min_df}, "
            f"{'sublinear' if self.sublinear_tf else 'raw'} tf"
        )


def fit_baseline(
    recipe: BaselineRecipe, texts: Sequence[str], labels: Sequence[str]
) -> tuple[FeatureUnion, LogisticRegression]:
    """Word 1-2-gram and character 2-5-gram tf-idf, class-balanced logistic regression."""
    features = FeatureUnion(
        [
            (
                "words",
                TfidfVectorizer(
                    ngram_range=(1, 2), sublinear_tf=recipe.sublinear_tf, min_df=recipe.min_df
                ),
            ),
            (
                "chars",
                TfidfVectorizer(
                    analyzer=recipe.char_analyzer,
                    ngram_range=(2, 5),
                    sublinear_tf=recipe.sublinear_tf,
                    min_df=recipe.min_df,
                ),
            ),
        ]
    )
    model = LogisticRegression(class_weight="balanced", max_iter=3000)
    model.fit(features.fit_transform(texts), labels)
    return features, model


def baseline_results(
    train_paths: Sequence[Path],
    test: LabelledSet,
    heads: Sequence[str],
    classifier: Classifier,
    thresholds: Sequence[float],
    recipe: BaselineRecipe = BaselineRecipe(),
    target_precision: float = 0.9,
) -> dict[str, Any]:
    """The TF-IDF baseline per single-label head, trained on ``train_paths``."""
    train = read_labelled(train_paths, heads)
    spec = classifier.spec
    prepared_train = [prepare_ticket_text(i.subject, i.body, i.content_type) for i in train.items]
    prepared_test = [prepare_ticket_text(i.subject, i.body, i.content_type) for i in test.items]
    results: dict[str, Any] = {}
    for head in heads:
        if spec.heads[classifier.heads.index(head)].kind == "multilabel":
            continue  # no baseline for tags
        rows = [i for i, value in enumerate(train.labels[head]) if value is not None]
        if not rows or all(v is None for v in test.labels[head]):
            continue
        features, model = fit_baseline(
            recipe,
            [prepared_train[i] for i in rows],
            [str(train.labels[head][i]) for i in rows],
        )
        probabilities = model.predict_proba(features.transform(prepared_test))
        results[head] = score_head(
            [str(c) for c in model.classes_],
            test.labels[head],
            probabilities,
            thresholds,
            target_precision=target_precision,
        )
    return results


# -- reporting -------------------------------------------------------------------------


def summary_table(results: dict[str, dict[str, Any]]) -> str:
    heads = sorted(
        {head for per_head in results.values() for head in per_head}, key=_head_order(results)
    )
    rows = []
    for head in heads:
        for system, per_head in results.items():
            if head in per_head:
                figures = per_head[head]
                rows.append(
                    (
                        head,
                        system,
                        figures["macro_f1"],
                        figures.get("accuracy", figures.get("micro_f1")),
                        figures["ece"],
                        format_floor(figures.get("ece_if_calibrated")),
                        format_factor(figures.get("temperature_factor")),
                        figures["rows"],
                    )
                )
    return modeling.markdown_table(
        (
            "head",
            "system",
            "macro-F1",
            "accuracy",
            "ECE",
            "ECE if calibrated: mean / 95th pct. / P(≥ ECE)",
            "temperature factor",
            "rows",
        ),
        rows,
    )


def format_floor(floor: dict[str, float] | None) -> str:
    """An ``ece_if_calibrated`` result for a table ("-" where there is none)."""
    if floor is None:
        return "-"
    return f"{floor['mean']:.3f} / {floor['p95']:.3f} / {floor['share_at_or_above_observed']:.2f}"


def format_factor(value: float | None) -> str:
    """A temperature factor for a table ("-" where there is none)."""
    return "-" if value is None else f"{value:.2f}"


def _head_order(results: dict[str, dict[str, Any]]) -> Any:
    first = next(iter(results.values()))
    order = {head: i for i, head in enumerate(first)}
    return lambda head: order.get(head, len(order))


def _at_target(confidence: np.ndarray, correct: np.ndarray, target: float) -> dict[str, Any]:
    """The lowest threshold reaching ``target`` precision (20 decisions or more), its coverage."""
    choice = threshold_choice.choose_threshold(confidence, correct, target)
    return {
        "target_precision": target,
        "threshold": choice.threshold if choice else None,
        "coverage": choice.coverage if choice else 0.0,
        "precision": choice.precision if choice else None,
    }


def paired_comparison(
    results: dict[str, dict[str, Any]], resamples: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """Macro-F1 of the model minus each other system's, with a paired bootstrap over test rows.

    Both systems are scored on the same resampled rows each time, so the
    interval is about their difference, not about either alone. Drops the
    per-row predictions from ``results`` afterwards.
    """
    names = list(results)
    model = names[0]
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for head, figures in results[model].items():
        if "_predicted" not in figures:
            continue
        gold = np.array(figures["_gold"])
        mine = np.array(figures["_predicted"])
        target = figures["at_target"]["target_precision"]
        samples = [rng.integers(0, len(gold), len(gold)) for _ in range(resamples)]
        for other in names[1:]:
            theirs_figures = results[other].get(head)
            if not theirs_figures or "_predicted" not in theirs_figures:
                continue
            theirs = np.array(theirs_figures["_predicted"])
            differences = np.array(
                [
                    f1_score(gold[i], mine[i], average="macro", zero_division=0)
                    - f1_score(gold[i], theirs[i], average="macro", zero_division=0)
                    for i in samples
                ]
            )
            # Each system picks its own threshold on each resample, as an admin would.
            coverage = np.array(
                [
                    threshold_choice.coverage_at(
                        figures["_confidence"][i], figures["_correct"][i], target
                    )
                    - threshold_choice.coverage_at(
                        theirs_figures["_confidence"][i], theirs_figures["_correct"][i], target
                    )
                    for i in samples
                ]
            )
            rows.append(
                {
                    "head": head,
                    "against": other,
                    "difference": figures["macro_f1"] - theirs_figures["macro_f1"],
                    "standard_error": float(differences.std()),
                    "interval_95": [
                        float(np.percentile(differences, 2.5)),
                        float(np.percentile(differences, 97.5)),
                    ],
                    "share_not_worse": float(np.mean(differences >= 0)),
                    "target_precision": target,
                    "coverage_difference": figures["at_target"]["coverage"]
                    - theirs_figures["at_target"]["coverage"],
                    "coverage_interval_95": [
                        float(np.percentile(coverage, 2.5)),
                        float(np.percentile(coverage, 97.5)),
                    ],
                }
            )
    for per_head in results.values():
        for figures in per_head.values():
            for key in ("_gold", "_predicted", "_confidence", "_correct"):
                figures.pop(key, None)
    return rows


def verdict(paired: Sequence[dict[str, Any]]) -> list[str]:
    """One plain line per other system: where the model is better, worse, or not clearly either.

    Better or worse only where the paired 95 % interval of the macro-F1 or of the
    coverage difference leaves out zero; a head with one better and one worse is
    mixed.
    """
    by_other: dict[str, list[dict[str, Any]]] = {}
    for row in paired:
        by_other.setdefault(row["against"], []).append(row)
    lines = []
    for other, rows in by_other.items():
        better, worse, mixed, unclear = [], [], [], []
        for row in rows:
            signs = {
                _sign(row["interval_95"]),
                _sign(row.get("coverage_interval_95", [-1.0, 1.0])),
            } - {0}
            target = row.get("target_precision", 0.9)
            coverage = row.get("coverage_difference", 0.0)
            figures = (
                f"{row['head']} (macro-F1 {row['difference']:+.3f}, coverage at precision "
                f"{target:.2f} {coverage:+.1%})"
            )
            if signs == {1}:
                better.append(figures)
            elif signs == {-1}:
                worse.append(figures)
            elif signs:
                mixed.append(figures)
            else:
                unclear.append(row["head"])
        parts = []
        if better:
            parts.append("better on " + "; ".join(better))
        if worse:
            parts.append("worse on " + "; ".join(worse))
        if mixed:
            parts.append("mixed on " + "; ".join(mixed))
        if unclear:
            parts.append("no clear difference on " + ", ".join(unclear))
        lines.append(f"Verdict against {other}: " + "; ".join(parts) + ".")
    return lines


def _sign(interval: Sequence[float]) -> int:
    low, high = interval
    return 1 if low > 0 else -1 if high < 0 else 0


def paired_table(paired: Sequence[dict[str, Any]]) -> str:
    return modeling.markdown_table(
        [
            "head",
            "against",
            "macro-F1 difference",
            "std. error",
            "95 % interval",
            "P(not worse)",
            "coverage at target precision, difference",
            "95 % interval",
        ],
        [
            [
                row["head"],
                row["against"],
                f"{row['difference']:+.3f}",
                f"{row['standard_error']:.3f}",
                f"[{row['interval_95'][0]:+.3f}, {row['interval_95'][1]:+.3f}]",
                f"{row['share_not_worse']:.2f}",
                f"{row['coverage_difference']:+.1%} (at {row['target_precision']:.2f})",
                f"[{row['coverage_interval_95'][0]:+.1%}, {row['coverage_interval_95'][1]:+.1%}]",
            ]
            for row in paired
        ],
    )


def render_markdown(report: dict[str, Any]) -> str:
    results = report["systems"]
    machine = report["machine"]
    lines = [
        "## Evaluation on the test split (generated by scripts/evaluate.py)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} usable CPUs; "
        f"onnxruntime {machine['onnxruntime']}.",
        "",
        "Test files: "
        + ", ".join(
            f"{f['file']} ({f['rows']} rows, sha256 {f['sha256'][:12]}…)"
            for f in report["test_files"]
        ),
        "",
        "### Summary",
        "",
        summary_table(results),
        "",
        "ECE is the top-label expected calibration error over 15 equal-width bins. On a",
        "few hundred rows it is well above zero even for a perfectly calibrated system; the",
        "next column gives that floor: the ECE over 2000 simulations in which each row is",
        "right with exactly its confidence (mean and 95th percentile), and the share of",
        "them at or above the observed ECE (a small share is evidence of miscalibration).",
        "The temperature factor is what these rows would multiply the system's temperature by",
        "(negative log-likelihood optimum): above 1 the system is overconfident here, below",
        "1 underconfident. It is a diagnostic, not a refit.",
    ]
    if report.get("paired"):
        lines += [
            "",
            "### The model against the others, paired",
            "",
            "Macro-F1 of the model minus the other system's, with a paired bootstrap "
            "(1000 resamples of the test rows, both systems scored on the same rows); "
            "P(not worse) is the share of resamples where the model is at least as good. "
            "Coverage at the target precision is the share of tickets a head could apply at "
            "its lowest threshold that reaches it (at least 20 decisions), each system "
            "choosing its own threshold on every resample.",
            "",
            paired_table(report["paired"]),
            "",
            *verdict(report["paired"]),
        ]
    model_name = next(iter(results))
    for head, figures in results[model_name].items():
        lines += ["", f"### {head}", ""]
        lines += [
            "Precision and coverage when only predictions at or above a confidence are used:",
            "",
        ]
        systems = [s for s in results if head in results[s]]
        header = ["threshold"] + [f"{s} coverage / precision" for s in systems]
        table_rows = []
        for index, point in enumerate(figures["precision_coverage"]):
            row: list[Any] = [f"{point['threshold']:.2f}"]
            for system in systems:
                other = results[system][head]["precision_coverage"][index]
                precision = "-" if other["precision"] is None else f"{other['precision']:.3f}"
                row.append(f"{other['coverage']:.3f} / {precision}")
            table_rows.append(row)
        lines.append(modeling.markdown_table(header, table_rows))
        if figures["kind"] == "multiclass":
            lines += ["", f"Per class ({model_name}):", ""]
            lines.append(
                modeling.markdown_table(
                    ("label", "precision", "recall", "F1", "support"),
                    [
                        (label, v["precision"], v["recall"], v["f1"], v["support"])
                        for label, v in figures["per_class"].items()
                    ],
                )
            )
            confusion = figures["confusion"]
            lines += ["", "Confusion matrix (rows: true label, columns: predicted):", ""]
            lines.append(
                modeling.markdown_table(
                    ["true \\ predicted", *[_short(label) for label in confusion["labels"]]],
                    [
                        [_short(label), *counts]
                        for label, counts in zip(
                            confusion["labels"], confusion["matrix"], strict=True
                        )
                    ],
                )
            )
    return "\n".join(lines)


def _short(label: str, width: int = 14) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def plot_precision_coverage(results: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per head: precision against coverage as the threshold rises, per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = list(next(iter(results.values())))
    columns = min(2, len(heads))
    rows = (len(heads) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for axis, head in zip(axes.ravel(), heads, strict=False):
        for system, per_head in results.items():
            if head not in per_head:
                continue
            points = [p for p in per_head[head]["precision_coverage"] if p["precision"] is not None]
            axis.plot(
                [p["coverage"] for p in points],
                [p["precision"] for p in points],
                marker="o",
                markersize=3,
                label=system,
            )
        axis.set_title(head)
        axis.set_xlabel("coverage (share of tickets at or above the threshold)")
        axis.set_ylabel("precision")
        axis.set_xlim(0, 1.02)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in axes.ravel()[len(heads) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
