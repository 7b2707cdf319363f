"""The classifier: ticket text in, calibrated predictions per head out.

A pure function of the text and the model directory; it knows nothing about
helpdesks. The model directory (see docs/training.md) holds:

- ``model.onnx``: inputs ``input_ids`` and ``attention_mask`` (int64, batch x
  sequence, both axes dynamic) and, for a model with whole-word features,
  ``lexical_ids``/``lexical_counts`` (batch x features, from
  ``connector.word_features``); one output of probabilities per head
  (``probs_<head>``, batch x labels, calibration already applied) and,
  optionally, an L2-normalised ``embedding`` (batch x dim);
- ``tokenizer.json``: a HuggingFace ``tokenizers`` file;
- ``labels.json``: heads, their labels in output order, text settings (max
  tokens, max characters, how subject and body are joined), the word feature
  settings (when the graph reads them), temperatures, version;
- ``manifest.json``: the model version and the sha256 of every file;
- ``golden.jsonl`` and ``MODEL_CARD.md``.

``Classifier.load`` verifies all of it and raises ``ModelError`` naming the
file at fault. One ``onnxruntime.InferenceSession`` serves every call; it is
safe to share between threads.

The numeric helpers at the end (``softmax``, ``expected_calibration_error``,
``precision_coverage``) need no model and are used by the training and
evaluation scripts as well.

Confirmed against onnxruntime 1.32 and tokenizers 0.23 as installed:
``SessionOptions.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL``,
``intra_op_num_threads``/``inter_op_num_threads``, ``execution_mode =
ExecutionMode.ORT_SEQUENTIAL``, ``InferenceSession.get_inputs()/get_outputs()``
(``name``, ``shape`` with str for symbolic axes); ``Tokenizer.from_file``,
``enable_truncation(max_length=...)``, ``no_padding()``, ``encode``/``encode_batch``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Must precede the first import of onnxruntime: its environment is created on
# import, and with telemetry on it tries to store a device id under $HOME. Where
# HOME is not writable (a container's nobody user) it prints a coloured,
# non-JSON warning to stderr before any logger setting can take effect; the
# telemetry would also try to upload from a sidecar that should not. An
# explicit setting in the environment is left as it is.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort
from tokenizers import Tokenizer

from connector.cpu import cpu_limit
from connector.domain import HeadPrediction, Prediction
from connector.errors import ModelError
from connector.text import MAX_CHARS, SUBJECT_BODY_SEPARATOR, prepare_ticket_text
from connector.word_features import (
    COUNTS_INPUT,
    IDS_INPUT,
    WordFeatureConfig,
    WordFeatures,
    pad_features,
)
from connector.word_features import INPUT_NAMES as WORD_INPUT_NAMES

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (MODEL_FILE, TOKENIZER_FILE, LABELS_FILE)
LABELS_FORMAT = 1

DEFAULT_MAX_TOKENS = 256
# Tickets per run. In some models intermediate tensors grow with the batch
# regardless of text length (a subword tf-idf vector, a neighbour memory's
# similarities: about 1 MB per ticket each), so batches stay moderate;
# throughput barely gains beyond.
DEFAULT_MAX_BATCH_SIZE = 32
# Padded tokens per batch: bounds the memory of one run and keeps long tickets
# from inflating the padding of short ones.
DEFAULT_MAX_BATCH_TOKENS = 8192

MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
# Inputs the classifier can feed; a graph asking for anything else is rejected at load.
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", *WORD_INPUT_NAMES)


@dataclass(frozen=True, slots=True)
class TextInput:
    """One ticket's text as the helpdesk gives it.

    ``body`` may be bytes of unknown encoding and may be HTML; ``content_type``
    (e.g. ``text/html; charset=iso-8859-1``) helps when known. Cleaning is done
    by ``connector.text.prepare_ticket_text``.
    """

    subject: str
    body: str | bytes
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class HeadSpec:
    """One head of the model as labels.json declares it."""

    name: str
    kind: str  # "multiclass" (softmax) or "multilabel" (independent sigmoids)
    labels: tuple[str, ...]
    output: str
    temperature: float


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The parsed labels.json."""

    version: str
    heads: tuple[HeadSpec, ...]
    max_tokens: int
    max_chars: int
    separator: str
    embedding_output: str | None
    word_features: WordFeatureConfig | None = None
    # Softmax scale turning cosine similarities to described queues into
    # calibrated probabilities (connector.descriptions); fitted per encoder.
    description_scale: float | None = None


class Classifier:
    """An exported multi-task model, loaded and verified; ``predict`` in input order.

    Build it with ``Classifier.load``. Inputs are cleaned, tokenized, capped
    at the model's max tokens, grouped into batches by count and padded-token
    budget (similar lengths together, each batch padded to its longest), run,
    and returned in the order given.
    """

    def __init__(
        self,
        *,
        spec: ModelSpec,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ) -> None:
        self._spec = spec
        self._session = session
        self._tokenizer = tokenizer
        self._input_names = tuple(i.name for i in session.get_inputs())
        self._word_features = (
            WordFeatures(spec.word_features) if spec.word_features is not None else None
        )
        self._output_names = [h.output for h in spec.heads]
        if spec.embedding_output:
            self._output_names.append(spec.embedding_output)
        self._embedding_dim = 0
        for output in session.get_outputs():
            if output.name == spec.embedding_output and isinstance(output.shape[-1], int):
                self._embedding_dim = output.shape[-1]
        self.max_batch_size = max(1, max_batch_size)
        self.max_batch_tokens = max(spec.max_tokens, max_batch_tokens)

    # -- construction --------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        threads: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        spin_wait: bool = False,
    ) -> Classifier:
        """Verify ``model_dir`` and load it; raise ``ModelError`` naming the file at fault.

        Checks that every required file exists, that every file the manifest
        lists matches its sha256, that labels.json is well formed and that the
        ONNX graph's inputs and outputs match it. ``threads`` defaults to the
        CPUs this process may use (``connector.cpu.cpu_limit``).
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelError(f"{model_dir}: model directory does not exist")
        manifest = verify_manifest(model_dir)
        spec = parse_labels(_read_json(model_dir / LABELS_FILE))
        if manifest.get("model_version") not in (None, spec.version):
            raise ModelError(
                f"{LABELS_FILE}: version {spec.version!r} differs from {MANIFEST_FILE}'s "
                f"{manifest.get('model_version')!r}"
            )
        tokenizer = _load_tokenizer(model_dir / TOKENIZER_FILE, spec.max_tokens)
        session = _create_session(model_dir / MODEL_FILE, threads or cpu_limit(), spin_wait)
        _check_graph(session, spec)
        return cls(
            spec=spec,
            session=session,
            tokenizer=tokenizer,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
        )

    # -- what the model is ---------------------------------------------------------

    @property
    def version(self) -> str:
        return self._spec.version

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(h.name for h in self._spec.heads)

    @property
    def labels(self) -> dict[str, tuple[str, ...]]:
        """Head -> labels in the model's output order."""
        return {h.name: h.labels for h in self._spec.heads}

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def has_embedding(self) -> bool:
        return self._spec.embedding_output is not None

    @property
    def threads(self) -> int:
        options = self._session.get_session_options()
        return int(options.intra_op_num_threads)

    # -- inference -----------------------------------------------------------------

    def prepare(self, item: TextInput) -> str:
        """The cleaned text the model reads for ``item``."""
        return prepare_ticket_text(
            item.subject,
            item.body,
            item.content_type,
            max_chars=self._spec.max_chars,
            separator=self._spec.separator,
        )

    def predict(self, items: Sequence[TextInput]) -> list[Prediction]:
        """One ``Prediction`` per item, in input order."""
        predictions, _ = self._run(items, want_embedding=False)
        return predictions

    def embed(self, items: Sequence[TextInput]) -> np.ndarray:
        """L2-normalised vectors (items x dim, float32) for similarity search.

        Raises ``ModelError`` when the model has no embedding output.
        """
        if not self.has_embedding:
            raise ModelError(f"{LABELS_FILE}: this model has no embedding output")
        _, embeddings = self._run(items, want_embedding=True)
        return embeddings

    def predict_and_embed(self, items: Sequence[TextInput]) -> tuple[list[Prediction], np.ndarray]:
        """Predictions and embeddings from one pass (for drafting replies)."""
        if not self.has_embedding:
            raise ModelError(f"{LABELS_FILE}: this model has no embedding output")
        return self._run(items, want_embedding=True)

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of already prepared texts, capped at max tokens."""
        if len(texts) == 1:
            return [self._tokenizer.encode(texts[0]).ids]
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]

    def lexical_features(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Whole-word feature ids and counts of already prepared texts (None: not used)."""
        if self._word_features is None:
            return None
        return [self._word_features(text) for text in texts]

    def run_token_ids(
        self,
        token_ids: Sequence[Sequence[int]],
        lexical: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Raw model outputs (name -> batch x width) for already tokenized texts, in order.

        ``lexical`` is ``lexical_features`` of the same texts; a model with
        whole-word features needs it.
        """
        if self._word_features is not None and (lexical is None or len(lexical) != len(token_ids)):
            raise ValueError("this model reads whole-word features: pass lexical_features(texts)")
        count = len(token_ids)
        results: dict[str, np.ndarray] = {}
        for indices in plan_batches(
            [len(ids) for ids in token_ids], self.max_batch_size, self.max_batch_tokens
        ):
            feeds = self._feeds(
                [token_ids[i] for i in indices],
                [lexical[i] for i in indices] if lexical is not None else None,
            )
            outputs = self._session.run(self._output_names, feeds)
            for name, value in zip(self._output_names, outputs, strict=True):
                if name not in results:
                    results[name] = np.empty((count, value.shape[1]), dtype=np.float32)
                results[name][indices] = value
        return results

    def _run(
        self, items: Sequence[TextInput], *, want_embedding: bool
    ) -> tuple[list[Prediction], np.ndarray]:
        if not items:
            return [], np.zeros((0, self._embedding_dim), dtype=np.float32)
        texts = [self.prepare(item) for item in items]
        outputs = self.run_token_ids(self.encode_texts(texts), self.lexical_features(texts))
        predictions = [
            Prediction(
                heads={
                    head.name: head_prediction(head.labels, outputs[head.output][row])
                    for head in self._spec.heads
                },
                model_version=self._spec.version,
            )
            for row in range(len(items))
        ]
        embedding_output = self._spec.embedding_output
        if want_embedding and embedding_output is not None:
            return predictions, outputs[embedding_output]
        return predictions, np.zeros((len(items), 0), dtype=np.float32)

    def _feeds(
        self,
        sequences: Sequence[Sequence[int]],
        lexical: Sequence[tuple[np.ndarray, np.ndarray]] | None,
    ) -> dict[str, np.ndarray]:
        input_ids, attention_mask = pad(sequences)
        available = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        if lexical is not None:
            available[IDS_INPUT], available[COUNTS_INPUT] = pad_features(lexical)
        return {name: available[name] for name in self._input_names}


# -- loading helpers -------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_manifest(model_dir: Path) -> dict[str, Any]:
    """Check required files and every manifest checksum; return the manifest."""
    manifest_path = model_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelError(f"{MANIFEST_FILE}: missing in {model_dir}")
    manifest: dict[str, Any] = _read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise ModelError(f"{MANIFEST_FILE}: must be a JSON object")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelError(f"{MANIFEST_FILE}: has no 'files' table")
    for name in REQUIRED_FILES:
        if not (model_dir / name).is_file():
            raise ModelError(f"{name}: missing in {model_dir}")
        if name not in files:
            raise ModelError(f"{name}: not listed in {MANIFEST_FILE}")
    for name, entry in files.items():
        path = model_dir / name
        if Path(name).name != name:
            raise ModelError(f"{MANIFEST_FILE}: entry {name!r} is not a plain file name")
        if not path.is_file():
            raise ModelError(f"{name}: listed in {MANIFEST_FILE} but missing in {model_dir}")
        expected = entry.get("sha256") if isinstance(entry, dict) else entry
        if not isinstance(expected, str) or sha256_file(path) != expected.lower():
            raise ModelError(f"{name}: sha256 does not match {MANIFEST_FILE}")
    return manifest


def parse_labels(data: Any) -> ModelSpec:
    """labels.json to a ``ModelSpec``; any inconsistency raises ``ModelError`` naming the file."""

    def fail(reason: str) -> ModelError:
        return ModelError(f"{LABELS_FILE}: {reason}")

    if not isinstance(data, dict):
        raise fail("must be a JSON object")
    if data.get("format") != LABELS_FORMAT:
        raise fail(f"format {data.get('format')!r} is not supported (expected {LABELS_FORMAT})")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise fail("missing 'version'")
    raw_heads = data.get("heads")
    if not isinstance(raw_heads, list) or not raw_heads:
        raise fail("'heads' must be a non-empty list")
    heads = []
    for raw in raw_heads:
        if not isinstance(raw, dict):
            raise fail("every head must be an object")
        name, kind, labels = raw.get("name"), raw.get("kind", MULTICLASS), raw.get("labels")
        if not isinstance(name, str) or not name:
            raise fail("a head has no name")
        if kind not in (MULTICLASS, MULTILABEL):
            raise fail(f"head {name}: unknown kind {kind!r}")
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(label, str) and label for label in labels)
            or len(set(labels)) != len(labels)
        ):
            raise fail(f"head {name}: labels must be distinct non-empty strings")
        temperature = raw.get("temperature", 1.0)
        if not isinstance(temperature, int | float) or temperature <= 0:
            raise fail(f"head {name}: temperature must be a positive number")
        heads.append(
            HeadSpec(
                name=name,
                kind=kind,
                labels=tuple(labels),
                output=str(raw.get("output", f"probs_{name}")),
                temperature=float(temperature),
            )
        )
    if len({h.name for h in heads}) != len(heads):
        raise fail("head names must be distinct")
    text = data.get("text", {})
    if not isinstance(text, dict):
        raise fail("'text' must be an object")
    max_tokens = text.get("max_tokens", DEFAULT_MAX_TOKENS)
    max_chars = text.get("max_chars", MAX_CHARS)
    separator = text.get("subject_body_separator", SUBJECT_BODY_SEPARATOR)
    if not isinstance(max_tokens, int) or max_tokens < 2:
        raise fail("text.max_tokens must be an integer >= 2")
    if not isinstance(max_chars, int) or max_chars < 1:
        raise fail("text.max_chars must be a positive integer")
    if not isinstance(separator, str):
        raise fail("text.subject_body_separator must be a string")
    embedding = data.get("embedding")
    embedding_output = None
    description_scale = None
    if embedding is not None:
        if not isinstance(embedding, dict) or not isinstance(embedding.get("output"), str):
            raise fail("'embedding' must be null or an object with an 'output' name")
        embedding_output = embedding["output"]
        description_scale = embedding.get("description_scale")
        if description_scale is not None and (
            not isinstance(description_scale, int | float)
            or isinstance(description_scale, bool)
            or description_scale <= 0
        ):
            raise fail("embedding.description_scale must be a positive number")
    return ModelSpec(
        version=version,
        heads=tuple(heads),
        max_tokens=max_tokens,
        max_chars=max_chars,
        separator=separator,
        embedding_output=embedding_output,
        description_scale=float(description_scale) if description_scale is not None else None,
        word_features=_parse_word_features(data.get("word_features"), fail),
    )


def _parse_word_features(raw: Any, fail: Any) -> WordFeatureConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail("'word_features' must be null or an object")
    values = {}
    for name in (field.name for field in dataclasses.fields(WordFeatureConfig)):
        value = raw.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise fail(f"word_features.{name} must be a positive integer")
        values[name] = value
    if values["min_chars"] > values["max_chars"]:
        raise fail("word_features.min_chars exceeds max_chars")
    return WordFeatureConfig(**values)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelError(f"{path.name}: cannot read: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path.name}: not valid JSON ({error})") from None


def _load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises plain Exception subclasses
        raise ModelError(f"{path.name}: cannot load tokenizer ({type(error).__name__})") from None
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.no_padding()
    return tokenizer


def session_options(threads: int, *, spin_wait: bool = False) -> ort.SessionOptions:
    """Full graph optimisation, explicit thread counts, sequential execution."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    # Idle pool threads otherwise spin for a while after every run; in a service
    # that runs small batches between helpdesk calls, that burns the cores the
    # worker threads need (measured in docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    return options


def _create_session(path: Path, threads: int, spin_wait: bool) -> ort.InferenceSession:
    # Errors only from the process-wide logger too: its warnings go to stderr as
    # plain coloured text, and every line the service prints must be JSON.
    ort.set_default_logger_severity(3)
    try:
        return ort.InferenceSession(
            str(path),
            sess_options=session_options(threads, spin_wait=spin_wait),
            providers=["CPUExecutionProvider"],
        )
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelError(f"{path.name}: cannot load ONNX model ({type(error).__name__})") from None


def _check_graph(session: ort.InferenceSession, spec: ModelSpec) -> None:
    inputs = [i.name for i in session.get_inputs()]
    unknown = [name for name in inputs if name not in _KNOWN_INPUTS]
    if unknown or "input_ids" not in inputs:
        raise ModelError(f"{MODEL_FILE}: inputs {inputs} are not supported (need input_ids)")
    reads_words = any(name in inputs for name in WORD_INPUT_NAMES)
    if reads_words and not all(name in inputs for name in WORD_INPUT_NAMES):
        raise ModelError(f"{MODEL_FILE}: needs both {IDS_INPUT} and {COUNTS_INPUT}, has {inputs}")
    if reads_words and spec.word_features is None:
        raise ModelError(
            f"{MODEL_FILE}: reads whole-word features but {LABELS_FILE} has no word_features"
        )
    outputs = {o.name: o.shape for o in session.get_outputs()}
    for head in spec.heads:
        shape = outputs.get(head.output)
        if shape is None:
            raise ModelError(f"{MODEL_FILE}: has no output {head.output!r} for head {head.name}")
        width = shape[-1] if len(shape) == 2 else None
        if isinstance(width, int) and width != len(head.labels):
            raise ModelError(
                f"{MODEL_FILE}: output {head.output!r} has {width} columns but "
                f"{LABELS_FILE} lists {len(head.labels)} labels for head {head.name}"
            )
        if len(shape) != 2:
            raise ModelError(f"{MODEL_FILE}: output {head.output!r} is not batch x labels")
    if spec.embedding_output is not None and spec.embedding_output not in outputs:
        raise ModelError(f"{MODEL_FILE}: has no output {spec.embedding_output!r}")


# -- batching --------------------------------------------------------------------------


def plan_batches(lengths: Sequence[int], max_size: int, max_tokens: int) -> Iterator[list[int]]:
    """Indices grouped into batches, shortest first, within size and padded-token budgets.

    Sorting by length keeps padding small: each batch is padded to its longest
    member, and ``len(batch) * longest <= max_tokens`` unless a single text is
    longer than the budget on its own.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batch: list[int] = []
    for index in order:
        longest = lengths[index]  # ascending order: the newcomer is the longest
        if batch and (len(batch) >= max_size or (len(batch) + 1) * longest > max_tokens):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def pad(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) as int64, padded with 0 to the longest sequence."""
    length = max(1, *(len(s) for s in sequences))
    input_ids = np.zeros((len(sequences), length), dtype=np.int64)
    attention_mask = np.zeros((len(sequences), length), dtype=np.int64)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


# -- pure numeric helpers ------------------------------------------------------------


def head_prediction(labels: Sequence[str], probabilities: np.ndarray) -> HeadPrediction:
    """The top label, its probability and the full distribution of one head for one ticket."""
    best = int(np.argmax(probabilities))
    values = [float(p) for p in probabilities]
    return HeadPrediction(
        label=labels[best],
        confidence=values[best],
        probabilities=dict(zip(labels, values, strict=True)),
    )


def softmax(logits: np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of ``logits / temperature`` along ``axis``."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=axis, keepdims=True)
    return result


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    """Top-label ECE: the count-weighted mean |accuracy - confidence| over equal-width bins.

    ``confidences`` are the top label's probabilities, ``correct`` whether the
    top label was right. Bins are (0, 1/bins], ..., ((bins-1)/bins, 1].
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidences.shape != correct.shape:
        raise ValueError("confidences and correct must have the same shape")
    if confidences.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(correct[members].mean() - confidences[members].mean())
            total += members.sum() * gap
    return float(total / confidences.size)


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """What applying predictions at or above ``threshold`` would give."""

    threshold: float
    coverage: float  # share of tickets at or above the threshold
    precision: float | None  # share of those that are right; None when none qualify
    count: int


def precision_coverage(
    confidences: np.ndarray, correct: np.ndarray, thresholds: Sequence[float]
) -> list[OperatingPoint]:
    """Precision and coverage of the predictions kept at each confidence threshold."""
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidences.shape != correct.shape:
        raise ValueError("confidences and correct must have the same shape")
    points = []
    for threshold in thresholds:
        kept = confidences >= threshold
        count = int(kept.sum())
        points.append(
            OperatingPoint(
                threshold=float(threshold),
                coverage=count / confidences.size if confidences.size else 0.0,
                precision=float(correct[kept].mean()) if count else None,
                count=count,
            )
        )
    return points


def prediction_to_json(prediction: Prediction, *, digits: int = 6) -> dict[str, Any]:
    """A prediction as plain JSON data: head -> label, confidence, probabilities."""
    return {
        name: {
            "label": head.label,
            "confidence": round(head.confidence, digits),
            "probabilities": {k: round(v, digits) for k, v in head.probabilities.items()},
        }
        for name, head in prediction.heads.items()
    }


__all__ = [
    "Classifier",
    "HeadSpec",
    "ModelSpec",
    "OperatingPoint",
    "TextInput",
    "expected_calibration_error",
    "head_prediction",
    "pad",
    "parse_labels",
    "plan_batches",
    "precision_coverage",
    "prediction_to_json",
    "session_options",
    "sha256_file",
    "softmax",
    "verify_manifest",
]
