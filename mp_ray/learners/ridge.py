"""Ridge regression, K subsets at once, in closed form.

Objective on a subset S (scikit-learn's ``Ridge(alpha)``; intercepts unpenalised)::

    J_S(θ) = Σ_{i∈S} ‖t_i − W x_i − b‖² + alpha·‖W‖²_F

with targets t_i = y_i for regression (c = 1) and, for classification, scikit-learn's
``RidgeClassifier`` encoding over all classes of the training set: a single ±1 column for
two classes, one-hot ±1 columns for more. Parameters use the linear layout of
:mod:`mp_ray.learners.linear`, d = c·(p + 1).

Solution per subset, with mask weights m: centre X and t by their m-weighted means over S,
solve ``(X_cᵀ diag(m) X_c + alpha·I) W = X_cᵀ diag(m) t_c`` by batched Cholesky (all K
Gram matrices are one GEMM over the precomputed upper triangles of x xᵀ) and set
b = t̄ − W x̄. The per-sample loss is the squared error ‖t_i − W x_i − b‖².

Degenerate subsets: the empty subset (no data fixes the intercept) gets θ = 0.
"""

from __future__ import annotations

import torch

from mp_ray.config import RidgeLearnerConfig
from mp_ray.learners.base import ArrayLike
from mp_ray.learners.linear import LinearLearner, symmetric, upper_outer


class Ridge(LinearLearner):
    """Ridge regression / classification; see the module docstring for the objective."""

    name = "ridge"

    def __init__(
        self,
        config: RidgeLearnerConfig,
        X: ArrayLike,
        y: ArrayLike,
        n_classes: int,
        device: torch.device | str = "cpu",
        memory_budget: int | None = None,
    ) -> None:
        super().__init__(config, X, y, n_classes, device, memory_budget)
        self.alpha = config.alpha
        self.X_aug = self.augmented(self.X)
        self.targets = self.encode(self.y)
        # Centring by the training mean first keeps the subset Gram matrices accurate.
        self._centre = self.X.mean(dim=0)
        self._X_centred = self.X - self._centre
        self._outer = upper_outer(self._X_centred)

    def encode(self, y: ArrayLike) -> torch.Tensor:
        """Regression targets ``(m, c)``: y itself, or ±1 class indicators."""
        y = self.labels(y)
        if self.n_classes == 1:
            return y[:, None]
        if self.n_classes == 2:
            return (2.0 * y - 1.0).to(self.dtype)[:, None]
        return 2.0 * torch.nn.functional.one_hot(y, self.n_classes).to(self.dtype) - 1.0

    def degenerate(self, masks: ArrayLike) -> torch.Tensor:
        """Only the empty subset: ridge has a unique optimum on any non-empty one."""
        return self.masks_tensor(masks).sum(dim=1) == 0

    def per_sample_loss(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        return ((self.decision(params, X) - self.encode(y)) ** 2).sum(dim=-1)

    def objective(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        weights = self.masks_tensor(masks)
        return self.alpha * self.weight_norm_sq(params) + self.weighted_loss(params, weights)

    def objective_grad(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """``2·alpha·1_W∘θ + 2·Σ_i m_i (out_i − t_i) ⊗ x̃_i`` in closed form, (K, d); the
        rows in chunks (:meth:`~mp_ray.learners.base.Learner.budget_chunks`) of three
        ``(m, c, K)`` arrays."""
        params = params.to(self.dtype)
        weights = self.masks_tensor(masks).T[:, None]  # (n, 1, K)
        data = sum(
            self.pullback(
                (self.outputs(params, self.X_aug[rows]) - self.targets[rows, :, None])
                * weights[rows],
                self.X_aug[rows],
            )
            for rows in self.budget_chunks(params.shape[0], 3 * self.n_outputs)
        )
        return 2 * (self.alpha * params * self.penalised() + data)

    def hvp(self, params: torch.Tensor, masks: ArrayLike, v: torch.Tensor) -> torch.Tensor:
        """``2·alpha·1_W∘v + 2·Σ_i m_i (x̃_i·v) ⊗ x̃_i`` (the Hessian is constant), (K, d)."""
        v = v.to(self.dtype)
        weights = self.masks_tensor(masks).T[:, None]
        curved = self.outputs(v, self.X_aug) * weights
        return 2 * (self.alpha * v * self.penalised() + self.pullback(curved, self.X_aug))

    def _fit(self, weights: torch.Tensor, seeds: ArrayLike | None) -> torch.Tensor:
        n_models, p = weights.shape[0], self.n_features
        counts = weights.sum(dim=1, keepdim=True)
        safe = counts.clamp(min=1.0)
        x_mean = weights @ self._X_centred / safe  # (K, p), relative to the training mean
        t_mean = weights @ self.targets / safe  # (K, c)
        # Σ m_i (x_i − x̄)(x_i − x̄)ᵀ = Σ m_i x_i x_iᵀ − |S| x̄ x̄ᵀ
        gram = symmetric(weights @ self._outer, p)
        gram = gram - counts[..., None] * x_mean[:, :, None] * x_mean[:, None, :]
        gram = gram + self.alpha * torch.eye(p, dtype=self.dtype, device=self.device)
        # Σ m_i (x_i − x̄)(t_i − t̄)ᵀ = Σ m_i x_i t_iᵀ − |S| x̄ t̄ᵀ
        cross = torch.einsum("kn,np,nc->kpc", weights, self._X_centred, self.targets)
        cross = cross - counts[..., None] * x_mean[:, :, None] * t_mean[:, None, :]
        coef = torch.cholesky_solve(cross, torch.linalg.cholesky(gram))  # (K, p, c)
        intercept = t_mean - torch.einsum("kp,kpc->kc", x_mean + self._centre, coef)
        params = torch.cat([coef.transpose(1, 2), intercept[..., None]], dim=2)
        params = params.reshape(n_models, self.n_params)
        return torch.where(counts > 0, params, torch.zeros_like(params))
