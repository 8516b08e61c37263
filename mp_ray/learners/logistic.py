"""L2-regularised logistic regression, binary and multinomial, K subsets at once.

Objective on a subset S (scikit-learn's ``LogisticRegression(C=C)``; intercepts unpenalised)::

    J_S(θ) = ½‖W‖²_F + C · Σ_{i∈S} ℓ_i(θ)

- binary (2 classes, d = p + 1, θ = [w, b]): ℓ_i = log(1 + e^{z_i}) − y_i·z_i, z_i = x_i·w + b;
- multinomial (c ≥ 3 classes, d = c·(p + 1), θ viewed as (c, p + 1), rows [w_j, b_j]):
  ℓ_i = log Σ_j e^{z_ij} − z_{i,y_i}, z_ij = x_i·w_j + b_j. The softmax is over-parametrised in
  the intercepts; starting from b = 0, the solution keeps Σ_j b_j = 0 (the gradient in b sums
  to zero over classes), as scikit-learn's does.

Solvers (all K subsets in one vectorised computation; masks are sample weights). Each
subset starts from an *anchor*: the optimum of the full training set with every sample
weight equal to f, the grid fraction (``ANCHOR_FRACTIONS``) nearest to |S|/n — the
expectation of the subset's objective — solved once per grid point and cached.

- binary: damped Newton with the exact Hessians ``R + C·X̃ᵀ diag(m∘σ(1−σ)) X̃``, formed for
  all K models as one GEMM ``(K, n) @ (n, d²)`` over precomputed outer products x̃x̃ᵀ and
  solved by batched Cholesky;
- multinomial: L-BFGS whose initial inverse Hessian is ``(I + C·|S|/n · H_f)⁻¹``, with H_f
  the full training set's data Hessian at the anchor (one eigendecomposition per grid point,
  so applying it costs two (d × d) GEMMs per iteration), scaled by the latest curvature pair.

Everything a row's solve uses comes from its own mask, so its result does not depend on
the other rows of the batch.
Both stop when ‖∇J_S‖ ≤ tol · max(1, ‖∇J_S(θ₀)‖) (``LearnerConfig.tol``).

Degenerate subsets — empty, or missing a class — have no finite optimum (the intercept of
an absent class diverges). Their result is defined as θ = 0 (the uniform predictor), and
:meth:`~mp_ray.learners.base.Learner.degenerate` flags them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mp_ray.learners.base import ArrayLike
from mp_ray.learners.linear import LinearLearner
from mp_ray.learners.optim import Rows, lbfgs, newton

ANCHOR_FRACTIONS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class LogisticRegression(LinearLearner):
    """L2-regularised logistic regression; see the module docstring for the objective."""

    name = "logistic"

    def __init__(self, config, X, y, n_classes, device="cpu") -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, X, y, n_classes, device)
        if n_classes < 2:
            raise ValueError("logistic regression needs a classification dataset (2+ classes)")
        self.C = config.C
        self.X_aug = self.augmented(self.X)
        self._regularised = (~self.intercept_mask()).to(self.dtype)
        # Subset-size fractions at which full-data anchors are solved (see _anchor).
        self._grid = torch.tensor(ANCHOR_FRACTIONS, dtype=self.dtype, device=self.device)
        self._anchors: dict[int, torch.Tensor] = {}
        self._curvatures: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # The label of each training point as its target column(s), (n, c).
        self._onehot = (
            self.y.to(self.dtype)[:, None]
            if self.n_outputs == 1
            else F.one_hot(self.y, self.n_outputs).to(self.dtype)
        )
        self._outer: torch.Tensor | None = None  # x̃x̃ᵀ per training point, (n, (p+1)²)

    # -- the objective ---------------------------------------------------------------------

    def per_sample_loss(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        return self._losses(self.decision(params, X), self.labels(y))

    def _losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of logits ``(K, m, c)`` against labels ``(m,)``, (K, m)."""
        if self.n_outputs == 1:
            z = logits[..., 0]
            return F.softplus(z) - y.to(z.dtype) * z
        correct = logits.gather(-1, y.expand(logits.shape[0], -1).unsqueeze(-1)).squeeze(-1)
        return torch.logsumexp(logits, dim=-1) - correct

    def objective(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        return self._evaluate(params, self.masks_tensor(masks))[0]

    def objective_grad(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """``R·θ + C·Σ_i m_i (p_i − onehot(y_i)) ⊗ x̃_i`` in closed form, (K, d)."""
        return self._evaluate(params, self.masks_tensor(masks), grad=True)[1]

    def hessian(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """Exact Hessians of the objective, ``(K, d, d)`` (memory K·d²: for small K or d)."""
        return self._evaluate(params, self.masks_tensor(masks), grad=True, hess=True)[2]

    def _evaluate(
        self, params: torch.Tensor, weights: torch.Tensor, grad: bool = False, hess: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Objective (K,), and on request its gradient (K, d) and Hessian (K, d, d), from one
        evaluation of the logits."""
        # Training-set logits in the layout (n, K, c): two plain GEMMs, contiguous reductions.
        n_models, c, q = params.shape[0], self.n_outputs, self.n_features + 1
        logits = (self.X_aug @ params.reshape(n_models * c, q).T).view(-1, n_models, c)
        if c == 1:
            normaliser = F.softplus(logits)
            prob = torch.exp(logits - normaliser) if grad else None
        else:
            # One exp serves the log-normaliser and the probabilities.
            top = logits.amax(dim=-1, keepdim=True)
            exp = torch.exp(logits - top)
            total = exp.sum(dim=-1, keepdim=True)
            normaliser = top + torch.log(total)
            prob = exp / total if grad else None
        losses = normaliser.squeeze(-1) - (logits * self._onehot[:, None, :]).sum(dim=-1)
        value = 0.5 * self.weight_norm_sq(params) + self.C * (weights * losses.T).sum(dim=1)
        gradient = hessian = None
        if prob is not None:
            residual = (prob - self._onehot[:, None, :]) * weights.T[..., None]
            data = (residual.reshape(-1, n_models * c).T @ self.X_aug).reshape(params.shape)
            gradient = params * self._regularised + self.C * data
        if hess:
            hessian = torch.diag(self._regularised) + self.C * self._data_hessian(
                logits.transpose(0, 1), weights
            )
        return value, gradient, hessian

    def _data_hessian(self, logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_i m_i A_i ⊗ x̃_i x̃_iᵀ with A_i the sigmoid / softmax curvature at the training
        ``logits (K, n, c)``, (K, d, d)."""
        q = self.n_features + 1
        if self._outer is None:
            self._outer = torch.einsum("mi,mj->mij", self.X_aug, self.X_aug).reshape(-1, q * q)
        if self.n_outputs == 1:
            prob = torch.sigmoid(logits[..., 0])
            return ((weights * prob * (1 - prob)) @ self._outer).reshape(-1, q, q)
        prob = torch.softmax(logits, dim=-1)
        curvature = torch.diag_embed(prob) - prob[..., :, None] * prob[..., None, :]
        c = self.n_outputs
        flat = (curvature * weights[..., None, None]).reshape(weights.shape[0], -1, c * c)
        blocks = torch.einsum("kma,mb->kab", flat, self._outer).reshape(-1, c, c, q, q)
        return blocks.permute(0, 1, 3, 2, 4).reshape(-1, c * q, c * q)

    # -- training --------------------------------------------------------------------------

    def fit_batch(self, masks: ArrayLike, seeds: ArrayLike | None = None) -> torch.Tensor:
        weights = self.masks_tensor(masks)
        params = torch.zeros(weights.shape[0], self.n_params, dtype=self.dtype, device=self.device)
        solvable = torch.nonzero(~self.degenerate(weights)).squeeze(1)
        if solvable.numel() == 0:
            return params
        params[solvable] = self._solve(weights[solvable])
        return params

    def _solve(self, weights: torch.Tensor) -> torch.Tensor:
        """Optimal parameters for non-degenerate subsets ``weights (K, n)``, (K, d)."""
        cfg = self.config
        fractions = weights.sum(dim=1) / self.n_train
        nearest = (fractions[:, None] - self._grid[None, :]).abs().argmin(dim=1)
        theta0 = self._anchor(nearest)

        def value(theta: torch.Tensor, rows: Rows) -> torch.Tensor:
            return self._evaluate(theta, weights[rows])[0]

        if self.n_outputs == 1:

            def value_grad_hess(theta: torch.Tensor, rows: Rows):  # type: ignore[no-untyped-def]
                return self._evaluate(theta, weights[rows], grad=True, hess=True)

            return newton(value, value_grad_hess, theta0, cfg.tol, cfg.max_iter).theta

        def value_grad(theta: torch.Tensor, rows: Rows):  # type: ignore[no-untyped-def]
            return self._evaluate(theta, weights[rows], grad=True)[:2]

        def precondition(g: torch.Tensor, rows: Rows) -> torch.Tensor:
            """(I + C·f·H_anchor)⁻¹ g, each row with the curvature of its own anchor."""
            out = torch.empty_like(g)
            for index in nearest[rows].unique().tolist():
                group = nearest[rows] == index
                eigvals, eigvecs = self._anchor_curvature(index)
                scale = 1.0 / (1.0 + self.C * fractions[rows[group], None] * eigvals[None, :])
                out[group] = ((g[group] @ eigvecs) * scale) @ eigvecs.T
            return out

        theta = lbfgs(value, value_grad, precondition, theta0, cfg.tol, cfg.max_iter).theta
        return self._centre_intercepts(theta)

    # -- anchors: full-data solutions that start and precondition the subset solves ---------

    def _anchor(self, grid_index: torch.Tensor) -> torch.Tensor:
        """Starting points ``(K, d)``: for each row, the optimum of the full training set with
        every weight equal to the row's grid fraction f (the subset objective's expectation
        for a subset of size f·n), solved once per grid point by Newton and cached."""
        missing = sorted(set(grid_index.tolist()) - self._anchors.keys())
        if missing:
            weights = self._grid[missing, None].expand(-1, self.n_train).to(self.dtype)
            start = torch.zeros(len(missing), self.n_params, dtype=self.dtype, device=self.device)

            def value(theta: torch.Tensor, rows: Rows) -> torch.Tensor:
                return self._evaluate(theta, weights[rows])[0]

            def value_grad_hess(theta: torch.Tensor, rows: Rows):  # type: ignore[no-untyped-def]
                return self._evaluate(theta, weights[rows], grad=True, hess=True)

            tol = max(1e-10, 100 * torch.finfo(self.dtype).eps)
            solved = newton(value, value_grad_hess, start, tol, 100).theta
            for index, theta in zip(missing, self._centre_intercepts(solved), strict=True):
                self._anchors[index] = theta
        return torch.stack([self._anchors[i] for i in grid_index.tolist()])

    def _anchor_curvature(self, grid_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (d,) and eigenvectors (d, d) of the full training set's data Hessian
        (unit weights, no C) at the anchor of ``grid_index``; cached."""
        if grid_index not in self._curvatures:
            anchor = self._anchor(torch.tensor([grid_index]))
            logits = self.decision_augmented(anchor, self.X_aug)
            full = torch.ones(1, self.n_train, dtype=self.dtype, device=self.device)
            eigvals, eigvecs = torch.linalg.eigh(self._data_hessian(logits, full)[0])
            self._curvatures[grid_index] = (eigvals.clamp(min=0), eigvecs)
        return self._curvatures[grid_index]

    def _centre_intercepts(self, theta: torch.Tensor) -> torch.Tensor:
        """Shift multinomial intercepts to sum to zero (the softmax ignores the shift)."""
        if self.n_outputs == 1:
            return theta
        coef = self.coefficients(theta).clone()
        coef[..., -1] -= coef[..., -1].mean(dim=1, keepdim=True)
        return coef.reshape(theta.shape)
