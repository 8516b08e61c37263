"""Scores of predicted model outputs against retraining, shared by every method.

- :func:`lds` — the linear datamodeling score (Park et al., TRAK): for held-out subsets
  (masks never fitted on) and the outputs of the models actually retrained on them, the
  mean over targets of Spearman's ρ between predicted and actual outputs.
- :func:`removal_correlation` — for a list of removals from the full training set (single
  points: leave-one-out; groups: leave-group-out; a target's top supporters: the
  counterfactual test), the correlation between predicted and retrained output changes.

Correlations of a target whose actual (or predicted) outputs are all equal, up to
rounding, are undefined: NaN per target, left out of the means (:attr:`Score.defined` counts
the targets a mean is over; a mean over none is NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from mp_ray.methods import OutputMethod


@dataclass
class Score:
    """A mean correlation and its per-target values ``(T,)`` (NaN where undefined)."""

    mean: float
    per_target: np.ndarray

    @classmethod
    def of(cls, per_target: np.ndarray) -> Score:
        """The score of correlations ``(T,)``: their mean over the defined ones."""
        defined = per_target[np.isfinite(per_target)]
        return cls(float(defined.mean()) if defined.size else float("nan"), per_target)

    @property
    def defined(self) -> int:
        """How many targets the mean is over: those whose correlation is defined."""
        return int(np.isfinite(self.per_target).sum())


def relative_errors(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """‖θ̂ − θ‖ / ‖θ‖ per row of ``(B, d)`` arrays, ``(B,)`` (a zero θ counts as 1e-12)."""
    predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    scale = np.linalg.norm(actual, axis=1).clip(min=1e-12)
    return np.linalg.norm(predicted - actual, axis=1) / scale


def cell(value: float | None, width: int, spec: str = ".3f") -> str:
    """``value`` right-aligned in ``width`` characters; "–" where it is undefined (NaN, or
    None as JSON has it)."""
    if value is None or not np.isfinite(value):
        return f"{'–':>{width}}"
    return f"{value:>{width}{spec}}"


def varies(values: np.ndarray) -> np.ndarray:
    """Whether the values of each column of ``(K, T)``, or of a vector ``(K,)``, differ by
    more than rounding (a correlation with them is defined): ``(T,)`` bool, or a scalar."""
    values = np.asarray(values, float)
    return np.ptp(values, axis=0) > 1e-9 * np.maximum(1.0, np.abs(values).max(axis=0))


def columnwise_correlation(
    predicted: np.ndarray, actual: np.ndarray, rank: bool = True
) -> np.ndarray:
    """Spearman's ρ (Pearson's r unless ``rank``) between matching columns of two ``(K, T)``
    arrays, ``(T,)``; NaN where either column is constant (:func:`varies`)."""
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    if predicted.shape != actual.shape or predicted.ndim != 2:
        raise ValueError(
            f"predicted and actual outputs must both be (K, T), got {predicted.shape} and "
            f"{actual.shape}"
        )
    defined = varies(predicted) & varies(actual)
    if rank:
        predicted, actual = stats.rankdata(predicted, axis=0), stats.rankdata(actual, axis=0)
    a = predicted - predicted.mean(axis=0)
    b = actual - actual.mean(axis=0)
    norm = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, (a * b).sum(axis=0) / norm, np.nan)


def lds(method: OutputMethod, masks: np.ndarray, actual: np.ndarray) -> Score:
    """The linear datamodeling score of ``method`` on held-out ``masks (K, n)`` whose
    retrained outputs are ``actual (K, T)``."""
    if len(masks) != len(actual):
        raise ValueError(f"{len(masks)} masks but {len(actual)} rows of actual outputs")
    if len(masks) < 3:
        raise ValueError("the LDS needs at least 3 held-out subsets")
    return Score.of(columnwise_correlation(method.outputs(masks), actual))


def removal_masks(n: int, removals: list[np.ndarray]) -> np.ndarray:
    """Masks ``(R, n)`` of the full training set minus each removal (indices into 0…n−1)."""
    masks = np.ones((len(removals), n), dtype=bool)
    for row, removed in enumerate(removals):
        removed = np.asarray(removed, dtype=np.int64)
        if removed.size and (removed.min() < 0 or removed.max() >= n):
            raise ValueError(f"removal {row} has indices outside 0…{n - 1}")
        masks[row, removed] = False
    return masks


def output_changes(method: OutputMethod, removal: np.ndarray) -> np.ndarray:
    """Output changes ``(R, T)`` from the full-data model to the models of the removal
    masks ``(R, n)``, as ``method`` predicts them."""
    full = method.outputs(np.ones((1, removal.shape[1]), dtype=bool))
    return method.outputs(removal) - full


def removal_correlation(predicted: np.ndarray, actual: np.ndarray, rank: bool = True) -> Score:
    """Per target, the correlation across removals (Spearman's ρ if ``rank``, else
    Pearson's r) between predicted and actual output changes ``(R, T)``; its mean over the
    targets where it is defined (leave-one-out / leave-group-out correlation)."""
    if len(predicted) < 3:
        raise ValueError(f"a removal correlation needs at least 3 removals, got {len(predicted)}")
    return Score.of(columnwise_correlation(predicted, actual, rank))


def paired_correlation(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Pearson's r and Spearman's ρ between paired predicted and actual changes ``(R,)``
    (the counterfactual test: one removal per target, its own target's change); NaN where
    either is constant."""
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    if predicted.shape != actual.shape or predicted.ndim != 1 or len(predicted) < 3:
        raise ValueError(
            "paired values must be two vectors of the same length ≥ 3, got shapes "
            f"{predicted.shape} and {actual.shape}"
        )
    pair = (predicted[:, None], actual[:, None])
    pearson = columnwise_correlation(*pair, rank=False)[0]
    return float(pearson), float(columnwise_correlation(*pair)[0])
