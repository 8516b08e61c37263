"""L2-regularised logistic regression, binary and multinomial, K subsets at once.

Objective on a subset S (scikit-learn's ``LogisticRegression(C=C)``; intercepts unpenalised)::

    J_S(θ) = ½‖W‖²_F + C · Σ_{i∈S} ℓ_i(θ)

- binary (2 classes, d = p + 1, θ = [w, b]): ℓ_i = log(1 + e^{z_i}) − y_i·z_i, z_i = x_i·w + b;
- multinomial (c ≥ 3 classes, d = c·(p + 1), θ viewed as (c, p + 1), rows [w_j, b_j]):
  ℓ_i = log Σ_j e^{z_ij} − z_{i,y_i}, z_ij = x_i·w_j + b_j. The softmax is over-parametrised in
  the intercepts: a common shift of all b_j changes nothing. Gradients have no component
  along that shift, so from a zero-sum start the solution keeps Σ_j b_j = 0, as
  scikit-learn's does (the result is re-centred once to remove rounding drift).

Solver (all K subsets in one vectorised computation; masks are sample weights): L-BFGS
(:func:`mp_ray.learners.optim.lbfgs`) from an *anchor* with a shared preconditioner.

- Anchor: the optimum of the full training set with every sample weight equal to f, the
  grid fraction (``ANCHOR_FRACTIONS``) nearest to |S|/n — the expectation of the subset's
  objective — solved once per grid point by Newton's method and cached.
- Preconditioner (the initial inverse Hessian of L-BFGS): ``H_f⁻¹``, H_f the Hessian of the
  anchor's own objective at its last Newton iterate (its Cholesky factor is reused), one
  d × d matrix per grid point, so applying it to all rows is one ``(K, d) @ (d, d)`` GEMM.
- The first evaluation costs one GEMM for all rows that share an anchor: there, each
  example's loss and gradient are the same for every row, so a row's objective and
  gradient are its mask times the cached ``(n, 1 + d)`` matrix ``[ℓ_i, ∇ℓ_i]``.
- Each later evaluation computes the logits of all K models as one GEMM
  ``X̃ (n, p+1) @ Θ (p+1, c·K)`` and the gradients as its transpose, in chunks of rows
  (see :mod:`mp_ray.learners.linear`); the softmax runs in place over each chunk's
  ``(m, c, K)`` array.

Measured on 2 CPU cores (breast_cancer, 1,000 Bernoulli(½) subsets), this is 1.2–1.8×
faster than batched exact Newton from the same anchor (Hessians as one GEMM over the upper
triangles of x̃x̃ᵀ, batched Cholesky): an L-BFGS step costs a fraction of a Newton step and
the preconditioner is close to the subset's Hessian. For multinomial problems, where
d = c·(p+1) makes per-model Hessians unaffordable, it is the only option of the two
(per-model exact Hessians at the anchor would save only a quarter of the iterations on
digits: the distance from anchor to optimum, not the preconditioner, sets their number).
``benchmarks/retrain_throughput.py`` compares the result with scikit-learn.

On a CPU, a batch whose groups of rows would each compute at least ``GROUP_LOGITS`` logits
per evaluation is solved in such groups, one per intra-op thread, concurrently
(:mod:`mp_ray.learners.threads`); the anchors they share are solved first.

A row stops when its quasi-Newton step is at most tol · ‖θ‖ (``LogisticLearnerConfig.tol``, the
estimated relative parameter error) or after ``max_iter`` iterations; see
:mod:`mp_ray.learners.optim`. Everything a row's solve uses comes from its own mask, so its
result does not depend on the other rows of the batch.

Degenerate subsets — empty, or missing a class — have no finite optimum (the intercept of
an absent class diverges to −∞). Their result is defined as θ = 0 (the uniform predictor),
and :meth:`~mp_ray.learners.base.Learner.degenerate` flags them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mp_ray.config import LogisticLearnerConfig
from mp_ray.learners.base import ArrayLike
from mp_ray.learners.linear import LinearLearner, symmetric, upper_outer
from mp_ray.learners.optim import Rows, by_group, lbfgs, newton

# Newton's stop for an anchor: its last step ≤ 1e-2·‖θ‖, after which the error was ~1e-4 (a
# start needs no more: subset optima lie ~30% away on digits).
ANCHOR_TOL = 1e-2
LOG2E = 1.0 / math.log(2.0)
# Logits (examples × outputs × models) of one evaluation that make a group of rows worth a
# thread of its own; see _min_group.
GROUP_LOGITS = 2**19
ANCHOR_FRACTIONS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class LogisticRegression(LinearLearner):
    """L2-regularised logistic regression; see the module docstring for the objective."""

    name = "logistic"

    def __init__(
        self,
        config: LogisticLearnerConfig,
        X: ArrayLike,
        y: ArrayLike,
        n_classes: int,
        device: torch.device | str = "cpu",
        memory_budget: int | None = None,
    ) -> None:
        super().__init__(config, X, y, n_classes, device, memory_budget)
        if n_classes < 2:
            raise ValueError("logistic regression needs a classification dataset (2+ classes)")
        self.C = config.C
        self.X_aug = self.augmented(self.X)
        self._penalised = self.penalised()
        self._rows = torch.arange(self.n_train, device=self.device)
        self._y_float = self.y.to(self.dtype)
        self._outer: torch.Tensor | None = None  # upper triangles of x̃x̃ᵀ, (n, q(q+1)/2)
        # Subset-size fractions at which full-data anchors are solved (see _anchor).
        self._grid = torch.tensor(ANCHOR_FRACTIONS, dtype=self.dtype, device=self.device)
        self._anchors: dict[int, torch.Tensor] = {}
        self._preconditioners: dict[int, torch.Tensor] = {}
        self._anchor_terms_cache: dict[int, torch.Tensor] = {}

    # -- the objective and its derivatives -------------------------------------------------

    def _log_partition(
        self, logits: torch.Tensor, scale: torch.Tensor | None = None, probabilities: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log Z (m, K) of logits ``(m, c, K)`` (log(1 + e^z) for one logit) and, on request,
        the predicted probabilities ``(m, c, K)``, multiplied by ``scale (m, K)`` if given.

        Multinomial logits are overwritten by exponentials (read the labels' logits first).
        They are shifted by each example's largest logit only when some |z| is large enough
        for e^z to overflow or underflow; the shift is a constant for autograd (log Z does
        not depend on it).
        """
        if self.n_outputs == 1:
            log_z = F.softplus(logits[:, 0])
            if not probabilities:
                return log_z, None
            prob = torch.sigmoid(logits)
            return log_z, prob if scale is None else prob * scale[:, None]
        limit = math.log(torch.finfo(logits.dtype).max / self.n_outputs) - 1
        shift = None
        low, high = torch.aminmax(logits.detach())
        if max(-float(low), float(high)) > limit:
            shift = logits.detach().amax(dim=1, keepdim=True)
            logits = logits.sub_(shift)
        # e^z as 2^(z·log₂e): torch's exp2 runs 2–3× faster than its exp on CPU, and the
        # product's rounding is one more rounding of z of the size the GEMM already made.
        exp = logits.mul_(LOG2E).exp2_()
        total = exp.sum(dim=1)
        log_z = torch.log(total) if shift is None else torch.log(total) + shift[:, 0]
        if not probabilities:
            return log_z, None
        factor = (total.reciprocal() if scale is None else scale / total)[:, None]
        # In place unless autograd needs the exponentials.
        return log_z, exp * factor if exp.requires_grad else exp.mul_(factor)

    def _label_logits(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The logit of each example's label (z·y for one logit), ``(m, K)``."""
        if self.n_outputs == 1:
            return logits[:, 0] * y.to(logits.dtype)[:, None]
        return logits[torch.arange(len(y), device=y.device), y]

    def _minus_labels(
        self, residual: torch.Tensor, weights: torch.Tensor, rows: slice
    ) -> torch.Tensor:
        """Weighted residuals ``m_i (p_i − onehot(y_i))`` of the training ``rows``, (m, c, K),
        in place from the weighted probabilities ``m_i p_i``."""
        if self.n_outputs == 1:
            residual[:, 0] -= self._y_float[rows, None] * weights
        else:
            residual[self._rows[: residual.shape[0]], self.y[rows]] -= weights
        return residual

    def per_sample_loss(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        logits = self.outputs(params, self.augmented(X))
        label_logits = self._label_logits(logits, self.labels(y))
        log_z, _ = self._log_partition(logits, probabilities=False)
        return (log_z - label_logits).T

    def per_sample_grads(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """``(p_i − onehot(y_i)) ⊗ x̃_i`` (binary: ``(σ(z_i) − y_i) x̃_i``) in closed form for
        one model ``params (d,)``, ``(m, d)``."""
        X_aug, y = self.augmented(X), self.labels(y)
        _, prob = self._log_partition(self.outputs(params.detach()[None], X_aug))
        residual = prob[:, :, 0]
        if self.n_outputs == 1:
            residual = residual - y.to(self.dtype)[:, None]
        else:
            residual[torch.arange(len(y), device=y.device), y] -= 1
        return (residual[:, :, None] * X_aug[:, None, :]).reshape(len(y), -1)

    def objective(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        return self._evaluate(params, self.masks_tensor(masks).T, order=0)[0]

    def objective_grad(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """``1_W∘θ + C·Σ_i m_i (p_i − onehot(y_i)) ⊗ x̃_i`` in closed form (binary: p_i − y_i),
        (K, d)."""
        return self.objective_and_grad(params, masks)[1]

    def objective_and_grad(
        self, params: torch.Tensor, masks: ArrayLike
    ) -> tuple[torch.Tensor, torch.Tensor]:
        value, gradient = self._evaluate(params, self.masks_tensor(masks).T, order=1)
        return value, gradient

    def hessian(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """Exact Hessians of the objective, ``(K, d, d)`` (memory K·d²: for small K or d)."""
        return self._evaluate(params, self.masks_tensor(masks).T, order=2)[2]

    def hvp(self, params: torch.Tensor, masks: ArrayLike, v: torch.Tensor) -> torch.Tensor:
        """``1_W∘v + C·Σ_i m_i (A_i u_i) ⊗ x̃_i`` with u_i = the logits of v at x̃_i and A_i the
        sigmoid / softmax curvature at θ, in closed form, (K, d)."""
        weights = self.masks_tensor(masks).T
        _, prob = self._log_partition(self.outputs(params, self.X_aug))
        u = self.outputs(v, self.X_aug)
        if self.n_outputs == 1:
            curved = prob * (1 - prob) * u
        else:
            curved = prob * (u - (prob * u).sum(dim=1, keepdim=True))
        return v * self._penalised + self.C * self.pullback(curved * weights[:, None], self.X_aug)

    def _evaluate(
        self, params: torch.Tensor, weights: torch.Tensor, order: int
    ) -> tuple[torch.Tensor, ...]:
        """The objective (K,) and, up to ``order``, its gradient (K, d) and Hessian (K, d, d)
        for sample ``weights (n, K)`` (training points × models), from one pass over the
        training logits in chunks of rows."""
        params = params.to(self.dtype)
        columns = self.columns(params)
        data_value: torch.Tensor | float = 0.0
        data_grad = torch.zeros_like(columns) if order > 0 else None  # (p+1, c·K)
        data_hessian: torch.Tensor | float = 0.0
        for rows in self.row_chunks(params.shape[0], self._pass_floats(order)):
            X_rows, w = self.X_aug[rows], weights[rows]
            logits = self.column_outputs(columns, X_rows)  # (m, c, K)
            label_logits = self._label_logits(logits, self.y[rows])
            scale = w if order == 1 else None  # order 2 keeps the probabilities themselves
            log_z, prob = self._log_partition(logits, scale, probabilities=order > 0)
            data_value = data_value + ((log_z - label_logits) * w).sum(dim=0)
            if prob is None:
                continue
            residual = self._minus_labels(prob if order == 1 else prob * w[:, None], w, rows)
            data_grad.addmm_(X_rows.T, residual.view(len(w), -1))
            if order == 2:
                data_hessian = data_hessian + self._data_hessian(prob, w, rows)
        value = 0.5 * self.weight_norm_sq(params) + self.C * data_value
        if data_grad is None:
            return (value,)
        gradient = params * self._penalised + self.C * self.from_columns(data_grad)
        if order == 1:
            return value, gradient
        return value, gradient, torch.diag(self._penalised) + self.C * data_hessian

    def _pass_floats(self, order: int) -> int:
        """Floats per training row and model that one chunk of :meth:`_evaluate` holds: the
        ``(m, c, K)`` logits, updated in place into the residuals, and a few ``(m, K)``
        vectors; at order 2 also the weighted probabilities and :meth:`_data_hessian`'s
        ``(K, m, c)`` and three ``(K, m, c(c+1)/2)`` arrays."""
        c = self.n_outputs
        floats = c + 6
        if order == 2:
            floats += 2 * c + 3 * c * (c + 1) // 2
        return floats

    def _data_hessian(self, prob: torch.Tensor, weights: torch.Tensor, rows: slice) -> torch.Tensor:
        """Σ_i m_i A_i ⊗ x̃_i x̃_iᵀ over the training ``rows`` for their probabilities
        ``prob (m, c, K)``, with A_i = σ(1−σ) (binary) or diag(p_i) − p_i p_iᵀ (softmax); one
        GEMM over the precomputed upper triangles of x̃x̃ᵀ, (K, d, d)."""
        if self._outer is None:
            self._outer = upper_outer(self.X_aug)
        outer = self._outer[rows]
        q = self.n_features + 1
        if self.n_outputs == 1:
            curvature = (weights * prob[:, 0] * (1 - prob[:, 0])).T  # (K, n)
            return symmetric(curvature @ outer, q)
        # A_i is symmetric: one block per class pair j ≤ l, mirrored into (l, j).
        c, n_models = self.n_outputs, prob.shape[2]
        first, second = torch.triu_indices(c, c, device=prob.device)
        p = prob.permute(2, 0, 1)  # (K, n, c)
        weighted = p * weights.T[..., None]  # m_i p_i
        curvature = -weighted[..., first] * p[..., second]  # (K, n, pairs)
        diagonal = first == second
        curvature[..., diagonal] += weighted
        blocks = symmetric(curvature.transpose(1, 2) @ outer, q)  # (K, pairs, q, q)
        out = blocks.new_empty(n_models, c, c, q, q)
        out[:, first, second] = blocks
        out[:, second, first] = blocks
        return out.permute(0, 1, 3, 2, 4).reshape(n_models, c * q, c * q)

    # -- training --------------------------------------------------------------------------

    def _fit(self, weights: torch.Tensor, seeds: ArrayLike | None) -> torch.Tensor:
        params = torch.zeros(weights.shape[0], self.n_params, dtype=self.dtype, device=self.device)
        solvable = torch.nonzero(~self.degenerate(weights)).squeeze(1)
        if solvable.numel():
            params[solvable] = self._solve(weights[solvable].T.contiguous())
        return params

    def _min_group(self) -> int:
        """Rows whose evaluation computes at least ``GROUP_LOGITS`` logits. Each group issues
        every operation of the solve itself, so smaller groups lose more to Python's
        per-operation work than they gain. On 2 CPU cores, 1,000 float32 fits in blocks of
        250 took, in two groups against one multi-threaded pass: digits (12,570 logits per
        row) 285–390 against 290–500 ms; breast_cancer (398) 76 against 41 ms, and with
        blocks of 1,000, 39 against 42 ms."""
        return math.ceil(GROUP_LOGITS / (self.n_train * self.n_outputs))

    def _prepare(self, weights: torch.Tensor) -> None:
        """Solve the anchors the non-degenerate rows of ``weights (K, n)`` start from, and
        their per-example terms, for groups of rows to share."""
        solvable = weights[~self.degenerate(weights)]
        if solvable.shape[0] == 0:
            return
        points = self._grid_points(solvable.T)
        self._anchor(points)
        for index in points.unique().tolist():
            self._anchor_terms(index)

    def _grid_points(self, weights: torch.Tensor) -> torch.Tensor:
        """The index of the grid fraction nearest to each row's |S|/n, for ``weights (n, K)``,
        (K,)."""
        return (weights.mean(dim=0)[:, None] - self._grid).abs().argmin(dim=1)

    def _solve(self, weights: torch.Tensor) -> torch.Tensor:
        """Optimal parameters for non-degenerate subsets ``weights (n, K)``, (K, d)."""
        cfg = self.config
        nearest = self._grid_points(weights)

        def columns(rows: Rows) -> torch.Tensor:
            """The weights of the rows in ``rows`` (sorted): all of them, or a copy."""
            return weights if len(rows) == weights.shape[1] else weights[:, rows]

        def value(theta: torch.Tensor, rows: Rows) -> torch.Tensor:
            return self._evaluate(theta, columns(rows), order=0)[0]

        def value_grad(theta: torch.Tensor, rows: Rows) -> tuple[torch.Tensor, ...]:
            return self._evaluate(theta, columns(rows), order=1)

        def precondition(g: torch.Tensor, rows: Rows) -> torch.Tensor:
            """H_f⁻¹ g, each row with the preconditioner of its own grid point."""
            return by_group(nearest[rows], lambda i, group: g[group] @ self._preconditioner(i))

        def data_terms(index: int, group: torch.Tensor | slice) -> torch.Tensor:
            """[Σ_i m_i ℓ_i, Σ_i m_i ∇ℓ_i] at the anchor of grid point ``index`` for the rows
            of ``group``, (k, 1 + d): one GEMM, as every row of the group starts there."""
            return weights[:, group].T @ self._anchor_terms(index)

        theta0 = self._anchor(nearest)
        terms = by_group(nearest, data_terms)
        f0 = 0.5 * self.weight_norm_sq(theta0) + self.C * terms[:, 0]
        g0 = theta0 * self._penalised + self.C * terms[:, 1:]
        solve = lbfgs(
            value, value_grad, precondition, theta0, cfg.tol, cfg.max_iter, start=(f0, g0)
        )
        return self._centre_intercepts(solve.theta)

    # -- anchors: full-data solutions that start and precondition the subset solves ---------

    def _anchor(self, grid_index: torch.Tensor) -> torch.Tensor:
        """Starting points ``(K, d)``: for each row, the optimum of the full training set with
        every weight equal to the row's grid fraction f (the subset objective's expectation
        for a subset of size f·n), solved once per grid point by Newton and cached with the
        inverse of its last Hessian (the preconditioner)."""
        missing = sorted(set(grid_index.tolist()) - self._anchors.keys())
        if missing:
            weights = self._grid[missing].expand(self.n_train, -1)
            # 1·1ᵀ on the intercepts makes the Hessian definite along the softmax's common
            # intercept shift. Gradients are orthogonal to it, and the shift is an
            # eigenvector of the sum, so steps and preconditioned gradients are unchanged.
            shift = self.intercept_mask().to(self.dtype)
            shift = shift[:, None] * shift[None, :] if self.n_outputs > 1 else 0.0

            def value(theta: torch.Tensor, rows: Rows) -> torch.Tensor:
                return self._evaluate(theta, weights[:, rows], order=0)[0]

            def value_grad_hess(theta: torch.Tensor, rows: Rows) -> tuple[torch.Tensor, ...]:
                f, g, hess = self._evaluate(theta, weights[:, rows], order=2)
                return f, g, hess + shift

            start = torch.zeros(len(missing), self.n_params, dtype=self.dtype, device=self.device)
            solve = newton(value, value_grad_hess, start, ANCHOR_TOL, 100)
            solved = self._centre_intercepts(solve.theta)
            for i, index in enumerate(missing):
                self._anchors[index] = solved[i]
                self._preconditioners[index] = torch.cholesky_inverse(solve.hessian_factor[i])
        return torch.stack([self._anchors[i] for i in grid_index.tolist()])

    def _anchor_terms(self, grid_index: int) -> torch.Tensor:
        """Each training example's loss and loss gradient at the anchor of grid point
        ``grid_index``, ``[ℓ_i, ∇ℓ_i]`` as ``(n, 1 + d)``; cached."""
        if grid_index not in self._anchor_terms_cache:
            anchor = self._anchor(torch.tensor([grid_index]))
            losses = self.per_sample_loss(anchor, self.X, self.y)[0]
            grads = self.per_sample_grads(anchor[0], self.X, self.y)
            self._anchor_terms_cache[grid_index] = torch.cat([losses[:, None], grads], dim=1)
        return self._anchor_terms_cache[grid_index]

    def _preconditioner(self, grid_index: int) -> torch.Tensor:
        """``H_f⁻¹ (d, d)``, H_f the Hessian of the anchor's objective (full training set,
        weights f) at the anchor's last Newton iterate; cached with the anchor."""
        self._anchor(torch.tensor([grid_index]))
        return self._preconditioners[grid_index]

    def _centre_intercepts(self, theta: torch.Tensor) -> torch.Tensor:
        """Shift multinomial intercepts to sum to zero (the softmax ignores the shift)."""
        if self.n_outputs == 1:
            return theta
        coef = self.coefficients(theta).clone()
        coef[..., -1] -= coef[..., -1].mean(dim=1, keepdim=True)
        return coef.reshape(theta.shape)
