"""What linear learners share: the parameter layout and the batched decision function.

A linear model has c output columns (c = 1 for binary classification and regression, else
one per class). Its flattened parameters ``(d,)`` with d = c·(p + 1) view as ``(c, p + 1)``:
row j holds output j's weights followed by its intercept. With x̃ = [x, 1], output j of
example x is ``x̃ · θ[j]``; for K models and m examples this is one GEMM.
"""

from __future__ import annotations

import torch

from mp_ray.learners.base import ArrayLike, Learner


class LinearLearner(Learner):
    """A learner whose model is linear in the features; see the module docstring."""

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_params(self) -> int:
        return self.n_outputs * (self.n_features + 1)

    def coefficients(self, params: torch.Tensor) -> torch.Tensor:
        """``params (K, d)`` viewed as ``(K, c, p + 1)``."""
        return params.reshape(params.shape[0], self.n_outputs, self.n_features + 1)

    def intercept_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.n_outputs, self.n_features + 1, dtype=torch.bool)
        mask[:, -1] = True
        return mask.reshape(-1).to(self.device)

    def augmented(self, X: ArrayLike) -> torch.Tensor:
        """``[X, 1]``, (m, p + 1)."""
        X = self.as_tensor(X)
        return torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)], dim=1)

    def decision(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        return self.decision_augmented(params, self.augmented(X))

    def decision_augmented(self, params: torch.Tensor, X_aug: torch.Tensor) -> torch.Tensor:
        """Outputs ``(K, m, c)`` for already augmented inputs ``X_aug (m, p + 1)``."""
        return torch.einsum("mp,kcp->kmc", X_aug, self.coefficients(params.to(self.dtype)))

    def weight_norm_sq(self, params: torch.Tensor) -> torch.Tensor:
        """‖W‖² over the weights (intercepts excluded), (K,)."""
        return (self.coefficients(params)[..., :-1] ** 2).sum(dim=(1, 2))
