"""Finite Newton for many L2-regularised squared-hinge problems at once, as batched torch
operations: the linear SVM's solver on an accelerator (on a CPU, the same algorithm runs
compiled, a problem at a time per thread: :mod:`mp_ray.learners.hinge_newton_cpu`).

P binary problems share the training inputs x̃_i ``(n, q)``; problem a has sample weights
w_ia ≥ 0 and targets s_ia = ±1 and minimises::

    J_a(θ) = ½‖θ‖² + C · Σ_i w_ia h_ia²,   h_ia = max(0, 1 − s_ia x̃_i·θ)

a convex, piecewise-quadratic function. Newton's method with the generalized Hessian
``I + 2C Σ_{i∈V} w_ia x̃_i x̃_iᵀ``, V = {i : w_ia h_ia > 0} the problem's margin violators,
reaches the exact optimum once V is the optimum's (Keerthi & DeCoste, 2005). Each
iteration, for all problems still running:

- **Outputs held.** z = θX̃ᵀ ``(P, n)`` is kept and moved along each step (z += t·dX̃ᵀ), so an
  iteration costs two GEMMs with X̃: the gradient ``θ − 2C (w∘s∘h)X̃`` and the step's
  outputs dX̃ᵀ. Arrays are problem-major, so dropping finished problems copies whole rows.
- **Hessians over the violators only** (:func:`sparse_grams`): the rows of X̃ of each
  problem's violators, gathered and padded to the most of any problem in a bucket of
  problems with similar counts, and one batched ``X̃_Vᵀ diag(2Cw) X̃_V`` product per bucket.
  Violators are a few percent of the points (5% on digits' one-vs-rest problems, 6% on
  breast_cancer), so this costs a fraction of a GEMM over all n points' x̃x̃ᵀ. Once fewer
  points change sides than there are violators (after the first few iterations: on digits
  the changes per problem fell 191, 54, 25, 15, 9, 5, … against ~60 violators), the last
  Hessian is updated over the changed points instead (:func:`_hessians`).
- **Exact line search** (:func:`step_lengths`): along the Newton direction d, φ(t) = J(θ + td)
  is a one-dimensional piecewise quadratic whose derivative needs only z and X̃d, no GEMM.
  Its root is found by Newton's method on φ′ safeguarded by false position. Steps from an
  anchor cross many margins (on digits the best t is often 10⁻³–10⁻²), where halving from
  t = 1 costs a pass over X̃ per trial.

A problem stops when its Newton step is at most ``tol · ‖θ‖``, after which the full step is
taken (exact once V is right), or when its gradient is down to the precision's rounding
floor (as :mod:`mp_ray.learners.optim`), or after ``max_iter`` iterations. Problems that stop
leave the batch. The (P, n) arrays a solve holds are bounded by ``budget_bytes``: larger
batches are solved in consecutive groups of problems.
"""

from __future__ import annotations

import torch

from mp_ray.learners.optim import finished, rounding_floor

# Arrays of (problems, n) a solve holds at once: outputs, slacks, weights, signs, the last
# curvatures, their update, the step's outputs, and line-search temporaries.
STATE_FLOATS = 12
# Problems per bucket of the violator Hessians: padding is to the bucket's largest count.
BUCKET = 256
# Line search: stop at |φ′(t)| ≤ CURVATURE · |φ′(0)| (the strong Wolfe condition), within at
# most LINE_SEARCH_ITER evaluations of φ′ (the last bracket's decreasing end is taken then).
CURVATURE = 0.3
LINE_SEARCH_ITER = 30


def sparse_grams(X: torch.Tensor, coefficients: torch.Tensor, budget_floats: int) -> torch.Tensor:
    """``Σ_i a_pi x̃_i x̃_iᵀ`` per problem p over the nonzero coefficients ``a (P, n)``,
    ``(P, q, q)``: the rows of ``X (n, q)`` with nonzero a gathered per bucket of problems, at
    most ``budget_floats`` of them at once. Buckets group problems of similar counts (the
    padding is to a bucket's largest); a batch that fits one bucket is taken whole."""
    n_problems, q = coefficients.shape[0], X.shape[1]
    entries = coefficients.nonzero()  # (E, 2): problem, point; by problem
    counts = torch.bincount(entries[:, 0], minlength=n_problems)
    most = int(counts.max()) if n_problems else 0
    size = max(1, min(BUCKET, budget_floats // max(1, 2 * most * q)))
    if n_problems <= size:
        return _bucket_grams(X, coefficients, entries, counts, most)
    order = torch.argsort(counts)
    position = torch.empty_like(order)
    position[order] = torch.arange(n_problems, device=order.device)
    entries = entries[torch.argsort(position[entries[:, 0]], stable=True)]  # by bucket
    sorted_counts = counts[order]
    ends = torch.cumsum(sorted_counts, 0).tolist()
    grams = X.new_empty(n_problems, q, q)
    for start in range(0, n_problems, size):
        stop = min(start + size, n_problems)
        part = entries[(ends[start - 1] if start else 0) : ends[stop - 1]]
        rows = order[start:stop]
        grams[rows] = _bucket_grams(
            X,
            coefficients,
            torch.stack([position[part[:, 0]] - start, part[:, 1]], dim=1),
            sorted_counts[start:stop],
            int(sorted_counts[stop - 1]),
            rows,
        )
    return grams


def _bucket_grams(
    X: torch.Tensor,
    coefficients: torch.Tensor,
    entries: torch.Tensor,
    counts: torch.Tensor,
    width: int,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`sparse_grams` of one bucket of B problems, ``(B, q, q)``: ``entries (E, 2)``
    (problem within the bucket, point), grouped by problem, ``counts (B,)`` of them, at most
    ``width``; ``rows (B,)`` the bucket's problems in ``coefficients`` (None: all)."""
    grams_shape = (len(counts), X.shape[1], X.shape[1])
    if width == 0:
        return X.new_zeros(grams_shape)
    problem, point = entries[:, 0], entries[:, 1]
    rank = torch.arange(len(entries), device=entries.device)
    rank -= (torch.cumsum(counts, 0) - counts)[problem]
    index = X.new_zeros(len(counts), width, dtype=torch.long)
    weight = X.new_zeros(len(counts), width)
    index[problem, rank] = point
    weight[problem, rank] = coefficients[problem if rows is None else rows[problem], point]
    gathered = X[index]  # (B, width, q); padding is row 0 with weight 0
    return gathered.transpose(1, 2) @ (gathered * weight[..., None])


def step_lengths(
    slack: torch.Tensor,
    along: torch.Tensor,
    weights: torch.Tensor,
    theta: torch.Tensor,
    direction: torch.Tensor,
    slope0: torch.Tensor,
    C: float,
) -> torch.Tensor:
    """The step t > 0 along ``direction (P, q)`` from ``theta (P, q)`` that minimises
    φ(t) = ½‖θ + td‖² + C Σ_i w_i max(0, a_i − t b_i)² to the strong Wolfe condition, per
    problem, ``(P,)``; ``slack`` a = 1 − s∘z, ``along`` b = s∘(dX̃ᵀ) and ``weights`` w are
    ``(P, n)``, and ``slope0`` φ′(0) = ∇J(θ)·d ``(P,)``. φ′ is continuous, piecewise linear
    and increasing (φ′(0) < 0 for a descent direction): Newton's method on it, kept inside
    the bracket [lo, hi] of the signs of φ′ seen so far, by false position where it leaves
    it."""
    theta_d = torch.linalg.vecdot(theta, direction)
    d_d = torch.linalg.vecdot(direction, direction)
    weighted = weights * along
    curved = weighted * along
    enough = CURVATURE * slope0.abs()
    result = torch.ones_like(theta_d)
    # Per row of the arrays (the problems still searching, dropped in halves): the step, the
    # bracket [lo, hi] and φ′ at its ends, and what φ′ needs.
    t = result.clone()
    lo, slope_lo = torch.zeros_like(t), slope0
    hi, slope_hi = torch.full_like(t, torch.inf), torch.full_like(t, torch.inf)
    rows = torch.arange(len(t), device=t.device)  # the problem of each row of the arrays
    for _ in range(LINE_SEARCH_ITER):
        hinge = torch.addcmul(slack, t[:, None], along, value=-1).clamp_(min=0)
        slope = torch.add(
            torch.addcmul(theta_d, t, d_d), torch.linalg.vecdot(weighted, hinge), alpha=-2 * C
        )
        done = slope.abs() <= enough
        if bool(done.all()):
            result[rows] = t
            return result
        curvature = torch.add(d_d, torch.linalg.vecdot(curved, hinge.sign_()), alpha=2 * C)
        rising = slope > 0
        hi, slope_hi = torch.where(rising, t, hi), torch.where(rising, slope, slope_hi)
        lo, slope_lo = torch.where(rising, lo, t), torch.where(rising, slope_lo, slope)
        newton = torch.addcdiv(t, slope, curvature, value=-1)
        inside = (newton > lo) & (newton < hi)
        secant = torch.addcdiv(lo, slope_lo * (hi - lo), slope_hi - slope_lo, value=-1)
        guess = torch.where(inside, newton, torch.where(torch.isinf(hi), 4 * t, secant))
        t = torch.where(done, t, guess)
        if 2 * int(done.sum()) >= len(rows):  # drop the finished rows
            result[rows[done]] = t[done]
            keep = ~done
            rows, slack, along, weighted, curved = (
                x[keep] for x in (rows, slack, along, weighted, curved)
            )
            t, lo, hi, slope_lo, slope_hi = (x[keep] for x in (t, lo, hi, slope_lo, slope_hi))
            theta_d, d_d, enough = theta_d[keep], d_d[keep], enough[keep]
    # Out of evaluations: the searching rows take their bracket's decreasing end, where φ is
    # below φ(0) (the rows found done keep their step).
    result[rows] = torch.where(done | (lo == 0), t, lo)
    return result


def _hessians(
    X: torch.Tensor,
    curvature: torch.Tensor,
    budget_floats: int,
    last: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The Hessians ``I + Σ_i a_pi x̃_i x̃_iᵀ`` ``(P, q, q)`` for the ``curvature a (P, n)``.
    With the ``last`` (Hessians, curvature), updated over the points whose curvature
    changed when they are fewer than the violators (late iterations), else anew."""
    if last is not None:
        hessians, previous = last
        change = curvature - previous
        if int(torch.count_nonzero(change)) < int(torch.count_nonzero(curvature)):
            return hessians.add_(sparse_grams(X, change, budget_floats))
    fresh = sparse_grams(X, curvature, budget_floats)
    fresh.diagonal(dim1=1, dim2=2).add_(1)
    return fresh


def _cholesky_solve(factor: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(L Lᵀ)⁻¹ rhs`` for lower Cholesky factors ``(P, q, q)`` and ``rhs (P, q)``: two
    triangular solves, a fifth faster on a CPU than ``torch.cholesky_solve`` for q = 65."""
    half = torch.linalg.solve_triangular(factor, rhs[..., None], upper=False)
    return torch.linalg.solve_triangular(factor.mT, half, upper=True)[..., 0]


def solve(
    X: torch.Tensor,
    theta0: torch.Tensor,
    weights: torch.Tensor,
    signs: torch.Tensor,
    C: float,
    tol: float,
    max_iter: int,
    budget_bytes: int,
) -> torch.Tensor:
    """The optima ``(P, q)`` of the problems with inputs ``X (n, q)``, sample ``weights
    (P, n)`` and ±1 ``signs (P, n)``, from ``theta0 (P, q)``; groups of problems whose
    ``(P, n)`` arrays fit ``budget_bytes``."""
    per_problem = STATE_FLOATS * X.shape[0] * X.element_size()
    group = max(1, budget_bytes // per_problem)
    budget_floats = budget_bytes // X.element_size()
    parts = [
        _solve_group(X, theta0[rows], weights[rows], signs[rows], C, tol, max_iter, budget_floats)
        for rows in (slice(start, start + group) for start in range(0, theta0.shape[0], group))
    ]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _solve_group(
    X: torch.Tensor,
    theta: torch.Tensor,
    weights: torch.Tensor,
    signs: torch.Tensor,
    C: float,
    tol: float,
    max_iter: int,
    budget_floats: int,
) -> torch.Tensor:
    """:func:`solve` for one group of problems."""
    result = theta.clone()
    running = torch.arange(theta.shape[0], device=theta.device)
    outputs = theta @ X.T  # (P, n)
    floor = hessians = previous = None
    for iteration in range(max_iter + 1):
        slack = 1 - signs * outputs
        hinge = slack.clamp(min=0)
        residual = weights * hinge
        gradient = torch.addmm(theta, residual * signs, X, alpha=-2 * C)
        if floor is None:
            floor = rounding_floor(gradient)
        curvature = (2 * C) * weights * (residual > 0)
        last = None if hessians is None else (hessians, previous)
        hessians, previous = _hessians(X, curvature, budget_floats, last), curvature
        factor, info = torch.linalg.cholesky_ex(hessians)
        step = _cholesky_solve(factor, gradient)
        # A numerically indefinite Hessian falls back to a gradient step, which estimates
        # nothing about the distance to the optimum (only the gradient floor stops it).
        indefinite = (info > 0)[:, None]
        step = torch.where(indefinite, gradient, step)
        done = finished(theta, gradient, step.masked_fill(indefinite, torch.inf), tol, floor)
        if bool(done.any()):
            result[running[done]] = theta[done] - step[done]
            keep = ~done
            running, theta, step, floor = running[keep], theta[keep], step[keep], floor[keep]
            gradient = gradient[keep]
            outputs, slack, weights, signs = outputs[keep], slack[keep], weights[keep], signs[keep]
            hessians, previous = hessians[keep], previous[keep]
        if running.numel() == 0:
            break
        if iteration == max_iter:
            result[running] = theta
            break
        direction = step.neg_()
        moved = direction @ X.T
        slope = torch.linalg.vecdot(gradient, direction)
        t = step_lengths(slack, signs * moved, weights, theta, direction, slope, C)
        theta = torch.addcmul(theta, t[:, None], direction)
        outputs = outputs.addcmul_(moved, t[:, None])
    return result
