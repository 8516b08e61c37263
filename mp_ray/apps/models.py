"""The one object every application asks: "the model trained on subset S", for a batch of S.

Two implementations answer it with the same interface, ``params(masks (B, n)) -> (B, d)``:

- :class:`PredictedModels`: a fitted ModelPred :class:`~mp_ray.predictor.Predictor`
  (microseconds per model);
- :class:`RetrainedModels`: the learner itself, ``fit_batch`` on blocks of subsets (the
  exact answer, the ground truth every application is checked against).

Subsets on which the learner has no optimum (empty, or missing a class) get the learner's
documented fallback θ = 0 from both, so applications see the same convention either way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from mp_ray.learners import Learner
from mp_ray.predictor import Predictor

Masks = np.ndarray | torch.Tensor  # (B, n) bool or {0, 1}


class SubsetModels(Protocol):
    """Parameters of the models trained on a batch of subsets of one ground set."""

    learner: Learner

    @property
    def n_train(self) -> int: ...

    def params(self, masks: Masks) -> torch.Tensor:
        """``masks (B, n)`` → parameters ``(B, d)`` in the learner's dtype."""
        ...


def _checked(masks: Masks, n_train: int) -> torch.Tensor:
    """Masks as a bool tensor ``(B, n)``, with a clear error for any other shape."""
    masks = torch.as_tensor(np.asarray(masks) if not torch.is_tensor(masks) else masks)
    if masks.ndim != 2 or masks.shape[1] != n_train:
        raise ValueError(f"masks must have shape (B, {n_train}), got {tuple(masks.shape)}")
    return masks.bool()


class RetrainedModels:
    """Ground truth: retrain the learner on every subset, ``block`` subsets per batch."""

    def __init__(self, learner: Learner, block: int = 256) -> None:
        self.learner = learner
        self.block = block

    @property
    def n_train(self) -> int:
        return self.learner.n_train

    def params(self, masks: Masks) -> torch.Tensor:
        masks = _checked(masks, self.n_train)
        parts = [
            self.learner.fit_batch(masks[start : start + self.block])
            for start in range(0, len(masks), self.block)
        ]
        if not parts:
            return torch.zeros(0, self.learner.n_params, dtype=self.learner.dtype)
        return torch.cat(parts)


class PredictedModels:
    """ModelPred's answer: one ``masks @ Φ`` and ρ per batch."""

    def __init__(self, predictor: Predictor, learner: Learner) -> None:
        if predictor.n_train != learner.n_train or predictor.meta.n_params != learner.n_params:
            raise ValueError(
                f"predictor (n={predictor.n_train}, d={predictor.meta.n_params}) does not "
                f"match the learner (n={learner.n_train}, d={learner.n_params})"
            )
        self.predictor = predictor
        self.learner = learner

    @property
    def n_train(self) -> int:
        return self.learner.n_train

    def params(self, masks: Masks) -> torch.Tensor:
        masks = _checked(masks, self.n_train)
        params = self.predictor.predict(masks).to(self.learner.dtype)
        params[self.learner.degenerate(masks)] = 0.0
        return params
