"""Confidence maps and the cross-validated choice of a head's calibration."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (PyTorch)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import calibration  # noqa: E402

from connector.classifier import expected_calibration_error, softmax  # noqa: E402


def overconfident_in_the_middle(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities, and labels that agree with them at the top but less in the middle.

    The shape a single temperature cannot fix: accuracy is confidence minus a
    bump that peaks at 0.7 and vanishes at 0.4 and 1.0.
    """
    rng = np.random.default_rng(seed)
    probabilities = softmax(rng.normal(0.0, 2.5, (rows, 4)))
    confidence = probabilities.max(1)
    accuracy = confidence - 0.15 * np.clip(1 - np.abs(confidence - 0.7) / 0.3, 0, 1)
    right = rng.random(rows) < accuracy
    top = probabilities.argmax(1)
    wrong = (top + rng.integers(1, 4, rows)) % 4
    return probabilities, np.where(right, top, wrong)


class TestConfidenceMap:
    def test_fitted_map_is_monotone_and_removes_the_bump(self) -> None:
        probabilities, target = overconfident_in_the_middle(6000, seed=1)
        confidence, right = probabilities.max(1), probabilities.argmax(1) == target
        confidence_map = calibration.fit_map(confidence, right)
        assert list(confidence_map.y) == sorted(confidence_map.y)
        assert max(confidence_map.y) <= calibration.MAX_CONFIDENCE

        fresh, fresh_target = overconfident_in_the_middle(6000, seed=2)
        mapped = calibration.apply_map(fresh, confidence_map)
        before = expected_calibration_error(fresh.max(1), fresh.argmax(1) == fresh_target)
        after = expected_calibration_error(mapped.max(1), mapped.argmax(1) == fresh_target)
        assert before > 0.05 and after < before / 2

    def test_mapping_keeps_the_label_and_a_distribution(self) -> None:
        rng = np.random.default_rng(3)
        probabilities = softmax(rng.normal(0.0, 2.0, (3000, 5)))
        # A harsh map: every confidence to 0.2, below many runners-up.
        harsh = calibration.ConfidenceMap((0.0, 1.0), (0.2, 0.2))
        mapped = calibration.apply_map(probabilities, harsh)
        assert (mapped.argmax(1) == probabilities.argmax(1)).all()
        assert np.allclose(mapped.sum(1), 1.0)
        assert (mapped >= 0).all()
        # The other labels keep their proportions.
        top = probabilities.argmax(1)
        others = np.ones_like(probabilities, dtype=bool)
        others[np.arange(len(top)), top] = False
        ratio = mapped[others].reshape(len(top), 4) / probabilities[others].reshape(len(top), 4)
        assert np.allclose(ratio, ratio[:, :1])

    def test_a_certain_row_stays_certain(self) -> None:
        probabilities = np.array([[1.0, 0.0, 0.0], [0.5, 0.3, 0.2]])
        confidence_map = calibration.ConfidenceMap((0.3, 1.0), (0.3, 0.8))
        mapped = calibration.apply_map(probabilities, confidence_map)
        assert mapped[0].tolist() == [1.0, 0.0, 0.0]
        assert mapped[1, 0] == pytest.approx(np.interp(0.5, (0.3, 1.0), (0.3, 0.8)))

    def test_top_label_follows_the_knots_in_float64_and_float32(self) -> None:
        probabilities, target = overconfident_in_the_middle(2000, seed=4)
        right = probabilities.argmax(1) == target
        confidence_map = calibration.fit_map(probabilities.max(1), right)
        mapped = calibration.apply_map(probabilities, confidence_map)
        confidence = probabilities.max(1)
        second = np.sort(probabilities, axis=1)[:, -2]
        floor = second / (1 - confidence + second) + calibration.TOP_MARGIN
        wanted = np.maximum(np.interp(confidence, confidence_map.x, confidence_map.y), floor)
        assert np.allclose(mapped.max(1), wanted, atol=1e-12)
        as_float = torch.tensor(probabilities, dtype=torch.float32)
        single = calibration.apply_map_torch(as_float, confidence_map).numpy()
        assert (single.argmax(1) == probabilities.argmax(1)).all()
        assert np.allclose(single, mapped, atol=1e-6)

    def test_json_round_trip_and_bad_knots(self) -> None:
        confidence_map = calibration.ConfidenceMap((0.25, 0.5, 1.0), (0.2, 0.45, 0.9))
        assert calibration.ConfidenceMap.from_json(confidence_map.to_json()) == confidence_map
        with pytest.raises(ValueError, match="increase"):
            calibration.ConfidenceMap((0.5, 0.5), (0.1, 0.2))
        with pytest.raises(ValueError, match="decrease"):
            calibration.ConfidenceMap((0.2, 0.5), (0.3, 0.2))
        with pytest.raises(ValueError, match="as many"):
            calibration.ConfidenceMap((0.2,), (0.3, 0.4))


class TestChoice:
    @staticmethod
    def folds(make: object, count: int = 3) -> list[calibration.FoldRows]:
        result = []
        for seed in range(count):
            probabilities, target = make(3000, seed)  # type: ignore[operator]
            log_p = np.log(np.clip(probabilities, 1e-12, 1.0))
            factor = calibration_factor(log_p, target)
            result.append(calibration.FoldRows(probabilities, target, factor))
        return result

    def test_the_bump_chooses_a_map(self) -> None:
        choice = calibration.choose(self.folds(overconfident_in_the_middle))
        assert choice["method"] == "map"
        assert len(choice["ece_per_fold"]["map"]) == 3
        assert choice["ece_mean"]["map"] < choice["ece_mean"]["temperature"]
        assert choice["rows"] == 9000
        calibration.ConfidenceMap.from_json(choice["map"])

    def test_uniform_overconfidence_chooses_the_factor(self) -> None:
        def too_sharp(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng(seed)
            logits = rng.normal(0.0, 2.0, (rows, 3))
            truth = softmax(logits / 1.6)
            target = np.array([rng.choice(3, p=p) for p in truth])
            return softmax(logits), target

        choice = calibration.choose(self.folds(too_sharp))
        assert choice["method"] in ("factor", "map")
        assert choice["ece_mean"]["factor"] < choice["ece_mean"]["temperature"] / 2
        if choice["method"] == "factor":
            assert choice["factor"] == pytest.approx(1.6, rel=0.1)

    def test_a_calibrated_head_keeps_its_temperature_when_nothing_helps(self) -> None:
        probabilities = np.array([[0.5, 0.5]] * 4)
        target = np.array([0, 1, 0, 1])
        folds = [calibration.FoldRows(probabilities, target, 1.0) for _ in range(2)]
        choice = calibration.choose(folds)
        assert choice["method"] == "temperature"  # all equal: the simplest wins
        with pytest.raises(ValueError, match="two folds"):
            calibration.choose(folds[:1])


def calibration_factor(log_probabilities: np.ndarray, target: np.ndarray) -> float:
    """The NLL-optimal temperature factor, as evaluate.py measures it."""
    import modeling

    return modeling.fit_temperature(log_probabilities, target)
