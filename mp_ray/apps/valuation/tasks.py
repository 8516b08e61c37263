"""How good are data values? The standard evaluation tasks, each one function.

- :func:`rank_correlation`: Spearman correlation of two value vectors (e.g. predictor-based
  values against retraining-based ones).
- :func:`removal_curve`: remove the highest- (or lowest-) valued k% of the training set,
  retrain, and score the model — good values make utility fall fastest when the
  high-valued points go (and rise or hold when the low-valued ones go). All fractions are
  one batch of masks.
- :func:`noisy_label_detection`: with labels of known points flipped, flag the
  |flipped| lowest-valued points; F1 of that flagging and the ROC AUC of −value as a
  detector of flipped labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from mp_ray.apps.utility import Utility
from mp_ray.scores import paired_correlation

DEFAULT_FRACTIONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


def rank_correlation(values: np.ndarray, reference: np.ndarray) -> float:
    """Spearman's ρ between two value vectors ``(n,)``; NaN where either is constant."""
    return paired_correlation(values, reference)[1]


@dataclass
class RemovalCurve:
    """Utility ``(F,)`` after removing ``fractions (F,)`` of the points, by ``order``."""

    order: Literal["high", "low"]
    fractions: np.ndarray
    utilities: np.ndarray


def removal_masks(
    values: np.ndarray, fractions: tuple[float, ...], order: Literal["high", "low"]
) -> np.ndarray:
    """Masks ``(F, n)``: everything but the round(f·n) highest (or lowest) valued points."""
    if order not in ("high", "low"):
        raise ValueError(f"order must be 'high' or 'low', got {order!r}")
    if any(not 0 <= f < 1 for f in fractions):
        raise ValueError("removal fractions must lie in [0, 1)")
    n = len(values)
    ranking = np.argsort(-values if order == "high" else values, kind="stable")
    masks = np.ones((len(fractions), n), dtype=bool)
    for row, fraction in enumerate(fractions):
        masks[row, ranking[: round(fraction * n)]] = False
    return masks


def removal_curve(
    utility: Utility,
    values: np.ndarray,
    order: Literal["high", "low"] = "high",
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
) -> RemovalCurve:
    """Utility of the models trained without the top (``high``) or bottom (``low``) valued
    points, for each fraction; ``utility`` decides how models are obtained (retrain for
    ground truth) and where they are scored (e.g. the test split)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (utility.n_train,):
        raise ValueError(f"values must have shape ({utility.n_train},), got {values.shape}")
    masks = removal_masks(values, fractions, order)
    return RemovalCurve(order, np.asarray(fractions), utility(masks))


def noisy_label_detection(values: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    """F1 of flagging the |flipped| lowest-valued points, and ROC AUC of −value."""
    values = np.asarray(values, dtype=np.float64)
    flipped = np.asarray(flipped, dtype=np.int64)
    if flipped.size == 0:
        raise ValueError("no flipped labels to detect (set dataset.flip_fraction)")
    if flipped.min() < 0 or flipped.max() >= len(values):
        raise ValueError(f"flipped indices must lie in [0, {len(values)})")
    truth = np.zeros(len(values), dtype=bool)
    truth[flipped] = True
    flagged = np.zeros(len(values), dtype=bool)
    flagged[np.argsort(values, kind="stable")[: len(flipped)]] = True
    return {
        "f1": float(f1_score(truth, flagged)),
        "auc": float(roc_auc_score(truth, -values)),
        "flipped": int(truth.sum()),
    }
