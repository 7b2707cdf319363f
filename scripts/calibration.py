"""Top-label confidence maps, and choosing a head's calibration by cross-validation.

Temperature scaling has one degree of freedom: it can make a head less
confident everywhere, not less confident at 0.7 and as confident at 0.98.
Held-out folds of the ticket data show exactly that shape on some heads
(right at the top, overconfident in the middle). A confidence map is a
monotone, piecewise-linear function of the top label's probability, fitted
by isotonic regression on held-out (confidence, was it right) pairs; the
other labels share what is left in their old proportions, so the predicted
label never changes and the probabilities still sum to one.

``choose`` decides per head between the dev temperature as it is, the
temperature times the cross-validated factor, and a map, by which gives the
lowest expected calibration error on each fold when fitted on the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression

from connector.classifier import expected_calibration_error, softmax

# A map never claims certainty: the other labels keep a sliver of probability.
MAX_CONFIDENCE = 0.9995
# Where a map would pull the top label down to its runner-up, the top label stays this
# far ahead, so the predicted label survives float32 rounding in the graph.
TOP_MARGIN = 1e-4

METHODS = ("temperature", "factor", "map")


@dataclass(frozen=True)
class ConfidenceMap:
    """Knots of a non-decreasing piecewise-linear map; flat outside the first and last."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or not self.x:
            raise ValueError("a confidence map needs as many y as x knots, at least one")
        if any(b <= a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("confidence map knots must increase")
        if any(b < a for a, b in zip(self.y, self.y[1:], strict=False)):
            raise ValueError("a confidence map must not decrease")

    def to_json(self) -> dict[str, list[float]]:
        return {"x": [round(v, 6) for v in self.x], "y": [round(v, 6) for v in self.y]}

    @classmethod
    def from_json(cls, data: Any) -> ConfidenceMap:
        return cls(tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"]))


@dataclass(frozen=True)
class HeadCalibration:
    """One head's chosen correction, as a cross-validation report records it (``choose``)."""

    method: str  # one of METHODS
    factor: float = 1.0  # "factor": what the dev temperature is multiplied by
    confidence_map: ConfidenceMap | None = None  # "map"

    @classmethod
    def from_json(cls, data: Any) -> HeadCalibration:
        """A report's choice; ValueError, KeyError or TypeError where it is unusable."""
        method = data["method"]
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}")
        if method == "factor":
            factor = float(data["factor"])
            if not factor > 0:
                raise ValueError("a temperature factor must be positive")
            return cls(method, factor=factor)
        if method == "map":
            return cls(method, confidence_map=ConfidenceMap.from_json(data["map"]))
        return cls(method)


def fit_map(confidence: np.ndarray, correct: np.ndarray) -> ConfidenceMap:
    """Isotonic regression of correctness on confidence, as knots (sklearn's own thresholds)."""
    isotonic = IsotonicRegression(y_min=0.0, y_max=MAX_CONFIDENCE, out_of_bounds="clip")
    isotonic.fit(np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64))
    x = isotonic.X_thresholds_
    y = isotonic.y_thresholds_
    if len(x) == 1:  # every row had the same confidence
        return ConfidenceMap((float(x[0]),), (float(y[0]),))
    return ConfidenceMap(tuple(map(float, x)), tuple(map(float, y)))


def apply_map(probabilities: np.ndarray, confidence_map: ConfidenceMap) -> np.ndarray:
    """Rows of class probabilities with the top label's probability mapped (numpy).

    The graph's own operations (``apply_map_torch``) in float64, so training,
    cross-validation and the exported model share one definition.
    """
    p = torch.from_numpy(np.asarray(probabilities, dtype=np.float64))
    result: np.ndarray = apply_map_torch(p, confidence_map).numpy()
    return result


def apply_map_torch(probabilities: torch.Tensor, confidence_map: ConfidenceMap) -> torch.Tensor:
    """Map each row's top probability, rescale the rest; operations the ONNX exporter handles.

    Where the map would pull the top label down to its rescaled runner-up, it
    stops ``TOP_MARGIN`` above it: the runner-up becomes
    ``second * (1 - c') / (1 - c)``, which is at most c' exactly when
    c' >= second / (1 - c + second). A row already at certainty stays as it is.
    """
    confidence, top = probabilities.max(dim=-1)
    mapped = _interpolate(confidence, confidence_map)
    if probabilities.shape[-1] > 1:
        second = probabilities.topk(2, dim=-1).values[..., 1]
        floor = second / (1.0 - confidence + second).clamp_min(1e-12) + TOP_MARGIN
        mapped = torch.maximum(mapped, floor)
    uncertain = confidence < 1.0
    mapped = torch.where(uncertain, mapped, torch.ones_like(mapped))
    rest = (1.0 - mapped) / (1.0 - confidence).clamp_min(1e-12)
    rest = torch.where(uncertain, rest, torch.zeros_like(rest))
    is_top = torch.arange(probabilities.shape[-1], device=probabilities.device) == top.unsqueeze(-1)
    return torch.where(is_top, mapped.unsqueeze(-1), probabilities * rest.unsqueeze(-1))


def _interpolate(value: torch.Tensor, confidence_map: ConfidenceMap) -> torch.Tensor:
    """np.interp as a sum of clamped ramps: y0 + sum_i slope_i * clamp(v - x_i, 0, width_i)."""
    x = torch.tensor(confidence_map.x, dtype=value.dtype)
    y = torch.tensor(confidence_map.y, dtype=value.dtype)
    if len(confidence_map.x) == 1:
        return torch.zeros_like(value) + y[0]
    widths = x[1:] - x[:-1]
    slopes = (y[1:] - y[:-1]) / widths
    ramps = torch.minimum((value.unsqueeze(-1) - x[:-1]).clamp_min(0.0), widths)
    return y[0] + (ramps * slopes).sum(-1)


# -- choosing per head ------------------------------------------------------------------


@dataclass(frozen=True)
class FoldRows:
    """One fold's held-out rows of one head: the fold model's probabilities and the truth."""

    probabilities: np.ndarray  # rows x classes, with the fold model's dev temperature
    target: np.ndarray  # class index per row
    factor: float  # the NLL-optimal temperature factor on these rows


def rescale(probabilities: np.ndarray, factor: float) -> np.ndarray:
    """Probabilities as the same logits divided by a further ``factor`` would give."""
    return softmax(np.log(np.clip(probabilities, 1e-12, 1.0)), temperature=factor)


def _top(probabilities: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probabilities.max(1), probabilities.argmax(1) == target


def geometric_mean(values: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def choose(folds: Sequence[FoldRows]) -> dict[str, Any]:
    """Per-fold held-out ECE of each method fitted without that fold; the best; its parameters.

    "temperature" keeps the dev temperature; "factor" multiplies it by the
    geometric mean of the other folds' factors; "map" applies a confidence
    map fitted on the other folds' rows. The chosen method has the lowest
    mean ECE (ties go to the simpler). Its parameters, for the model trained
    on all rows, are fitted on every fold.
    """
    if len(folds) < 2:
        raise ValueError("choosing a calibration needs at least two folds")
    ece: dict[str, list[float]] = {method: [] for method in METHODS}
    for index, fold in enumerate(folds):
        others = [f for i, f in enumerate(folds) if i != index]
        as_is = _top(fold.probabilities, fold.target)
        ece["temperature"].append(expected_calibration_error(*as_is))
        factor = geometric_mean([f.factor for f in others])
        scaled = rescale(fold.probabilities, factor)
        ece["factor"].append(expected_calibration_error(*_top(scaled, fold.target)))
        pooled = [_top(f.probabilities, f.target) for f in others]
        confidence_map = fit_map(
            np.concatenate([c for c, _ in pooled]), np.concatenate([r for _, r in pooled])
        )
        mapped = apply_map(fold.probabilities, confidence_map)
        ece["map"].append(expected_calibration_error(*_top(mapped, fold.target)))
    means = {method: float(np.mean(values)) for method, values in ece.items()}
    chosen = min(METHODS, key=lambda method: (round(means[method], 6), METHODS.index(method)))
    everything = [_top(f.probabilities, f.target) for f in folds]
    result: dict[str, Any] = {
        "method": chosen,
        "ece_per_fold": {m: [round(v, 4) for v in values] for m, values in ece.items()},
        "ece_mean": {m: round(v, 4) for m, v in means.items()},
    }
    if chosen == "factor":
        result["factor"] = round(geometric_mean([f.factor for f in folds]), 6)
    elif chosen == "map":
        result["map"] = fit_map(
            np.concatenate([c for c, _ in everything]), np.concatenate([r for _, r in everything])
        ).to_json()
        result["rows"] = int(sum(len(f.target) for f in folds))
    return result
