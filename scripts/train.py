"""Train the triage classifier from helpdesk CSV exports and export it as a model directory.

One command, for the bundled model and for an organisation's own history:

    python scripts/train.py \\
        --train ../shared/data/tickets/train.csv --train ../shared/data/sentiment/train.csv \\
        --dev ../shared/data/tickets/dev.csv --dev ../shared/data/sentiment/dev.csv \\
        --heads queue,priority,type,sentiment --output model/

Each CSV feeds the heads whose columns it has (docs/training.md describes the
format); one shared encoder, one head per label. The tokenizer is trained on
the training text; the model is trained on train only, early-stopped and
calibrated (one temperature per head) on dev, with the corrections a
cross-validation report chose (``--calibration-from``). The test split is
never read here.

Written to ``--output`` (built in a temporary directory first, then moved in,
manifest last): model.onnx, tokenizer.json, labels.json, golden.jsonl,
MODEL_CARD.md (its hand-written parts are kept if the directory had one) and
manifest.json. Same inputs, same options and the same thread count give
byte-identical model files.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import calibration
import modeling
from modeling import (
    CARD_FILE,
    GOLDEN_FILE,
    DataError,
    EncodedSplit,
    ExportModule,
    HeadSpec,
    ModelConfig,
    Row,
    TrainConfig,
)

from connector.classifier import (
    Classifier,
    TextInput,
    expected_calibration_error,
    prediction_to_json,
    session_options,
    softmax,
)
from connector.cpu import cpu_limit
from connector.text import MAX_CHARS, SUBJECT_BODY_SEPARATOR
from connector.word_features import INPUT_NAMES as WORD_INPUT_NAMES
from connector.word_features import WordFeatureConfig, WordFeatures, pad_features

DEFAULT_HEADS = "queue,priority,type,sentiment"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train the triage classifier on CSV exports and export it to ONNX.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train", type=Path, action="append", required=True, help="training CSV (repeatable)"
    )
    data.add_argument(
        "--dev",
        type=Path,
        action="append",
        default=[],
        help="dev CSV (repeatable); without one, 10%% of the training rows, chosen by a hash "
        "of their text, become the dev split",
    )
    data.add_argument(
        "--heads", default=DEFAULT_HEADS, help="comma-separated label columns to learn"
    )
    data.add_argument("--output", type=Path, required=True, help="model directory to write")
    data.add_argument("--max-tokens", type=int, default=256)
    data.add_argument("--max-chars", type=int, default=MAX_CHARS)
    data.add_argument(
        "--min-tag-count", type=int, default=10, help="tags head: rarer tags are dropped"
    )
    data.add_argument(
        "--limit-rows",
        type=int,
        default=None,
        help="a fixed sample of N rows per file (smoke tests)",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=("hybrid", "bag", "cnn", "transformer"), default="hybrid")
    model.add_argument("--tokenizer", choices=("wordpiece", "unigram"), default="wordpiece")
    model.add_argument("--vocab-size", type=int, default=8000)
    model.add_argument("--dim", type=int, default=48)
    model.add_argument("--hidden", type=int, default=0, help="shared hidden layer width (0 = none)")
    model.add_argument("--ngram-buckets", type=int, default=32_768)
    model.add_argument("--ngram-orders", default="2", help="bag: token n-gram lengths to hash")
    model.add_argument(
        "--lexical-buckets", type=int, default=32_768, help="hybrid: hashed bigram tf-idf slots"
    )
    model.add_argument("--char-ngrams", default="2,3,4,5", help="hybrid: character n-gram lengths")
    model.add_argument("--char-buckets", type=int, default=32_768)
    model.add_argument(
        "--wide-features",
        choices=modeling.WIDE_FEATURES,
        default="words",
        help="hybrid: tf-idf of whole words and their character n-grams, computed from the "
        "text, or of subword tokens, computed in the graph (needed by the neighbour memory)",
    )
    model.add_argument(
        "--word-buckets", type=int, default=1 << 19, help="words: hash buckets per block"
    )
    model.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hybrid: keep a neighbour memory of training tickets (heads that gain from it)",
    )
    model.add_argument(
        "--blend-logistic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hybrid: add a class-balanced logistic regression on the tf-idf view, fitted to "
        "convergence, to each multiclass head (an ensemble at no inference cost)",
    )
    model.add_argument(
        "--logistic-c", type=float, default=1.0, help="its inverse L2 strength, as scikit-learn's C"
    )
    model.add_argument(
        "--calibration-from",
        type=Path,
        default=None,
        help="a cross_validate.py report (cross_validation.json) of this recipe: each head is "
        "calibrated as the report chose (dev temperature, times the held-out folds' factor, "
        "or with a confidence map fitted on the held-out folds)",
    )
    model.add_argument("--memory-per-row", type=int, default=64)
    model.add_argument("--memory-k", type=int, default=3)
    model.add_argument("--memory-threshold", type=float, default=0.4)
    model.add_argument("--dropout", type=float, default=0.3)
    model.add_argument("--token-dropout", type=float, default=0.1)
    model.add_argument("--filters", type=int, default=128, help="cnn: filters per kernel size")
    model.add_argument("--layers", type=int, default=2, help="transformer: layers")

    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=30)
    training.add_argument("--patience", type=int, default=5)
    training.add_argument("--batch-size", type=int, default=64)
    training.add_argument("--learning-rate", type=float, default=2e-3)
    training.add_argument("--weight-decay", type=float, default=1e-4)
    training.add_argument(
        "--class-balance", type=float, default=1.0, help="0 = none, 1 = fully balanced"
    )
    training.add_argument(
        "--head-weights", default="", help="loss weight per head, e.g. sentiment=0.3 (default 1)"
    )
    training.add_argument("--wide-weight-decay", type=float, default=0.3)
    training.add_argument("--seed", type=int, default=13)
    training.add_argument(
        "--ensemble", type=int, default=1, help="models (seeds) averaged in one graph"
    )
    training.add_argument(
        "--threads", type=int, default=None, help="default: the CPUs this process may use"
    )

    output = parser.add_argument_group("output")
    output.add_argument("--version", default=None, help="model version (default: name + hash)")
    output.add_argument("--name", default="triage", help="version prefix")
    output.add_argument("--golden", type=int, default=36, help="golden examples to record")
    output.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if not heads:
        print("error: --heads is empty", file=sys.stderr)
        return 2
    log = (lambda *_: None) if args.quiet else (lambda *parts: print(*parts, flush=True))
    threads = args.threads or cpu_limit()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    started = time.perf_counter()
    try:
        cross_validated = read_calibration(args.calibration_from) if args.calibration_from else None
        train_rows, train_files = read_files(args.train, heads, args)
        if args.dev:
            dev_rows, dev_files = read_files(args.dev, heads, args)
        else:
            train_rows, dev_rows = modeling.split_off_dev(train_rows)
            dev_files = [
                {
                    "file": "10% of the training rows, by a hash of their text",
                    "rows": len(dev_rows),
                    "heads": sorted({head for row in dev_rows for head in row.labels}),
                    "sha256": "-",
                }
            ]
            log(
                f"no --dev given: {len(dev_rows)} of {len(train_rows) + len(dev_rows)} training "
                "rows, chosen by a hash of their text, are the dev split"
            )
        specs = modeling.head_specs(train_rows, heads, min_tag_count=args.min_tag_count)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dev_rows = restrict_to_known_labels(dev_rows, specs, log)
    missing = [s.name for s in specs if not any(s.name in r.labels for r in dev_rows)]
    if missing:
        print(f"error: no dev rows carry a label for {missing}", file=sys.stderr)
        return 2
    log(f"train rows {len(train_rows)}, dev rows {len(dev_rows)}, heads {[s.name for s in specs]}")

    tokenizer = modeling.train_tokenizer(
        (row.text for row in train_rows), vocab_size=args.vocab_size, kind=args.tokenizer
    )
    vocabulary = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    model_config = ModelConfig(
        arch=args.arch,
        vocab_size=tokenizer.get_vocab_size(),
        dim=args.dim,
        hidden=args.hidden,
        ngram_buckets=args.ngram_buckets,
        ngram_orders=tuple(int(n) for n in args.ngram_orders.split(",") if n.strip()),
        lexical_buckets=args.lexical_buckets,
        char_ngrams=tuple(int(n) for n in args.char_ngrams.split(",") if n.strip()),
        char_buckets=args.char_buckets,
        wide_features=args.wide_features,
        word_buckets=args.word_buckets,
        filters=args.filters,
        layers=args.layers,
        max_tokens=args.max_tokens,
        dropout=args.dropout,
        token_dropout=args.token_dropout,
    )
    featurizer = None
    if model_config.arch == "hybrid" and model_config.wide_features == "words":
        featurizer = WordFeatures(
            WordFeatureConfig(buckets=args.word_buckets, text_chars=args.max_chars)
        )
    train_split = modeling.encode_split(train_rows, specs, tokenizer, args.max_tokens, featurizer)
    dev_split = modeling.encode_split(dev_rows, specs, tokenizer, args.max_tokens, featurizer)
    statistics: modeling.LexicalStatistics | modeling.WordStatistics | None = None
    if featurizer is not None:
        assert train_split.lexical is not None
        statistics = modeling.word_statistics(
            train_split.lexical, featurizer.config, model_config.min_df
        )
        model_config = replace(
            model_config,
            word_rows=statistics.rows,
            word_block_rows=statistics.word_block_rows,
        )
        log(f"whole-word features: {statistics.rows - 1} seen in {model_config.min_df}+ texts")
    elif model_config.arch == "hybrid":
        statistics = modeling.lexical_statistics(train_split.ids, model_config, vocabulary)

    members = []
    fits = []
    for member in range(args.ensemble):
        train_config = TrainConfig(
            epochs=args.epochs,
            patience=args.patience,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            class_balance=args.class_balance,
            seed=args.seed + member,
            head_weights=parse_head_weights(args.head_weights),
            wide_weight_decay=args.wide_weight_decay,
        )
        log(f"model {member + 1}/{args.ensemble} (seed {train_config.seed})")
        result = modeling.fit(
            model_config,
            train_config,
            specs,
            train_split,
            dev_split,
            vocabulary=vocabulary,
            statistics=statistics,
            log=log,
        )
        log(f"  best epoch {result.best_epoch}: {fmt(result.dev_scores)} ({result.seconds:.0f} s)")
        members.append(result.model)
        fits.append(result)

    blended: list[str] = []
    if args.blend_logistic and model_config.arch == "hybrid":
        blended = modeling.blend_logistic(
            members, specs, train_split, regularisation=args.logistic_c
        )
        log(f"logistic regression added to: {', '.join(blended) or 'no head'}")
    dev_logits = modeling.mean_logits(members, dev_split)
    memory, fusions, dev_votes = calibrate(
        members, specs, train_split, dev_split, dev_logits, args, log
    )
    dev_fusions = dict(fusions)
    if cross_validated is not None:
        fusions = apply_calibration(fusions, cross_validated, log)
    dev_report, calibrated = dev_metrics(dev_logits, dev_votes, dev_split, specs, fusions)
    for name, figures in dev_report.items():
        fusion = fusions[name]
        log(
            f"dev {name}: {fmt(figures)} "
            f"temperature {fusion.temperature:.3f} memory gain {fusion.gain:.2f}"
        )

    output: Path = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".train-", dir=output.parent) as scratch:
        staging = Path(scratch)
        export = ExportModule(
            members,
            specs,
            fusions,
            memory,
            token_chars=statistics.token_chars
            if isinstance(statistics, modeling.LexicalStatistics)
            else None,
        )
        modeling.export_onnx(export, staging / "model.onnx")
        check_export(export, staging / "model.onnx", dev_split, calibrated)
        tokenizer.enable_truncation(max_length=args.max_tokens)
        tokenizer.no_padding()
        tokenizer.save(str(staging / "tokenizer.json"))
        version = args.version or f"{args.name}-{modeling.sha256_file(staging / 'model.onnx')[:12]}"
        labels = labels_document(
            version,
            specs,
            fusions,
            memory,
            args,
            model_config,
            fits,
            train_files,
            dev_files,
            dev_report,
            featurizer.config if featurizer is not None else None,
            blended,
            dev_fusions,
            cross_validated,
        )
        modeling.write_json(staging / "labels.json", labels)
        modeling.write_manifest(staging, version)  # provisional: lets the classifier load
        golden = write_golden(staging, dev_rows, args.golden)
        seconds = time.perf_counter() - started
        card = existing_card(output)
        (staging / CARD_FILE).write_text(
            modeling.replace_card_section(
                card or card_template(),
                "training",
                training_section(labels, argv, seconds, threads),
            ),
            encoding="utf-8",
        )
        modeling.write_manifest(staging, version)
        install(staging, output)
    log(f"wrote {output} (version {version}, {golden} golden examples) in {seconds:.0f} s")
    return 0


# -- data ------------------------------------------------------------------------------


def read_files(
    paths: Sequence[Path], heads: Sequence[str], args: argparse.Namespace
) -> tuple[list[Row], list[dict[str, Any]]]:
    rows: list[Row] = []
    described = []
    for path in paths:
        file_rows = modeling.read_rows(path, heads, max_chars=args.max_chars, limit=args.limit_rows)
        rows.extend(file_rows)
        fed = sorted({head for row in file_rows for head in row.labels})
        described.append(
            {
                "file": f"{path.parent.name}/{path.name}",
                "sha256": modeling.sha256_file(path),
                "rows": len(file_rows),
                "heads": fed,
            }
        )
    return rows, described


def restrict_to_known_labels(rows: list[Row], specs: Sequence[HeadSpec], log: Any) -> list[Row]:
    """Dev rows minus labels the training data never had (they cannot be predicted)."""
    known = {spec.name: set(spec.labels) for spec in specs}
    kept = []
    unknown: dict[str, set[str]] = {}
    affected = 0
    for row in rows:
        labels = {}
        dropped = False
        for head, value in row.labels.items():
            if head not in known:
                continue
            if isinstance(value, tuple):
                labels[head] = tuple(v for v in value if v in known[head])
            elif value in known[head]:
                labels[head] = value
            else:
                unknown.setdefault(head, set()).add(value)
                dropped = True
        affected += dropped
        if labels:
            kept.append(Row(row.text, labels))
    if unknown:
        count = sum(len(values) for values in unknown.values())
        listing = "; ".join(
            f"{head}: {', '.join(sorted(values)[:5])}{' ...' if len(values) > 5 else ''}"
            for head, values in sorted(unknown.items())
        )
        log(
            f"dev: {count} labels unknown to the training data, on {affected} rows, were "
            f"ignored ({listing})"
        )
    return kept


# -- training results ------------------------------------------------------------------


def dev_metrics(
    logits: dict[str, np.ndarray],
    votes: dict[str, np.ndarray],
    split: EncodedSplit,
    specs: Sequence[HeadSpec],
    fusions: dict[str, modeling.Fusion],
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Dev figures of the final (fused, calibrated) model, ECE before calibration, and the
    calibrated probabilities of the single-label heads."""
    fused = {}
    for spec in specs:
        fusion = fusions[spec.name]
        value = logits[spec.name]
        if spec.name in votes and fusion.gain > 0:
            value = value + fusion.gain * votes[spec.name]
        fused[spec.name] = value / fusion.temperature
    scores = modeling.head_scores(fused, split, specs)
    probabilities = {
        spec.name: fusions[spec.name].probabilities(fused[spec.name])
        for spec in specs
        if spec.kind == "multiclass"
    }
    report: dict[str, dict[str, float]] = {}
    for spec in specs:
        has = split.present[spec.name]
        figures = {"macro_f1" if spec.kind == "multiclass" else "micro_f1": scores[spec.name]}
        if spec.kind == "multiclass":
            target = split.targets[spec.name][has]
            raw = softmax(logits[spec.name][has])
            calibrated = probabilities[spec.name][has]
            figures["accuracy"] = float((calibrated.argmax(1) == target).mean())
            figures["ece_uncalibrated"] = expected_calibration_error(
                raw.max(1), raw.argmax(1) == target
            )
            figures["ece"] = expected_calibration_error(
                calibrated.max(1), calibrated.argmax(1) == target
            )
        if fusions[spec.name].gain == 0:  # with the memory, fitted jointly with the gain
            low, high = modeling.temperature_interval(
                logits[spec.name][has],
                split.targets[spec.name][has],
                multilabel=spec.kind == "multilabel",
            )
            figures["temperature_low"], figures["temperature_high"] = low, high
        figures["rows"] = int(has.sum())
        report[spec.name] = figures
    return report, probabilities


def fmt(figures: dict[str, float]) -> str:
    return " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )


def parse_head_weights(text: str) -> tuple[tuple[str, float], ...]:
    pairs = []
    for item in text.split(","):
        if item.strip():
            name, _, value = item.partition("=")
            pairs.append((name.strip(), float(value)))
    return tuple(pairs)


def calibrate(
    members: Sequence[modeling.MultiTaskModel],
    specs: Sequence[HeadSpec],
    train_split: EncodedSplit,
    dev_split: EncodedSplit,
    dev_logits: dict[str, np.ndarray],
    args: argparse.Namespace,
    log: Any,
) -> tuple[modeling.NeighbourMemory | None, dict[str, modeling.Fusion], dict[str, np.ndarray]]:
    """Fit each head's temperature (and memory gain) on dev; keep the memory only where it helps.

    First every multiclass head is offered a memory of the training rows that
    carry its label; heads whose dev likelihood does not improve drop out.
    The final memory holds only the rows the remaining heads need, and their
    gains are refitted against it. Returns the memory, the fusions and the
    final dev votes per head.
    """
    encoder = members[0].encoder
    candidates = [s for s in specs if s.kind == "multiclass"]
    subwords = isinstance(encoder, modeling.HybridEncoder) and encoder.lexical is not None
    if args.memory and not subwords:
        log("no neighbour memory: it compares tickets by the subword tf-idf view")
    if not (args.memory and subwords and candidates):
        return None, {s.name: fit_head(s, dev_logits, dev_split, None) for s in specs}, {}
    users: list[str] = []
    for spec in candidates:
        memory = memory_for(train_split, specs, [spec.name], encoder, args)
        votes = modeling.memory_votes(memory, encoder.lexical, dev_split.ids)
        if fit_head(spec, dev_logits, dev_split, votes[specs.index(spec)]).gain > 0:
            users.append(spec.name)
    log(f"neighbour memory helps: {', '.join(users) or 'no head'}")
    if not users:
        return None, {s.name: fit_head(s, dev_logits, dev_split, None) for s in specs}, {}
    memory = memory_for(train_split, specs, users, encoder, args)
    votes = modeling.memory_votes(memory, encoder.lexical, dev_split.ids)
    dev_votes = {s.name: votes[i] for i, s in enumerate(specs) if s.name in users}
    fusions = {s.name: fit_head(s, dev_logits, dev_split, dev_votes.get(s.name)) for s in specs}
    log(f"memory: {memory.rows} training tickets, {memory.per_row} weights each")
    return memory, fusions, dev_votes


def memory_for(
    split: EncodedSplit,
    specs: Sequence[HeadSpec],
    heads: Sequence[str],
    encoder: modeling.HybridEncoder,
    args: argparse.Namespace,
) -> modeling.NeighbourMemory:
    """A memory of the training rows that carry a label for any of ``heads``."""
    rows = np.flatnonzero(np.any([split.present[h] for h in heads], axis=0))
    labels = np.stack(
        [
            np.where(split.present[s.name][rows], split.targets[s.name][rows], -1)
            if s.name in heads
            else np.full(len(rows), -1)
            for s in specs
        ],
        axis=1,
    )
    assert split.wide is not None, "the hybrid encoder's training rows are precomputed in fit"
    assert encoder.lexical is not None, "the memory reads the subword tf-idf view"
    words = split.wide[rows][:, : encoder.lexical.word_dim].tocsr()
    classes = [len(s.labels) if s.kind == "multiclass" else 0 for s in specs]
    return modeling.build_memory(
        words,
        labels,
        classes,
        per_row=args.memory_per_row,
        k=args.memory_k,
        threshold=args.memory_threshold,
    )


def fit_head(
    spec: HeadSpec, logits: dict[str, np.ndarray], split: EncodedSplit, votes: np.ndarray | None
) -> modeling.Fusion:
    has = split.present[spec.name]
    return modeling.fit_fusion(
        logits[spec.name][has],
        votes[has] if votes is not None else None,
        split.targets[spec.name][has],
        multilabel=spec.kind == "multilabel",
    )


# -- export ----------------------------------------------------------------------------


def check_export(
    export: ExportModule,
    path: Path,
    split: EncodedSplit,
    calibrated: dict[str, np.ndarray],
    rows: int = 200,
) -> None:
    """The exported graph must compute what was trained and calibrated.

    Two checks on dev rows: ONNX against the PyTorch export module (same
    graph, within 1e-4), and both against the probabilities the calibration
    saw, computed from the training-time (sparse) features; float16 storage
    of the weights allows 2e-3 there.
    """
    chosen = list(range(min(rows, len(split))))
    ids, mask = modeling.pad_batch([split.ids[i] for i in chosen])
    inputs = [ids, mask]
    if export.reads_words:
        assert split.lexical is not None
        inputs += [torch.from_numpy(a) for a in pad_features([split.lexical[i] for i in chosen])]
    with torch.no_grad():
        expected = [t.numpy() for t in export(*inputs)]
    session = ort.InferenceSession(str(path), sess_options=session_options(1))
    names = [i.name for i in session.get_inputs()]
    actual = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
    for want, got in zip(expected, actual, strict=True):
        if not np.allclose(want, got, atol=1e-4):
            raise RuntimeError(
                f"ONNX differs from the PyTorch export by {np.abs(want - got).max():.2e}"
            )
    for spec, got in zip(export.specs, actual, strict=False):
        if spec.kind != "multiclass":
            continue
        want = calibrated[spec.name][chosen]
        if not np.allclose(want, got, atol=2e-3):
            difference = np.abs(want - got).max()
            raise RuntimeError(f"{spec.name}: exported probabilities differ by {difference:.2e}")


def labels_document(
    version: str,
    specs: Sequence[HeadSpec],
    fusions: dict[str, modeling.Fusion],
    memory: modeling.NeighbourMemory | None,
    args: argparse.Namespace,
    model_config: ModelConfig,
    fits: Sequence[modeling.FitResult],
    train_files: list[dict[str, Any]],
    dev_files: list[dict[str, Any]],
    dev_report: dict[str, dict[str, float]],
    word_features: WordFeatureConfig | None = None,
    blended: Sequence[str] = (),
    dev_fusions: dict[str, modeling.Fusion] | None = None,
    cross_validated: CrossValidatedCalibration | None = None,
) -> dict[str, Any]:
    embedding_dim = fits[0].model.encoder.output_dim * len(fits)
    inputs = list(modeling.INPUT_NAMES)
    if word_features is not None:
        inputs += list(WORD_INPUT_NAMES)
    return {
        "format": 1,
        "version": version,
        "heads": [
            {
                "name": spec.name,
                "kind": spec.kind,
                "output": spec.output,
                "labels": list(spec.labels),
                "temperature": round(fusions[spec.name].temperature, 6),
                "memory_gain": round(fusions[spec.name].gain, 6),
                **calibration_origin(spec.name, fusions, dev_fusions),
            }
            for spec in specs
        ],
        "memory": None
        if memory is None
        else {
            "rows": memory.rows,
            "per_row": memory.per_row,
            "k": memory.k,
            "threshold": memory.threshold,
            "heads": [s.name for s in specs if fusions[s.name].gain > 0],
            "what": "tf-idf weights (subword uni/bigrams) of training tickets; the k most "
            "similar vote for their labels, added to the logits with the head's gain",
        },
        "embedding": {
            "output": modeling.EMBEDDING_OUTPUT,
            "dim": embedding_dim,
            "normalized": True,
            "what": "each ensemble member's pooled encoder vector, concatenated, L2-normalised",
        },
        "inputs": inputs,
        "word_features": None
        if word_features is None
        else {
            **modeling.config_dict(word_features),
            "what": "connector.word_features.WordFeatures: hashed word 1-2-grams and character "
            "n-grams within words, fed as lexical_ids and lexical_counts",
        },
        "text": {
            "max_tokens": args.max_tokens,
            "max_chars": args.max_chars,
            "subject_body_separator": SUBJECT_BODY_SEPARATOR,
            "preparation": "connector.text.prepare_ticket_text",
            "text_column": "a file with a text column is read as body with an empty subject",
        },
        "training": {
            "train_files": train_files,
            "dev_files": dev_files,
            "architecture": modeling.config_dict(model_config),
            "tokenizer": {"kind": args.tokenizer, "vocab_size": model_config.vocab_size},
            "optimisation": {
                "epochs": args.epochs,
                "patience": args.patience,
                "batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                "weight_decay": args.weight_decay,
                "class_balance": args.class_balance,
                "head_weights": dict(parse_head_weights(args.head_weights)),
                "wide_weight_decay": args.wide_weight_decay,
                "logistic_regression": {
                    "C": args.logistic_c,
                    "heads": list(blended),
                },
                "seeds": [args.seed + i for i in range(args.ensemble)],
                "calibration_from": None if cross_validated is None else cross_validated.record,
                "best_epochs": [fit.best_epoch for fit in fits],
            },
            "dev": {
                head: {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
                for head, figures in dev_report.items()
            },
        },
    }


@dataclass(frozen=True)
class CrossValidatedCalibration:
    """Per head, the calibration a cross_validate.py report chose, and where it came from."""

    choices: dict[str, calibration.HeadCalibration]
    record: dict[str, Any]


def read_calibration(path: Path) -> CrossValidatedCalibration:
    """The per-head calibration choices of a cross_validate.py report; DataError if none."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        choices = {
            head: calibration.HeadCalibration.from_json(figures["calibration"])
            for head, figures in document["summary"].items()
            if isinstance(figures.get("calibration"), dict)
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a cross_validate.py report ({error})") from error
    if not choices:
        raise DataError(
            f"{path}: no calibration choices in it; rebuild it with cross_validate.py --reuse"
        )
    summary = document["summary"]
    record = {
        "file": path.name,
        "sha256": modeling.sha256_file(path),
        "command": document.get("command"),
        "methods": {head: choice.method for head, choice in choices.items()},
        "ece_mean": {head: summary[head]["calibration"].get("ece_mean") for head in choices},
    }
    return CrossValidatedCalibration(choices, record)


def apply_calibration(
    fusions: dict[str, modeling.Fusion], cross_validated: CrossValidatedCalibration, log: Any
) -> dict[str, modeling.Fusion]:
    """Each head's dev-fitted temperature, corrected as its held-out folds chose.

    Dev is one small sample. "factor" scales the temperature by the ratio the
    held-out folds asked for on the same fold models, a ratio that carries
    over to a model trained on all rows; "map" keeps the dev temperature and
    maps the top label's confidence as the held-out folds were found to be
    right. Heads with a neighbour memory keep theirs (the gain was fitted with it).
    """
    corrected = dict(fusions)
    for name, fusion in fusions.items():
        choice = cross_validated.choices.get(name)
        if choice is None or fusion.gain > 0:
            continue
        if choice.method == "factor":
            corrected[name] = replace(fusion, temperature=fusion.temperature * choice.factor)
            log(f"{name}: temperature x {choice.factor:.3f} (held-out folds)")
        elif choice.confidence_map is not None:
            corrected[name] = replace(fusion, confidence_map=choice.confidence_map)
            knots = len(choice.confidence_map.x)
            log(f"{name}: confidence map of {knots} knots (held-out folds)")
    return corrected


def calibration_origin(
    name: str,
    fusions: dict[str, modeling.Fusion],
    dev_fusions: dict[str, modeling.Fusion] | None,
) -> dict[str, Any]:
    """How a head's probabilities are calibrated, for labels.json."""
    fusion = fusions[name]
    if fusion.confidence_map is not None:
        return {"calibration": "map", "confidence_map": fusion.confidence_map.to_json()}
    if dev_fusions is None or dev_fusions[name].temperature == fusion.temperature:
        return {"calibration": "temperature"}
    dev = dev_fusions[name].temperature
    return {
        "calibration": "factor",
        "temperature_dev": round(dev, 6),
        "temperature_factor": round(fusion.temperature / dev, 6),
    }


def write_golden(model_dir: Path, dev_rows: Sequence[Row], count: int) -> int:
    """Record inputs and the production path's answers, for replay in tests.

    Dev texts spread evenly over the file, plus awkward inputs (empty, HTML,
    quoted reply, non-UTF-8 bytes, emoji, very long), run through
    ``connector.classifier.Classifier`` exactly as the service would.
    """
    classifier = Classifier.load(model_dir, threads=1)
    cases: list[dict[str, Any]] = []
    step = max(1, len(dev_rows) // max(1, count))
    for index in range(0, min(len(dev_rows), step * count), step):
        cases.append({"subject": "", "body": dev_rows[index].text})
    cases.extend(edge_cases())
    items = [
        TextInput(
            subject=case["subject"],
            body=case["body"] if "body" in case else bytes.fromhex(case["body_hex"]),
            content_type=case.get("content_type"),
        )
        for case in cases
    ]
    predictions = classifier.predict(items)
    with (model_dir / GOLDEN_FILE).open("w", encoding="utf-8") as handle:
        for case, prediction in zip(cases, predictions, strict=True):
            record = {**case, "expected": prediction_to_json(prediction)}
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return len(cases)


def edge_cases() -> list[dict[str, Any]]:
    latin1 = "Grüße, die Rechnung für März ist zu hoch. Bitte prüfen.".encode("cp1252")
    return [
        {"subject": "", "body": ""},
        {"subject": "   ", "body": " \n\t "},
        {
            "subject": "Printer offline",
            "body": "<html><head><style>p{color:red}</style><script>alert(1)</script></head>"
            "<body><p>Our office printer is <b>offline</b> since this morning.</p>"
            "<blockquote>old thread</blockquote></body></html>",
            "content_type": "text/html; charset=utf-8",
        },
        {
            "subject": "Re: refund",
            "body": "I still have not received my refund.\n\nOn Mon, 3 Jun 2024 at 09:00, "
            "Support <support@example.com> wrote:\n> We have processed your request.",
        },
        {"subject": "Rechnung", "body_hex": latin1.hex(), "content_type": "text/plain"},
        {"subject": "Thanks!", "body": "Great service, thank you so much 😀🎉"},
        {"subject": "Long", "body": "The VPN connection drops every few minutes. " * 400},
    ]


def existing_card(output: Path) -> str | None:
    path = output / CARD_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None


def card_template() -> str:
    return (
        "# Model card\n\n"
        "A helpdesk triage classifier trained with `scripts/train.py`. The generated sections\n"
        "below are rewritten by the scripts; add the data's origin and terms, the intended use\n"
        "and known limitations outside them.\n"
    )


def temperature_cell(head: dict[str, Any], dev: dict[str, Any]) -> str:
    """The temperature, the dev fit's bootstrap interval, and a cross-validated correction."""
    fitted = head.get("temperature_dev", head["temperature"])
    cell = f"{fitted:.3f}"
    if "temperature_low" in dev:
        cell += f" ({dev['temperature_low']:.2f}-{dev['temperature_high']:.2f})"
    if "temperature_factor" in head:
        cell = f"{head['temperature']:.3f} = {cell} x {head['temperature_factor']:.3f}"
    if head.get("confidence_map"):
        cell += f" + confidence map ({len(head['confidence_map']['x'])} knots)"
    return cell


def training_section(
    labels: dict[str, Any], argv: Sequence[str] | None, seconds: float, threads: int
) -> str:
    training = labels["training"]
    command = "python scripts/train.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    cpu = modeling.machine_description()["cpu"]
    head_list = ", ".join(f"{h['name']} ({len(h['labels'])} labels)" for h in labels["heads"])
    lines = [
        "## Training (generated by scripts/train.py)",
        "",
        f"- Version: `{labels['version']}`",
        f"- Command: `{command}`",
        f"- Wall time: {seconds:.0f} s with {threads} threads on {cpu}",
        f"- Heads: {head_list}",
        f"- Architecture: `{json.dumps(training['architecture'], sort_keys=True)}`",
        f"- Optimisation: `{json.dumps(training['optimisation'], sort_keys=True)}`",
        "",
        "Training and dev files (sha256 of the exact files read):",
        "",
        modeling.markdown_table(
            ("split", "file", "rows", "heads", "sha256"),
            [
                ("train", f["file"], f["rows"], ", ".join(f["heads"]), f["sha256"])
                for f in training["train_files"]
            ]
            + [
                ("dev", f["file"], f["rows"], ", ".join(f["heads"]), f["sha256"])
                for f in training["dev_files"]
            ],
        ),
        "",
        "Dev figures (used for early stopping and calibration, so optimistic; see the evaluation",
        "section for test figures):",
        "",
        modeling.markdown_table(
            (
                "head",
                "macro-F1",
                "accuracy",
                "ECE before",
                "ECE after",
                "temperature: dev fit (95 % bootstrap interval), cross-validated correction if any",
                "memory gain",
                "rows",
            ),
            [
                (
                    head["name"],
                    training["dev"][head["name"]].get(
                        "macro_f1", training["dev"][head["name"]].get("micro_f1")
                    ),
                    training["dev"][head["name"]].get("accuracy", "-"),
                    training["dev"][head["name"]].get("ece_uncalibrated", "-"),
                    training["dev"][head["name"]].get("ece", "-"),
                    temperature_cell(head, training["dev"][head["name"]]),
                    head.get("memory_gain", 0.0),
                    training["dev"][head["name"]]["rows"],
                )
                for head in labels["heads"]
            ],
        ),
    ]
    return "\n".join(lines)


def install(staging: Path, output: Path) -> None:
    """Move the finished files into ``output``; the manifest goes last."""
    output.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in staging.iterdir() if p.is_file() and not p.name.startswith("."))
    names.sort(key=lambda name: name == "manifest.json")
    for name in names:
        shutil.move(str(staging / name), str(output / name))


if __name__ == "__main__":
    sys.exit(main())
