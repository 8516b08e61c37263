"""Scores of predicted against retrained models for a set of removals (or subsets).

For R removals with retrained parameters θ_r ``(R, d)`` and output changes
Δ_r = E(θ_r; x_j) − E(θ*; x_j) ``(R, T)`` on T targets, a method predicting θ̂_r and Δ̂_r gets:

- ``pearson`` / ``spearman``: per target, the correlation across removals between Δ̂ and Δ,
  averaged over the targets where it is defined (the leave-group-out correlation);
  ``targets_defined`` of ``targets`` counts them. It is undefined for a target whose
  predicted or retrained change is the same for every removal, and so NaN (printed "–",
  null in JSON) for a method that predicts no change (the no-change baseline: always 0);
- ``rel_error``: mean ‖θ̂_r − θ_r‖ / ‖θ_r‖ (the project's parameter error);
- ``change_error``: (Σ_r ‖θ̂_r − θ_r‖² / Σ_r ‖θ_r − θ*‖²)^½, the error relative to the size of
  the retrained changes (1 for no change, 0 for exact; pooled over removals, so removals
  that barely change the model do not divide by ~0).
"""

from __future__ import annotations

import numpy as np
import torch

from mp_ray.scores import Score, relative_errors, removal_correlation, varies

METRICS = ("pearson", "spearman", "rel_error", "change_error")


def change_correlation(predicted: np.ndarray, actual: np.ndarray, rank: bool = False) -> Score:
    """Per target, the correlation (Spearman's if ``rank``, else Pearson's) across removals
    of predicted and actual changes, both ``(R, T)``, and its mean over the targets where it
    is defined (NaN where it is nowhere); see the module docstring."""
    actual = np.asarray(actual, np.float64)
    if len(actual) >= 3 and not varies(actual).any():
        raise ValueError("the retrained changes are constant for every target")
    return removal_correlation(predicted, actual, rank)


def parameter_errors(
    predicted: torch.Tensor, actual: torch.Tensor, theta: torch.Tensor
) -> tuple[float, float]:
    """(rel_error, change_error) of ``predicted (R, d)`` against ``actual (R, d)`` retrained
    from ``theta (d,)`` = θ*; see the module docstring."""
    rel = relative_errors(predicted.cpu().numpy(), actual.cpu().numpy())
    tiny = torch.finfo(actual.dtype).tiny
    change = ((predicted - actual) ** 2).sum() / ((actual - theta) ** 2).sum().clamp(min=tiny)
    return float(rel.mean()), float(change.sqrt())


def score(
    predicted: torch.Tensor,
    predicted_changes: np.ndarray,
    actual: torch.Tensor,
    actual_changes: np.ndarray,
    theta: torch.Tensor,
) -> dict[str, float]:
    """Every metric of the module docstring for one method, as ``{name: value}``, and over
    how many of the targets the correlations are taken (the same for both: Spearman's ρ is
    defined where Pearson's r is)."""
    rel_error, change_error = parameter_errors(predicted, actual, theta)
    pearson = change_correlation(predicted_changes, actual_changes)
    return {
        "pearson": pearson.mean,
        "spearman": change_correlation(predicted_changes, actual_changes, rank=True).mean,
        "rel_error": rel_error,
        "change_error": change_error,
        "targets_defined": pearson.defined,
        "targets": len(pearson.per_target),
    }
