"""Finite Newton for many squared-hinge problems on a CPU: one problem at a time per thread,
compiled (numba).

The algorithm is :mod:`mp_ray.learners.hinge_newton`'s, problem by problem: the objective,
the generalized Hessian over the margin violators, the exact line search (Newton's method on
φ′ safeguarded by false position, to the same strong Wolfe condition within the same count of
evaluations) and the stopping rules (the Newton step at most ``tol · ‖θ‖``, raised to 1000·eps
of the dtype, after which the step is taken; the gradient at its rounding floor; ``max_iter``),
with the Hessian updated over the points that changed sides when they are fewer than the
violators. Only the points of positive weight are visited.

Why a second form: the batched one issues each step as torch operations over all problems at
once, and on problems as small as breast_cancer's (31 parameters, 398 points) their count, not
their arithmetic, sets the time: 9 µs a problem and Newton iteration, of which MKL's Cholesky
factorisation of a 31×31 matrix alone takes 2.1. Compiled, a problem's iteration runs as loops
over its violators and its points. With several intra-op threads (torch's count) the problems
are spread over as many of numba's threads; with one, no thread pool starts at all (a
retraining actor's case: pool threads waiting beside a busy actor took the other actor's core).
Python threads with one compiled call each, tried instead, lost half their speed to torch's
OpenMP threads, which keep spinning for milliseconds after the caller's last parallel
operation. Solving 250 Bernoulli(½) subsets' problems on 2 cores, against the batched form:
breast_cancer 1.4× as fast on one thread and 2.3× on two in float32 (2.0× and 2.8× in
float64); digits' one-vs-rest problems 1.5× and 2.1× (2.5× and 3.4×). Accelerators keep the
batched form.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
import torch
from numba import njit, prange

from mp_ray.learners.hinge_newton import CURVATURE, LINE_SEARCH_ITER

# numba's workqueue threading layer (its fallback where no OpenMP or TBB is found) must not
# run two parallel kernels at once: the parallel solves of a process take turns.
_PARALLEL = threading.Lock()


def solve(
    X: torch.Tensor,
    theta0: torch.Tensor,
    weights: torch.Tensor,
    signs: torch.Tensor,
    C: float,
    tol: float,
    max_iter: int,
) -> torch.Tensor:
    """The optima ``(P, q)`` of the problems with inputs ``X (n, q)``, sample ``weights
    (P, n)`` and ±1 ``signs (P, n)``, from ``theta0 (P, q)``: CPU tensors of one floating
    dtype; the problems spread over torch's intra-op threads."""
    X_np, theta0_np, weights_np, signs_np = (
        t.detach().contiguous().numpy() for t in (X, theta0, weights, signs)
    )
    theta = theta0_np.copy()
    dtype = X_np.dtype.type
    arguments = (X_np, theta, weights_np, signs_np, dtype(2 * C), dtype(tol), max_iter)
    threads = torch.get_num_threads()
    if threads == 1 or theta.shape[0] == 1:
        _solve_rows(*arguments)  # no thread pool at all (a retraining actor's case)
        return torch.from_numpy(theta)
    with _PARALLEL:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        _solve_rows_parallel(*arguments)
    torch.set_num_threads(threads)  # as the caller had it, whatever OpenMP's start did
    return torch.from_numpy(theta)


@njit(nogil=True, cache=True)
def _solve_rows(
    X: np.ndarray,
    theta: np.ndarray,
    weights: np.ndarray,
    signs: np.ndarray,
    two_c: float,
    tol: float,
    max_iter: int,
) -> None:
    """Each row of ``theta (P, q)`` from its start to its problem's optimum, in place;
    ``two_c`` = 2C in the arrays' dtype, as every scalar of the arithmetic. The interpreter
    lock is released meanwhile (the process's other Python threads go on)."""
    for p in range(theta.shape[0]):
        _solve_one(X, theta[p], weights[p], signs[p], two_c, tol, max_iter)


@njit(parallel=True, nogil=True, cache=True)
def _solve_rows_parallel(
    X: np.ndarray,
    theta: np.ndarray,
    weights: np.ndarray,
    signs: np.ndarray,
    two_c: float,
    tol: float,
    max_iter: int,
) -> None:
    """:func:`_solve_rows` with the rows spread over numba's threads."""
    for p in prange(theta.shape[0]):
        _solve_one(X, theta[p], weights[p], signs[p], two_c, tol, max_iter)


@njit(cache=True)
def _solve_one(
    X: np.ndarray,
    theta: np.ndarray,
    w: np.ndarray,
    s: np.ndarray,
    two_c: float,
    tol: float,
    max_iter: int,
) -> None:
    """One problem's finite Newton, ``theta (q,)`` in place; ``w``, ``s`` ``(n,)``."""
    q = X.shape[1]
    points = np.nonzero(w > 0)[0]
    outputs = np.zeros(X.shape[0], dtype=X.dtype)  # x̃_i·θ, kept along the steps
    slack = np.zeros_like(outputs)  # 1 − s_i x̃_i·θ
    along = np.zeros_like(outputs)  # s_i x̃_i·d: the slacks fall by t·along along d
    for i in points:
        outputs[i] = _dot(X[i], theta)
    hessian = np.empty((q, q), dtype=X.dtype)  # lower triangle
    factor = np.empty_like(hessian)  # the Hessian's Cholesky factor
    violating = np.zeros(X.shape[0], dtype=np.bool_)
    gradient = np.empty(q, dtype=X.dtype)
    direction = np.empty(q, dtype=X.dtype)
    eps = np.finfo(X.dtype).eps
    tol = max(tol, 1000 * eps)
    floor = -1.0
    for iteration in range(max_iter + 1):
        _gradient(X, theta, w, s, two_c, points, outputs, slack, gradient)
        _update_hessian(X, w, two_c, points, slack, violating, hessian, iteration == 0)
        gradient_norm = math.sqrt(_dot(gradient, gradient))
        if floor < 0:
            floor = 1000 * eps * max(gradient_norm, 1.0)
        factor[:] = hessian
        definite = _cholesky(factor)
        if definite:
            _cholesky_solve(factor, gradient, direction)
            direction *= -1
        else:  # numerically indefinite: a gradient step, which estimates nothing
            direction[:] = -gradient
        step_norm = math.sqrt(_dot(direction, direction))
        small = definite and step_norm <= tol * math.sqrt(_dot(theta, theta))
        if small or gradient_norm <= floor:
            theta += direction
            return
        if iteration == max_iter:
            return
        for i in points:
            along[i] = s[i] * _dot(X[i], direction)
        t = _step_length(
            slack,
            along,
            w,
            points,
            _dot(theta, direction),
            step_norm**2,
            _dot(gradient, direction),
            two_c,
        )
        for k in range(theta.shape[0]):
            theta[k] += t * direction[k]
        for i in points:
            outputs[i] += t * s[i] * along[i]


@njit(cache=True)
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """a·b of two vectors, accumulated in float64."""
    total = 0.0
    for k in range(a.shape[0]):
        total += a[k] * b[k]
    return total


@njit(cache=True)
def _gradient(
    X: np.ndarray,
    theta: np.ndarray,
    w: np.ndarray,
    s: np.ndarray,
    two_c: float,
    points: np.ndarray,
    outputs: np.ndarray,
    slack: np.ndarray,
    gradient: np.ndarray,
) -> None:
    """At the current outputs: the ``slack`` of each point and the ``gradient``
    θ − 2C Σ w s h x̃ (``two_c`` = 2C)."""
    gradient[:] = theta
    for i in points:
        slack[i] = 1 - s[i] * outputs[i]
        if slack[i] > 0:
            residual = two_c * w[i] * s[i] * slack[i]
            for k in range(theta.shape[0]):
                gradient[k] -= residual * X[i, k]


@njit(cache=True)
def _update_hessian(
    X: np.ndarray,
    w: np.ndarray,
    two_c: float,
    points: np.ndarray,
    slack: np.ndarray,
    violating: np.ndarray,
    hessian: np.ndarray,
    fresh: bool,
) -> None:
    """The lower triangle of the generalized Hessian I + 2C Σ_{h>0} w x̃x̃ᵀ in ``hessian``,
    from the last one over the points that changed sides (``violating`` marks the last
    violators, and then the new ones) when they are fewer than the violators, else anew."""
    changed, count = 0, 0
    for i in points:
        count += slack[i] > 0
        changed += (slack[i] > 0) != violating[i]
    if fresh or changed >= count:
        for k in range(hessian.shape[0]):
            hessian[k, : k + 1] = 0
            hessian[k, k] = 1
        for i in points:
            if slack[i] > 0:
                _add_outer(hessian, X[i], two_c * w[i])
    else:
        for i in points:
            if (slack[i] > 0) != violating[i]:
                _add_outer(hessian, X[i], two_c * w[i] if slack[i] > 0 else -two_c * w[i])
    for i in points:
        violating[i] = slack[i] > 0


@njit(cache=True)
def _add_outer(a: np.ndarray, x: np.ndarray, c: float) -> None:
    """``a += c·x xᵀ`` on the lower triangle of ``a (q, q)``."""
    for k in range(x.shape[0]):
        scaled = c * x[k]
        for j in range(k + 1):
            a[k, j] += scaled * x[j]


@njit(cache=True)
def _cholesky(a: np.ndarray) -> bool:
    """The lower Cholesky factor of the matrix whose lower triangle ``a (q, q)`` holds, in
    place; False if a pivot is not positive."""
    q = a.shape[0]
    for k in range(q):
        pivot = a[k, k]
        for j in range(k):
            pivot -= a[k, j] * a[k, j]
        if not pivot > 0:
            return False
        pivot = math.sqrt(pivot)
        a[k, k] = pivot
        for r in range(k + 1, q):
            value = a[r, k]
            for j in range(k):
                value -= a[r, j] * a[k, j]
            a[r, k] = value / pivot
    return True


@njit(cache=True)
def _cholesky_solve(factor: np.ndarray, rhs: np.ndarray, out: np.ndarray) -> None:
    """``out = (L Lᵀ)⁻¹ rhs`` for the lower factor L: two triangular solves."""
    q = factor.shape[0]
    for k in range(q):
        value = rhs[k]
        for j in range(k):
            value -= factor[k, j] * out[j]
        out[k] = value / factor[k, k]
    for k in range(q - 1, -1, -1):
        value = out[k]
        for j in range(k + 1, q):
            value -= factor[j, k] * out[j]
        out[k] = value / factor[k, k]


@njit(cache=True)
def _step_length(
    slack: np.ndarray,
    along: np.ndarray,
    w: np.ndarray,
    points: np.ndarray,
    theta_d: float,
    d_d: float,
    slope0: float,
    two_c: float,
) -> float:
    """The step along d of :func:`mp_ray.learners.hinge_newton.step_lengths`, for one
    problem: φ′(t) = θ·d + t d·d − 2C Σ_i w_i b_i max(0, a_i − t b_i) with a the slacks,
    b ``along`` and ``two_c`` = 2C."""
    enough = CURVATURE * abs(slope0)
    t = 1.0
    lo, slope_lo = 0.0, slope0
    hi, slope_hi = math.inf, math.inf
    for _ in range(LINE_SEARCH_ITER):
        pull, curved = 0.0, 0.0
        for i in points:
            hinge = slack[i] - t * along[i]
            if hinge > 0:
                weighted = w[i] * along[i]
                pull += weighted * hinge
                curved += weighted * along[i]
        slope = theta_d + t * d_d - two_c * pull
        if abs(slope) <= enough:
            return t
        if slope > 0:
            hi, slope_hi = t, slope
        else:
            lo, slope_lo = t, slope
        newton = t - slope / (d_d + two_c * curved)
        if lo < newton < hi:
            t = newton
        elif math.isinf(hi):
            t = 4 * t
        else:
            t = lo - slope_lo * (hi - lo) / (slope_hi - slope_lo)
    return lo if lo > 0 else t
