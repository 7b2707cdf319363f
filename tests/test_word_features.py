"""Whole-word features: what ids a text yields, and how batches are padded."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from connector.word_features import WordFeatureConfig, WordFeatures, pad_features

CONFIG = WordFeatureConfig(buckets=1 << 16)


@pytest.fixture
def features() -> WordFeatures:
    return WordFeatures(CONFIG)


def bucket(text: str) -> int:
    return zlib.crc32(text.encode("utf-8")) % CONFIG.buckets


class TestFeatures:
    def test_a_two_letter_word(self, features: WordFeatures) -> None:
        ids, counts = features("ab")
        grams = [" a", "ab", "b ", " ab", "ab ", " ab "]
        expected = sorted({bucket("ab")} | {CONFIG.buckets + bucket(g) for g in grams})
        assert ids.tolist() == expected
        assert counts.sum() == 1 + len(grams)

    def test_word_pairs_and_repeats_are_counted(self, features: WordFeatures) -> None:
        ids, counts = features("vpn down vpn down")
        count = dict(zip(ids.tolist(), counts.tolist(), strict=True))
        assert count[bucket("vpn")] >= 2
        assert count[bucket("vpn down")] >= 2
        assert count[bucket("down vpn")] >= 1

    def test_blocks_are_separate(self, features: WordFeatures) -> None:
        ids, _ = features("Druckertreiber installieren, bitte! 2024")
        assert ids.min() >= 0 and ids.max() < CONFIG.width
        assert (ids < CONFIG.buckets).any() and (ids >= CONFIG.buckets).any()

    def test_case_and_punctuation_do_not_matter_for_words(self, features: WordFeatures) -> None:
        upper, _ = features("DRUCKER")
        lower, _ = features("drucker")
        assert upper.tolist() == lower.tolist()
        words, _ = features("drucker!")
        assert bucket("drucker") in words.tolist()

    def test_inflections_share_character_ngrams(self, features: WordFeatures) -> None:
        short, _ = features("drucker")
        compound, _ = features("druckertreiber")
        chars = set(short[short >= CONFIG.buckets].tolist())
        shared = chars & set(compound.tolist())
        assert len(shared) >= 10  # " dr", "druc", "ucke", ...: all but the word-end grams

    def test_same_text_same_features(self, features: WordFeatures) -> None:
        first = features("Rechnung für März doppelt abgebucht")
        again = WordFeatures(CONFIG)("Rechnung für März doppelt abgebucht")
        assert first[0].tolist() == again[0].tolist()
        assert first[1].tolist() == again[1].tolist()

    def test_empty_and_single_letter_texts(self, features: WordFeatures) -> None:
        for text in ("", "   ", "\n"):
            ids, counts = features(text)
            assert ids.size == 0 and counts.size == 0
        ids, _ = features("a")
        assert (ids >= CONFIG.buckets).all()  # no word (too short), only its character grams

    def test_only_the_start_of_a_huge_text_is_read(self) -> None:
        capped = WordFeatures(WordFeatureConfig(buckets=1 << 16, text_chars=100))
        huge = "alpha " * 10 + "omega " * 200_000
        ids, counts = capped(huge)
        assert bucket("alpha") in ids.tolist()
        assert counts.sum() < 1000

    def test_long_words_are_read_but_not_cached(self, features: WordFeatures) -> None:
        blob = "x9" * 1500  # one 3,000-character "word", as in a pasted base64 attachment
        ids, counts = features(f"see {blob} attached")
        assert counts.sum() > 4 * 2900  # its character n-grams are all there
        assert features.cached_words() == 2  # "see" and "attached", not the blob
        assert features(f"see {blob} attached")[0].tolist() == ids.tolist()


class TestPadding:
    def test_rows_are_padded_with_zero_counts(self, features: WordFeatures) -> None:
        ids, counts = pad_features([features(t) for t in ("printer broken", "", "vpn")])
        assert ids.shape == counts.shape and ids.dtype == np.int64 and counts.dtype == np.float32
        assert counts[1].sum() == 0
        assert (counts[0] > 0).sum() == len(features("printer broken")[0])

    def test_all_empty_batch_has_one_column(self) -> None:
        ids, counts = pad_features([(np.zeros(0, np.int64), np.zeros(0, np.float32))] * 2)
        assert ids.shape == (2, 1) and not counts.any()
