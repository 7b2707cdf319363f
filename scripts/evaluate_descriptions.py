"""Queue descriptions against trained heads on a taxonomy the model has never seen.

    python scripts/evaluate_descriptions.py --model model/ \\
        --queues evaluation/second-org/queues.yaml \\
        --data ../shared/data/tickets-second-org

Routes the organisation's test split (1) by the described queues alone, (2)
by the descriptions plus k example tickets per queue drawn from its train
split, (3) by a queue head trained on the same k examples (the recipe of
``scripts/train_pretrained.py``: logistic regression over the embedding and
word tf-idf, temperature fitted on dev), and (4) by the product of (2) and
(3), for k = 5, 20, 100 and the full train split. Reports accuracy,
macro-F1, ECE, and what the default thresholds would apply (right and
wrong), each the mean over ``--seeds`` draws.

``--fit-scale`` first fits the description softmax scale on the train split
(descriptions only, minimum negative log-likelihood) and prints it: the value
``train_pretrained.py --description-scale`` writes into labels.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import yaml
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling
import train_pretrained
from modeling import HeadSpec

from connector.classifier import Classifier, TextInput, expected_calibration_error, softmax
from connector.descriptions import DEFAULT_SCALE, DescribedQueues, QueueTexts, combine
from connector.word_features import WordFeatures

APPLY, SUGGEST = 0.8, 0.45  # the queue head's default thresholds


def scores(probabilities: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    right = predicted == gold
    applied = confidence >= APPLY
    return {
        "accuracy": float(right.mean()),
        "macro_f1": float(f1_score(gold, predicted, average="macro")),
        "ece": float(expected_calibration_error(confidence, right)),
        "applied_right": float((applied & right).mean()),
        "applied_wrong": float((applied & ~right).mean()),
    }


def fit_scale(similarities: np.ndarray, gold: np.ndarray) -> float:
    """The softmax scale with the least negative log-likelihood (as a temperature fit)."""
    return 1.0 / modeling.fit_temperature(similarities, gold)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("model"))
    parser.add_argument("--queues", type=Path, required=True, help="YAML with policy.queues")
    parser.add_argument("--data", type=Path, required=True, help="folder with train/dev/test.csv")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fit-scale", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    described = yaml.safe_load(args.queues.read_text(encoding="utf-8"))["policy"]["queues"]
    texts = {name: QueueTexts(entry["description"]) for name, entry in described.items()}
    names = list(texts)
    index = {name: i for i, name in enumerate(names)}
    classifier = Classifier.load(args.model, threads=args.threads)
    scale = classifier.spec.description_scale or DEFAULT_SCALE

    def load(split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        rows = modeling.read_rows(args.data / f"{split}.csv", ["queue"])
        rows = [r for r in rows if r.labels["queue"] in index]
        gold = np.asarray([index[str(r.labels["queue"])] for r in rows])
        return [r.text for r in rows], gold, classifier.embed([TextInput("", r.text) for r in rows])

    train_texts, train_gold, train_emb = load("train")
    dev_texts, dev_gold, dev_emb = load("dev")
    test_texts, test_gold, test_emb = load("test")
    description_vectors = classifier.embed([TextInput("", texts[n].description) for n in names])
    queues = DescribedQueues(names, description_vectors, np.arange(len(names)), scale)
    if args.fit_scale:
        scale = fit_scale(queues.similarities(train_emb), train_gold)
        print(f"fitted description scale on {len(train_gold)} train rows: {scale:.3f}")
        queues = DescribedQueues(queues.names, queues.prototypes, queues.owners, scale)

    features = WordFeatures(train_pretrained.WORDS)
    words = modeling.word_statistics([features(t) for t in train_texts], train_pretrained.WORDS, 2)

    def matrix(emb: np.ndarray, rows: Sequence[str]) -> sp.csr_matrix:
        wide = modeling.word_matrix(words, [features(t) for t in rows])
        return sp.hstack([sp.csr_matrix(emb * train_pretrained.EMBEDDING_WEIGHT), wide]).tocsr()

    dev_x, test_x = matrix(dev_emb, dev_texts), matrix(test_emb, test_texts)
    spec = HeadSpec("queue", "multiclass", tuple(names))
    results: list[tuple[str, dict[str, float]]] = [
        ("descriptions only", scores(queues.probabilities(test_emb), test_gold))
    ]
    for k in (5, 20, 100, None):
        runs: dict[str, list[dict[str, float]]] = {"examples": [], "trained": [], "combined": []}
        for seed in range(args.seeds if k is not None else 1):
            rng = np.random.default_rng(seed)
            chosen = np.concatenate(
                [
                    rng.permutation(np.flatnonzero(train_gold == q))[: k or len(train_gold)]
                    for q in range(len(names))
                ]
            )
            with_examples = DescribedQueues.from_vectors(
                names,
                np.vstack([description_vectors, train_emb[chosen]]),
                np.concatenate([np.arange(len(names)), train_gold[chosen]]),
                scale,
            )
            example_probs = with_examples.probabilities(test_emb)
            head = train_pretrained.fit_head(
                spec,
                matrix(train_emb[chosen], [train_texts[i] for i in chosen]),
                train_gold[chosen],
                np.ones(len(chosen)),
                dev_x,
                dev_gold,
            )
            logits = np.asarray(test_x @ head.weight.T) + head.bias
            trained = softmax(logits / head.temperature)
            runs["examples"].append(scores(example_probs, test_gold))
            runs["trained"].append(scores(trained, test_gold))
            runs["combined"].append(
                scores(combine(queues.probabilities(test_emb), trained), test_gold)
            )
        label = f"{k} per queue" if k else f"full train ({len(train_gold)} rows)"
        for kind, values in runs.items():
            mean = {key: float(np.mean([v[key] for v in values])) for key in values[0]}
            results.append((f"{label}: {kind}", mean))

    print(
        f"test rows: {len(test_gold)}, queues: {len(names)}, scale {scale:.3f}, seeds {args.seeds}"
    )
    print(
        modeling.markdown_table(
            ["system", "accuracy", "macro-F1", "ECE", "applied right", "applied wrong"],
            [
                [
                    name,
                    r["accuracy"],
                    r["macro_f1"],
                    r["ece"],
                    r["applied_right"],
                    r["applied_wrong"],
                ]
                for name, r in results
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
