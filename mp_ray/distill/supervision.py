"""Ground truth by retraining: the learner trained without groups of training points.

The same batched ``fit_batch`` the retraining actors run, here on the driver (a few dozen
to a few hundred models: one or a few batches). Supervision of the distillation comes from
single-group removals; validation from unions of groups that it never sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.apps.models import RetrainedModels
from mp_ray.distill.groups import removal_masks, single_removals
from mp_ray.learners import Learner

BATCH = 256  # models per fit_batch call


def retrain_without(learner: Learner, groups: np.ndarray, removed: np.ndarray) -> torch.Tensor:
    """θ retrained without each removal of groups ``removed (R, G)`` bool, ``(R, d)``.

    A removal that leaves some class without points has no optimum: that is an error.
    """
    masks = torch.as_tensor(removal_masks(groups, removed), device=learner.device)
    degenerate = learner.degenerate(masks)
    if bool(degenerate.any()):
        row = int(torch.nonzero(degenerate)[0, 0])
        raise ValueError(
            f"removing groups {np.flatnonzero(removed[row]).tolist()} leaves a class without "
            "training points (no optimum to learn from): use more groups per class"
        )
    return RetrainedModels(learner, BATCH).predict(masks)


@dataclass
class GroundTruth:
    """Retrained models: without each single group, ``single (G, d)`` (the supervision), and
    without each held-out union ``unions (R, G)`` bool, ``union_params (R, d)`` (validation)."""

    single: torch.Tensor
    unions: np.ndarray
    union_params: torch.Tensor


def retrain_ground_truth(learner: Learner, groups: np.ndarray, unions: np.ndarray) -> GroundTruth:
    """Retrain without every single group and without every union in ``unions (R, G)``."""
    single = retrain_without(learner, groups, single_removals(int(groups.max()) + 1))
    return GroundTruth(single, unions, retrain_without(learner, groups, unions))
