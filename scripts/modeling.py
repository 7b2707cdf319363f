"""Training-time code shared by the scripts: data, tokenizer, PyTorch models, calibration, export.

Nothing in ``connector/`` imports this module (or PyTorch); the service only
sees the exported files. The pieces, in the order ``train.py`` uses them:

- ``read_rows``: a helpdesk export in the documented CSV format (see
  docs/training.md) to ``Row`` values, text prepared by
  ``connector.text.prepare_ticket_text`` exactly as at serving time;
- ``HeadSpec`` / ``head_specs``: the label set of each head, learned from train;
- ``train_tokenizer``: a WordPiece (or Unigram) tokenizer trained on the
  training text with HuggingFace ``tokenizers``; nothing is downloaded;
- the encoders: ``NgramBag`` (fastText-style bag of subword unigrams and
  hashed subword n-grams), ``ConvEncoder`` (a small CNN), ``TinyTransformer``;
  each feeds one linear layer per head through a shared hidden layer.
  ``HybridEncoder`` adds a tf-idf view read by a linear "wide" part per head:
  whole words and their character n-grams (``WordTfidf``, fed by
  ``connector.word_features``) or subword tokens (``LexicalFeatures``);
- ``fit``: class-balanced multi-task training with early stopping on dev macro-F1;
- ``fit_temperature``: per-head temperature scaling on dev logits;
- ``ExportModule`` / ``export_onnx``: one ONNX graph with dynamic batch and
  sequence axes, one (calibrated) probability output per head and an
  L2-normalised ``embedding`` output.

Confirmed against the installed libraries: ``tokenizers`` 0.23 (``WordPiece``/
``Unigram`` models and trainers, ``TemplateProcessing``, ``normalizers.Replace``
with ``Regex``), and ``torch.onnx.export(..., dynamo=False, dynamic_axes=...)``,
the TorchScript-based exporter (the dynamo exporter needs onnxscript, which is
not a dependency).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import platform
import random
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime
import scipy.sparse as sp
import torch
from calibration import ConfidenceMap, apply_map, apply_map_torch
from sklearn.metrics import f1_score
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from torch import nn
from torch.nn import functional as F

from connector.classifier import sha256_file, softmax
from connector.cpu import cpu_limit
from connector.text import MAX_CHARS, SUBJECT_BODY_SEPARATOR, prepare_ticket_text
from connector.word_features import INPUT_NAMES as WORD_INPUT_NAMES
from connector.word_features import WordFeatureConfig, WordFeatures

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIAL_TOKENS = (PAD, UNK, CLS)  # ids 0, 1, 2 in this order
MULTILABEL_HEADS = frozenset({"tags"})
TEXT_COLUMNS = ("subject", "body", "text")
INPUT_NAMES = ("input_ids", "attention_mask")
WIDE_FEATURES = ("words", "subwords")
EMBEDDING_OUTPUT = "embedding"
OPSET = 17

# Large odd multipliers for the in-graph n-gram hash. Kept below 2**20 so that
# id * multiplier stays far inside int64 for any realistic vocabulary.
_HASH_MULTIPLIERS = (1_000_003, 999_983)


class DataError(ValueError):
    """An input file does not follow the documented format; the message names file and line."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Row:
    """One training example: prepared text and the labels it carries (head -> label)."""

    text: str
    labels: Mapping[str, str | tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class HeadSpec:
    """A head's name, kind ("multiclass" or "multilabel") and labels in output order."""

    name: str
    kind: str
    labels: tuple[str, ...]

    @property
    def output(self) -> str:
        return f"probs_{self.name}"


def read_rows(
    path: Path,
    heads: Sequence[str],
    *,
    max_chars: int = MAX_CHARS,
    separator: str = SUBJECT_BODY_SEPARATOR,
    tag_separator: str = ";",
    limit: int | None = None,
) -> list[Row]:
    """Rows of one CSV export; only the columns among ``heads`` become labels.

    Text comes from ``subject`` and/or ``body``, or from ``text`` (a
    sentiment-style file). A file must have text and at least one head column.
    Empty label cells mean "no label for this head" and the row does not train it.
    ``limit`` keeps a sample of that many labelled rows, the same on every run and
    in file order: the first rows of a file sorted by label would be few classes.
    """
    csv.field_size_limit(sys.maxsize)
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        if not any(column in columns for column in TEXT_COLUMNS):
            raise DataError(f"{path}:1: needs a subject, body or text column; found {columns}")
        present = [head for head in heads if head in columns]
        if not present:
            raise DataError(
                f"{path}:1: none of the heads {list(heads)} is a column; found {columns}"
            )
        rows: list[Row] = []
        try:
            for record in reader:
                text = _row_text(record, max_chars=max_chars, separator=separator)
                labels: dict[str, str | tuple[str, ...]] = {}
                for head in present:
                    value = (record.get(head) or "").strip()
                    if not value:
                        continue
                    if head in MULTILABEL_HEADS:
                        tags = tuple(sorted({t.strip() for t in value.split(tag_separator)} - {""}))
                        if tags:
                            labels[head] = tags
                    else:
                        labels[head] = value
                if labels:
                    rows.append(Row(text=text, labels=labels))
        except (csv.Error, UnicodeDecodeError) as error:
            raise DataError(f"{path}:{reader.line_num}: {error}") from None
    if not rows:
        raise DataError(f"{path}: no rows with a label for {present}")
    if limit is not None and len(rows) > limit:
        keep = sorted(random.Random(f"{path.name}:{limit}").sample(range(len(rows)), limit))
        rows = [rows[index] for index in keep]
    return rows


def split_off_dev(rows: Sequence[Row], fraction: float = 0.1) -> tuple[list[Row], list[Row]]:
    """``(train, dev)`` by a hash of each row's text: stable across runs and file order.

    For exports that come as one file. Rows with the same text land on the same
    side, so a duplicate cannot sit in both.
    """
    train: list[Row] = []
    dev: list[Row] = []
    threshold = int(fraction * 2**32)
    for row in rows:
        digest = hashlib.sha256(row.text.encode("utf-8")).digest()
        (dev if int.from_bytes(digest[:4], "big") < threshold else train).append(row)
    return train, dev


def _row_text(record: Mapping[str, str | None], *, max_chars: int, separator: str) -> str:
    if record.get("subject") is not None or record.get("body") is not None:
        return prepare_ticket_text(
            record.get("subject"), record.get("body"), max_chars=max_chars, separator=separator
        )
    return prepare_ticket_text(None, record.get("text"), max_chars=max_chars, separator=separator)


def head_specs(
    rows: Sequence[Row], heads: Sequence[str], *, min_tag_count: int = 10, max_tags: int = 200
) -> list[HeadSpec]:
    """Label sets from the training rows: sorted classes, frequent tags only."""
    specs = []
    for head in heads:
        if head in MULTILABEL_HEADS:
            counts = Counter(tag for row in rows for tag in row.labels.get(head, ()))
            frequent = [
                tag for tag, count in counts.most_common(max_tags) if count >= min_tag_count
            ]
            if not frequent:
                raise DataError(f"head {head}: no tag occurs {min_tag_count} times in train")
            specs.append(HeadSpec(head, "multilabel", tuple(sorted(frequent))))
        else:
            labels = sorted({str(row.labels[head]) for row in rows if head in row.labels})
            if len(labels) < 2:
                raise DataError(f"head {head}: needs at least two labels in train, got {labels}")
            specs.append(HeadSpec(head, "multiclass", tuple(labels)))
    return specs


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int, kind: str = "wordpiece", min_frequency: int = 2
) -> Tokenizer:
    """A subword tokenizer learned from ``texts``; every encoding starts with ``[CLS]``.

    The leading ``[CLS]`` guarantees at least one token, so an empty ticket
    still yields a (prior-like) prediction instead of an empty tensor.
    Normalisation lower-cases, applies NFKC and maps @handles and URLs to one
    token each: they identify a tweet's airline, not a ticket's meaning.
    """
    tokenizer = Tokenizer(_tokenizer_model(kind))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Replace(Regex(r"https?://\S+|www\.\S+"), " url "),
            normalizers.Replace(Regex(r"@\w+"), " @user "),
            normalizers.Lowercase(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Whitespace(),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    if kind == "wordpiece":
        trainer: trainers.Trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            continuing_subword_prefix="##",
            show_progress=False,
        )
        tokenizer.decoder = decoders.WordPiece()
    elif kind == "unigram":
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            unk_token=UNK,
            show_progress=False,
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.model = _canonical_model(tokenizer, kind)
    cls_id = tokenizer.token_to_id(CLS)
    tokenizer.post_processor = TemplateProcessing(
        single=f"{CLS} $A", pair=f"{CLS} $A $B", special_tokens=[(CLS, cls_id)]
    )
    for index, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != index:
            raise RuntimeError(f"special token {token} got id {tokenizer.token_to_id(token)}")
    return tokenizer


def _canonical_model(tokenizer: Tokenizer, kind: str) -> models.Model:
    """The trained model with ids in a canonical order: special tokens, then sorted.

    The trainers break ties between equally frequent pieces in hash-map order,
    which changes from run to run; the learned set of pieces does not. Sorting
    makes the ids, and so every file exported after them, reproducible.
    """
    learned = json.loads(tokenizer.to_str())["model"]["vocab"]
    if kind == "wordpiece":
        pieces = sorted(set(learned) - set(SPECIAL_TOKENS))
        vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *pieces])}
        return models.WordPiece(
            vocab=vocab, unk_token=UNK, max_input_chars_per_word=64, continuing_subword_prefix="##"
        )
    # Unigram scores carry float noise from parallel training; six decimals are plenty.
    scores = {piece: round(score, 6) for piece, score in learned if piece not in SPECIAL_TOKENS}
    ordered = [(t, 0.0) for t in SPECIAL_TOKENS] + sorted(
        scores.items(), key=lambda p: (-p[1], p[0])
    )
    return models.Unigram(ordered, unk_id=SPECIAL_TOKENS.index(UNK), byte_fallback=False)


def _tokenizer_model(kind: str) -> models.Model:
    if kind == "wordpiece":
        return models.WordPiece(unk_token=UNK, max_input_chars_per_word=64)
    if kind == "unigram":
        return models.Unigram()
    raise ValueError(f"unknown tokenizer kind {kind!r}")


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_tokens: int) -> list[np.ndarray]:
    """Token ids per text, truncated to ``max_tokens`` (``[CLS]`` included)."""
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.no_padding()
    return [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(list(texts))]


def pad_batch(sequences: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) padded with 0 to the longest sequence."""
    length = max(len(s) for s in sequences)
    ids = np.zeros((len(sequences), length), dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelConfig:
    """Encoder shape. ``arch`` is "hybrid", "bag", "cnn" or "transformer"."""

    arch: str = "hybrid"
    vocab_size: int = 8000
    dim: int = 48
    hidden: int = 0
    ngram_buckets: int = 32_768  # bag: hashed n-gram table size
    ngram_orders: tuple[int, ...] = (2,)  # bag: n-gram lengths hashed beside unigrams
    lexical_buckets: int = 32_768  # hybrid: hashed token-bigram slots of the tf-idf part
    char_ngrams: tuple[int, ...] = (2, 3, 4, 5)  # hybrid: character n-gram lengths per token
    char_buckets: int = 32_768  # hybrid: hashed character n-gram slots
    char_ngrams_per_token: int = 40  # hybrid: at most this many character n-grams per token
    min_df: int = 2  # hybrid: features seen in fewer training texts are ignored
    # hybrid: the tf-idf view. "words": whole-word features computed from the text
    # (connector.word_features), fed to the graph beside the token ids; "subwords":
    # computed in the graph from the token ids alone.
    wide_features: str = "subwords"
    word_buckets: int = 1 << 19  # words: hash buckets per block (words, characters)
    word_rows: int = 0  # words: features kept (seen in min_df texts), plus the empty row 0
    word_block_rows: int = 0  # words: rows 1..word_block_rows are words and word pairs
    kernel_sizes: tuple[int, ...] = (2, 3, 4)  # cnn
    filters: int = 128  # cnn: per kernel size
    layers: int = 2  # transformer
    attention_heads: int = 4  # transformer
    ffn: int = 256  # transformer
    max_tokens: int = 256
    dropout: float = 0.3
    token_dropout: float = 0.1  # training only: share of tokens hidden from the encoder


class MultiTaskModel(nn.Module):
    """Encoder -> shared hidden layer -> one linear layer per head (logits).

    ``hidden=0`` drops the hidden layer: each head is then linear in the
    pooled vector, as in fastText.
    """

    def __init__(
        self,
        config: ModelConfig,
        specs: Sequence[HeadSpec],
        vocabulary: Sequence[str] = (),
        statistics: LexicalStatistics | WordStatistics | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config, vocabulary, statistics)
        width = self.encoder.output_dim
        if config.hidden > 0:
            self.hidden: nn.Module = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(width, config.hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
            )
            width = config.hidden
        else:
            self.hidden = nn.Dropout(config.dropout)
        # ModuleDict keys must not shadow nn.Module attributes ("type" would), hence the prefix.
        self.head_names = [s.name for s in specs]
        self.heads = nn.ModuleDict(
            {f"head_{s.name}": nn.Linear(width, len(s.labels)) for s in specs}
        )
        # The hybrid's tf-idf part: per head, a linear map added to the logits (no bias;
        # the dense head has one). Together they are one linear head over both views.
        wide_width = self.encoder.wide_dim
        self.wide = nn.ModuleDict(
            {f"wide_{s.name}": WideHead(wide_width, len(s.labels)) for s in specs}
            if wide_width
            else {}
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        lexical: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(logits per head, embedding vector)."""
        logits, encoded = self.forward_encoded(input_ids, attention_mask, lexical=lexical)
        return logits, encoded.embedding

    def dense_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(logits per head without the wide part, embedding vector): hybrid encoders only."""
        if not isinstance(self.encoder, HybridEncoder):
            raise TypeError("only the hybrid encoder has a separate wide part")
        pooled = self.encoder.bag.pool(input_ids, attention_mask.to(torch.float32))
        shared = self.hidden(pooled)
        return {name: self.heads[f"head_{name}"](shared) for name in self.head_names}, pooled

    def forward_encoded(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        wide: torch.Tensor | None = None,
        lexical: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], Encoded]:
        """Logits per head and everything the encoder computed (for the neighbour memory).

        ``wide`` passes precomputed (sparse) tf-idf rows during training, where
        they never change; the exported graph computes them from the ids, or
        for whole-word features from ``lexical`` (feature ids and counts).
        """
        mask = attention_mask.to(torch.float32)
        lexical_mask = mask
        if self.training and self.config.token_dropout > 0:
            keep = torch.rand_like(mask) >= self.config.token_dropout
            keep[:, 0] = True  # [CLS] always stays, so no row is left empty
            mask = mask * keep
        encoded = self.encoder(
            input_ids, mask, lexical_mask=lexical_mask, wide=wide, lexical=lexical
        )
        shared = self.hidden(encoded.features)
        logits = {name: self.heads[f"head_{name}"](shared) for name in self.head_names}
        if encoded.wide is not None:
            for name in self.head_names:
                head = self.wide[f"wide_{name}"]
                logits[name] = logits[name] + head(encoded.wide, encoded.input_ids)
        return logits, encoded


class WideHead(nn.Module):
    """A bias-free linear map over the tf-idf vector, for dense or sparse rows.

    The weight is stored input-major (features x labels) so the exported
    graph multiplies by it directly and keeps its name (the benchmark reads
    the weights back from the ONNX file).
    """

    def __init__(self, features: int, labels: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(features)
        self.weight = nn.Parameter(torch.empty(features, labels).uniform_(-bound, bound))

    def forward(
        self,
        rows: torch.Tensor | LexicalPositions | WordPositions,
        input_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if isinstance(rows, LexicalPositions):
            raise TypeError("convert to ExportWideHead (export_wide_head) to run from token ids")
        if isinstance(rows, WordPositions):
            # Stored in float16 in the exported graph: widen what was gathered.
            weights = F.embedding(rows.rows, self.weight).to(torch.float32)
            return (weights * rows.values.unsqueeze(-1)).sum(1)
        return torch.sparse.mm(rows, self.weight)


class ExportWideHead(nn.Module):
    """A wide head as the graph runs it: gathers per position instead of a sparse product.

    ``word_weight`` holds the word-block rows of the trained weight;
    ``token_weight`` the character-block rows folded per token (token_chars @
    weight), so a text's character part is a weighted sum of token rows. Both
    are stored in float16 and widened when used.
    """

    def __init__(self, word_weight: torch.Tensor, token_weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("word_weight", word_weight.to(torch.float16))
        self.register_buffer("token_weight", token_weight.to(torch.float16))

    def forward(
        self, positions: torch.Tensor | LexicalPositions, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not isinstance(positions, LexicalPositions) or input_ids is None:
            raise TypeError("an exported wide head reads LexicalPositions and the token ids")
        words = F.embedding(positions.word_ids, self.word_weight).to(torch.float32)
        logits = (words * positions.word_weights.unsqueeze(-1)).sum(1)
        if self.token_weight.shape[0]:
            tokens = F.embedding(input_ids, self.token_weight).to(torch.float32)
            logits = logits + (tokens * positions.token_weights.unsqueeze(-1)).sum(1)
        return logits


def export_wide_head(
    head: WideHead, word_dim: int, token_chars: sp.csr_matrix | None, vocab_size: int
) -> ExportWideHead:
    """Fold a trained wide head's character rows into per-token rows (None: zeros, for loading)."""
    weight = head.weight.detach().to(torch.float64).numpy()
    word_weight = torch.from_numpy(weight[:word_dim].copy())
    labels = weight.shape[1]
    if weight.shape[0] == word_dim:
        token_weight = torch.zeros(0, labels)
    elif token_chars is None:
        token_weight = torch.zeros(vocab_size, labels)
    else:
        token_weight = torch.from_numpy(np.asarray(token_chars @ weight[word_dim:]))
    return ExportWideHead(word_weight, token_weight)


class Encoded(NamedTuple):
    """An encoder's output: what the heads read, the embedding, and the tf-idf views.

    ``wide`` (hybrid only) is the full tf-idf vector the wide heads read;
    ``lexical`` its L2-normalised word block, which the neighbour memory
    compares tickets with (None when ``wide`` was passed in precomputed).
    """

    features: torch.Tensor
    embedding: torch.Tensor
    lexical: torch.Tensor | None = None
    wide: torch.Tensor | LexicalPositions | WordPositions | None = None
    input_ids: torch.Tensor | None = None


def build_encoder(
    config: ModelConfig,
    vocabulary: Sequence[str] = (),
    statistics: LexicalStatistics | WordStatistics | None = None,
) -> Encoder:
    if config.arch == "hybrid":
        return HybridEncoder(config, statistics)
    if config.arch == "bag":
        return NgramBag(config)
    if config.arch == "cnn":
        return ConvEncoder(config)
    if config.arch == "transformer":
        return TinyTransformer(config)
    raise ValueError(f"unknown architecture {config.arch!r}")


class Encoder(nn.Module):
    """Token ids and a float mask in, ``Encoded`` out; ``output_dim`` is the features' width.

    ``wide_dim`` is the width of the tf-idf vector (hybrid only, else 0). The
    keyword arguments of ``forward`` matter only to the hybrid encoder.
    """

    output_dim: int
    wide_dim: int = 0


class NgramBag(Encoder):
    """fastText-style: the mean of subword unigram and hashed subword n-gram embeddings.

    N-grams are hashed inside the graph from neighbouring token ids, so the
    tokenizer stays a plain subword tokenizer and the service passes only ids
    and the mask. Cost is one gather per table: far below a millisecond.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.orders = tuple(config.ngram_orders)
        self.buckets = config.ngram_buckets
        # Sparse gradients: a step touches a few hundred rows, not the whole table.
        self.unigrams = nn.Embedding(config.vocab_size, config.dim, sparse=True)
        self.ngrams = (
            nn.Embedding(config.ngram_buckets, config.dim, sparse=True) if self.orders else None
        )
        bound = 1.0 / config.dim
        for table in (self.unigrams, self.ngrams):
            if table is not None:
                nn.init.uniform_(table.weight, -bound, bound)
        self.output_dim = config.dim

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, **_: Any) -> Encoded:
        pooled = self.pool(input_ids, mask)
        return Encoded(pooled, pooled)

    def pool(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = (self.unigrams(input_ids) * mask.unsqueeze(-1)).sum(1)
        count = mask.sum(1)
        if self.ngrams is not None:
            for order in self.orders:
                ids, valid = ngram_ids(input_ids, mask, order, self.buckets)
                total = total + (self.ngrams(ids) * valid.unsqueeze(-1)).sum(1)
                count = count + valid.sum(1)
        return total / count.clamp(min=1.0).unsqueeze(-1)


@dataclass(frozen=True)
class LexicalStatistics:
    """What the hybrid's tf-idf part learned from the training texts.

    ``word_idf``: idf of every subword unigram and hashed bigram slot (0 =
    ignored: seen in fewer than ``min_df`` texts, or a special token).
    ``token_chars``: per vocabulary entry, its character n-grams weighted by
    their idf and L2-normalised (vocab x char_buckets, sparse; empty rows for
    tokens without usable n-grams).
    """

    word_idf: np.ndarray
    token_chars: sp.csr_matrix


class LexicalPositions(NamedTuple):
    """The tf-idf view of a batch, per token position (what the wide heads read).

    ``word_ids``/``word_weights``: each unigram and bigram position's feature
    id and its share of the L2-normalised tf-idf value (shares of repeated
    features add up to the feature's value). ``token_weights``: each unigram
    position's share of the character block. ``words``: the dense normalised
    word vector (batch x word slots), for the neighbour memory.
    """

    word_ids: torch.Tensor
    word_weights: torch.Tensor
    token_weights: torch.Tensor
    words: torch.Tensor


class LexicalFeatures(nn.Module):
    """Tf-idf computed in the graph from token ids, in the spirit of a strong linear baseline.

    Word block: subword unigrams plus hashed subword bigrams, sublinear tf
    (1 + ln tf), idf from the training texts, L2-normalised. Counts come from
    one scatter-add into a per-text vector of ``vocab + lexical_buckets`` slots.

    Character block: every token carries the idf-weighted character n-grams
    of its text (word starts marked with ``<``), normalised; a text's block is
    the sum over its distinct tokens weighted by 1 + ln(count), divided by the
    root of the summed squared weights. Because it is linear in per-token
    vectors, a wide head's character weights fold into one row per token at
    export: the graph needs a gather, not the n-gram table.
    """

    def __init__(self, config: ModelConfig, statistics: LexicalStatistics | None) -> None:
        super().__init__()
        self.vocab_size = config.vocab_size
        self.buckets = config.lexical_buckets
        self.word_dim = config.vocab_size + config.lexical_buckets
        self.char_dim = config.char_buckets if config.char_ngrams else 0
        word_idf = statistics.word_idf if statistics else np.zeros(self.word_dim, np.float32)
        has_chars = np.zeros(config.vocab_size, dtype=np.float32)
        if statistics is not None and self.char_dim:
            has_chars = (np.diff(statistics.token_chars.indptr) > 0).astype(np.float32)
        self.register_buffer("word_idf", torch.tensor(word_idf, dtype=torch.float32))
        self.register_buffer("has_chars", torch.from_numpy(has_chars))
        self.output_dim = self.word_dim + self.char_dim

    def word_ids(
        self, input_ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature ids (unigrams, then vocab + hashed bigrams) and validity (0 = absent)."""
        bigrams, valid = ngram_ids(input_ids, mask, 2, self.buckets)
        ids = torch.cat([input_ids, bigrams + self.vocab_size], dim=1)
        return ids, torch.cat([mask, valid], dim=1)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> LexicalPositions:
        ids, valid = self.word_ids(input_ids, mask)
        counts = torch.zeros(ids.shape[0], self.word_dim).scatter_add(1, ids, valid)
        repeats = counts.gather(1, ids).clamp(min=1.0)
        value = (1.0 + torch.log(repeats)) * self.word_idf[ids] * valid
        norm = ((value * value / repeats).sum(1, keepdim=True)).sqrt().clamp(min=1e-12)
        word_weights = value / repeats / norm
        present = (counts > 0).to(torch.float32)
        words = present * (1.0 + torch.log(counts.clamp(min=1.0))) * self.word_idf / norm
        token_repeats = repeats[:, : input_ids.shape[1]]  # unigram positions come first
        token_value = (1.0 + torch.log(token_repeats)) * self.has_chars[input_ids] * mask
        token_norm = (token_value * token_value / token_repeats).sum(1, keepdim=True).sqrt()
        token_weights = token_value / token_repeats / token_norm.clamp(min=1e-12)
        return LexicalPositions(ids, word_weights, token_weights, words)


def lexical_statistics(
    train_ids: Sequence[np.ndarray], config: ModelConfig, vocabulary: Sequence[str]
) -> LexicalStatistics:
    """Smoothed idf (ln((1 + n) / (1 + df)) + 1) of every feature; 0 below ``min_df``."""
    features = LexicalFeatures(config, None)
    word_df = np.zeros(features.word_dim, dtype=np.float64)
    for word_ids, _ in _word_counts(features, train_ids):
        word_df[word_ids] += 1
    n = len(train_ids)

    def idf(df: np.ndarray) -> np.ndarray:
        values = np.log((1.0 + n) / (1.0 + df)) + 1.0
        values[df < config.min_df] = 0.0
        return values.astype(np.float32)

    word_idf = idf(word_df)
    word_idf[: len(SPECIAL_TOKENS)] = 0.0  # [CLS] is in every text and says nothing
    if not config.char_ngrams:
        empty = sp.csr_matrix((config.vocab_size, 0), dtype=np.float32)
        return LexicalStatistics(word_idf, empty)
    table = char_ngram_table(
        vocabulary, config.char_ngrams, config.char_buckets, config.char_ngrams_per_token
    )
    memberships = _token_char_matrix(table, config.char_buckets)
    char_df = np.zeros(config.char_buckets, dtype=np.float64)
    for ids in train_ids:
        tokens = np.unique(ids[ids >= len(SPECIAL_TOKENS)])
        char_df[np.unique(memberships[tokens].indices)] += 1
    weighted = memberships @ sp.diags(idf(char_df))
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(1)).ravel())
    token_chars = sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0)) @ weighted
    token_chars = sp.csr_matrix(token_chars, dtype=np.float32)
    token_chars.eliminate_zeros()
    return LexicalStatistics(word_idf, token_chars)


def _token_char_matrix(table: np.ndarray, buckets: int) -> sp.csr_matrix:
    """0/1 matrix (vocab x buckets) of each token's character n-gram slots."""
    rows, columns = np.nonzero(table)
    ones = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((ones, (rows, table[rows, columns])), shape=(len(table), buckets))
    matrix.data[:] = 1.0  # a slot hit twice by one token (hash collision) still counts once
    return matrix


def _word_counts(
    features: LexicalFeatures, ids_list: Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per text: its word feature ids and their counts, from the module's own id function."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(ids_list), 256):
            ids, mask = pad_batch(ids_list[start : start + 256])
            word_ids, valid = (t.numpy() for t in features.word_ids(ids, mask.to(torch.float32)))
            for row in range(ids.shape[0]):
                unique, counts = np.unique(word_ids[row][valid[row] > 0], return_counts=True)
                rows.append((unique, counts))
    return rows


def lexical_matrix(
    features: LexicalFeatures, statistics: LexicalStatistics, ids_list: Sequence[np.ndarray]
) -> sp.csr_matrix:
    """The rows ``LexicalFeatures`` computes, as one sparse matrix [word block | char block]."""
    word_idf = statistics.word_idf
    word_rows = []
    for ids, counts in _word_counts(features, ids_list):
        values = (1.0 + np.log(counts)) * word_idf[ids]
        norm = max(float(np.sqrt((values**2).sum())), 1e-12)
        word_rows.append((ids, values / norm))
    words = _csr(word_rows, features.word_dim)
    if not features.char_dim:
        return words
    has_chars = np.diff(statistics.token_chars.indptr) > 0
    token_rows = []
    for ids in ids_list:
        tokens, counts = np.unique(ids, return_counts=True)
        weights = (1.0 + np.log(counts)) * has_chars[tokens]
        norm = max(float(np.sqrt((weights**2).sum())), 1e-12)
        token_rows.append((tokens, weights / norm))
    chars = _csr(token_rows, features.vocab_size) @ statistics.token_chars
    return sp.hstack([words, chars], format="csr", dtype=np.float32)


def _csr(rows: Sequence[tuple[np.ndarray, np.ndarray]], width: int) -> sp.csr_matrix:
    indptr = np.cumsum([0] + [len(ids) for ids, _ in rows])
    indices = np.concatenate([ids for ids, _ in rows]) if rows else np.zeros(0, np.int64)
    data = np.concatenate([v for _, v in rows]) if rows else np.zeros(0, np.float32)
    matrix = sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(len(rows), width))
    matrix.eliminate_zeros()
    return matrix


def sparse_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Selected rows of a scipy CSR matrix as a torch sparse COO tensor."""
    chunk = matrix[rows].tocoo()
    index = torch.from_numpy(np.vstack([chunk.row, chunk.col]).astype(np.int64))
    values = torch.from_numpy(chunk.data)
    return torch.sparse_coo_tensor(index, values, chunk.shape, check_invariants=False).coalesce()


class HybridEncoder(Encoder):
    """Tf-idf features (the strong linear baseline's view) beside a fastText-style embedding.

    The heads read both: a wide linear part over the tf-idf view and the
    learned dense part, trained together. The embedding output is the
    fastText-style pooled vector. With subword features the tf-idf word block
    also feeds the neighbour memory; whole-word features come in as ids and
    counts (``lexical``) and are weighted by ``WordTfidf``.
    """

    def __init__(
        self, config: ModelConfig, statistics: LexicalStatistics | WordStatistics | None
    ) -> None:
        super().__init__()
        if config.wide_features not in WIDE_FEATURES:
            raise ValueError(f"unknown wide features {config.wide_features!r}")
        self.lexical: LexicalFeatures | None = None
        self.words: WordTfidf | None = None
        if config.wide_features == "words":
            if statistics is not None and not isinstance(statistics, WordStatistics):
                raise TypeError("whole-word features need WordStatistics")
            self.words = WordTfidf(config, statistics)
            self.wide_dim = config.word_rows
        else:
            if statistics is not None and not isinstance(statistics, LexicalStatistics):
                raise TypeError("subword features need LexicalStatistics")
            self.lexical = LexicalFeatures(config, statistics)
            self.wide_dim = self.lexical.output_dim
        self.bag = NgramBag(config)
        self.output_dim = self.bag.output_dim

    def forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        *,
        lexical_mask: torch.Tensor | None = None,
        wide: torch.Tensor | None = None,
        lexical: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Encoded:
        pooled = self.bag.pool(input_ids, mask)
        if wide is not None:
            return Encoded(pooled, pooled, None, wide)
        if self.words is not None:
            if lexical is None:
                raise ValueError("a whole-word model needs the text's feature ids and counts")
            return Encoded(pooled, pooled, None, self.words(*lexical))
        assert self.lexical is not None
        positions = self.lexical(input_ids, mask if lexical_mask is None else lexical_mask)
        return Encoded(pooled, pooled, positions.words, positions, input_ids)

    def wide_matrix(self, split: EncodedSplit, statistics: Any) -> sp.csr_matrix:
        """The split's tf-idf rows as one sparse matrix (what the wide heads read in training)."""
        if self.words is not None:
            if split.lexical is None:
                raise ValueError("encode the split with the word featurizer first")
            return word_matrix(statistics, split.lexical)
        assert self.lexical is not None
        return lexical_matrix(self.lexical, statistics, split.ids)


@dataclass(frozen=True)
class WordStatistics:
    """What the whole-word tf-idf view learned from the training texts.

    ``remap``: feature id -> row (0 = ignored: seen in fewer than ``min_df``
    texts). Rows 1..``word_block_rows`` are words and word pairs, the rest
    character n-grams; ``idf`` is per row (row 0: 0).
    """

    remap: np.ndarray
    idf: np.ndarray
    word_block_rows: int

    @property
    def rows(self) -> int:
        return len(self.idf)


def word_statistics(
    features: Sequence[tuple[np.ndarray, np.ndarray]], config: WordFeatureConfig, min_df: int
) -> WordStatistics:
    """Smoothed idf (ln((1 + n) / (1 + df)) + 1) of every feature seen in ``min_df`` texts."""
    df = np.zeros(config.width, dtype=np.int64)
    for ids, _ in features:
        df[ids] += 1
    kept = np.flatnonzero(df >= max(1, min_df))  # sorted: the word block comes first
    remap = np.zeros(config.width, dtype=np.int32)
    remap[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    n = len(features)
    idf = np.zeros(len(kept) + 1, dtype=np.float32)
    idf[1:] = np.log((1.0 + n) / (1.0 + df[kept])) + 1.0
    return WordStatistics(remap, idf, int((kept < config.buckets).sum()))


def word_matrix(
    statistics: WordStatistics, features: Sequence[tuple[np.ndarray, np.ndarray]]
) -> sp.csr_matrix:
    """The rows ``WordTfidf`` computes, as one sparse matrix (texts x statistics.rows)."""
    rows = []
    for ids, counts in features:
        index = statistics.remap[ids].astype(np.int64)
        keep = index > 0
        index, counts = index[keep], counts[keep]
        values = (1.0 + np.log(counts)) * statistics.idf[index]
        is_word = index <= statistics.word_block_rows
        for block in (is_word, ~is_word):
            norm = float(np.sqrt((values[block] ** 2).sum()))
            if norm > 0:
                values[block] = values[block] / norm
        rows.append((index, values))
    return _csr(rows, statistics.rows)


class WordPositions(NamedTuple):
    """The whole-word tf-idf view of a batch: each feature's row and normalised value."""

    rows: torch.Tensor
    values: torch.Tensor


class WordTfidf(nn.Module):
    """Feature ids and counts -> rows and values: sublinear tf, idf, each block L2-normalised.

    As a union of two tf-idf vectorisers (words, characters): the word and the
    character block are normalised separately. Unknown ids and padding (count
    0) get value 0.
    """

    def __init__(self, config: ModelConfig, statistics: WordStatistics | None) -> None:
        super().__init__()
        if statistics is None:  # shapes only: the values are loaded afterwards
            statistics = WordStatistics(
                np.zeros(2 * config.word_buckets, dtype=np.int32),
                np.zeros(config.word_rows, dtype=np.float32),
                config.word_block_rows,
            )
        self.register_buffer("remap", torch.from_numpy(statistics.remap.astype(np.int32)))
        self.register_buffer("idf", torch.from_numpy(statistics.idf.astype(np.float32)))
        self.word_block_rows = statistics.word_block_rows

    def forward(self, ids: torch.Tensor, counts: torch.Tensor) -> WordPositions:
        rows = self.remap[ids].to(torch.int64)
        present = ((rows > 0) & (counts > 0)).to(torch.float32)
        values = (1.0 + torch.log(counts.clamp(min=1.0))) * self.idf[rows] * present
        is_word = (rows <= self.word_block_rows).to(torch.float32)
        squares = values * values
        word_norm = (squares * is_word).sum(1, keepdim=True).sqrt().clamp(min=1e-12)
        char_norm = (squares * (1.0 - is_word)).sum(1, keepdim=True).sqrt().clamp(min=1e-12)
        values = values / (is_word * word_norm + (1.0 - is_word) * char_norm)
        return WordPositions(rows, values)


def char_ngram_table(
    vocabulary: Sequence[str], orders: Sequence[int], buckets: int, per_token: int
) -> np.ndarray:
    """Hashed character n-gram ids of every token (vocab x per_token, 0 = none).

    As in fastText, a word-initial token is marked with ``<`` so that prefixes
    differ from inner pieces; WordPiece's ``##`` continuation mark is removed.
    Special tokens get no n-grams. The hash is stable (blake2b), not Python's.
    """
    table = np.zeros((len(vocabulary), per_token), dtype=np.int32)
    for token_id, token in enumerate(vocabulary):
        if token in SPECIAL_TOKENS:
            continue
        text = token[2:] if token.startswith("##") else "<" + token
        grams = [text[i : i + n] for n in orders for i in range(len(text) - n + 1)]
        ids = [1 + _stable_hash(gram) % (buckets - 1) for gram in dict.fromkeys(grams)]
        table[token_id, : min(per_token, len(ids))] = ids[:per_token]
    return table


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def ngram_ids(
    input_ids: torch.Tensor, mask: torch.Tensor, order: int, buckets: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashed ids of every ``order``-gram of neighbouring tokens and their validity mask."""
    length = input_ids.shape[1]
    hashed = input_ids[:, : length - order + 1]
    valid = mask[:, : length - order + 1]
    for offset in range(1, order):
        following = input_ids[:, offset : length - order + 1 + offset]
        multiplier = _HASH_MULTIPLIERS[(offset - 1) % len(_HASH_MULTIPLIERS)]
        hashed = (hashed * multiplier + following + order) % buckets
        valid = valid * mask[:, offset : length - order + 1 + offset]
    return hashed, valid


class ConvEncoder(Encoder):
    """A small CNN: token embeddings, parallel convolutions, max over valid positions."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.dim, padding_idx=0)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.dim, config.filters, k, padding=k // 2) for k in config.kernel_sizes
        )
        self.output_dim = config.filters * len(config.kernel_sizes)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, **_: Any) -> Encoded:
        embedded = (self.embedding(input_ids) * mask.unsqueeze(-1)).transpose(1, 2)
        length = input_ids.shape[1]
        pooled = []
        for conv in self.convs:
            features = F.relu(conv(embedded))[:, :, :length]
            # Positions past the text get a large negative value, so max ignores them.
            features = features - (1.0 - mask.unsqueeze(1)) * 1e4
            pooled.append(features.max(dim=2).values)
        vector = torch.cat(pooled, dim=1)
        return Encoded(vector, vector)


class TinyTransformer(Encoder):
    """A two-layer pre-norm transformer with learned positions and masked mean pooling.

    Attention is written out (not ``nn.MultiheadAttention``) so that export and
    padding behave the same in training, in ONNX and for any batch shape.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.dim, padding_idx=0)
        self.positions = nn.Embedding(config.max_tokens, config.dim)
        self.layers = nn.ModuleList(
            _TransformerLayer(config.dim, config.attention_heads, config.ffn, config.dropout)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.output_dim = config.dim

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, **_: Any) -> Encoded:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = self.embedding(input_ids) + self.positions(positions)
        blocked = (1.0 - mask)[:, None, None, :] * -1e4
        for layer in self.layers:
            hidden = layer(hidden, blocked)
        hidden = self.norm(hidden) * mask.unsqueeze(-1)
        pooled = hidden.sum(1) / mask.sum(1).clamp(min=1.0).unsqueeze(-1)
        return Encoded(pooled, pooled)


class _TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        batch, length, dim = hidden.shape
        head_dim = dim // self.heads
        qkv = self.qkv(self.norm1(hidden)).view(batch, length, 3, self.heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + blocked
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, dim)
        hidden = hidden + self.dropout(self.out(attended))
        return hidden + self.dropout(self.ffn(self.norm2(hidden)))


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    patience: int = 5
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    class_balance: float = 1.0  # 0 = plain loss, 1 = fully class-balanced weights
    seed: int = 13
    # Loss weight per head (default 1). A head with far more rows than the others
    # (sentiment tweets beside tickets) learns faster and peaks earlier; a lower
    # weight lets all heads peak near the same epoch.
    head_weights: tuple[tuple[str, float], ...] = ()
    wide_weight_decay: float = 0.3  # hybrid: decoupled weight decay of the tf-idf heads


@dataclass
class EncodedSplit:
    """Token ids and per-head targets (-1 = no label; multilabel: a 0/1 matrix + row mask)."""

    ids: list[np.ndarray]
    targets: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    wide: sp.csr_matrix | None = None  # hybrid: precomputed tf-idf rows
    lexical: list[tuple[np.ndarray, np.ndarray]] | None = None  # whole-word feature ids, counts

    def __len__(self) -> int:
        return len(self.ids)


def encode_split(
    rows: Sequence[Row],
    specs: Sequence[HeadSpec],
    tokenizer: Tokenizer,
    max_tokens: int,
    word_features: WordFeatures | None = None,
) -> EncodedSplit:
    ids = encode(tokenizer, [row.text for row in rows], max_tokens)
    lexical = [word_features(row.text) for row in rows] if word_features else None
    targets: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for spec in specs:
        index = {label: i for i, label in enumerate(spec.labels)}
        if spec.kind == "multilabel":
            matrix = np.zeros((len(rows), len(spec.labels)), dtype=np.float32)
            has = np.zeros(len(rows), dtype=bool)
            for r, row in enumerate(rows):
                if spec.name in row.labels:
                    has[r] = True
                    for tag in row.labels[spec.name]:
                        if tag in index:
                            matrix[r, index[tag]] = 1.0
            targets[spec.name], present[spec.name] = matrix, has
        else:
            vector = np.array(
                [index.get(str(row.labels.get(spec.name, "")), -1) for row in rows], dtype=np.int64
            )
            targets[spec.name], present[spec.name] = vector, vector >= 0
    return EncodedSplit(ids, targets, present, lexical=lexical)


def class_weights(
    split: EncodedSplit, specs: Sequence[HeadSpec], power: float
) -> dict[str, torch.Tensor]:
    """Per-class loss weights ``(n / (k * count)) ** power``, normalised to mean 1 over rows."""
    weights: dict[str, torch.Tensor] = {}
    for spec in specs:
        target = split.targets[spec.name][split.present[spec.name]]
        if spec.kind == "multilabel":
            positives = target.sum(0).clip(min=1.0)
            negatives = (len(target) - target.sum(0)).clip(min=1.0)
            weights[spec.name] = torch.tensor(
                (negatives / positives) ** (0.5 * power), dtype=torch.float32
            )
            continue
        counts = np.bincount(target, minlength=len(spec.labels)).astype(np.float64).clip(min=1.0)
        raw = (counts.sum() / (len(counts) * counts)) ** power
        raw = raw / (raw[target].mean())
        weights[spec.name] = torch.tensor(raw, dtype=torch.float32)
    return weights


def batches(count: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    order = rng.permutation(count) if rng is not None else np.arange(count)
    for start in range(0, count, batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def predict_logits(
    model: MultiTaskModel, split: EncodedSplit, batch_size: int = 256
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Logits per head and pooled vectors for every row, in row order."""
    model.eval()
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in model.head_names}
    pooled_parts = []
    # Sorting by length keeps padding small; the result goes back to row order.
    order = np.argsort([len(s) for s in split.ids], kind="stable")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = pad_batch([split.ids[i] for i in chunk])
        wide = sparse_rows(split.wide, chunk) if split.wide is not None else None
        logits, encoded = model.forward_encoded(ids, mask, wide)
        pooled = encoded.embedding
        for name, value in logits.items():
            outputs[name].append(value.numpy())
        pooled_parts.append(pooled.numpy())
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    result = {name: np.concatenate(parts)[inverse] for name, parts in outputs.items()}
    return result, np.concatenate(pooled_parts)[inverse]


def head_scores(
    logits: Mapping[str, np.ndarray], split: EncodedSplit, specs: Sequence[HeadSpec]
) -> dict[str, float]:
    """Dev macro-F1 per head (multilabel: micro-F1 at 0.5 over rows that have tags)."""
    scores = {}
    for spec in specs:
        has = split.present[spec.name]
        if not has.any():
            continue
        if spec.kind == "multilabel":
            predicted = logits[spec.name][has] > 0
            scores[spec.name] = float(
                f1_score(split.targets[spec.name][has], predicted, average="micro", zero_division=0)
            )
        else:
            predicted = logits[spec.name][has].argmax(1)
            scores[spec.name] = float(
                f1_score(split.targets[spec.name][has], predicted, average="macro", zero_division=0)
            )
    return scores


@dataclass
class FitResult:
    model: MultiTaskModel
    best_epoch: int
    dev_scores: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def fit(
    config: ModelConfig,
    train_config: TrainConfig,
    specs: Sequence[HeadSpec],
    train: EncodedSplit,
    dev: EncodedSplit,
    *,
    vocabulary: Sequence[str] = (),
    statistics: LexicalStatistics | WordStatistics | None = None,
    log: Any = print,
) -> FitResult:
    """Train one model; keep the epoch with the best mean dev score over heads."""
    started = time.perf_counter()
    torch.manual_seed(train_config.seed)
    rng = np.random.default_rng(train_config.seed)
    model = MultiTaskModel(config, specs, vocabulary, statistics)
    if isinstance(model.encoder, HybridEncoder):
        if statistics is None:
            raise ValueError("the hybrid encoder needs lexical statistics")
        # The tf-idf rows never change during training: compute them once, sparse.
        for split in (train, dev):
            if split.wide is None:
                split.wide = model.encoder.wide_matrix(split, statistics)
    weights = class_weights(train, specs, train_config.class_balance)
    optimizers = _optimizers(model, train_config)
    total_steps = math.ceil(len(train) / train_config.batch_size) * train_config.epochs
    warmup = max(1, total_steps // 10)
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            # Linear warm-up over the first tenth, then linear decay to zero.
            lambda step: min(
                (step + 1) / warmup, max(0.0, (total_steps - step) / (total_steps - warmup))
            ),
        )
        for optimizer in optimizers
    ]
    head_weight = dict(train_config.head_weights)
    targets = {name: torch.from_numpy(value) for name, value in train.targets.items()}
    present = {name: torch.from_numpy(value) for name, value in train.present.items()}
    best: tuple[float, int, dict[str, Any], dict[str, float]] | None = None
    history: list[dict[str, Any]] = []
    for epoch in range(1, train_config.epochs + 1):
        model.train()
        total_loss = 0.0
        for chunk in batches(len(train), train_config.batch_size, rng):
            ids, mask = pad_batch([train.ids[i] for i in chunk])
            index = torch.from_numpy(chunk)
            wide = sparse_rows(train.wide, chunk) if train.wide is not None else None
            logits, _ = model.forward_encoded(ids, mask, wide)
            loss = torch.zeros(())
            for spec in specs:
                rows = present[spec.name][index]
                if not rows.any():
                    continue
                head_logits = logits[spec.name][rows]
                target = targets[spec.name][index][rows]
                if spec.kind == "multilabel":
                    head_loss = F.binary_cross_entropy_with_logits(
                        head_logits, target, pos_weight=weights[spec.name]
                    )
                else:
                    head_loss = F.cross_entropy(head_logits, target, weight=weights[spec.name])
                loss = loss + head_weight.get(spec.name, 1.0) * head_loss
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer, scheduler in zip(optimizers, schedulers, strict=True):
                optimizer.step()
                scheduler.step()
            total_loss += float(loss.detach()) * len(chunk)
        dev_logits, _ = predict_logits(model, dev)
        scores = head_scores(dev_logits, dev, specs)
        mean = float(np.mean(list(scores.values())))
        history.append({"epoch": epoch, "loss": total_loss / len(train), "dev": scores})
        log(
            f"  epoch {epoch:2d} loss {total_loss / len(train):.4f} dev "
            + " ".join(f"{k}={v:.3f}" for k, v in scores.items())
            + f" mean={mean:.4f}"
        )
        if best is None or mean > best[0]:
            best = (mean, epoch, copy.deepcopy(model.state_dict()), scores)
        elif epoch - best[1] >= train_config.patience:
            break
    assert best is not None
    model.load_state_dict(best[2])
    model.eval()
    return FitResult(model, best[1], best[3], history, time.perf_counter() - started)


def blend_logistic(
    members: Sequence[MultiTaskModel],
    specs: Sequence[HeadSpec],
    train: EncodedSplit,
    *,
    regularisation: float = 1.0,
) -> list[str]:
    """Add a logistic regression over the tf-idf view to every multiclass head; return their names.

    The regression is class-balanced and fitted to convergence (L-BFGS, L2
    with inverse strength ``regularisation``) on the training rows, which the
    jointly trained model, stopped early on dev, is not. Adding its weights
    to the wide part and its intercept to the head's bias makes the head's
    logits the sum of both models' (an equal-weight ensemble: softmax of the
    sum is the normalised product of their probabilities) at no cost at
    inference. Weighting the two by dev likelihood was tried: the fitted
    weights swung between the extremes from one fold to the next.
    """
    from sklearn.linear_model import LogisticRegression

    if train.wide is None:
        raise ValueError("the split's tf-idf rows are computed by fit(); train first")
    blended: list[str] = []
    for spec in specs:
        if spec.kind != "multiclass":
            continue
        rows = np.flatnonzero(train.present[spec.name])
        target = train.targets[spec.name][rows]
        if len(np.unique(target)) < 2:
            continue
        regression = LogisticRegression(
            class_weight="balanced", C=regularisation, max_iter=3000
        ).fit(train.wide[rows], target)
        weight = np.zeros((train.wide.shape[1], len(spec.labels)), dtype=np.float64)
        bias = np.zeros(len(spec.labels), dtype=np.float64)
        classes = regression.classes_
        if len(classes) == 2:  # one coefficient vector: the second class against the first
            weight[:, classes[1]] = regression.coef_[0]
            bias[classes[1]] = regression.intercept_[0]
        else:
            weight[:, classes] = regression.coef_.T
            bias[classes] = regression.intercept_
        for member in members:
            head = member.heads[f"head_{spec.name}"]
            wide = member.wide[f"wide_{spec.name}"]
            assert isinstance(head, nn.Linear) and isinstance(wide, WideHead)
            with torch.no_grad():
                wide.weight += torch.from_numpy(weight).float()
                head.bias += torch.from_numpy(bias).float()
        blended.append(spec.name)
    return blended


def mean_logits(members: Sequence[MultiTaskModel], split: EncodedSplit) -> dict[str, np.ndarray]:
    """Logits per head averaged over ensemble members, in row order."""
    outputs = [predict_logits(member, split)[0] for member in members]
    return {name: np.mean([o[name] for o in outputs], axis=0) for name in outputs[0]}


def _optimizers(model: nn.Module, train_config: TrainConfig) -> list[torch.optim.Optimizer]:
    """SparseAdam for sparse embedding tables, AdamW (with weight decay) for the rest."""
    sparse = [
        module.weight
        for module in model.modules()
        if isinstance(module, nn.Embedding) and module.sparse
    ]
    sparse_ids = {id(p) for p in sparse}
    wide = [p for name, p in model.named_parameters() if name.startswith("wide.")]
    wide_ids = {id(p) for p in wide}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids | wide_ids]
    groups = [{"params": dense, "weight_decay": train_config.weight_decay}]
    if wide:
        groups.append({"params": wide, "weight_decay": train_config.wide_weight_decay})
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(groups, lr=train_config.learning_rate)
    ]
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=train_config.learning_rate))
    return optimizers


# --------------------------------------------------------------------------- calibration


def fit_temperature(logits: np.ndarray, target: np.ndarray, *, multilabel: bool = False) -> float:
    """The temperature minimising dev negative log-likelihood (log-spaced search, then refined)."""

    def nll(temperature: float) -> float:
        scaled = logits / temperature
        if multilabel:
            # Mean binary cross-entropy, computed stably from logits.
            return float(np.mean(np.logaddexp(0.0, scaled) - target * scaled))
        shifted = scaled - scaled.max(1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(1))
        return float(np.mean(log_norm - shifted[np.arange(len(target)), target]))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=nll)
    low, high = best / 1.06, best * 1.06
    for _ in range(40):  # golden-section refinement inside the winning grid cell
        a = high - (high - low) / 1.618034
        b = low + (high - low) / 1.618034
        if nll(a) < nll(b):
            high = b
        else:
            low = a
    return float((low + high) / 2)


# --------------------------------------------------------------------------- export


class NeighbourMemory(nn.Module):
    """Votes from the most similar training tickets, by tf-idf cosine of subword uni/bigrams.

    Helpdesk histories are full of near-repeats (the same problem reported
    again, reworded); their labels are far more reliable than a classifier's
    guess for such a ticket. Each stored ticket keeps its ``per_row`` largest
    tf-idf weights (ids and values) and its label per head (-1 = none). For a
    query, the similarity to every stored ticket is the dot product over those
    weights; the ``k`` most similar vote for their labels with weight
    ``max(0, similarity - threshold)``.
    """

    def __init__(
        self,
        ids: np.ndarray,
        values: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[int],
        *,
        k: int = 3,
        threshold: float = 0.3,
    ) -> None:
        super().__init__()
        # Stored compactly (int32 ids, float16 weights) and widened when used.
        self.register_buffer("memory_ids", torch.from_numpy(ids.astype(np.int32).ravel()))
        self.register_buffer("memory_values", torch.from_numpy(values.astype(np.float16)))
        self.register_buffer("memory_labels", torch.from_numpy(labels.astype(np.int64)))
        self.rows, self.per_row = ids.shape
        self.classes = list(classes)
        self.k = min(k, self.rows)
        self.threshold = threshold

    def forward(self, words: torch.Tensor) -> list[torch.Tensor]:
        """Votes per head (batch x classes), in the order of ``classes``."""
        ids = self.memory_ids.to(torch.int64)
        gathered = words.index_select(1, ids).reshape(-1, self.rows, self.per_row)
        similarity = (gathered * self.memory_values.to(torch.float32)).sum(-1)
        top, index = similarity.topk(self.k, dim=1)
        weight = (top - self.threshold).clamp(min=0.0).unsqueeze(-1)
        labels = self.memory_labels[index]  # batch x k x heads
        votes = []
        for head, count in enumerate(self.classes):
            hits = labels[:, :, head].unsqueeze(-1) == torch.arange(count)
            votes.append((hits.to(torch.float32) * weight).sum(1))
        return votes


def build_memory(
    words: sp.csr_matrix,
    labels: np.ndarray,
    classes: Sequence[int],
    *,
    per_row: int = 64,
    k: int = 3,
    threshold: float = 0.3,
) -> NeighbourMemory:
    """A memory of ``words`` rows (tf-idf word blocks) truncated to their largest weights."""
    ids = np.zeros((words.shape[0], per_row), dtype=np.int64)
    values = np.zeros((words.shape[0], per_row), dtype=np.float32)
    for row in range(words.shape[0]):
        start, stop = words.indptr[row], words.indptr[row + 1]
        row_ids, row_values = words.indices[start:stop], words.data[start:stop]
        # Largest weights first; ties broken by feature id so the choice is reproducible.
        keep = np.lexsort((row_ids, -row_values))[:per_row]
        ids[row, : len(keep)] = row_ids[keep]
        values[row, : len(keep)] = row_values[keep]
    return NeighbourMemory(ids, values, labels, classes, k=k, threshold=threshold)


@torch.no_grad()
def memory_votes(
    memory: NeighbourMemory, features: LexicalFeatures, ids_list: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Votes per head for each text, through the same modules the export uses."""
    parts: list[list[np.ndarray]] = [[] for _ in memory.classes]
    for start in range(0, len(ids_list), 128):
        ids, mask = pad_batch(ids_list[start : start + 128])
        words = features(ids, mask.to(torch.float32)).words
        for head, votes in enumerate(memory(words)):
            parts[head].append(votes.numpy())
    return [np.concatenate(p) for p in parts]


def temperature_interval(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    multilabel: bool = False,
    draws: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % bootstrap interval of ``fit_temperature`` over the rows: how well dev pins it down."""
    rng = np.random.default_rng(seed)
    fitted = [
        fit_temperature(logits[rows], target[rows], multilabel=multilabel)
        for rows in (rng.integers(0, len(target), len(target)) for _ in range(draws))
    ]
    low, high = np.percentile(fitted, [2.5, 97.5])
    return float(low), float(high)


@dataclass(frozen=True)
class Fusion:
    """Per head: logits -> (logits + gain * votes) / temperature. gain 0 = memory unused.

    A single-label head may also carry a confidence map, applied to the
    softmax's top label (``calibration.apply_map``).
    """

    temperature: float
    gain: float = 0.0
    confidence_map: ConfidenceMap | None = None

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Softmax of already fused and scaled logits, with the map applied (numpy)."""
        probabilities = softmax(logits)
        if self.confidence_map is not None:
            probabilities = apply_map(probabilities, self.confidence_map)
        return probabilities


def fit_fusion(
    logits: np.ndarray, votes: np.ndarray | None, target: np.ndarray, *, multilabel: bool = False
) -> Fusion:
    """Temperature and memory gain minimising dev negative log-likelihood.

    Without votes (or for multilabel heads) this is plain temperature scaling.
    The gain is kept only when it lowers the dev NLL by at least 1 %: a memory
    that does not help a head should not cost it anything.
    """
    temperature = fit_temperature(logits, target, multilabel=multilabel)
    if votes is None or multilabel or not votes.any():
        return Fusion(temperature)
    base = _nll(logits / temperature, target)
    x = torch.tensor(logits, dtype=torch.float64)
    v = torch.tensor(votes, dtype=torch.float64)
    y = torch.tensor(target)
    params = torch.tensor([math.log(temperature), 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scale, gain = params[0].exp(), F.softplus(params[1])
        loss = F.cross_entropy((x + gain * v) / scale, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        fused_temperature = float(params[0].exp())
        gain = float(F.softplus(params[1]))
    fused = _nll((logits + gain * votes) / fused_temperature, target)
    if fused > base * 0.99:
        return Fusion(temperature)
    return Fusion(fused_temperature, gain)


def _nll(logits: np.ndarray, target: np.ndarray) -> float:
    shifted = logits - logits.max(1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(1))
    return float(np.mean(log_norm - shifted[np.arange(len(target)), target]))


class ExportModule(nn.Module):
    """What the ONNX file computes: calibrated probabilities per head and an embedding.

    Several trained models (seeds) are averaged in logit space (whole-word
    wide parts folded into one, see ``fold_wide_parts``); the neighbour
    memory's votes are added with each head's gain, and the head's temperature
    applied, both fitted on dev. Embedding tables and tf-idf weights are
    stored in float16 (halving the file) and widened when used.
    """

    def __init__(
        self,
        members: Sequence[MultiTaskModel],
        specs: Sequence[HeadSpec],
        fusions: Mapping[str, Fusion],
        memory: NeighbourMemory | None = None,
        *,
        token_chars: sp.csr_matrix | None = None,
        half_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(copy.deepcopy(m).eval() for m in members)
        for member in self.members:
            encoder = member.encoder
            if isinstance(encoder, HybridEncoder) and encoder.lexical is not None:
                for key in list(member.wide):
                    head = member.wide[key]
                    assert isinstance(head, WideHead)
                    member.wide[key] = export_wide_head(
                        head, encoder.lexical.word_dim, token_chars, encoder.lexical.vocab_size
                    )
        self.shared_wide = fold_wide_parts(self.members)
        self.specs = list(specs)
        self.fusions = dict(fusions)
        self.memory = copy.deepcopy(memory) if memory is not None else None
        if half_embeddings:
            for member in self.members:
                for module in member.modules():
                    if isinstance(module, nn.Embedding):
                        module.register_forward_hook(_widen)
                        module.half()
                    elif isinstance(module, WideHead):
                        module.half()

    @property
    def reads_words(self) -> bool:
        """Whether the graph takes whole-word feature ids and counts beside the token ids."""
        return any(
            isinstance(m.encoder, HybridEncoder) and m.encoder.words is not None
            for m in self.members
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        lexical_ids: torch.Tensor | None = None,
        lexical_counts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        summed: dict[str, torch.Tensor] = {}
        pooled_parts = []
        words = None
        lexical = None
        if lexical_ids is not None and lexical_counts is not None:
            lexical = (lexical_ids, lexical_counts)
        for member in self.members:
            if self.shared_wide:
                logits, embedding = member.dense_logits(input_ids, attention_mask)
            else:
                logits, encoded = member.forward_encoded(input_ids, attention_mask, lexical=lexical)
                embedding = encoded.embedding
                words = encoded.lexical if words is None else words
            for name, value in logits.items():
                summed[name] = summed[name] + value if name in summed else value
            pooled_parts.append(F.normalize(embedding, dim=-1))
        shared = self._shared_wide_logits(lexical) if self.shared_wide else {}
        votes = self.memory(words) if self.memory is not None and words is not None else None
        outputs = []
        for index, spec in enumerate(self.specs):
            fusion = self.fusions[spec.name]
            logits = summed[spec.name] / len(self.members)
            if spec.name in shared:
                logits = logits + shared[spec.name]
            if votes is not None and fusion.gain > 0:
                logits = logits + fusion.gain * votes[index]
            scaled = logits / fusion.temperature
            if spec.kind == "multilabel":
                outputs.append(scaled.sigmoid())
            elif fusion.confidence_map is not None:
                outputs.append(apply_map_torch(scaled.softmax(-1), fusion.confidence_map))
            else:
                outputs.append(scaled.softmax(-1))
        embedding = F.normalize(torch.cat(pooled_parts, dim=-1), dim=-1)
        return (*outputs, embedding)

    def _shared_wide_logits(
        self, lexical: tuple[torch.Tensor, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """The folded wide part's logits per head (the same for every member)."""
        if lexical is None:
            raise ValueError("a whole-word model needs the text's feature ids and counts")
        first = self.members[0]
        assert isinstance(first.encoder, HybridEncoder) and first.encoder.words is not None
        positions = first.encoder.words(*lexical)
        return {name: first.wide[f"wide_{name}"](positions) for name in first.head_names}


def fold_wide_parts(members: Sequence[MultiTaskModel]) -> bool:
    """Fold an ensemble's whole-word wide parts into the first member; return whether it did.

    Members trained on the same data share the tf-idf view (its statistics
    come from the training texts, not the seed), and the wide part is linear
    in it, so the mean of the members' wide logits is the wide logits of the
    mean weight. The other members keep only their dense part: the file
    holds one wide part and one feature table however many members there are.
    """
    if len(members) < 2 or not all(
        isinstance(m.encoder, HybridEncoder) and m.encoder.words is not None for m in members
    ):
        return False
    views = [m.encoder.words for m in members]  # type: ignore[union-attr]
    first = views[0]
    assert first is not None
    for view in views[1:]:
        assert view is not None
        if not (torch.equal(view.remap, first.remap) and torch.equal(view.idf, first.idf)):
            raise ValueError("ensemble members read different tf-idf views; cannot fold them")
    for key, head in members[0].wide.items():
        assert isinstance(head, WideHead)
        with torch.no_grad():
            head.weight.copy_(torch.stack([m.wide[key].weight for m in members]).mean(0))
    for member in members[1:]:
        assert isinstance(member.encoder, HybridEncoder)
        member.encoder.words = None
        member.wide = nn.ModuleDict()
    return True


def _widen(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def export_onnx(module: ExportModule, path: Path) -> list[str]:
    """Write ``module`` as ONNX with dynamic batch and sequence axes; return output names."""
    output_names = [spec.output for spec in module.specs] + [EMBEDDING_OUTPUT]
    export_graph(module, path, output_names, reads_words=module.reads_words)
    return output_names


def export_graph(
    module: nn.Module, path: Path, output_names: Sequence[str], *, reads_words: bool
) -> None:
    """Trace ``module`` (token ids, mask and, if ``reads_words``, word features) to ONNX."""
    ids = torch.tensor([[2, 5, 6, 7], [2, 8, 0, 0]], dtype=torch.int64)
    mask = (ids > 0).to(torch.int64)
    inputs: tuple[torch.Tensor, ...] = (ids, mask)
    input_names = list(INPUT_NAMES)
    dynamic_axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
    }
    if reads_words:
        lexical_ids = torch.tensor([[3, 9, 11], [4, 0, 0]], dtype=torch.int64)
        inputs += (lexical_ids, (lexical_ids > 0).to(torch.float32))
        input_names += list(WORD_INPUT_NAMES)
        dynamic_axes.update({name: {0: "batch", 1: "features"} for name in WORD_INPUT_NAMES})
    dynamic_axes.update({name: {0: "batch"} for name in output_names})
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            input_names=input_names,
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            # Folding would turn the float16 -> float32 casts of stored weights into
            # float32 copies, doubling the file; onnxruntime folds them at load instead.
            do_constant_folding=False,
        )


def config_dict(config: ModelConfig | TrainConfig | WordFeatureConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(config)))


# --------------------------------------------------------------------------- model directory

MANIFEST_FORMAT = 1
CARD_FILE = "MODEL_CARD.md"
GOLDEN_FILE = "golden.jsonl"


def write_manifest(model_dir: Path, version: str) -> dict[str, Any]:
    """manifest.json: the model version and the sha256 and size of every other file."""
    files = {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(model_dir.iterdir())
        if path.is_file() and path.name != "manifest.json" and not path.name.startswith(".")
    }
    manifest = {"format": MANIFEST_FORMAT, "model_version": version, "files": files}
    write_json(model_dir / "manifest.json", manifest)
    return manifest


def write_json(path: Path, data: Any) -> None:
    """Pretty, key-stable JSON with a final newline, written via a temporary file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def card_markers(section: str) -> tuple[str, str]:
    return f"<!-- BEGIN generated:{section} -->", f"<!-- END generated:{section} -->"


def replace_card_section(card: str, section: str, content: str) -> str:
    """``card`` with the generated ``section`` replaced (or appended when absent).

    Everything outside the markers is hand-written and kept as it is, so a
    retrained or re-evaluated model keeps its card's prose.
    """
    begin, end = card_markers(section)
    block = f"{begin}\n{content.strip()}\n{end}"
    start = card.find(begin)
    stop = card.find(end, start + len(begin)) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        return card[:start] + block + card[stop + len(end) :]
    return card.rstrip() + "\n\n" + block + "\n"


def update_card(model_dir: Path, section: str, content: str) -> None:
    """Replace one generated section of the model card and refresh the manifest."""
    card_path = model_dir / CARD_FILE
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    card_path.write_text(replace_card_section(card, section, content), encoding="utf-8")
    labels = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
    write_manifest(model_dir, labels["version"])


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_description() -> dict[str, Any]:
    """CPU model, cores visible and usable, and library versions, for cards and benchmarks."""
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cpu_limit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "os": f"{platform.system()} {platform.release()}",
    }


# --------------------------------------------------------------------------- back to PyTorch


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """The ``ModelConfig`` recorded in labels.json (lists back to tuples)."""
    known = {f for f in ModelConfig.__dataclass_fields__}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
    return ModelConfig(**values)


def load_torch_export(model_dir: Path) -> ExportModule:
    """Rebuild the exported module in PyTorch from a model directory's own files.

    The architecture, fusions and memory shape come from labels.json, the
    vocabulary from tokenizer.json and every parameter and buffer from the
    ONNX initialisers (the exporter keeps their names), so this is the very
    model the service runs, in PyTorch eager mode. Used by the benchmark to
    compare runtimes on identical weights.
    """
    import onnx
    from onnx import numpy_helper

    labels = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
    training = labels["training"]
    config = model_config_from_dict(training["architecture"])
    specs = [HeadSpec(h["name"], h["kind"], tuple(h["labels"])) for h in labels["heads"]]
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    vocabulary = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    members = [MultiTaskModel(config, specs, vocabulary) for _ in training["optimisation"]["seeds"]]
    fusions = {
        h["name"]: Fusion(
            float(h["temperature"]),
            float(h.get("memory_gain", 0.0)),
            ConfidenceMap.from_json(h["confidence_map"]) if h.get("confidence_map") else None,
        )
        for h in labels["heads"]
    }
    memory = None
    if labels.get("memory"):
        shape = labels["memory"]
        memory = NeighbourMemory(
            np.zeros((shape["rows"], shape["per_row"]), dtype=np.int64),
            np.zeros((shape["rows"], shape["per_row"]), dtype=np.float32),
            np.zeros((shape["rows"], len(specs)), dtype=np.int64),
            [len(s.labels) if s.kind == "multiclass" else 0 for s in specs],
            k=shape["k"],
            threshold=shape["threshold"],
        )
    module = ExportModule(members, specs, fusions, memory)  # wide heads as zeros, loaded below
    graph = onnx.load(str(model_dir / "model.onnx"))
    weights = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    wanted = dict(module.state_dict())
    missing = [name for name in wanted if name not in weights]
    if missing:
        raise ValueError(f"model.onnx lacks weights {missing[:5]}")
    module.load_state_dict({name: torch.from_numpy(weights[name].copy()) for name in wanted})
    return module.eval()
