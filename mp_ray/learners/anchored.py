"""Convex linear classifiers solved from anchors, K subsets at once.

Objective on a subset S, for a learner of this family::

    J_S(θ) = ½ Σ_j r_j θ_j² + C · Σ_{i∈S} ℓ_i(θ)

with r the 0/1 indicator of the penalised parameters (:meth:`~AnchoredLearner.penalised`;
the weights, and the intercepts too where the learner says so) and ℓ_i a convex loss of
example i's outputs, continuously differentiable in them. Parameters use the linear layout
of :mod:`mp_ray.learners.linear`. A learner gives the per-example terms of one chunk of
rows (:meth:`~AnchoredLearner._chunk_terms`) and its subset solver
(:meth:`~AnchoredLearner._solve`); the passes over the training set, the derivatives, the
anchors and the batching are shared.

- Evaluations compute the outputs of all K models as one GEMM ``X̃ (n, p+1) @ Θ (p+1, c·K)``
  and the gradients as its transpose, in chunks of rows (see :mod:`mp_ray.learners.linear`);
  Hessians are one GEMM over the upper triangles of x̃x̃ᵀ.
- Anchor: the optimum of the full training set with every sample weight equal to f, the
  grid fraction (``ANCHOR_FRACTIONS``) nearest to |S|/n — the expectation of the subset's
  objective — solved once per grid point by Newton's method and cached with the Cholesky
  factor of its last Hessian (a learner may solve them its own way instead:
  :meth:`~AnchoredLearner._solve_anchors`). Subset solves start there.

On a CPU, a batch whose groups of rows would each compute at least ``GROUP_OUTPUTS``
outputs per evaluation is solved in such groups, one per intra-op thread
(:mod:`mp_ray.learners.threads`); the anchors they share are solved first. Everything a
row's solve uses comes from its own mask, so its result does not depend on the other rows
of the batch.

Degenerate subsets — empty, or missing a class (:meth:`~mp_ray.learners.base.Learner.degenerate`)
— are not solved: their result is θ = 0, the convention for flagged rows throughout mp-ray.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch

from mp_ray.config import LearnerConfig
from mp_ray.learners.base import ArrayLike
from mp_ray.learners.linear import LinearLearner, upper_outer
from mp_ray.learners.optim import Rows, newton

# Newton's stop for an anchor: its last step ≤ 1e-2·‖θ‖, after which the error was ~1e-4 (a
# start needs no more: subset optima lie ~30% away on digits).
ANCHOR_TOL = 1e-2
ANCHOR_MAX_ITER = 100
# Outputs (examples × outputs × models) of one evaluation that make a group of rows worth a
# thread of its own; see _min_group.
GROUP_OUTPUTS = 2**19
ANCHOR_FRACTIONS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# One chunk's terms: Σ_i m_i ℓ_i (K,); the weighted residuals m_i ∂ℓ_i/∂z_i (m, c, K) from
# order 1 on (None at order 0); Σ_i m_i ∇²ℓ_i (K, d, d) at order 2 (None below).
ChunkTerms = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


class AnchoredLearner(LinearLearner):
    """A linear classifier with an objective of the family in the module docstring."""

    title: str  # what the learner is called in messages, e.g. "logistic regression"

    def __init__(
        self,
        config: LearnerConfig,
        X: ArrayLike,
        y: ArrayLike,
        n_classes: int,
        device: torch.device | str = "cpu",
        memory_budget: int | None = None,
    ) -> None:
        super().__init__(config, X, y, n_classes, device, memory_budget)
        if n_classes < 2:
            raise ValueError(f"{self.title} needs a classification dataset (2+ classes)")
        self.C = config.C
        self.X_aug = self.augmented(self.X)
        self._penalised = self.penalised()
        self._outer: torch.Tensor | None = None  # upper triangles of x̃x̃ᵀ, (n, q(q+1)/2)
        # Subset-size fractions at which full-data anchors are solved (see _anchor).
        self._grid = torch.tensor(ANCHOR_FRACTIONS, dtype=self.dtype, device=self.device)
        self._anchors: dict[int, torch.Tensor] = {}
        self._anchor_factors: dict[int, torch.Tensor] = {}

    # -- what a learner of the family gives ------------------------------------------------

    @abstractmethod
    def _chunk_terms(
        self, outputs: torch.Tensor, weights: torch.Tensor, rows: slice, order: int
    ) -> ChunkTerms:
        """The data terms of the training ``rows`` up to ``order`` (see ``ChunkTerms``), from
        their outputs ``(m, c, K)`` (which may be overwritten) and sample ``weights (m, K)``."""

    @abstractmethod
    def _pass_floats(self, order: int) -> int:
        """Floats per training row and model that one chunk of :meth:`_evaluate` holds."""

    @abstractmethod
    def _solve(self, weights: torch.Tensor) -> torch.Tensor:
        """Optimal parameters for non-degenerate subsets ``weights (n, K)``, (K, d), to the
        config's ``tol`` within ``max_iter`` iterations, from the anchors (:meth:`_anchor`)."""

    def penalty(self, params: torch.Tensor) -> torch.Tensor:
        """The regulariser ½‖W‖², (K,): the intercepts unpenalised (learners that penalise
        them override this and :meth:`penalised`)."""
        return 0.5 * self.weight_norm_sq(params)

    def _flat_directions(self) -> torch.Tensor | float:
        """A PSD ``(d, d)`` matrix added to the anchors' Newton Hessians along directions in
        which the objective is flat, making them definite; 0 here (none)."""
        return 0.0

    def _canonical(self, theta: torch.Tensor) -> torch.Tensor:
        """The representative returned for solutions ``theta (K, d)``: themselves here."""
        return theta

    # -- the objective and its derivatives -------------------------------------------------

    def objective(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        return self._evaluate(params, self.masks_tensor(masks).T, order=0)[0]

    def objective_grad(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """``r∘θ + C·Σ_i m_i ∂ℓ_i/∂z_i ⊗ x̃_i`` in closed form, (K, d)."""
        return self.objective_and_grad(params, masks)[1]

    def objective_and_grad(
        self, params: torch.Tensor, masks: ArrayLike
    ) -> tuple[torch.Tensor, torch.Tensor]:
        value, gradient = self._evaluate(params, self.masks_tensor(masks).T, order=1)
        return value, gradient

    def hessian(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """Hessians of the objective, ``(K, d, d)`` (memory K·d²: for small K or d)."""
        return self._evaluate(params, self.masks_tensor(masks).T, order=2)[2]

    def _evaluate(
        self, params: torch.Tensor, weights: torch.Tensor, order: int
    ) -> tuple[torch.Tensor, ...]:
        """The objective (K,) and, up to ``order``, its gradient (K, d) and Hessian (K, d, d)
        for sample ``weights (n, K)`` (training points × models), from one pass over the
        training outputs in chunks of rows."""
        params = params.to(self.dtype)
        columns = self.columns(params)
        data_value: torch.Tensor | float = 0.0
        data_grad = torch.zeros_like(columns) if order > 0 else None  # (p+1, c·K)
        data_hessian: torch.Tensor | float = 0.0
        for rows in self.row_chunks(params.shape[0], self._pass_floats(order)):
            X_rows, w = self.X_aug[rows], weights[rows]
            outputs = self.column_outputs(columns, X_rows)  # (m, c, K)
            loss, residual, hessian = self._chunk_terms(outputs, w, rows, order)
            data_value = data_value + loss
            if residual is None:
                continue
            data_grad.addmm_(X_rows.T, residual.view(len(w), -1))
            if hessian is not None:
                data_hessian = data_hessian + hessian
        value = self.penalty(params) + self.C * data_value
        if data_grad is None:
            return (value,)
        gradient = params * self._penalised + self.C * self.from_columns(data_grad)
        if order == 1:
            return value, gradient
        return value, gradient, torch.diag(self._penalised) + self.C * data_hessian

    def _outer_products(self, rows: slice) -> torch.Tensor:
        """The upper triangles of x̃_i x̃_iᵀ of the training ``rows``, ``(m, q(q+1)/2)``
        (:func:`~mp_ray.learners.linear.upper_outer`), computed once."""
        if self._outer is None:
            self._outer = upper_outer(self.X_aug)
        return self._outer[rows]

    # -- training --------------------------------------------------------------------------

    def _fit(self, weights: torch.Tensor, seeds: ArrayLike | None) -> torch.Tensor:
        params = torch.zeros(weights.shape[0], self.n_params, dtype=self.dtype, device=self.device)
        solvable = torch.nonzero(~self.degenerate(weights)).squeeze(1)
        if solvable.numel():
            params[solvable] = self._solve(weights[solvable].T.contiguous())
        return params

    def _min_group(self) -> int:
        """Rows whose evaluation computes at least ``GROUP_OUTPUTS`` outputs. Each group issues
        every operation of the solve itself, so smaller groups lose more to Python's
        per-operation work than they gain. On 2 CPU cores, 1,000 float32 logistic fits in
        blocks of 250 took, in two groups against one multi-threaded pass: digits (12,570
        logits per row) 285–390 against 290–500 ms; breast_cancer (398) 76 against 41 ms,
        and with blocks of 1,000, 39 against 42 ms."""
        return math.ceil(GROUP_OUTPUTS / (self.n_train * self.n_outputs))

    def _prepare(self, weights: torch.Tensor) -> None:
        """Solve the anchors the non-degenerate rows of ``weights (K, n)`` start from, and
        what the solver keeps per anchor (:meth:`_cache_anchor`), for groups of rows to
        share."""
        solvable = weights[~self.degenerate(weights)]
        if solvable.shape[0] == 0:
            return
        points = self._grid_points(solvable.T)
        self._anchor(points)
        for index in points.unique().tolist():
            self._cache_anchor(index)

    def _cache_anchor(self, grid_index: int) -> None:
        """Fill what the solver caches per anchor of grid point ``grid_index``; nothing here."""
        return None

    def _grid_points(self, weights: torch.Tensor) -> torch.Tensor:
        """The index of the grid fraction nearest to each row's |S|/n, for ``weights (n, K)``,
        (K,)."""
        return (weights.mean(dim=0)[:, None] - self._grid).abs().argmin(dim=1)

    # -- anchors: full-data solutions that start the subset solves --------------------------

    def _anchor(self, grid_index: torch.Tensor) -> torch.Tensor:
        """Starting points ``(K, d)``: for each row, the optimum of the full training set with
        every weight equal to the row's grid fraction f (the subset objective's expectation
        for a subset of size f·n), solved once per grid point (:meth:`_solve_anchors`) and
        cached, with the Cholesky factor of its last Hessian where the solver gives one
        (:meth:`_anchor_factor`)."""
        missing = sorted(set(grid_index.tolist()) - self._anchors.keys())
        if missing:
            solved, factors = self._solve_anchors(self._grid[missing])
            for i, index in enumerate(missing):
                self._anchors[index] = solved[i]
                if factors is not None:
                    self._anchor_factors[index] = factors[i]
        return torch.stack([self._anchors[i] for i in grid_index.tolist()])

    def _solve_anchors(self, fractions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The anchors of the grid ``fractions (G,)``, ``(G, d)``, to ``ANCHOR_TOL``, and the
        Cholesky factors ``(G, d, d)`` of their last Hessians: Newton's method on the full
        training set with every weight f, from zero."""
        weights = fractions.expand(self.n_train, -1)
        flat = self._flat_directions()

        def value(theta: torch.Tensor, rows: Rows) -> torch.Tensor:
            return self._evaluate(theta, weights[:, rows], order=0)[0]

        def value_grad_hess(theta: torch.Tensor, rows: Rows) -> tuple[torch.Tensor, ...]:
            f, g, hess = self._evaluate(theta, weights[:, rows], order=2)
            return f, g, hess + flat

        start = torch.zeros(len(fractions), self.n_params, dtype=self.dtype, device=self.device)
        solve = newton(value, value_grad_hess, start, ANCHOR_TOL, ANCHOR_MAX_ITER)
        return self._canonical(solve.theta), solve.hessian_factor

    def _anchor_factor(self, grid_index: int) -> torch.Tensor:
        """The Cholesky factor ``(d, d)`` of H_f, the Hessian of the anchor's objective (full
        training set, weights f) at the anchor's last Newton iterate; cached with the anchor.
        Only for a learner whose :meth:`_solve_anchors` gives the factors (the default)."""
        self._anchor(torch.tensor([grid_index]))
        return self._anchor_factors[grid_index]
