"""Batched learners: the algorithms whose trained parameters mp-ray predicts."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mp_ray.config import LearnerConfig
from mp_ray.learners.base import ArrayLike, Learner, LearnerCapabilityError
from mp_ray.learners.logistic import LogisticRegression
from mp_ray.learners.mlp import MLP
from mp_ray.learners.plugin import custom_learner
from mp_ray.learners.ridge import Ridge
from mp_ray.learners.sklearn_learner import sklearn_learner
from mp_ray.learners.svm import SVM
from mp_ray.learners.torch_module import TorchModuleLearner

# Each kind's learner: its class, or a function that builds it (same arguments).
LEARNERS: dict[str, Callable[..., Learner]] = {
    "logistic": LogisticRegression,
    "svm": SVM,
    "ridge": Ridge,
    "mlp": MLP,
    "torch": TorchModuleLearner,
    "custom": custom_learner,
    "sklearn": sklearn_learner,
}


def make_learner(
    config: LearnerConfig,
    X: ArrayLike,
    y: ArrayLike,
    n_classes: int,
    device: torch.device | str = "cpu",
    memory_budget: int | None = None,
) -> Learner:
    """The learner ``config.kind`` over the training set ``X (n, p)``, ``y (n,)``; its
    passes over the training set hold at most ``memory_budget`` bytes of intermediates
    (None: derived from the device, see :mod:`mp_ray.learners.memory`)."""
    return LEARNERS[config.kind](config, X, y, n_classes, device, memory_budget)


def with_points(learner: Learner, X_new: ArrayLike, y_new: ArrayLike) -> Learner:
    """The same learner over its training set followed by new points ``X_new (m, p)``,
    ``y_new (m,)``: its masks are ``(K, n + m)``, the first n columns the original set."""
    X = torch.cat([learner.X, learner.as_tensor(X_new)])
    y = torch.cat([learner.y, learner.labels(y_new)])
    return make_learner(
        learner.config, X, y, learner.n_classes, learner.device, learner.memory_budget
    )


__all__ = [
    "LEARNERS",
    "MLP",
    "SVM",
    "Learner",
    "LearnerCapabilityError",
    "LogisticRegression",
    "Ridge",
    "TorchModuleLearner",
    "make_learner",
    "with_points",
]
