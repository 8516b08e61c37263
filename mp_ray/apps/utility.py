"""Utilities: what the model trained on S is worth, on an evaluation set, for a batch of S.

U(S) is a score of the model θ(S) on fixed evaluation data ``(X, y)`` (usually the
validation split):

- ``accuracy``: share of correct predictions (R² for regression);
- ``neg_loss``: minus the mean unregularised loss (cross-entropy, squared error).

U(∅) and the utility of any subset without an optimum are those of the learner's
fallback θ = 0 (the uniform predictor for logistic regression), whichever
:class:`~mp_ray.apps.models.SubsetModels` answers. :meth:`Utility.outputs` gives the
per-example model outputs (correct-class margins) that datamodel-style applications use.
:class:`SubsetUtility` is what the valuation estimators ask of a utility, which a learned
one (:class:`~mp_ray.apps.valuation.utility_learning.LearnedUtility`) answers as well.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import torch

from mp_ray.apps.models import SubsetModels
from mp_ray.learners import Learner
from mp_ray.methods import Masks

Metric = Literal["accuracy", "neg_loss"]
METRICS: tuple[Metric, ...] = ("accuracy", "neg_loss")


class SubsetUtility(Protocol):
    """U(S) for batches of subsets of one ground set of ``n_train`` points."""

    metric: Metric
    evaluations: int  # subsets scored so far

    @property
    def n_train(self) -> int: ...

    def __call__(self, masks: Masks) -> np.ndarray:
        """U(S) for each row of ``masks (B, n)``, float64 ``(B,)``."""
        ...


class Utility:
    """U(S) for batches of subsets; see the module docstring."""

    def __init__(
        self, models: SubsetModels, X: np.ndarray, y: np.ndarray, metric: Metric = "accuracy"
    ) -> None:
        check_metric(metric)
        if len(X) != len(y) or len(X) == 0:
            raise ValueError(
                f"evaluation data must be non-empty and aligned, got {len(X)} / {len(y)}"
            )
        self.models = models
        self.learner = models.learner
        self.X = self.learner.as_tensor(X)
        self.y = self.learner.labels(y)
        self.metric = metric
        self.evaluations = 0  # subsets scored so far (each one model trained or predicted)

    @property
    def n_train(self) -> int:
        return self.models.n_train

    def of_params(self, params: torch.Tensor) -> np.ndarray:
        """The utility of given parameters ``(B, d)``, float64 ``(B,)``."""
        if self.metric == "accuracy":
            values = self.learner.score(params, self.X, self.y)
        else:
            values = -self.learner.per_sample_loss(params, self.X, self.y).mean(dim=1)
        return values.double().cpu().numpy()

    def __call__(self, masks: Masks) -> np.ndarray:
        """U(S) for each row of ``masks (B, n)``, float64 ``(B,)``."""
        self.evaluations += len(masks)
        return self.of_params(self.models.predict(masks))

    def outputs(self, masks: Masks) -> np.ndarray:
        """Correct-class margins of each model on each evaluation example, ``(B, m)``."""
        self.evaluations += len(masks)
        params = self.models.predict(masks)
        return self.learner.margin(params, self.X, self.y).double().cpu().numpy()


def check_metric(metric: str) -> None:
    """Refuse a utility metric other than those of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"unknown utility metric {metric!r}; use 'accuracy' or 'neg_loss'")


def class_probabilities(
    learner: Learner,
    params: torch.Tensor,
    X: np.ndarray,
    temperature: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Predicted class probabilities of each model on each example, ``(K, m, c)``, from the
    logits divided by ``temperature`` (c = 2 for binary models, whose single logit z gives
    [1 − σ(z), σ(z)])."""
    if learner.n_classes < 2:
        raise ValueError("class probabilities need a classification learner")
    logits = learner.decision(params, X) / temperature
    if learner.n_classes == 2:
        positive = torch.sigmoid(logits[..., 0])
        return torch.stack([1 - positive, positive], dim=-1)
    return torch.softmax(logits, dim=-1)
