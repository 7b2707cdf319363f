"""How much the TF-IDF + LR baseline moves with the details its description leaves open.

    python scripts/baseline_variants.py \\
        --train ../shared/data/tickets/train.csv --test ../shared/data/tickets/test.csv \\
        --heads queue,priority,type [--output runs/baseline-variants]
    python scripts/baseline_variants.py --train ../shared/data/tickets/train.csv \\
        --folds 3 --heads queue,priority,type [--output runs/baseline-variants-cv]

"TF-IDF word 1-2 + char 2-5 grams, class-balanced logistic regression" does
not say whether character n-grams stay within words, which minimum document
frequency applies, or whether term frequencies are dampened. This trains the
baseline with each combination on the same rows and prints macro-F1 and
accuracy per head: the spread is how far a quoted baseline figure can be
reproduced without those details. ``scripts/evaluate.py`` uses the first row's
recipe. A diagnostic of the yardstick, not a way to choose a model.

``--folds K`` scores on the training rows' own folds instead of a test file
(for a single ``--train`` file, the very folds ``scripts/cross_validate.py``
cuts from it with the same seed), and reports the mean over folds: whether a
variant that wins on one test split wins on held-out folds too.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cross_validate
import evaluate
import modeling

from connector.text import prepare_ticket_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, action="append", required=True)
    parser.add_argument("--test", type=Path, action="append")
    parser.add_argument("--folds", type=int, default=0, help="score on K folds of --train")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    parser.add_argument("--heads", default="queue,priority,type")
    parser.add_argument("--output", type=Path, help="also write variants.json and variants.md")
    return parser


def recipes() -> list[evaluate.BaselineRecipe]:
    """evaluate.py's recipe first, then every other combination of the open details."""
    default = evaluate.BaselineRecipe()
    others = [
        evaluate.BaselineRecipe(analyzer, min_df, sublinear)
        for analyzer, min_df, sublinear in itertools.product(
            ("char_wb", "char"), (2, 1), (True, False)
        )
    ]
    return [default, *[r for r in others if r != default]]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if (args.folds >= 2) == bool(args.test):
        print("error: give either --test files or --folds K (K >= 2)", file=sys.stderr)
        return 2
    try:
        train = evaluate.read_labelled(args.train, heads)
        test = evaluate.read_labelled(args.test, heads) if args.test else None
    except modeling.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    prepared = [prepare_ticket_text(i.subject, i.body, i.content_type) for i in train.items]
    if test is not None:
        test_texts = [prepare_ticket_text(i.subject, i.body, i.content_type) for i in test.items]
        splits = [(train, prepared, test, test_texts)]
    else:
        splits = fold_splits(train, prepared, args.folds, args.seed)
    results: list[dict[str, Any]] = []
    for recipe in recipes():
        started = time.perf_counter()
        per_split = [score_recipe(recipe, heads, *split) for split in splits]
        scores = {
            head: {
                measure: float(np.mean([s[head][measure] for s in per_split]))
                for measure in ("macro_f1", "accuracy")
            }
            for head in heads
            if all(head in s for s in per_split)
        }
        results.append({"recipe": recipe.describe(), "scores": scores, "per_split": per_split})
        print(
            f"{recipe.describe()}: "
            + ", ".join(f"{h} {s['macro_f1']:.3f}" for h, s in scores.items())
            + f" ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
    command = "python scripts/baseline_variants.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    table = render_table(results, heads)
    print(table)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        modeling.write_json(
            args.output / "variants.json",
            {
                "command": command,
                "train_files": train.files,
                "test_files": test.files if test is not None else f"{args.folds} folds of train",
                "variants": results,
            },
        )
        what = "mean over folds, " if test is None else ""
        (args.output / "variants.md").write_text(
            f"Command: `{command}` ({what}macro-F1 / accuracy)\n\n{table}\n", encoding="utf-8"
        )
    return 0


Split = tuple[evaluate.LabelledSet, list[str], evaluate.LabelledSet, list[str]]


def fold_splits(
    data: evaluate.LabelledSet, prepared: list[str], folds: int, seed: int
) -> list[Split]:
    """(train, texts, held-out, texts) per fold, with cross_validate.py's fold assignment."""
    assignment = cross_validate.fold_assignment(len(data.items), folds, seed)

    def part(rows: np.ndarray) -> tuple[evaluate.LabelledSet, list[str]]:
        subset = evaluate.LabelledSet(
            items=[data.items[i] for i in rows],
            labels={head: [values[i] for i in rows] for head, values in data.labels.items()},
        )
        return subset, [prepared[i] for i in rows]

    splits: list[Split] = []
    for fold in range(folds):
        trained_on, held_out = (
            part(np.flatnonzero(assignment != fold)),
            part(np.flatnonzero(assignment == fold)),
        )
        splits.append((*trained_on, *held_out))
    return splits


def score_recipe(
    recipe: evaluate.BaselineRecipe,
    heads: Sequence[str],
    train: evaluate.LabelledSet,
    train_texts: list[str],
    test: evaluate.LabelledSet,
    test_texts: list[str],
) -> dict[str, dict[str, float]]:
    """Macro-F1 and accuracy per head of the baseline trained with ``recipe``."""
    scores: dict[str, dict[str, float]] = {}
    for head in heads:
        train_rows = [i for i, v in enumerate(train.labels[head]) if v is not None]
        test_rows = [i for i, v in enumerate(test.labels[head]) if v is not None]
        if not train_rows or not test_rows:
            continue
        features, model = evaluate.fit_baseline(
            recipe,
            [train_texts[i] for i in train_rows],
            [str(train.labels[head][i]) for i in train_rows],
        )
        predicted = model.predict(features.transform([test_texts[i] for i in test_rows]))
        gold = [str(test.labels[head][i]) for i in test_rows]
        scores[head] = {
            "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(gold, predicted)),
        }
    return scores


def render_table(results: Sequence[dict[str, Any]], heads: Sequence[str]) -> str:
    """One row per recipe: macro-F1 / accuracy per head."""
    return modeling.markdown_table(
        ["recipe", *[f"{h} macro-F1 / accuracy" for h in heads]],
        [
            [
                row["recipe"],
                *[
                    f"{row['scores'][h]['macro_f1']:.3f} / {row['scores'][h]['accuracy']:.3f}"
                    if h in row["scores"]
                    else "-"
                    for h in heads
                ],
            ]
            for row in results
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
