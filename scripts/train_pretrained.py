"""Train heads over the pretrained multilingual encoder and export one model directory.

The bundled model and an organisation's own history use the same command:

    python scripts/train_pretrained.py \\
        --train ../shared/data/tickets/train.csv --train ../shared/data/sentiment/train.csv \\
        --train scripts/anchors/priority.csv --upweight scripts/anchors/priority.csv=8 \\
        --dev ../shared/data/tickets/dev.csv --dev ../shared/data/sentiment/dev.csv \\
        --heads queue,priority,type,sentiment --output model/

The encoder (``scripts/pretrained_encoder.py``: Google's multilingual
Universal Sentence Encoder v3 from a pinned PyPI package) stays frozen; every
head is a multinomial logistic regression over its 512-d embedding, its L2
strength chosen on dev and its temperature fitted on dev. Encoder and heads
are exported as one ONNX graph with an ``embedding`` output, which the service
also uses for queue descriptions, draft retrieval and ticket similarity.
Training files are the CSV format of docs/training.md; a file given with
``--upweight FILE=N`` counts N times (the hand-written anchors that teach
priority what an outage or a thank-you is). The test split is never read.

Written to ``--output`` (built in a temporary directory, then moved in,
manifest last): model.onnx, tokenizer.json, labels.json, golden.jsonl,
MODEL_CARD.md (hand-written parts kept) and manifest.json. Same inputs give
the same files.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling
import pretrained_encoder
from modeling import CARD_FILE, DataError, HeadSpec, Row
from pretrained_encoder import MuseEncoder
from tokenizers import Tokenizer

from connector.classifier import expected_calibration_error, softmax
from connector.text import MAX_CHARS, SUBJECT_BODY_SEPARATOR
from connector.word_features import WordFeatureConfig, WordFeatures

DEFAULT_HEADS = "queue,priority,type,sentiment"
MAX_TOKENS = 256
C_GRID = (3.0, 10.0, 30.0)
# The embedding's share of the features beside the tf-idf (each part has unit norm):
# measured on the tickets dev split, embedding plus tf-idf beats either alone.
EMBEDDING_WEIGHT = 2.0
WORDS = WordFeatureConfig(buckets=1 << 18)
# Word features seen in fewer training texts are dropped: rare ones barely help the
# heads and each costs a row of weights in the file.
MIN_DF = 5
# Cosine-to-softmax scale for queue descriptions, fitted by scripts/calibrate_descriptions.py
# on a held-out organisation; the service reads it from labels.json.
DESCRIPTION_SCALE_DEFAULT = 20.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train heads over the pretrained encoder and export a model directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--train", type=Path, action="append", required=True)
    parser.add_argument("--dev", type=Path, action="append", default=[])
    parser.add_argument(
        "--upweight", action="append", default=[], metavar="FILE=N", help="count FILE N times"
    )
    parser.add_argument("--heads", default=DEFAULT_HEADS)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--cache", type=Path, help="directory caching embeddings between runs")
    parser.add_argument(
        "--description-scale",
        type=float,
        default=DESCRIPTION_SCALE_DEFAULT,
        help="softmax scale for queue descriptions (see scripts/calibrate_descriptions.py)",
    )
    parser.add_argument("--golden", type=int, default=24, help="golden examples to record")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- encoder


@dataclass
class Encoder:
    tokenizer: Tokenizer
    module: MuseEncoder
    source: dict[str, Any]
    kept_pieces: int


def load_encoder(max_tokens: int = MAX_TOKENS) -> Encoder:
    source = pretrained_encoder.locate_source()
    spm = pretrained_encoder.read_sentencepiece(source.spm)
    keep = pretrained_encoder.kept_pieces(spm)
    # The rounded scores the model directory ships, so training sees what serving sees.
    built = pretrained_encoder.build_tokenizer(spm, keep, max_tokens)
    tokenizer = Tokenizer.from_str(pretrained_encoder.compact_json(built))
    module = MuseEncoder(pretrained_encoder.load_weights(source.weights), keep).eval()
    return Encoder(tokenizer, module, pretrained_encoder.source_description(source), len(keep))


class TriageGraph(nn.Module):
    """Encoder and word tf-idf, then one calibrated softmax per head; the embedding is an output.

    Each head is linear over the concatenation [EMBEDDING_WEIGHT * embedding,
    tf-idf], so its weights split into a dense part and a wide part (one row
    per kept word feature, all heads side by side, stored in float16).
    """

    def __init__(
        self, encoder: MuseEncoder, words: modeling.WordStatistics, heads: Sequence[FittedHead]
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tfidf = modeling.WordTfidf(None, words)  # type: ignore[arg-type]
        dim = pretrained_encoder.EMBEDDING_DIM
        dense = np.concatenate(
            [h.weight[:, :dim] * EMBEDDING_WEIGHT / h.temperature for h in heads]
        )
        wide = np.concatenate([h.weight[:, dim:] / h.temperature for h in heads])
        bias = np.concatenate([h.bias / h.temperature for h in heads])
        self.register_buffer("dense", torch.from_numpy(dense.T.astype(np.float32)))
        self.register_buffer("wide", torch.from_numpy(wide.T.astype(np.float16)))
        self.register_buffer("bias", torch.from_numpy(bias.astype(np.float32)))
        self.sizes = [len(h.spec.labels) for h in heads]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        lexical_ids: torch.Tensor,
        lexical_counts: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        embedding = self.encoder(input_ids, attention_mask)
        positions = self.tfidf(lexical_ids, lexical_counts)
        wide = torch.nn.functional.embedding(positions.rows, self.wide).to(torch.float32)
        logits = embedding @ self.dense + self.bias + (wide * positions.values.unsqueeze(-1)).sum(1)
        probs = [torch.softmax(part, dim=-1) for part in torch.split(logits, self.sizes, dim=-1)]
        return (*probs, embedding)


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def embed(
    run: ort.InferenceSession, tokenizer: Tokenizer, texts: Sequence[str], batch: int = 32
) -> np.ndarray:
    """Embeddings through onnxruntime, the way the service computes them (length-sorted)."""
    encodings = [e.ids for e in tokenizer.encode_batch(list(texts))]
    order = np.argsort([len(ids) for ids in encodings], kind="stable")
    out = np.zeros((len(texts), pretrained_encoder.EMBEDDING_DIM), dtype=np.float32)
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        width = max(len(encodings[i]) for i in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, i in enumerate(rows):
            ids[k, : len(encodings[i])] = encodings[i]
            mask[k, : len(encodings[i])] = 1
        (out[rows],) = run.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
    return out


class EmbeddingCache:
    """Embeddings keyed by text and encoder, so repeated runs skip the slow part."""

    def __init__(self, directory: Path | None, key: str) -> None:
        self.path = directory / f"embeddings-{key[:16]}.npz" if directory else None
        self.vectors: dict[str, np.ndarray] = {}
        if self.path and self.path.is_file():
            with np.load(self.path) as data:
                self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def embed(
        self, run: ort.InferenceSession, tokenizer: Tokenizer, texts: Sequence[str]
    ) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        missing = sorted(
            {k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}.items()
        )
        if missing:
            log(f"embedding {len(missing)} texts")
            vectors = embed(run, tokenizer, [t for _, t in missing])
            self.vectors.update({k: v for (k, _), v in zip(missing, vectors, strict=True)})
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                names = sorted(self.vectors)
                np.savez(
                    self.path,
                    keys=np.asarray(names),
                    vectors=np.stack([self.vectors[n] for n in names]),
                )
        return np.stack([self.vectors[k] for k in keys]).astype(np.float32)


# --------------------------------------------------------------------------- heads


@dataclass
class FittedHead:
    spec: HeadSpec
    weight: np.ndarray  # labels x dim
    bias: np.ndarray
    temperature: float
    c: float
    dev: dict[str, float]


def fit_head(
    spec: HeadSpec,
    train_x: sp.csr_matrix,
    train_y: np.ndarray,
    weights: np.ndarray,
    dev_x: sp.csr_matrix,
    dev_y: np.ndarray,
) -> FittedHead:
    """Class-balanced logistic regression; C by dev macro-F1, temperature by dev NLL."""
    balance = len(train_y) / (
        len(spec.labels) * np.maximum(np.bincount(train_y, minlength=len(spec.labels)), 1)
    )
    sample_weight = weights * balance[train_y]
    best: tuple[float, float, LogisticRegression] | None = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=2000, tol=1e-5)
        model.fit(train_x, train_y, sample_weight=sample_weight)
        predicted = model.predict(dev_x) if len(dev_y) else dev_y
        score = float(f1_score(dev_y, predicted, average="macro")) if len(dev_y) else 0.0
        if best is None or score > best[0] + 1e-9:
            best = (score, c, model)
    assert best is not None
    _, c, model = best
    weight = model.coef_.astype(np.float64)
    bias = model.intercept_.astype(np.float64)
    if weight.shape[0] == 1:  # sklearn folds a binary problem into one row
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    temperature, dev = 1.0, {}
    if len(dev_y):
        logits = np.asarray(dev_x @ weight.T) + bias
        temperature = modeling.fit_temperature(logits, dev_y)
        probs = softmax(logits / temperature)
        predicted = probs.argmax(1)
        dev = {
            "macro_f1": float(f1_score(dev_y, predicted, average="macro")),
            "accuracy": float(np.mean(predicted == dev_y)),
            "ece": float(expected_calibration_error(probs.max(1), predicted == dev_y)),
        }
    return FittedHead(spec, weight.astype(np.float32), bias.astype(np.float32), temperature, c, dev)


# --------------------------------------------------------------------------- data


def parse_upweights(values: Sequence[str]) -> dict[Path, float]:
    weights = {}
    for value in values:
        name, _, factor = value.rpartition("=")
        try:
            weights[Path(name).resolve()] = float(factor)
        except ValueError:
            raise DataError(f"--upweight {value!r}: expected FILE=N") from None
    return weights


def read_files(paths: Sequence[Path], heads: Sequence[str]) -> list[tuple[Path, list[Row]]]:
    return [
        (
            path,
            modeling.read_rows(path, heads, max_chars=MAX_CHARS, separator=SUBJECT_BODY_SEPARATOR),
        )
        for path in paths
    ]


def labelled(
    files: Sequence[tuple[Path, list[Row]]], spec: HeadSpec, upweights: dict[Path, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts, label indices and sample weights of the rows that carry ``spec``'s head."""
    index = {label: i for i, label in enumerate(spec.labels)}
    texts, labels, weights = [], [], []
    for path, rows in files:
        factor = upweights.get(path.resolve(), 1.0)
        for row in rows:
            label = row.labels.get(spec.name)
            if isinstance(label, str) and label in index:
                texts.append(row.text)
                labels.append(index[label])
                weights.append(factor)
    return texts, np.asarray(labels, dtype=np.int64), np.asarray(weights, dtype=np.float64)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    torch.set_num_threads(args.threads)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    try:
        upweights = parse_upweights(args.upweight)
        train_files = read_files(args.train, heads)
        dev_files = read_files(args.dev, heads)
        all_train = [row for _, rows in train_files for row in rows]
        specs = modeling.head_specs(all_train, heads)
    except (DataError, pretrained_encoder.EncoderSourceError) as error:
        log(f"error: {error}")
        return 2
    encoder = load_encoder()
    staging = Path(
        tempfile.mkdtemp(
            prefix=".train-", dir=args.output.parent if args.output.parent.exists() else None
        )
    )
    try:
        encoder_path = staging / "encoder.onnx"
        modeling.export_graph(
            _EncoderOnly(encoder.module), encoder_path, ["embedding"], reads_words=False
        )
        run = session(encoder_path, args.threads)
        cache = EmbeddingCache(args.cache, encoder_key(encoder))
        features = WordFeatures(WORDS)
        train_texts = sorted({row.text for row in all_train})
        words = modeling.word_statistics([features(t) for t in train_texts], WORDS, MIN_DF)
        log(f"{len(train_texts)} training texts, {words.rows - 1} word features kept")

        def matrix(texts: Sequence[str]) -> sp.csr_matrix:
            dense = cache.embed(run, encoder.tokenizer, texts) * EMBEDDING_WEIGHT
            wide = modeling.word_matrix(words, [features(t) for t in texts])
            return sp.hstack([sp.csr_matrix(dense), wide]).tocsr()

        fitted = []
        for spec in specs:
            texts, y, w = labelled(train_files, spec, upweights)
            dev_texts, dev_y, _ = labelled(dev_files, spec, {})
            head = fit_head(spec, matrix(texts), y, w, matrix(dev_texts), dev_y)
            log(f"{spec.name}: {len(y)} rows, C={head.c}, T={head.temperature:.3f}, dev {head.dev}")
            fitted.append(head)
        encoder_path.unlink()
        write_model(staging, encoder, words, fitted, args)
        args.output.mkdir(parents=True, exist_ok=True)
        for path in sorted(staging.iterdir()):
            if path.name != "manifest.json":
                shutil.copyfile(path, args.output / path.name)
        shutil.copyfile(staging / "manifest.json", args.output / "manifest.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"wrote {args.output} in {time.monotonic() - started:.0f} s")
    return 0


def encoder_key(encoder: Encoder) -> str:
    """Changes whenever the embeddings would: other weights, tokenizer or token cap."""
    digest = hashlib.sha256(encoder.source["weights_sha256"].encode())
    digest.update(encoder.tokenizer.to_str().encode("utf-8"))
    return digest.hexdigest()


class _EncoderOnly(nn.Module):
    def __init__(self, encoder: MuseEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask)


def write_model(
    staging: Path,
    encoder: Encoder,
    words: modeling.WordStatistics,
    heads: Sequence[FittedHead],
    args: argparse.Namespace,
) -> None:
    import train  # the golden examples and edge cases are shared with the other trainer

    outputs = [head.spec.output for head in heads] + ["embedding"]
    modeling.export_graph(
        TriageGraph(encoder.module, words, heads), staging / "model.onnx", outputs, reads_words=True
    )
    (staging / "tokenizer.json").write_text(
        pretrained_encoder.compact_json(encoder.tokenizer), encoding="utf-8"
    )
    digest = hashlib.sha256((staging / "model.onnx").read_bytes())
    digest.update((staging / "tokenizer.json").read_bytes())
    version = f"triage-muse-{digest.hexdigest()[:12]}"
    labels = {
        "format": 1,
        "version": version,
        "heads": [
            {
                "name": head.spec.name,
                "kind": head.spec.kind,
                "output": head.spec.output,
                "labels": list(head.spec.labels),
                "temperature": round(head.temperature, 6),
                "calibration": "temperature",
                "l2_c": head.c,
            }
            for head in heads
        ],
        "text": {
            "max_tokens": MAX_TOKENS,
            "max_chars": MAX_CHARS,
            "subject_body_separator": SUBJECT_BODY_SEPARATOR,
        },
        "embedding": {
            "output": "embedding",
            "dim": pretrained_encoder.EMBEDDING_DIM,
            "description_scale": args.description_scale,
        },
        "word_features": dataclasses.asdict(WORDS),
        "encoder": {**encoder.source, "kept_pieces": encoder.kept_pieces},
        "training": {
            "command": "python scripts/train_pretrained.py "
            + " ".join(shlex.quote(str(a)) for a in sys.argv[1:] if a),
        },
    }
    modeling.write_json(staging / "labels.json", labels)
    existing = args.output / CARD_FILE
    if existing.is_file():
        shutil.copyfile(existing, staging / CARD_FILE)
    dev_rows = [
        row for path in args.dev for row in modeling.read_rows(path, [h.spec.name for h in heads])
    ]
    modeling.write_manifest(staging, version)
    train.write_golden(staging, dev_rows, args.golden)
    section = modeling.markdown_table(
        ["head", "labels", "C", "temperature", "dev macro-F1", "dev accuracy", "dev ECE"],
        [
            [
                head.spec.name,
                len(head.spec.labels),
                head.c,
                round(head.temperature, 3),
                head.dev.get("macro_f1", float("nan")),
                head.dev.get("accuracy", float("nan")),
                head.dev.get("ece", float("nan")),
            ]
            for head in heads
        ],
    )
    card = (
        (staging / CARD_FILE).read_text(encoding="utf-8") if (staging / CARD_FILE).is_file() else ""
    )
    (staging / CARD_FILE).write_text(
        modeling.replace_card_section(card, "training", section), encoding="utf-8"
    )
    modeling.write_manifest(staging, version)


if __name__ == "__main__":
    sys.exit(main())
