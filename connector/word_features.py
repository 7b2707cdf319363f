"""Whole-word lexical features: hashed word 1-2-grams and character 2-5-grams within words.

The strongest simple text classifier for tickets is a linear model over
tf-idf of words, word pairs and the character n-grams of each word (they
carry inflections, compounds and typos: "Drucker", "Druckertreiber",
"Druckr"). A subword tokenizer splits rare words, so features computed from
token ids cannot see a rare word's n-grams across its pieces. This module
computes them from the text itself and hands the model their bucket ids and
counts; idf weighting, normalisation and the weights live in the ONNX graph.

The hash is CRC-32 (zlib, C speed, stable across processes and platforms),
taken modulo the bucket count. A word's character n-grams are cached, since
ticket vocabulary repeats: most words of a new ticket have been seen before.
Both the training script and the classifier call ``WordFeatures``, so a
model sees at serving time exactly the features it was trained on.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# As scikit-learn's default token pattern: runs of two or more word characters.
_WORD = re.compile(r"(?u)\b\w\w+\b")

# Longer "words" (base64 blobs, URLs, log lines) are rare and mostly unique: caching
# them would let one hostile ticket fill the cache with large entries.
MAX_CACHED_WORD_CHARS = 40

IDS_INPUT = "lexical_ids"
COUNTS_INPUT = "lexical_counts"
INPUT_NAMES = (IDS_INPUT, COUNTS_INPUT)  # the graph inputs, in this order


@dataclass(frozen=True)
class WordFeatureConfig:
    """Feature ids ``[0, buckets)`` are words and word pairs; ``[buckets, 2 * buckets)``
    character n-grams of ``min_chars`` to ``max_chars`` within whitespace-separated words."""

    buckets: int = 1 << 19
    min_chars: int = 2
    max_chars: int = 5
    text_chars: int = 4000  # only the start of a longer text is read

    @property
    def width(self) -> int:
        return 2 * self.buckets


class WordFeatures:
    """Text -> (unique feature ids, their counts); ``pad_features`` batches them for the model."""

    def __init__(self, config: WordFeatureConfig, cache_size: int = 1 << 16) -> None:
        self.config = config
        self._cached_char_ids = lru_cache(maxsize=cache_size)(self._word_char_ids)

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        text = text[: self.config.text_chars].lower()
        buckets = self.config.buckets
        words = _WORD.findall(text)
        hashed = [zlib.crc32(w.encode("utf-8")) % buckets for w in words]
        hashed += [
            zlib.crc32(f"{first} {second}".encode()) % buckets
            for first, second in itertools.pairwise(words)
        ]
        parts = [np.asarray(hashed, dtype=np.int64)]
        parts += [
            self._cached_char_ids(word)
            if len(word) <= MAX_CACHED_WORD_CHARS
            else self._word_char_ids(word)
            for word in text.split()
        ]
        ids, counts = np.unique(np.concatenate(parts), return_counts=True)
        return ids, counts.astype(np.float32)

    def cached_words(self) -> int:
        return self._cached_char_ids.cache_info().currsize

    def _word_char_ids(self, word: str) -> np.ndarray:
        padded = f" {word} "  # n-grams at a word's edges differ from inner ones
        grams = [
            padded[start : start + n]
            for n in range(self.config.min_chars, self.config.max_chars + 1)
            for start in range(len(padded) - n + 1)
        ]
        offset = self.config.buckets
        return np.fromiter(
            (offset + zlib.crc32(g.encode("utf-8")) % self.config.buckets for g in grams),
            dtype=np.int64,
            count=len(grams),
        )


def pad_features(rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-text (ids, counts) as batch x longest arrays, padded with id 0 and count 0.

    A padded slot has count 0, which the graph reads as absent whatever its id.
    """
    width = max([1, *(len(ids) for ids, _ in rows)])
    ids = np.zeros((len(rows), width), dtype=np.int64)
    counts = np.zeros((len(rows), width), dtype=np.float32)
    for row, (row_ids, row_counts) in enumerate(rows):
        ids[row, : len(row_ids)] = row_ids
        counts[row, : len(row_counts)] = row_counts
    return ids, counts
