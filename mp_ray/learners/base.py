"""The learner interface: the algorithm A whose trained parameters mp-ray predicts.

A learner is built once per process over the training split ``X (n, p)``, ``y (n,)`` and a
torch device, then trains **batches** of subsets: ``fit_batch(masks (K, n) bool)`` returns
``params (K, d)``, one flattened parameter vector per subset, trained as one vectorised
computation (masks enter as sample weights). Everything later stages need is expressed on
batches of flattened parameter vectors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from mp_ray.config import LearnerConfig

ArrayLike = np.ndarray | torch.Tensor


class Learner(ABC):
    """A deterministic training algorithm over a fixed ground set.

    Shapes: K models, n training points, m evaluation points, p features, d parameters,
    c output columns (1 for binary classification and regression, else the class count).
    """

    name: str

    def __init__(
        self,
        config: LearnerConfig,
        X: ArrayLike,
        y: ArrayLike,
        n_classes: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        self.n_classes = n_classes
        self.X = self.as_tensor(X)
        self.y = torch.as_tensor(np.asarray(y) if isinstance(y, np.ndarray) else y).to(
            self.device
        )

    def as_tensor(self, array: ArrayLike) -> torch.Tensor:
        """Convert an array to this learner's device and floating dtype."""
        return torch.as_tensor(array).to(device=self.device, dtype=self.dtype)

    @property
    def n_train(self) -> int:
        return int(self.X.shape[0])

    @property
    @abstractmethod
    def n_params(self) -> int:
        """d, the length of the flattened parameter vector."""

    @abstractmethod
    def fit_batch(self, masks: ArrayLike, seeds: ArrayLike | None = None) -> torch.Tensor:
        """Train K models, one per row of ``masks (K, n) bool``; returns ``params (K, d)``.

        ``seeds (K,) int64`` drive any randomness of the algorithm (ignored by convex
        learners). The result for a row depends only on (data, mask, seed).
        """

    @abstractmethod
    def decision(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        """Raw outputs (logits or regression values) ``(K, m, c)`` for ``params (K, d)``."""

    @abstractmethod
    def predict(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        """Predicted class ids (int64) or regression values, shape ``(K, m)``."""

    @abstractmethod
    def margin(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """The per-example output datamodels predict, ``(K, m)``: the correct-class margin."""

    @abstractmethod
    def per_sample_loss(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """Unregularised loss of each example under each model, ``(K, m)``."""

    @abstractmethod
    def objective(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """The exact regularised training objective on each subset, ``(K,)``."""

    @abstractmethod
    def objective_grad(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """Gradient of :meth:`objective` (the first-order optimality residual), ``(K, d)``."""

    @abstractmethod
    def hvp(self, params: torch.Tensor, masks: ArrayLike, v: torch.Tensor) -> torch.Tensor:
        """Hessian of :meth:`objective` times ``v (K, d)``, ``(K, d)``."""

    @abstractmethod
    def per_sample_grads(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """Gradient of each example's loss under one model ``params (d,)``, ``(m, d)``."""

    @abstractmethod
    def score(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """Accuracy (classification) or R² (regression) of each model, ``(K,)``."""

    @abstractmethod
    def degenerate(self, masks: ArrayLike) -> torch.Tensor:
        """Which subsets have no well-defined optimum and get the documented fallback, (K,)."""
