"""k-fold cross-validation of a training recipe against the TF-IDF baseline.

One test split of a few hundred tickets cannot tell a model that is better
than the baseline from one that was lucky: a paired bootstrap on ~500 rows
gives intervals of ±0.04 macro-F1. This script asks the question on the
whole training export instead. Every training CSV is split into ``k`` folds
(seeded, per file); for each fold, ``train.py`` trains on the other folds
(the dev CSVs still choose the epoch and fit the calibration, as in a normal
run) and ``evaluate.py`` scores the model and the baseline, trained on the
same rows, on the held-out fold. Every training row is held out exactly once.

Usage::

    python scripts/cross_validate.py --train ../shared/data/tickets/train.csv \\
        --train ../shared/data/sentiment/train.csv --dev ../shared/data/tickets/dev.csv \\
        --dev ../shared/data/sentiment/dev.csv --heads queue,priority,type,sentiment \\
        --folds 3 --output runs/cv -- --head-weights sentiment=0.3

Everything after ``--`` is passed to ``train.py`` unchanged. The report
(``cross_validation.md`` and ``.json``) gives, per head, the model's and the
baseline's macro-F1 per fold and their mean, and in how many folds the model
was at least as good. ``--card DIR`` writes it into that model's card.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import calibration
import evaluate
import modeling
import train

BASELINE = evaluate.BASELINE
SECTION = "cross-validation"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Cross-validate train.py against the TF-IDF + LR baseline.",
        epilog="Arguments after -- go to train.py unchanged.",
    )
    parser.add_argument("--train", type=Path, action="append", required=True)
    parser.add_argument("--dev", type=Path, action="append", required=True)
    parser.add_argument("--heads", default=train.DEFAULT_HEADS)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    parser.add_argument("--output", type=Path, required=True, help="working and report directory")
    parser.add_argument("--card", type=Path, help="model directory whose card gets the report")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="train nothing: rebuild the report (and card) from OUTPUT's fold evaluations, "
        "or from OUTPUT/cross_validation.json where they are gone",
    )
    parser.add_argument("--threads", type=int, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, train_args = argv, []
    if "--" in argv:
        own, train_args = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = build_parser().parse_args(own)
    if args.folds < 2:
        print("error: --folds must be at least 2", file=sys.stderr)
        return 2
    if args.reuse:
        document = json.loads((args.output / "cross_validation.json").read_text("utf-8"))
        threads = ["--threads", str(args.threads)] if args.threads else []
        document = rescore(document, args.output, threads)
        modeling.write_json(args.output / "cross_validation.json", document)
        return publish(document, args)
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        tables = [read_table(path) for path in args.train]
    except modeling.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    threads = ["--threads", str(args.threads)] if args.threads else []
    folds: list[dict[str, Any]] = []
    rows: list[dict[str, calibration.FoldRows]] = []
    started = time.perf_counter()
    for fold in range(args.folds):
        fold_dir = args.output / f"fold-{fold + 1}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        train_paths, held_out_paths = write_fold(tables, args.train, fold, args, fold_dir)
        print(f"fold {fold + 1}/{args.folds}: training", flush=True)
        code = train.main(
            [
                *(a for path in train_paths for a in ("--train", str(path))),
                *(a for path in args.dev for a in ("--dev", str(path))),
                "--heads", args.heads,
                "--output", str(fold_dir / "model"),
                "--quiet",
                *threads,
                *train_args,
            ]
        )  # fmt: skip
        if code != 0:
            print(f"error: train.py failed on fold {fold + 1} (exit {code})", file=sys.stderr)
            return code
        report = evaluate_fold(fold_dir, held_out_paths, train_paths, threads)
        if report is None:
            print(f"error: evaluate.py failed on fold {fold + 1}", file=sys.stderr)
            return 1
        folds.append(fold_scores(report))
        rows.append(fold_rows(report))
    summary = summarise(folds, rows)
    command = "python scripts/cross_validate.py " + shlex.join(argv)
    document = {
        "command": command,
        "folds": args.folds,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "per_fold": folds,
        "summary": summary,
    }
    modeling.write_json(args.output / "cross_validation.json", document)
    return publish(document, args)


def rescore(document: dict[str, Any], output: Path, threads: Sequence[str] = ()) -> dict[str, Any]:
    """The report again from the folds' evaluation.json files (evaluate.py may have been rerun).

    A fold evaluated before per-row probabilities were kept is evaluated
    again from its model and held-out files, when they are still there.
    """
    folds, rows = [], []
    for fold in range(document["folds"]):
        fold_dir = output / f"fold-{fold + 1}"
        path = fold_dir / "evaluation" / "evaluation.json"
        if not path.is_file():
            return document  # the folds are gone: keep the recorded figures
        report = json.loads(path.read_text("utf-8"))
        if not fold_rows(report) and (fold_dir / "model").is_dir():
            held_out = sorted(fold_dir.glob("held-out-*.csv"))
            trained_on = sorted(fold_dir.glob("train-*.csv"))
            print(f"fold {fold + 1}: evaluating again, keeping per-row probabilities", flush=True)
            report = evaluate_fold(fold_dir, held_out, trained_on, threads) or report
        folds.append(fold_scores(report))
        rows.append(fold_rows(report))
    return {**document, "per_fold": folds, "summary": summarise(folds, rows)}


def evaluate_fold(
    fold_dir: Path, held_out: Sequence[Path], trained_on: Sequence[Path], threads: Sequence[str]
) -> dict[str, Any] | None:
    """evaluate.py on a fold's held-out files, per-row probabilities kept; None if it failed."""
    code = evaluate.main(
        [
            "--model", str(fold_dir / "model"),
            *(a for path in held_out for a in ("--test", str(path))),
            *(a for path in trained_on for a in ("--train", str(path))),
            "--output", str(fold_dir / "evaluation"),
            "--keep-rows",
            *threads,
        ]
    )  # fmt: skip
    if code != 0:
        return None
    report: dict[str, Any] = json.loads(
        (fold_dir / "evaluation" / "evaluation.json").read_text("utf-8")
    )
    return report


def publish(document: dict[str, Any], args: argparse.Namespace) -> int:
    """Write the Markdown report, print it, and put it into the card when asked."""
    markdown = report_markdown(document)
    (args.output / "cross_validation.md").write_text(markdown + "\n", encoding="utf-8")
    print(markdown)
    if args.card:
        modeling.update_card(args.card, SECTION, markdown)
        print(f"wrote the {SECTION} section of {args.card / modeling.CARD_FILE}")
    return 0


# -- folds -----------------------------------------------------------------------------


class Table:
    """A CSV export as read: its header and rows, kept verbatim for rewriting."""

    def __init__(self, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
        self.fieldnames = fieldnames
        self.rows = rows


def read_table(path: Path) -> Table:
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            try:
                rows = list(reader)
            except (csv.Error, UnicodeDecodeError) as error:
                raise modeling.DataError(f"{path}:{reader.line_num}: {error}") from None
            fieldnames = list(reader.fieldnames or [])
    except OSError as error:
        raise modeling.DataError(f"{path}: cannot read: {error.strerror}") from None
    if not rows:
        raise modeling.DataError(f"{path}: no rows")
    return Table(fieldnames, rows)


def fold_assignment(count: int, folds: int, seed: int) -> np.ndarray:
    """Fold number of each of ``count`` rows: a seeded shuffle cut into near-equal parts."""
    order = np.random.default_rng(seed).permutation(count)
    assignment = np.empty(count, dtype=np.int64)
    for fold, part in enumerate(np.array_split(order, folds)):
        assignment[part] = fold
    return assignment


def write_fold(
    tables: Sequence[Table],
    paths: Sequence[Path],
    fold: int,
    args: argparse.Namespace,
    fold_dir: Path,
) -> tuple[list[Path], list[Path]]:
    """Write each file's training part and held-out part of ``fold``; return both path lists."""
    train_paths: list[Path] = []
    held_out_paths: list[Path] = []
    for index, (table, path) in enumerate(zip(tables, paths, strict=True)):
        # Each file gets its own stream so adding a file does not reshuffle the others.
        assignment = fold_assignment(len(table.rows), args.folds, args.seed + index)
        stem = f"{index + 1}-{path.stem}"
        for name, keep, bucket in (
            (f"train-{stem}.csv", assignment != fold, train_paths),
            (f"held-out-{stem}.csv", assignment == fold, held_out_paths),
        ):
            target = fold_dir / name
            with target.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=table.fieldnames)
                writer.writeheader()
                chosen = (row for row, wanted in zip(table.rows, keep, strict=True) if wanted)
                writer.writerows(chosen)
            bucket.append(target)
    return train_paths, held_out_paths


# -- report ----------------------------------------------------------------------------


def fold_scores(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per head: the model's and the baseline's macro-F1 (and the model's ECE) on one fold."""
    systems = report["systems"]
    model_name = next(name for name in systems if name.startswith("model "))
    scores: dict[str, dict[str, float]] = {}
    for head, figures in systems[model_name].items():
        baseline = systems.get(BASELINE, {}).get(head)
        if baseline is None or figures.get("kind") == "multilabel":
            continue
        scores[head] = {
            "model": figures["macro_f1"],
            "baseline": baseline["macro_f1"],
            "model_ece": figures["ece"],
            "model_temperature_factor": figures.get("temperature_factor"),
            "rows": figures["rows"],
        }
    return scores


def fold_rows(report: dict[str, Any]) -> dict[str, calibration.FoldRows]:
    """Per single-label head: the model's held-out probabilities and truth, if they were kept."""
    systems = report["systems"]
    model_name = next(name for name in systems if name.startswith("model "))
    rows = {}
    for head, figures in systems[model_name].items():
        kept = figures.get("rows_kept")
        factor = figures.get("temperature_factor")
        if kept and kept["target"] and factor:
            rows[head] = calibration.FoldRows(
                np.asarray(kept["probabilities"], dtype=np.float64),
                np.asarray(kept["target"], dtype=np.int64),
                float(factor),
            )
    return rows


def summarise(
    folds: Sequence[dict[str, dict[str, float]]],
    rows: Sequence[dict[str, calibration.FoldRows]] = (),
) -> dict[str, dict[str, Any]]:
    """Per head: the folds' figures, and the calibration chosen where per-row data was kept."""
    heads = [head for head in folds[0] if all(head in fold for fold in folds)]
    summary = {}
    for head in heads:
        model = np.array([fold[head]["model"] for fold in folds])
        baseline = np.array([fold[head]["baseline"] for fold in folds])
        difference = model - baseline
        summary[head] = {
            "model_mean": round(float(model.mean()), 4),
            "baseline_mean": round(float(baseline.mean()), 4),
            "difference_mean": round(float(difference.mean()), 4),
            "differences": [round(float(d), 4) for d in difference],
            "folds_not_worse": int((difference >= 0).sum()),
            "model_ece_mean": round(float(np.mean([f[head]["model_ece"] for f in folds])), 4),
            "model_temperature_factors": [
                None
                if f[head].get("model_temperature_factor") is None
                else round(float(f[head]["model_temperature_factor"]), 3)
                for f in folds
            ],
            "rows": int(sum(fold[head]["rows"] for fold in folds)),
        }
        if len(rows) == len(folds) and all(head in fold for fold in rows):
            summary[head]["calibration"] = calibration.choose([fold[head] for fold in rows])
    return summary


def report_markdown(document: dict[str, Any]) -> str:
    folds = document["folds"]
    rows = [
        (
            head,
            figures["rows"],
            figures["model_mean"],
            figures["baseline_mean"],
            f"{figures['difference_mean']:+.3f}",
            " ".join(f"{d:+.3f}" for d in figures["differences"]),
            f"{figures['folds_not_worse']} of {folds}",
            figures["model_ece_mean"],
            " ".join(map(evaluate.format_factor, figures.get("model_temperature_factors", [])))
            or "-",
        )
        for head, figures in document["summary"].items()
    ]
    table = modeling.markdown_table(
        [
            "head",
            "held-out rows",
            "model macro-F1 (mean)",
            "baseline macro-F1 (mean)",
            "difference (mean)",
            "difference per fold",
            "folds model ≥ baseline",
            "model ECE (mean)",
            "model temperature factor per fold",
        ],
        rows,
    )
    return "\n".join(
        [
            f"### {folds}-fold cross-validation on the training export",
            "",
            f"Command: `{document['command']}` ({document['seconds']:.0f} s).",
            "",
            "Each training row is held out once; the model and the TF-IDF + LR baseline are",
            "trained on the same other folds and scored on the same held-out rows. The",
            "temperature factor is what the held-out rows would multiply the model's",
            "temperature (fitted on dev) by: above 1, the model is overconfident on them.",
            "",
            table,
            *calibration_markdown(document),
        ]
    )


def calibration_markdown(document: dict[str, Any]) -> list[str]:
    """The held-out ECE of each calibration method per head, and the one chosen."""
    chosen = {h: f["calibration"] for h, f in document["summary"].items() if "calibration" in f}
    if not chosen:
        return []
    rows = [
        (
            head,
            *(
                " ".join(f"{v:.3f}" for v in choice["ece_per_fold"][method])
                + f" (mean {choice['ece_mean'][method]:.3f})"
                for method in calibration.METHODS
            ),
            choice["method"],
        )
        for head, choice in chosen.items()
    ]
    return [
        "",
        "Calibration chosen by the held-out folds (`train.py --calibration-from` applies it).",
        "Each fold's ECE is measured with the correction fitted on the other folds only:",
        "the dev temperature as it is; times the other folds' geometric-mean temperature",
        "factor; or with a confidence map (isotonic, on the top label) fitted on their rows.",
        "",
        modeling.markdown_table(
            [
                "head",
                "ECE, dev temperature",
                "ECE, x factor",
                "ECE, confidence map",
                "chosen (lowest mean)",
            ],
            rows,
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
