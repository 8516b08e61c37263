"""What linear learners share: the parameter layout and the batched outputs and gradients.

A linear model has c output columns (c = 1 for binary classification and regression, else
one per class). Its flattened parameters ``(d,)`` with d = c·(p + 1) view as ``(c, p + 1)``:
row j holds output j's weights followed by its intercept. With x̃ = [x, 1], output j of
example x is ``x̃ · θ[j]``.

For K models the outputs on m examples are one GEMM, ``X̃ (m, p+1) @ Θ (p+1, c·K)``, laid
out ``(m, c, K)``: models innermost, so reductions over classes run over contiguous rows of
models. A gradient ``Σ_i r_i ⊗ x̃_i`` for residuals ``r (m, c, K)`` is the transposed GEMM.

Objectives over the training set run through it in chunks of rows (:meth:`row_chunks`), so
that the ``(m, c, K)`` intermediates of a chunk stay in the CPU's cache between the GEMM,
the elementwise work and the transposed GEMM. On 2 CPU cores with K = 250 digits models an
evaluation took 46 instead of 60 µs per model; a whole fit took 0–9% less time in paired
runs (20 each, at different times). A learner with a memory budget (on a GPU) sizes its
chunks to the budget instead (:mod:`mp_ray.learners.memory`).
"""

from __future__ import annotations

import torch

from mp_ray.learners.base import ArrayLike, Learner
from mp_ray.learners.memory import chunk_slices

CHUNK_ELEMENTS = 2**19  # outputs (rows × c × K) per chunk of an objective's pass


class LinearLearner(Learner):
    """A learner whose model is linear in the features; see the module docstring."""

    convex = True

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

    def output_metric(self) -> torch.Tensor:
        """``X̃ᵀX̃ / n``, (p + 1, p + 1) float64, X̃ the augmented training inputs."""
        X_aug = self.augmented(self.X).to(torch.float64)
        return X_aug.T @ X_aug / self.n_train

    def augmented(self, X: ArrayLike) -> torch.Tensor:
        """``[X, 1]``, (m, p + 1)."""
        X = self.as_tensor(X)
        return torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)], dim=1)

    def columns(self, params: torch.Tensor) -> torch.Tensor:
        """``params (K, d)`` as the right-hand side ``(p + 1, c·K)`` of the output GEMM."""
        coefficients = self.coefficients(params.to(self.dtype))  # (K, c, p+1)
        return coefficients.permute(2, 1, 0).reshape(self.n_features + 1, -1)

    def from_columns(self, columns: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`columns`: ``(p + 1, c·K)`` back to ``(K, d)``."""
        n_models = columns.shape[1] // self.n_outputs
        out = columns.view(-1, self.n_outputs, n_models)
        return out.permute(2, 1, 0).reshape(n_models, -1)

    def column_outputs(self, columns: torch.Tensor, X_aug: torch.Tensor) -> torch.Tensor:
        """Outputs ``(m, c, K)`` of models given as :meth:`columns` on ``X_aug (m, p + 1)``."""
        return (X_aug @ columns).view(X_aug.shape[0], self.n_outputs, -1)

    def outputs(self, params: torch.Tensor, X_aug: torch.Tensor) -> torch.Tensor:
        """Outputs ``(m, c, K)`` of ``params (K, d)`` on augmented inputs ``X_aug (m, p + 1)``."""
        return self.column_outputs(self.columns(params), X_aug)

    def pullback(self, residual: torch.Tensor, X_aug: torch.Tensor) -> torch.Tensor:
        """``Σ_i residual[i] ⊗ x̃_i`` per model for ``residual (m, c, K)``, as ``(K, d)``."""
        return self.from_columns(X_aug.T @ residual.reshape(X_aug.shape[0], -1))

    def row_chunks(self, n_models: int, floats_per_model: int) -> list[slice]:
        """Consecutive training rows for a pass over ``n_models`` models holding
        ``floats_per_model`` floats per row and model: on a CPU without a memory budget,
        chunks of about ``CHUNK_ELEMENTS`` outputs (see the module docstring); else
        :meth:`~mp_ray.learners.base.Learner.budget_chunks` (an accelerator has no such
        cache to fit and pays per kernel launch: chunks as large as its budget allows)."""
        if self.memory_budget is not None or self.device.type != "cpu":
            return self.budget_chunks(n_models, floats_per_model)
        size = max(16, CHUNK_ELEMENTS // (self.n_outputs * max(1, n_models)))
        return chunk_slices(self.n_train, size)

    def decision(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        return self.outputs(params, self.augmented(X)).permute(2, 0, 1)

    def weight_norm_sq(self, params: torch.Tensor) -> torch.Tensor:
        """‖W‖² over the weights (intercepts excluded), (K,)."""
        return (self.coefficients(params)[..., :-1] ** 2).sum(dim=(1, 2))

    def penalised(self) -> torch.Tensor:
        """1.0 for weights, 0.0 for intercepts, ``(d,)`` in this learner's dtype."""
        return (~self.intercept_mask()).to(self.dtype)


def upper_outer(X: torch.Tensor) -> torch.Tensor:
    """The upper triangles of the outer products x xᵀ of the rows of ``X (m, q)``, as
    ``(m, q(q+1)/2)``: Σ_i w_i x_i x_iᵀ for K weight vectors is then one GEMM."""
    # Row-major over the upper triangle, as torch.triu_indices orders it; contiguous slices
    # instead of two (m, q(q+1)/2) gathers.
    return torch.cat([X[:, i : i + 1] * X[:, i:] for i in range(X.shape[1])], dim=1)


def symmetric(upper: torch.Tensor, q: int) -> torch.Tensor:
    """Symmetric ``(…, q, q)`` matrices from their upper triangles ``(…, q(q+1)/2)``."""
    rows, cols = torch.triu_indices(q, q, device=upper.device)
    out = upper.new_empty(*upper.shape[:-1], q * q)
    out.index_copy_(-1, rows * q + cols, upper)
    out.index_copy_(-1, cols * q + rows, upper)
    return out.view(*upper.shape[:-1], q, q)
