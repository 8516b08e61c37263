"""Scores of predicted against retrained models for a set of removals (or subsets).

For R removals with retrained parameters θ_r ``(R, d)`` and output changes
Δ_r = E(θ_r; x_j) − E(θ*; x_j) ``(R, T)`` on T targets, a method predicting θ̂_r and Δ̂_r gets:

- ``pearson`` / ``spearman``: per target, the correlation across removals between Δ̂ and Δ,
  averaged over targets (the leave-group-out correlation). A method whose predicted change
  of a target is the same for every removal (the no-change baseline: always 0) scores 0
  there; targets whose retrained change is constant are left out.
- ``rel_error``: mean ‖θ̂_r − θ_r‖ / ‖θ_r‖ (the project's parameter error);
- ``change_error``: (Σ_r ‖θ̂_r − θ_r‖² / Σ_r ‖θ_r − θ*‖²)^½, the error relative to the size of
  the retrained changes (1 for no change, 0 for exact; pooled over removals, so removals
  that barely change the model do not divide by ~0).
"""

from __future__ import annotations

import numpy as np
import torch

from mp_ray.evaluation.scores import columnwise_correlation

METRICS = ("pearson", "spearman", "rel_error", "change_error")


def change_correlation(predicted: np.ndarray, actual: np.ndarray, rank: bool = False) -> float:
    """Mean over targets of the correlation (Spearman's if ``rank``, else Pearson's) across
    removals of predicted and actual changes, both ``(R, T)``; see the module docstring."""
    predicted, actual = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    if len(predicted) < 3:
        raise ValueError(f"a change correlation needs at least 3 removals, got {len(predicted)}")
    defined = actual.std(axis=0) > 0
    if not defined.any():
        raise ValueError("the retrained changes are constant for every target")
    r = columnwise_correlation(predicted, actual, rank)
    # A prediction constant across removals (no change) carries no information: 0.
    return float(np.nan_to_num(r[defined], nan=0.0).mean())


def parameter_errors(
    predicted: torch.Tensor, actual: torch.Tensor, theta: torch.Tensor
) -> tuple[float, float]:
    """(rel_error, change_error) of ``predicted (R, d)`` against ``actual (R, d)`` retrained
    from ``theta (d,)`` = θ*; see the module docstring."""
    error = torch.linalg.vector_norm(predicted - actual, dim=1)
    tiny = torch.finfo(error.dtype).tiny
    rel = error / torch.linalg.vector_norm(actual, dim=1).clamp(min=tiny)
    change = (error**2).sum() / ((actual - theta) ** 2).sum().clamp(min=tiny)
    return float(rel.mean()), float(change.sqrt())


def score(
    predicted: torch.Tensor,
    predicted_changes: np.ndarray,
    actual: torch.Tensor,
    actual_changes: np.ndarray,
    theta: torch.Tensor,
) -> dict[str, float]:
    """Every metric of the module docstring for one method, as ``{name: value}``."""
    rel_error, change_error = parameter_errors(predicted, actual, theta)
    return {
        "pearson": change_correlation(predicted_changes, actual_changes),
        "spearman": change_correlation(predicted_changes, actual_changes, rank=True),
        "rel_error": rel_error,
        "change_error": change_error,
    }
