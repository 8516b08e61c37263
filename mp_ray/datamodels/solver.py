"""Batched Lasso: many L1-regularised least-squares problems that share one design matrix.

For targets t = 1…T with responses y_t (m,) over the same standardised design X (m, n)::

    minimise_w  1/(2m)·‖y_t − ȳ_t − X w‖² + λ_t·‖w‖₁          (scikit-learn's ``Lasso``)

Everything a target's solve needs is in the sufficient statistics (:class:`Moments`)
G = XᵀX/m (n, n), c_t = Xᵀ(y_t − ȳ_t)/m (n,) and s_t = ‖y_t − ȳ_t‖²/m, so the cost of an
iteration does not grow with m, and all targets share G: :func:`lasso` runs FISTA
(accelerated proximal gradient, step 1/L with L an upper estimate of G's largest
eigenvalue, :func:`lipschitz`) with adaptive restart (O'Donoghue & Candès) on an (n, A)
block of the A targets still running — one product G·W (n, A) per iteration, O(n²·A).
Every ``CHECK_EVERY`` iterations each target's duality gap is computed (its product formed
with that iteration's, (n, 2A)); a target whose gap is ≤ tol·s_t (scikit-learn's stopping
rule) leaves the block. Random subset indicators standardised this way are nearly
orthogonal (G ≈ I when m ≫ n), so few iterations are needed, and warm starts along a λ
path need fewer still.

The solver touches G only through products G·W (:class:`GramOperator`), so G need not be
held as a matrix: the moments solver forms them from the masks' summed Gram matrix
(:class:`~mp_ray.datamodels.gram.StandardisedGram`), the Gram-free solver of
:mod:`mp_ray.datamodels.streamed` in one pass over the rows per product.

Columns with zero variance (a point in every or in no subset) carry no information: their
standardised column is 0 and their weight stays 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

CHECK_EVERY = 10
LANCZOS_STEPS = 64  # products G·v at most to estimate G's largest eigenvalue
LANCZOS_TOLERANCE = 1e-6  # the estimate's residual bound, relative, that ends them


class GramOperator(Protocol):
    """G = XᵀX/m (n, n) as products only (a tensor is one)."""

    def __matmul__(self, weights: torch.Tensor) -> torch.Tensor:
        """G · ``weights (n, A)``, ``(n, A)``."""
        ...


@dataclass
class Standardisation:
    """Column means ``mean (n,)`` and standard deviations ``scale (n,)`` (1 where a column is
    constant, whose ``informative`` entry is False)."""

    mean: torch.Tensor
    scale: torch.Tensor
    informative: torch.Tensor

    @classmethod
    def of(cls, mean: torch.Tensor, variance: torch.Tensor) -> Standardisation:
        """From population column means and variances ``(n,)`` (ddof 0, as scikit-learn's
        ``StandardScaler``)."""
        std = variance.clamp(min=0).sqrt()
        informative = std > 1e-12 * mean.abs().clamp(min=1.0)
        return cls(mean, torch.where(informative, std, torch.ones_like(std)), informative)

    def apply(self, X: torch.Tensor) -> torch.Tensor:
        """``(X − mean) / scale`` with constant columns zeroed, ``(m, n)``."""
        return ((X - self.mean) / self.scale) * self.informative


@dataclass
class Moments:
    """Sufficient statistics of a least-squares problem with T responses (see the module
    docstring): ``gram (n, n)`` (or an operator), ``corr (n, T)``, ``energy (T,)``, and the
    response means ``offset (T,)``."""

    gram: GramOperator
    corr: torch.Tensor
    energy: torch.Tensor
    offset: torch.Tensor

    def columns(self, index: torch.Tensor) -> Moments:
        """The moments of the responses in ``index`` only."""
        return Moments(self.gram, self.corr[:, index], self.energy[index], self.offset[index])

    def lambda_max(self) -> torch.Tensor:
        """The smallest λ per response whose solution is w = 0, ``(T,)``."""
        return self.corr.abs().amax(dim=0)


@dataclass
class LassoResult:
    """Solutions ``weights (n, T)``, iterations used, and which targets met the tolerance."""

    weights: torch.Tensor
    iterations: int
    converged: torch.Tensor


def lipschitz(moments: Moments) -> float:
    """An upper estimate of the largest eigenvalue of ``moments.gram``: the gradient's
    Lipschitz constant, from products with G alone.

    Lanczos with full reorthogonalisation from a fixed random start: after k products the
    largest eigenvalue θ of the tridiagonal matrix T_k is a lower estimate, and some
    eigenvalue of G lies within the residual r = β_k·|s_k| of it (s the eigenvector of T_k);
    it stops once r ≤ ``LANCZOS_TOLERANCE``·θ (or after ``LANCZOS_STEPS`` products, or when
    the Krylov space is exhausted) and returns θ + r.
    """
    n = moments.corr.shape[0]
    dtype, device = moments.corr.dtype, moments.corr.device
    start = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=dtype)
    basis = [(start / start.norm()).to(device)]
    alphas: list[float] = []
    betas: list[float] = []
    while True:
        product = moments.gram @ basis[-1]
        alphas.append(float(basis[-1][:, 0] @ product[:, 0]))
        previous = torch.cat(basis, dim=1)
        for _ in range(2):  # Gram–Schmidt twice is enough (Kahan)
            product -= previous @ (previous.T @ product)
        beta = float(product.norm())
        ritz = torch.linalg.eigh(_tridiagonal(alphas, betas))
        theta = float(ritz.eigenvalues[-1])
        residual = beta * abs(float(ritz.eigenvectors[-1, -1]))
        exhausted = beta <= 1e-12 * max(abs(theta), 1.0) or len(basis) == n
        if exhausted or residual <= LANCZOS_TOLERANCE * theta or len(basis) == LANCZOS_STEPS:
            return max(theta + residual, 1e-12)
        betas.append(beta)
        basis.append(product / beta)


def _tridiagonal(diagonal: list[float], off_diagonal: list[float]) -> torch.Tensor:
    """The symmetric tridiagonal matrix (k, k) of ``diagonal`` (k) and ``off_diagonal``
    (k − 1), float64."""
    matrix = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
    if off_diagonal:
        beta = torch.tensor(off_diagonal, dtype=torch.float64)
        matrix += torch.diag(beta, 1) + torch.diag(beta, -1)
    return matrix


def soft_threshold(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """sign(x)·max(|x| − threshold, 0), ``threshold`` broadcast over rows."""
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0)


def duality_gap(
    moments: Moments,
    weights: torch.Tensor,
    lam: torch.Tensor,
    gram_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Primal minus dual objective per target, ``(T,)`` (≥ 0; 0 at the optimum);
    ``gram_weights`` is G·weights where already formed.

    The dual point is the residual scaled into the feasible set,
    κ = min(1, λ / ‖Xᵀr/m‖∞); everything is expressed through the moments.
    """
    g_w = moments.gram @ weights if gram_weights is None else gram_weights
    w_c = (weights * moments.corr).sum(dim=0)
    w_g_w = (weights * g_w).sum(dim=0)
    residual_sq = (moments.energy - 2 * w_c + w_g_w).clamp(min=0)  # ‖r‖²/m
    primal = 0.5 * residual_sq + lam * weights.abs().sum(dim=0)
    correlation = (moments.corr - g_w).abs().amax(dim=0)  # ‖Xᵀr/m‖∞
    kappa = torch.where(correlation > lam, lam / correlation.clamp(min=1e-300), 1.0)
    dual = kappa * (moments.energy - w_c) - 0.5 * kappa**2 * residual_sq
    return primal - dual


def lasso(
    moments: Moments,
    lam: torch.Tensor,
    start: torch.Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 2000,
    step_size: float | None = None,
) -> LassoResult:
    """Solve every target's Lasso at its own ``lam (T,)``; see the module docstring.

    ``start (n, T)`` warm-starts the solves; ``step_size`` is 1/L (computed when omitted).
    """
    n, n_targets = moments.corr.shape
    step = step_size if step_size is not None else 1.0 / lipschitz(moments)
    weights = (
        torch.zeros(n, n_targets, dtype=moments.corr.dtype, device=moments.corr.device)
        if start is None
        else start.clone()
    )
    converged = torch.zeros(n_targets, dtype=torch.bool, device=weights.device)
    thresholds = tol * moments.energy.clamp(min=1e-300)
    active = torch.arange(n_targets, device=weights.device)
    part, w, lam_a, limit = moments, weights, lam, thresholds
    z, t = w.clone(), torch.ones(n_targets, dtype=w.dtype, device=w.device)
    iterations = 0
    while iterations < max_iter:
        gram_z = None
        if iterations % CHECK_EVERY == 0:
            # G·w for the gap and G·z for the step in one product: one read of G.
            gram_w, gram_z = (part.gram @ torch.cat([w, z], dim=1)).tensor_split(2, dim=1)
            done = duality_gap(part, w, lam_a, gram_w) <= limit
            if bool(done.any()):
                weights[:, active[done]] = w[:, done]
                converged[active[done]] = True
                keep = torch.nonzero(~done).squeeze(1)
                active, w, z, t = active[keep], w[:, keep], z[:, keep], t[keep]
                part, lam_a, limit = part.columns(keep), lam_a[keep], limit[keep]
                gram_z = gram_z[:, keep]
            if active.numel() == 0:
                break
        iterations += 1
        gradient = (part.gram @ z if gram_z is None else gram_z) - part.corr
        new_w = soft_threshold(z - step * gradient, step * lam_a)
        # Restart momentum where the step goes against the momentum direction.
        restart = ((z - new_w) * (new_w - w)).sum(dim=0) > 0
        t = torch.where(restart, torch.ones_like(t), t)
        new_t = 0.5 * (1 + torch.sqrt(1 + 4 * t**2))
        z = new_w + ((t - 1) / new_t) * (new_w - w)
        w, t = new_w, new_t
    weights[:, active] = w
    return LassoResult(weights, iterations, converged)
