"""Sums of masks and outputs over rows, added up window by window, and what the λ path, its
validation and its refit take from them (:mod:`mp_ray.datamodels.fit`).

For rows i with masks x_i ∈ {0, 1}ⁿ and outputs y_i (T,), taken relative to a shift c (T,)
(any fixed value near the outputs, which keeps the sums of squares from cancelling)::

    count m,  Σx (n,),  Σxxᵀ (n, n),  Σ(y − c) (T,),  Σx(y − c)ᵀ (n, T),  Σ(y − c)² (T,)

are added window by window and split by split (:class:`Sums`), so no row needs to stay in
memory (Σxxᵀ by :func:`~mp_ray.datamodels.gram.add_gram`). Their means and centred
(co)variances (:class:`Centred`; the masks' covariance as products with the held Σxxᵀ,
:class:`~mp_ray.datamodels.gram.Covariance`, never formed) give the column
standardisation (a 0/1 column's variance is p − p², p its mean), the Lasso moments
(:class:`~mp_ray.datamodels.solver.Moments`) and, from the validation rows' own moments,
the validation error of any weights: ‖y − Xu − b‖²/m expands into the validation rows'
covariances and means (:class:`MomentsValidation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.datamodels.gram import Covariance, StandardisedGram, add_gram
from mp_ray.datamodels.solver import GramOperator, Moments, Standardisation

# Masks are summed through float32 products (and int8 ones with int32 sums): exact while
# a window's counts stay below 2²⁴.
MAX_WINDOW = 1 << 24


@dataclass
class Sums:
    """The sums of the module docstring over ``count`` rows, float64 tensors: ``x (n,)``,
    ``xx`` (Σxxᵀ as the sum of these (n, n) matrices: one, or one per operand of ``+``,
    which shares them; none when the Gram matrix is not summed), ``y (T,)``, ``xy (n, T)``,
    ``yy (T,)``, all of outputs minus ``shift (T,)``."""

    shift: torch.Tensor
    count: int
    x: torch.Tensor
    xx: tuple[torch.Tensor, ...]
    y: torch.Tensor
    xy: torch.Tensor
    yy: torch.Tensor

    @classmethod
    def zeros(cls, n: int, shift: torch.Tensor, gram: bool) -> Sums:
        """Sums over no rows of ``n`` points, on ``shift``'s device; ``xx`` when ``gram``."""

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=shift.device)

        T = len(shift)
        return cls(
            shift, 0, zeros(n), (zeros(n, n),) if gram else (), zeros(T), zeros(n, T), zeros(T)
        )

    def add(self, masks: np.ndarray, outputs: np.ndarray) -> None:
        """Add the rows of ``masks (B, n)`` (0/1) and ``outputs (B, T)``."""
        if len(masks) == 0:
            return
        if len(masks) >= MAX_WINDOW:
            raise ValueError(
                f"a window of {len(masks)} rows is too long; add at most {MAX_WINDOW - 1}"
            )
        if len(self.xx) > 1:
            raise ValueError("these sums share their operands' Gram matrices: add rows to those")
        device = self.shift.device
        indicators = torch.as_tensor(np.asarray(masks), device=device)
        X = indicators.to(torch.float64)
        Y = torch.as_tensor(np.asarray(outputs), device=device).to(torch.float64) - self.shift
        self.count += len(masks)
        self.x += X.sum(dim=0)
        if self.xx:
            add_gram(self.xx[0], indicators)
        self.y += Y.sum(dim=0)
        self.xy += X.T @ Y
        self.yy += (Y**2).sum(dim=0)

    def __add__(self, other: Sums) -> Sums:
        """The sums over the rows of both (the same shift), sharing their Gram matrices."""
        return Sums(
            self.shift,
            self.count + other.count,
            self.x + other.x,
            self.xx + other.xx if self.xx and other.xx else (),
            self.y + other.y,
            self.xy + other.xy,
            self.yy + other.yy,
        )

    def centred(self) -> Centred:
        """Means and centred (co)variances of the rows summed (the masks' covariance as
        products with these sums' Gram matrices, which it shares)."""
        m = self.count
        mean_x, mean_y = self.x / m, self.y / m
        return Centred(
            self.shift,
            m,
            mean_x,
            mean_y,
            Covariance(self.xx, m, mean_x) if self.xx else None,
            (self.xy / m).addr_(mean_x, mean_y, alpha=-1),
            (self.yy / m - mean_y**2).clamp(min=0),
        )


@dataclass
class Centred:
    """Population statistics (ddof 0) of ``count`` rows: ``mean_x (n,)``, ``mean_y (T,)`` (of
    outputs minus ``shift``), ``cov_xx`` (the masks' (n, n) covariance as products, or
    None), ``cov_xy (n, T)``, ``var_y (T,)``."""

    shift: torch.Tensor
    count: int
    mean_x: torch.Tensor
    mean_y: torch.Tensor
    cov_xx: Covariance | None
    cov_xy: torch.Tensor
    var_y: torch.Tensor

    def standardisation(self) -> Standardisation:
        """The columns' standardisation on these rows (masks are 0/1: variance p − p²)."""
        return Standardisation.of(self.mean_x, self.mean_x - self.mean_x**2)

    def moments(
        self, standardisation: Standardisation, gram: GramOperator | None = None
    ) -> Moments:
        """The Lasso moments of these rows in ``standardisation``'s columns; ``gram`` (an
        operator) where the rows' Gram matrix was not summed."""
        scale = standardisation.scale
        informative = standardisation.informative.to(scale.dtype)
        if gram is None:
            if self.cov_xx is None:
                raise ValueError("these statistics hold no Gram matrix: pass an operator")
            gram = StandardisedGram(self.cov_xx, informative / scale)
        corr = self.cov_xy / scale[:, None] * informative[:, None]
        return Moments(gram, corr, self.var_y, self.mean_y + self.shift)


class MomentsValidation:
    """The mean squared error on validation rows of weights fitted in the training rows'
    standardisation, from the validation rows' statistics alone.

    For weights w (n, A) in standardised units and offsets b₀ (A,), the prediction is
    x·u + b with u = w/σ (raw units, constant columns 0) and b = b₀ − μ_train·u; over the
    validation rows the residual r = y − x·u − b has mean ȳ − μ·u − b and variance
    var(y) − 2 u·cov(x, y) + uᵀ cov(x) u, and the error is variance + mean².
    """

    def __init__(self, val: Centred, standardisation: Standardisation) -> None:
        if val.cov_xx is None:
            raise ValueError("the validation statistics hold no covariance of the masks")
        self.val = val
        self.standardisation = standardisation

    def __call__(
        self, weights: torch.Tensor, offset: torch.Tensor, columns: torch.Tensor
    ) -> torch.Tensor:
        """Validation errors ``(A,)`` of ``weights (n, A)`` with ``offset (A,)``, fitted to the
        targets ``columns (A,)``."""
        val, std = self.val, self.standardisation
        u = weights * (std.informative / std.scale)[:, None]
        mean = val.mean_y[columns] + val.shift[columns] - offset - (val.mean_x - std.mean) @ u
        variance = (
            val.var_y[columns]
            - 2 * (u * val.cov_xy[:, columns]).sum(dim=0)
            + (u * (val.cov_xx @ u)).sum(dim=0)
        )
        return variance.clamp(min=0) + mean**2
