"""The one protocol of every way mp-ray answers "the model trained on subset S".

A batch of B subsets of the n training points is a mask ``(B, n)``, one row per subset,
bool or {0, 1}. Every method answers for a whole batch at once:

- a :class:`ParameterMethod` gives the parameters ``(B, d)`` of the B models: retraining
  (:class:`~mp_ray.apps.models.RetrainedModels`), ModelPred
  (:class:`~mp_ray.predictor.Predictor`, :class:`~mp_ray.predictor.refine.NewtonRefined`,
  :class:`~mp_ray.apps.models.PredictedModels`), θ(D) and influence functions
  (:mod:`mp_ray.baselines`), the store baselines (:mod:`mp_ray.store_baselines`) and the
  distilled datamodel (:class:`~mp_ray.distill.model.DistilledDatamodel`);
- an :class:`OutputMethod` gives the models' outputs ``(B, T)`` on T target examples:
  datamodels (:class:`~mp_ray.datamodels.fit.Datamodels`), and any parameter method
  evaluated by its learner (:class:`~mp_ray.method_outputs.ParameterOutputs`).

Each checks its masks with :func:`check_masks`, so a mask of the wrong width gets the same
error from every method.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

Masks = np.ndarray | torch.Tensor  # (B, n) bool or {0, 1}


def mask_tensor(masks: Masks, n_train: int, what: str = "masks") -> torch.Tensor:
    """``masks`` as a tensor ``(B, n_train)`` of their own dtype (sample weights stay
    fractional), on their own device; ValueError naming the expected and the given shape
    for any other shape. A read-only array (one from Ray's object store) is copied."""
    if not torch.is_tensor(masks):
        masks = np.asarray(masks)
        masks = torch.as_tensor(masks if masks.flags.writeable else masks.copy())
    if masks.ndim != 2 or masks.shape[1] != n_train:
        raise ValueError(f"{what} must have shape (B, {n_train}), got {tuple(masks.shape)}")
    return masks


def check_masks(masks: Masks, n_train: int, what: str = "masks") -> torch.Tensor:
    """``masks`` as a bool tensor ``(B, n_train)``, checked by :func:`mask_tensor`."""
    return mask_tensor(masks, n_train, what).bool()


@runtime_checkable
class ParameterMethod(Protocol):
    """Parameters of the models trained on a batch of subsets of ``n_train`` points."""

    @property
    def n_train(self) -> int:
        """n, the number of points of the ground set the masks select from."""
        ...

    def predict(self, masks: Masks) -> torch.Tensor:
        """``masks (B, n)`` → parameters ``(B, d)``."""
        ...


@runtime_checkable
class OutputMethod(Protocol):
    """Outputs on T target examples of the models trained on a batch of subsets."""

    def outputs(self, masks: Masks) -> np.ndarray:
        """``masks (B, n)`` → outputs ``(B, T)`` float64."""
        ...
