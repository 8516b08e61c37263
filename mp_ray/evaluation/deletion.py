"""Deletion (and addition) curves: how far each method's model lies from retraining as the
training set changes by more and more points.

The ModelPred paper's batch-deletion experiment: from the full ground set D remove a random
share r of the points, for each r of a grid and several repetitions; every method answers
the model trained on what is left (each is a :class:`~mp_ray.methods.ParameterMethod`, as
retraining, ModelPred, influence functions and θ(D) are), and its error ‖θ̂ − θ‖ against
the retrained θ is summarised per r as mean ± std over the repetitions. Retraining's own
row gives the size of the change it measured, ‖θ − θ_ref‖ (θ_ref = θ(D) for deletions):
the error of a method that ignores the change. :func:`error_curve` summarises any such
comparison by level, so the addition experiment (levels = points added, reference = the
base model) uses it too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mp_ray.methods import ParameterMethod
from mp_ray.sampling import row_rng

DELETION_STREAM = 0xDE1E  # the draws of removed points
RETRAINING = "retraining"


def removal_subsets(
    n: int, fractions: Sequence[float], repetitions: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each share r of ``fractions`` (in [0, 1]) and each repetition, D with round(r·n)
    random points removed: masks ``(F·R, n)`` bool and each row's r ``(F·R,)``. Row k's draw
    comes from (``seed``, k) alone."""
    if repetitions < 1 or any(not 0 <= r <= 1 for r in fractions):
        raise ValueError("removal shares must lie in [0, 1] and repetitions be at least 1")
    levels = np.repeat(np.asarray(fractions, dtype=np.float64), repetitions)
    masks = np.ones((len(levels), n), dtype=bool)
    for row, share in enumerate(levels):
        removed = row_rng(seed, DELETION_STREAM, row).permutation(n)[: round(share * n)]
        masks[row, removed] = False
    return masks, levels


def error_curve(
    levels: np.ndarray,
    predicted: Mapping[str, torch.Tensor],
    actual: torch.Tensor,
    reference: torch.Tensor,
) -> list[dict[str, Any]]:
    """One row per (level, method) and one for retraining, in level order: mean and std
    over the rows of ``levels (B,)`` at that level of the error ‖θ̂ − θ‖ and of the relative
    error ‖θ̂ − θ‖/‖θ‖ of each method's ``predicted (B, d)`` against ``actual (B, d)``;
    retraining's row gives the change ‖θ − θ_ref‖ from ``reference`` (``(B, d)`` or
    ``(1, d)``) in the same columns."""
    actual = actual.double()
    scale = actual.norm(dim=1).clamp(min=1e-12)
    errors = {
        name: (params.to(actual.device).double() - actual).norm(dim=1)
        for name, params in predicted.items()
    }
    errors[RETRAINING] = (actual - reference.to(actual.device).double()).norm(dim=1)
    rows = []
    for level in np.unique(levels):
        keep = torch.as_tensor(levels == level)
        for name, error in errors.items():
            picked, relative = error[keep].cpu().numpy(), (error / scale)[keep].cpu().numpy()
            rows.append(
                {
                    "method": name,
                    "level": float(level),
                    "repetitions": int(keep.sum()),
                    "error_mean": float(picked.mean()),
                    "error_std": float(picked.std()),
                    "rel_error_mean": float(relative.mean()),
                    "rel_error_std": float(relative.std()),
                }
            )
    return rows


def deletion_curve(
    methods: Mapping[str, ParameterMethod],
    retrain: ParameterMethod,
    n: int,
    fractions: Sequence[float],
    repetitions: int = 10,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """:func:`error_curve` of ``methods`` (name → parameter method) against ``retrain`` on
    :func:`removal_subsets`, with θ(D) (retrained) as the reference; each row also carries
    the method's seconds per model, timed over all its subsets."""
    masks, levels = removal_subsets(n, fractions, repetitions, seed)
    seconds, predicted = {}, {}
    for name, method in {**methods, RETRAINING: retrain}.items():
        start = time.perf_counter()
        predicted[name] = method.predict(masks)
        seconds[name] = (time.perf_counter() - start) / len(masks)
    actual = predicted.pop(RETRAINING)
    reference = retrain.predict(np.ones((1, n), dtype=bool))
    rows = error_curve(levels, predicted, actual, reference)
    return [{**row, "seconds_per_model": seconds[row["method"]]} for row in rows]
