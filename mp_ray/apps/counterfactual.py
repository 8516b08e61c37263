"""Counterfactual removal: how would a target example's prediction change if given training
points had been left out?

For target examples (x_t, y_t) and removal sets R_1..R_B, the change of each output under
θ(D ∖ R_b) against θ(D), all models from one batched call:

- ``margin``: correct-class margin (what datamodels predict);
- ``probability``: probability of the target's label;
- ``loss``: the learner's per-example loss;
- ``prediction``: the predicted class (before → after), and whether it flipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.apps.models import SubsetModels
from mp_ray.apps.utility import class_probabilities


@dataclass
class Counterfactual:
    """Per removal set b and target t: outputs before (``(T,)``, θ(D)) and after
    (``(B, T)``, θ(D ∖ R_b)), for each output kind."""

    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]

    def change(self, kind: str) -> np.ndarray:
        """after − before for ``kind`` (margin, probability or loss), ``(B, T)``."""
        return self.after[kind] - self.before[kind][None, :]

    @property
    def flipped(self) -> np.ndarray:
        """Whether the predicted class changed, bool ``(B, T)``."""
        return self.after["prediction"] != self.before["prediction"][None, :]


def masks_without(n: int, removals: list[list[int]] | list[np.ndarray]) -> np.ndarray:
    """Masks ``(B, n)`` keeping everything but each removal set; indices are checked."""
    masks = np.ones((len(removals), n), dtype=bool)
    for row, removed in enumerate(removals):
        removed = np.asarray(removed, dtype=np.int64)
        if removed.size and (removed.min() < 0 or removed.max() >= n):
            raise ValueError(f"removal set {row} has indices outside [0, {n})")
        if len(np.unique(removed)) != removed.size:
            raise ValueError(f"removal set {row} repeats an index")
        masks[row, removed] = False
    return masks


def _outputs(
    models: SubsetModels, params: torch.Tensor, X: np.ndarray, y: np.ndarray
) -> dict[str, np.ndarray]:
    learner = models.learner
    out = {
        "margin": learner.margin(params, X, y),
        "loss": learner.per_sample_loss(params, X, y),
        "prediction": learner.predict(params, X),
    }
    if learner.n_classes > 1:
        labels = learner.labels(y)
        probs = class_probabilities(learner, params, X)
        out["probability"] = probs.gather(-1, labels.expand(len(params), -1)[..., None])[..., 0]
    return {kind: value.detach().cpu().numpy() for kind, value in out.items()}


def counterfactual_removal(
    models: SubsetModels,
    X_target: np.ndarray,
    y_target: np.ndarray,
    removals: list[list[int]] | list[np.ndarray],
) -> Counterfactual:
    """Outputs of the targets ``X_target (T, p)``, ``y_target (T,)`` under θ(D) and under
    θ(D ∖ R) for every removal set R (lists of training indices)."""
    X_target, y_target = np.atleast_2d(X_target), np.atleast_1d(y_target)
    if len(X_target) != len(y_target):
        raise ValueError(f"{len(X_target)} target rows but {len(y_target)} labels")
    n = models.n_train
    masks = np.concatenate([np.ones((1, n), dtype=bool), masks_without(n, removals)])
    outputs = _outputs(models, models.predict(masks), X_target, y_target)
    before = {kind: value[0] for kind, value in outputs.items()}
    after = {kind: value[1:] for kind, value in outputs.items()}
    return Counterfactual(before, after)
