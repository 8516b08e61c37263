"""Batched solvers for smooth convex objectives: K independent problems in one computation.

Both solvers take closures over the *active* rows (the problems not yet converged): each
iteration only evaluates rows whose gradient norm is still above
``tol · max(1, ‖gradient at the start‖)``. Steps are safeguarded by a vectorised
backtracking (Armijo) line search, one step length per row.

- :func:`newton`: exact Newton steps from batched Cholesky solves; for small d.
- :func:`lbfgs`: limited-memory BFGS whose initial inverse Hessian is a caller-supplied
  preconditioner (e.g. the eigendecomposition of a shared full-data Hessian).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Rows = torch.Tensor  # int64 (A,) indices of the active problems
Value = Callable[[torch.Tensor, Rows], torch.Tensor]  # theta (A, d) -> f (A,)
ValueGrad = Callable[[torch.Tensor, Rows], tuple[torch.Tensor, torch.Tensor]]
ValueGradHess = Callable[[torch.Tensor, Rows], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
Precondition = Callable[[torch.Tensor, Rows], torch.Tensor]  # g (A, d) -> P⁻¹g (A, d)

ARMIJO = 1e-4
MAX_HALVINGS = 40


@dataclass
class SolveResult:
    """Solutions ``theta (K, d)``, iterations used and which rows met the tolerance."""

    theta: torch.Tensor
    iterations: int
    converged: torch.Tensor


def _line_search(
    value: Value,
    theta: torch.Tensor,
    f: torch.Tensor,
    direction: torch.Tensor,
    slope: torch.Tensor,
    rows: Rows,
    first_step: float = 1.0,
) -> torch.Tensor:
    """Largest t in {first_step, first_step/2, …} with f(θ + t·dir) ≤ f(θ) + 1e-4·t·slope,
    per row."""
    t = torch.full_like(f, first_step)
    candidate = theta + first_step * direction
    pending = torch.arange(f.shape[0], device=f.device)
    for _ in range(MAX_HALVINGS):
        trial = value(candidate[pending], rows[pending])
        failed = ~_sufficient_decrease(trial, f[pending], t[pending], slope[pending])
        pending = pending[failed]
        if pending.numel() == 0:
            break
        t[pending] /= 2
        candidate[pending] = theta[pending] + t[pending, None] * direction[pending]
    return candidate


def _sufficient_decrease(
    trial: torch.Tensor, f: torch.Tensor, t: torch.Tensor, slope: torch.Tensor
) -> torch.Tensor:
    """Armijo's condition; near the optimum f changes below its rounding error, and such
    steps are accepted."""
    slack = 64 * torch.finfo(f.dtype).eps * f.abs().clamp(min=1.0)
    return trial <= f + ARMIJO * t * slope + slack


def newton(
    value: Value, value_grad_hess: ValueGradHess, theta0: torch.Tensor, tol: float, max_iter: int
) -> SolveResult:
    """Damped Newton on K problems; see the module docstring."""
    theta = theta0.clone()
    n_rows = theta.shape[0]
    active = torch.arange(n_rows, device=theta.device)
    converged = torch.zeros(n_rows, dtype=torch.bool, device=theta.device)
    f, g, hess = value_grad_hess(theta, active)
    threshold = tol * torch.linalg.vector_norm(g, dim=1).clamp(min=1.0)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        done = torch.linalg.vector_norm(g, dim=1) <= threshold
        converged[active[done]] = True
        keep = ~done
        active, f, g, hess, threshold = active[keep], f[keep], g[keep], hess[keep], threshold[keep]
        if active.numel() == 0:
            break
        factor, info = torch.linalg.cholesky_ex(hess)
        step = torch.cholesky_solve(g.unsqueeze(-1), factor).squeeze(-1)
        # A non-positive-definite Hessian (numerically) falls back to a gradient step.
        step = torch.where((info > 0)[:, None], g, step)
        theta[active] = _line_search(value, theta[active], f, -step, -(g * step).sum(1), active)
        f, g, hess = value_grad_hess(theta[active], active)
    return SolveResult(theta, iterations, converged)


def lbfgs(
    value: Value,
    value_grad: ValueGrad,
    precondition: Precondition,
    theta0: torch.Tensor,
    tol: float,
    max_iter: int,
    memory: int = 10,
) -> SolveResult:
    """Preconditioned L-BFGS on K problems; see the module docstring."""
    theta = theta0.clone()
    n_rows = theta.shape[0]
    active = torch.arange(n_rows, device=theta.device)
    converged = torch.zeros(n_rows, dtype=torch.bool, device=theta.device)
    f, g = value_grad(theta, active)
    threshold = tol * torch.linalg.vector_norm(g, dim=1).clamp(min=1.0)
    history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, y, rho)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        done = torch.linalg.vector_norm(g, dim=1) <= threshold
        converged[active[done]] = True
        if bool(done.any()):
            keep = ~done
            active, f, g, threshold = active[keep], f[keep], g[keep], threshold[keep]
            history = [(s[keep], y[keep], rho[keep]) for s, y, rho in history]
        if active.numel() == 0:
            break
        direction = -_two_loop(g, history, lambda q, rows=active: precondition(q, rows))
        slope = (g * direction).sum(1)
        # Guard against a non-descent direction (stale curvature pairs): use -P⁻¹g.
        bad = slope >= 0
        if bool(bad.any()):
            direction[bad] = -precondition(g, active)[bad]
            slope = (g * direction).sum(1)
        # The full step is tried together with its gradient; rows whose step is too long
        # backtrack from t = ½ and are evaluated again.
        new_theta = theta[active] + direction
        new_f, new_g = value_grad(new_theta, active)
        retry = torch.nonzero(~_sufficient_decrease(new_f, f, torch.ones_like(f), slope))
        if retry.numel():
            retry = retry.squeeze(1)
            new_theta[retry] = _line_search(
                value,
                theta[active[retry]],
                f[retry],
                direction[retry],
                slope[retry],
                active[retry],
                first_step=0.5,
            )
            new_f[retry], new_g[retry] = value_grad(new_theta[retry], active[retry])
        s, y = new_theta - theta[active], new_g - g
        curvature = (s * y).sum(1)
        rho = torch.where(curvature > 1e-12, 1.0 / curvature.clamp(min=1e-12), 0.0)
        history = [*history[-(memory - 1) :], (s, y, rho)] if memory > 1 else [(s, y, rho)]
        theta[active], f, g = new_theta, new_f, new_g
    return SolveResult(theta, iterations, converged)


def _two_loop(
    g: torch.Tensor,
    history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    initial_inverse: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The L-BFGS inverse-Hessian product H·g, batched over rows."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(history):
        a = rho * (s * q).sum(1)
        q -= a[:, None] * y
        alphas.append(a)
    r = initial_inverse(q)
    if history:
        # Scale the preconditioner by the latest curvature pair: γ = sᵀy / yᵀP⁻¹y.
        s, y, rho = history[-1]
        y_precond = (y * initial_inverse(y)).sum(1)
        gamma = torch.where(
            (rho > 0) & (y_precond > 0), 1.0 / (rho * y_precond.clamp(min=1e-300)), 1.0
        )
        r = r * gamma[:, None]
    for (s, y, rho), a in zip(history, reversed(alphas), strict=True):
        b = rho * (y * r).sum(1)
        r += s * (a - b)[:, None]
    return r
