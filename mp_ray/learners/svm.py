"""The L2-regularised linear SVM with the squared hinge loss, K subsets at once.

Objective on a subset S, per binary problem (scikit-learn's ``LinearSVC(penalty="l2",
loss="squared_hinge", C=C, fit_intercept=True, intercept_scaling=1)``)::

    J_S(θ) = ½(‖w‖² + b²) + C · Σ_{i∈S} max(0, 1 − s_i (x_i·w + b))²,   s_i = ±1

The intercept is penalised like a weight: liblinear, which LinearSVC runs, fits it as the
weight of a constant feature of value ``intercept_scaling`` = 1 appended to every x_i, and
its regulariser covers all weights, that one included. So r = 1 for every parameter in
the family's objective (:mod:`mp_ray.learners.anchored`).

- binary (2 classes, d = p + 1, θ = [w, b]): s_i = +1 for class 1, −1 for class 0;
- multiclass (c ≥ 3 classes): one-vs-rest as LinearSVC, c independent binary problems, class
  j (s_ij = +1) against the rest (s_ij = −1); J_S is their sum. d = c·(p + 1), θ viewed as
  (c, p + 1) with rows [w_j, b_j] (the layout of :mod:`mp_ray.learners.linear`). The
  per-sample loss is Σ_j max(0, 1 − s_ij z_ij)², and the predicted class the largest z_ij.

The objective is convex and continuously differentiable, with a piecewise-constant
Hessian: the gradient is ``θ − 2C Σ_i m_i s_i h_i x̃_i`` with h_i = max(0, 1 − s_i z_i),
and :meth:`~SVM.hvp` and :meth:`~SVM.hessian` give the generalized Hessian
``I + 2C Σ_{i: h_i > 0} m_i x̃_i x̃_iᵀ`` (per one-vs-rest problem; no cross-class terms),
the derivative of that gradient wherever no margin equals 1 exactly.

Solver: the c·K binary problems of a batch (problem j·K + k: class j of subset k, the
columns of the output GEMM, see :mod:`mp_ray.learners.linear`) are solved by finite Newton
(:mod:`mp_ray.learners.hinge_newton`: Hessians over each problem's margin violators only, an
exact line search on the piecewise-quadratic objective along the step) from the anchor of
the subset's size (:mod:`mp_ray.learners.anchored`): on a CPU compiled, one problem per
intra-op thread at a time (:mod:`mp_ray.learners.hinge_newton_cpu`), on an accelerator all at
once as batched torch operations. On such piecewise quadratics
Newton's method stops once it has found the set of margin violators (Keerthi & DeCoste,
2005): on breast_cancer (1,000 Bernoulli(½) subsets, C = 1) it took 7 iterations to the
exact optimum where L-BFGS preconditioned by the anchor's Hessian, logistic regression's
solver, took up to 117 to tol = 1e-8 and 1.4–3.3× as long (one thread, a shared machine);
on digits (one-vs-rest, C = 0.5, nearly separable) L-BFGS had converged on none of 6
subsets after 500 iterations, Newton on all after 10. A problem stops when its Newton step
is at most tol · ‖θ_j‖ (``SVMLearnerConfig.tol``), after which the step is taken, or after
``max_iter`` iterations.

Degenerate subsets — empty, or missing a class — do have a finite optimum here (the
penalised intercept keeps it so; for the empty subset it is θ = 0), but as for every
classifier :meth:`~mp_ray.learners.base.Learner.degenerate` flags them and their result is
θ = 0, the convention for flagged rows throughout mp-ray (the store leaves them out, the
applications answer θ = 0 for them).
"""

from __future__ import annotations

from functools import cached_property

import torch

from mp_ray.learners import hinge_newton, hinge_newton_cpu
from mp_ray.learners.anchored import ANCHOR_MAX_ITER, ANCHOR_TOL, AnchoredLearner, ChunkTerms
from mp_ray.learners.base import ArrayLike
from mp_ray.learners.linear import symmetric

# The (problems, n) arrays a batched solve holds on an accelerator without a memory budget.
UNBUDGETED_SOLVE_BYTES = 2**28


class SVM(AnchoredLearner):
    """The squared-hinge linear SVM; see the module docstring for the objective."""

    name = "svm"
    title = "a linear SVM"

    @cached_property
    def _train_signs(self) -> torch.Tensor:
        """:meth:`signs` of the training set, ``(n, c)``."""
        return self.signs(self.y)

    def signs(self, y: ArrayLike) -> torch.Tensor:
        """The ±1 target of each example in each binary problem, ``(m, c)``."""
        y = self.labels(y)
        if self.n_outputs == 1:
            return (2 * y - 1).to(self.dtype)[:, None]
        return 2 * torch.nn.functional.one_hot(y, self.n_outputs).to(self.dtype) - 1

    def penalised(self) -> torch.Tensor:
        """1.0 for every parameter, ``(d,)``: the intercepts are penalised too."""
        return torch.ones(self.n_params, dtype=self.dtype, device=self.device)

    def penalty(self, params: torch.Tensor) -> torch.Tensor:
        """½‖θ‖² over all parameters, intercepts included, (K,)."""
        return 0.5 * (params**2).sum(dim=1)

    @staticmethod
    def _hinge(outputs: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        """h = max(0, 1 − s·z) for outputs z and ±1 targets s broadcastable to them;
        computed in place unless autograd tracks the outputs."""
        if outputs.requires_grad:
            return torch.relu(1 - signs * outputs)
        return outputs.mul_(signs).neg_().add_(1).clamp_(min=0)

    def _squared_hinge(
        self, outputs: torch.Tensor, signs: torch.Tensor, weights: torch.Tensor, order: int
    ) -> ChunkTerms:
        """For outputs z ``(m, …)`` with ±1 targets s and sample weights m broadcastable to
        them: Σ_i m_i h_i² over the m examples, ``(…)``; from order 1 on the residuals
        −2 m_i s_i h_i, ``(m, …)``; at order 2 the curvatures 2 m_i [h_i > 0], ``(m, …)``.
        The outputs are overwritten (:meth:`_hinge`)."""
        hinge = self._hinge(outputs, signs)
        weighted = hinge * weights
        loss = (weighted * hinge).sum(dim=0)
        if order == 0:
            return loss, None, None
        curvature = 2 * weights * (hinge > 0) if order == 2 else None
        if weighted.requires_grad:
            return loss, weighted * (-2 * signs), curvature
        return loss, weighted.mul_(signs).mul_(-2), curvature

    def per_sample_loss(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        hinge = self._hinge(self.outputs(params, self.augmented(X)), self.signs(y)[..., None])
        return (hinge**2).sum(dim=1).T

    def per_sample_grads(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """``−2 s_i h_i ⊗ x̃_i`` in closed form for one model ``params (d,)``, ``(m, d)``."""
        X_aug, signs = self.augmented(X), self.signs(y)
        hinge = self._hinge(self.outputs(params.detach()[None], X_aug), signs[..., None])
        residual = -2 * signs * hinge[:, :, 0]  # (m, c)
        return (residual[:, :, None] * X_aug[:, None, :]).reshape(len(signs), -1)

    def hvp(self, params: torch.Tensor, masks: ArrayLike, v: torch.Tensor) -> torch.Tensor:
        """The generalized Hessian times v, ``v + 2C·Σ_i m_i [h_i > 0] u_i ⊗ x̃_i`` with u_i
        the outputs of v at x̃_i, in closed form, (K, d)."""
        weights = self.masks_tensor(masks).T[:, None]  # (n, 1, K)
        outputs = self.outputs(params.detach(), self.X_aug)
        curvature = self._squared_hinge(outputs, self._train_signs[..., None], weights, order=2)[2]
        curved = curvature * self.outputs(v, self.X_aug)
        return v * self._penalised + self.C * self.pullback(curved, self.X_aug)

    def _chunk_terms(
        self, outputs: torch.Tensor, weights: torch.Tensor, rows: slice, order: int
    ) -> ChunkTerms:
        """:meth:`_squared_hinge` of the models' outputs ``(m, c, K)``, its curvatures as the
        block-diagonal Hessians ``(K, d, d)``."""
        loss, residual, curvature = self._squared_hinge(
            outputs, self._train_signs[rows, :, None], weights[:, None], order
        )
        hessian = None if curvature is None else self._block_hessian(curvature, rows)
        return loss.sum(dim=0), residual, hessian

    def _pass_floats(self, order: int) -> int:
        """Floats per training row and model that one chunk of :meth:`_evaluate` holds: the
        ``(m, c, K)`` outputs, turned into the hinges in place, their weighted copy (turned
        into the residuals), a product for the loss, at order 2 the curvatures and their
        ``(K, c, m)`` copy, and a few ``(m, K)`` vectors."""
        return (3 if order < 2 else 5) * self.n_outputs + 4

    def _data_hessians(self, curvature: torch.Tensor, rows: slice) -> torch.Tensor:
        """``Σ_i a_i x̃_i x̃_iᵀ`` for each problem's curvatures a ``(…, m)`` over the training
        ``rows``, ``(…, q, q)``: one GEMM over the upper triangles of x̃x̃ᵀ."""
        return symmetric(curvature @ self._outer_products(rows), self.n_features + 1)

    def _block_hessian(self, curvature: torch.Tensor, rows: slice) -> torch.Tensor:
        """The data Hessians ``(K, d, d)`` of the models with curvatures ``(m, c, K)`` over the
        training ``rows``: block-diagonal, block j the one-vs-rest problem j's."""
        blocks = self._data_hessians(curvature.permute(2, 1, 0), rows)  # (K, c, q, q)
        n_models, c, q = blocks.shape[0], self.n_outputs, self.n_features + 1
        out = blocks.new_zeros(n_models, c, c, q, q)
        diagonal = torch.arange(c, device=blocks.device)
        out[:, diagonal, diagonal] = blocks
        return out.permute(0, 1, 3, 2, 4).reshape(n_models, c * q, c * q)

    # -- training --------------------------------------------------------------------------

    def _min_group(self) -> int | None:
        """None: a batch is never split into groups of rows, since on a CPU the compiled
        solver (:mod:`mp_ray.learners.hinge_newton_cpu`) spreads its problems over the
        intra-op threads itself."""
        return None

    def _solve_anchors(self, fractions: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The anchors ``(G, d)`` of the grid ``fractions (G,)`` by the subsets' own solver,
        from zero to ``ANCHOR_TOL``; no Hessian factors (the SVM's solves use none)."""
        start = torch.zeros(
            self.n_outputs * len(fractions),
            self.n_features + 1,
            dtype=self.dtype,
            device=self.device,
        )
        weights = fractions[:, None].expand(-1, self.n_train)
        return self._finite_newton(start, weights, ANCHOR_TOL, ANCHOR_MAX_ITER), None

    def _solve(self, weights: torch.Tensor) -> torch.Tensor:
        """Optimal parameters for non-degenerate subsets ``weights (n, K)``, (K, d), from the
        anchors."""
        start = self.columns(self._anchor(self._grid_points(weights))).T.contiguous()
        return self._finite_newton(start, weights.T, self.config.tol, self.config.max_iter)

    def _finite_newton(
        self, start: torch.Tensor, weights: torch.Tensor, tol: float, max_iter: int
    ) -> torch.Tensor:
        """The optima ``(K, d)`` for sample ``weights (K, n)`` by finite Newton (compiled on a
        CPU, :mod:`mp_ray.learners.hinge_newton_cpu`; else batched,
        :mod:`mp_ray.learners.hinge_newton`) on the c·K binary problems from ``start``
        ``(c·K, p + 1)``, problem j·K + k being class j of subset k."""
        problems = (
            self.X_aug,
            start,
            weights.repeat(self.n_outputs, 1),
            self._train_signs.T.repeat_interleave(weights.shape[0], dim=0),
        )
        if self.device.type == "cpu":
            theta = hinge_newton_cpu.solve(*problems, self.C, tol, max_iter)
        else:
            budget = self.memory_budget or UNBUDGETED_SOLVE_BYTES
            theta = hinge_newton.solve(*problems, self.C, tol, max_iter, budget)
        return self.from_columns(theta.T)
