"""The one object every application asks: "the model trained on subset S", for a batch of S.

Two implementations answer it as every method does
(:class:`~mp_ray.methods.ParameterMethod`), ``predict(masks (B, n)) -> (B, d)``:

- :class:`PredictedModels`: a fitted ModelPred :class:`~mp_ray.predictor.Predictor`
  (its set function and any Newton steps, :mod:`mp_ray.predictor.refine`; microseconds
  to tens of microseconds per model);
- :class:`RetrainedModels`: the learner itself, ``fit_batch`` on blocks of subsets (the
  exact answer, the ground truth every application is checked against).

Both also answer for subsets plus points outside the ground set, ``predict_with_points``:
the predictor pools the new points through φ (no refit), retraining trains the learner on
the ground set followed by the new points.

Subsets on which the learner has no optimum (empty, or missing a class) get the learner's
documented fallback θ = 0 from both, so applications see the same convention either way.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import numpy as np
import torch

from mp_ray.learners import Learner, with_points
from mp_ray.methods import Masks, ParameterMethod, check_masks
from mp_ray.predictor import Predictor
from mp_ray.predictor.refine import NewtonRefined

AUTO_RETRAIN_SHARE = 0.2  # retrain_below auto: subsets below this share of n


class SubsetModels(ParameterMethod, Protocol):
    """Parameters of the models trained on a batch of subsets of one ground set, in the
    learner's dtype, and of those subsets plus new points."""

    learner: Learner

    def predict_with_points(
        self, masks: Masks, X_new: np.ndarray, y_new: np.ndarray, new_masks: Masks
    ) -> torch.Tensor:
        """Parameters ``(B, d)`` for ``masks (B, n)`` of the ground set plus ``new_masks
        (B, m)`` of the points ``X_new (m, p)``, ``y_new (m,)``."""
        ...


def _joined(masks: Masks, new_masks: Masks, n_train: int, m: int) -> torch.Tensor:
    """Masks ``(B, n)`` of the ground set and ``new_masks (B, m)`` of new points as one bool
    tensor ``(B, n + m)``; shapes checked."""
    masks, new_masks = check_masks(masks, n_train), check_masks(new_masks, m, "new_masks")
    if len(masks) != len(new_masks):
        raise ValueError(f"{len(masks)} masks but {len(new_masks)} new_masks")
    return torch.cat([masks, new_masks], dim=1)


class RetrainedModels:
    """Ground truth: retrain the learner on every subset, ``block`` subsets per batch."""

    def __init__(self, learner: Learner, block: int = 256) -> None:
        self.learner = learner
        self.block = block

    @property
    def n_train(self) -> int:
        return self.learner.n_train

    def predict(self, masks: Masks) -> torch.Tensor:
        """Retrained parameters ``(B, d)`` for ``masks (B, n)``."""
        masks = check_masks(masks, self.n_train)
        parts = [
            self.learner.fit_batch(masks[start : start + self.block])
            for start in range(0, len(masks), self.block)
        ]
        if not parts:
            return torch.zeros(0, self.learner.n_params, dtype=self.learner.dtype)
        return torch.cat(parts)

    def predict_with_points(
        self, masks: Masks, X_new: np.ndarray, y_new: np.ndarray, new_masks: Masks
    ) -> torch.Tensor:
        """Parameters ``(B, d)`` retrained on ``masks (B, n)`` of the ground set plus
        ``new_masks (B, m)`` of the points ``X_new (m, p)``, ``y_new (m,)``."""
        joined = _joined(masks, new_masks, self.n_train, len(y_new))
        return RetrainedModels(with_points(self.learner, X_new, y_new), self.block).predict(joined)


def retrain_below_for(setting: int | Literal["auto"], learner: Learner) -> int:
    """A ``retrain_below`` setting decided for ``learner``: auto is
    :data:`AUTO_RETRAIN_SHARE` of its points for a convex learner (which fits a few points
    at little cost), else 0."""
    if setting == "auto":
        return math.ceil(AUTO_RETRAIN_SHARE * learner.n_train) if learner.convex else 0
    return setting


class PredictedModels:
    """ModelPred's answer: one ``masks @ Φ`` and ρ per batch, and any Newton steps from
    there (:mod:`mp_ray.predictor.refine`); subsets of fewer than ``retrain_below`` points
    are retrained instead (the set function extrapolates on subsets smaller than any its
    store held; valuation asks for this, :meth:`retraining_below`)."""

    def __init__(
        self, predictor: Predictor | NewtonRefined, learner: Learner, retrain_below: int = 0
    ) -> None:
        if predictor.n_train != learner.n_train or predictor.meta.n_params != learner.n_params:
            raise ValueError(
                f"predictor (n={predictor.n_train}, d={predictor.meta.n_params}) does not "
                f"match the learner (n={learner.n_train}, d={learner.n_params})"
            )
        self.predictor = predictor
        self.learner = learner
        self.retrain_below = retrain_below

    @property
    def n_train(self) -> int:
        return self.learner.n_train

    def retraining_below(self, size: int) -> PredictedModels:
        """These models with subsets of fewer than ``size`` points retrained."""
        return PredictedModels(self.predictor, self.learner, size)

    def predict(self, masks: Masks) -> torch.Tensor:
        """Predicted parameters ``(B, d)`` for ``masks (B, n)``."""
        masks = check_masks(masks, self.n_train)
        small = masks.sum(dim=1) < self.retrain_below
        if small.any():  # the predictor answers only the others
            retrained = RetrainedModels(self.learner).predict(masks[small])
            params = retrained.new_empty(len(masks), retrained.shape[1])
            params[small] = retrained
            if not small.all():
                params[~small] = self.predictor.predict(masks[~small]).to(params)
        else:
            params = self.predictor.predict(masks).to(self.learner.dtype)
        params[self.learner.degenerate(masks)] = 0.0
        return params

    def predict_with_points(
        self, masks: Masks, X_new: np.ndarray, y_new: np.ndarray, new_masks: Masks
    ) -> torch.Tensor:
        """Predicted parameters ``(B, d)`` for ``masks (B, n)`` of the ground set plus
        ``new_masks (B, m)`` of the points ``X_new (m, p)``, ``y_new (m,)``, which the
        predictor has never seen: they pool through φ like ground-set points."""
        joined = _joined(masks, new_masks, self.n_train, len(y_new))
        params = self.predictor.predict_with_points(
            joined[:, : self.n_train], X_new, y_new, joined[:, self.n_train :]
        ).to(self.learner.dtype)
        params[with_points(self.learner, X_new, y_new).degenerate(joined)] = 0.0
        return params
