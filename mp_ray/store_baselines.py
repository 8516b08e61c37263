"""Baselines fitted on the store's training rows, the rows ModelPred is fitted on.

- :class:`MeanParams` ("mean θ"): the mean parameter vector of the training rows, whatever
  the subset — the best constant in squared error: a predictor that does not beat it has
  learned nothing about S.
- :class:`MaskRidge` ("ridge on the mask"): a parameter datamodel, linear in the subset
  indicator, θ̂(S) = Wᵀ1_S + b with W ``(n, d)``, fitted by ridge regression with an
  unpenalised intercept (scikit-learn's ``Ridge``): argmin Σ_rows ‖Wᵀ1_S + b − θ(S)‖² + α‖W‖²_F.
  α is chosen from :data:`RIDGE_GRID` (multiples of the mean eigenvalue of the centred
  mask Gram matrix) by the mean relative parameter error ‖θ̂ − θ‖/‖θ‖ on the validation
  rows, the criterion ModelPred stops early on.

Both come from one pass over the training rows and one over the validation rows, a store
block at a time (:func:`~mp_ray.store.rows.split_blocks`): the training rows' sums — count,
Σ1_S, Σ1_S1_Sᵀ ``(n, n)`` (integer products, :func:`~mp_ray.datamodels.gram.add_gram`),
Σθ, Σ1_Sθᵀ — are those of the datamodels (:class:`~mp_ray.datamodels.sums.Sums`, with the
parameters as outputs), and each α of the grid is solved by conjugate gradients with
products by the centred Gram matrix (:func:`shifted_cg`), strongest first, each from the
previous solution; no n × n matrix is formed beyond the summed one, so memory is bounded by
n², G·n·d and one block of rows, never by the number of rows, and time by the products
(about 2n²·d flops each; n = 20,000 takes seconds per strength, where an eigendecomposition
took most of an hour).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.baselines import ConstantParams
from mp_ray.datamodels.solver import GramOperator
from mp_ray.datamodels.sums import Sums
from mp_ray.methods import Masks, check_masks
from mp_ray.scores import relative_errors
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import TRAIN, VAL, Rows, split_blocks

RIDGE_GRID = tuple(10.0 ** np.arange(-4.0, 2.5, 0.5))  # × the centred Gram's mean eigenvalue
CG_TOLERANCE = 1e-10  # residual norm relative to the right-hand side's, per column
CG_MAX_ITER = 1000  # products with the Gram matrix per strength


class MeanParams(ConstantParams):
    """The mean θ of the training rows, whatever the subset."""

    name = "mean θ"


class MaskRidge:
    """θ̂(S) = Wᵀ1_S + b from ``weights (n, d)`` and ``bias (d,)``; ``alpha`` is its ridge
    strength and ``val_errors`` the validation relative error of each strength tried."""

    name = "ridge on the mask"

    def __init__(
        self,
        weights: torch.Tensor,
        bias: torch.Tensor,
        alpha: float,
        val_errors: dict[float, float],
    ) -> None:
        self.weights = weights
        self.bias = bias
        self.alpha = alpha
        self.val_errors = val_errors

    @property
    def n_train(self) -> int:
        return int(self.weights.shape[0])

    def predict(self, masks: Masks) -> torch.Tensor:
        """θ̂ ``(B, d)`` for ``masks (B, n)``."""
        masks = check_masks(masks, self.n_train).to(self.weights.dtype)
        return masks @ self.weights + self.bias


@dataclass
class RidgePath:
    """Ridge fits θ̂(S) = Wᵀ(1_S − m̄) + θ̄ for each strength of ``alphas (G,)``:
    ``weights (G, n, d)``, the mean mask ``mask_mean (n,)`` and mean θ ``theta_mean (d,)`` of
    the training rows; ``converged (G,)`` says which solves met :data:`CG_TOLERANCE`."""

    mask_mean: torch.Tensor
    theta_mean: torch.Tensor
    weights: torch.Tensor
    alphas: np.ndarray
    converged: np.ndarray

    @classmethod
    def of(cls, sums: Sums, grid: Sequence[float]) -> RidgePath:
        """The fits from the training rows' sums (Gram matrix included), for α = each
        ``grid`` value times the mean eigenvalue of the centred Gram matrix (its trace over
        n: m·mean(p − p²) for 0/1 columns of means p), strongest first so that each solve
        starts from the previous one."""
        rows = sums.centred()
        if rows.cov_xx is None:
            raise ValueError("the training sums hold no Gram matrix")
        scale = float((rows.mean_x - rows.mean_x**2).clamp(min=0).mean()) or 1.0
        shifts = scale * torch.as_tensor(sorted(grid, reverse=True), dtype=torch.float64)
        solutions, converged = [], []
        weights = torch.zeros_like(rows.cov_xy)
        for shift in shifts.tolist():  # α/m: the covariances are the Gram matrices over m
            weights, done = shifted_cg(rows.cov_xx, rows.cov_xy, shift, weights)
            solutions.append(weights)
            converged.append(done)
        order = np.argsort(np.asarray(grid))[::-1]  # back to the grid's order
        inverse = np.argsort(order)
        return cls(
            rows.mean_x,
            rows.mean_y + rows.shift,
            torch.stack(solutions)[inverse],
            sums.count * shifts.numpy()[inverse],
            np.asarray(converged)[inverse],
        )

    def predict_all(self, masks: np.ndarray) -> torch.Tensor:
        """θ̂ at every strength for ``masks (B, n)``, ``(G, B, d)``."""
        centred = torch.as_tensor(masks, dtype=torch.float64) - self.mask_mean
        return torch.einsum("bn,gnd->gbd", centred, self.weights) + self.theta_mean

    def solution(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """W ``(n, d)`` and b ``(d,)`` at the ``k``-th strength."""
        weights = self.weights[k]
        return weights, self.theta_mean - self.mask_mean @ weights


def shifted_cg(
    operator: GramOperator, rhs: torch.Tensor, shift: float, start: torch.Tensor
) -> tuple[torch.Tensor, bool]:
    """Solve (A + ``shift``·I) W = ``rhs (n, d)`` for a symmetric positive semi-definite
    ``operator`` A by conjugate gradients, each column on its own, from ``start (n, d)``;
    the solution and whether every column's residual fell to :data:`CG_TOLERANCE` of its
    right-hand side within :data:`CG_MAX_ITER` products."""

    def apply(vectors: torch.Tensor) -> torch.Tensor:
        return (operator @ vectors).add_(vectors, alpha=shift)

    solution = start.clone()
    residual = rhs - apply(solution)
    limit = CG_TOLERANCE**2 * (rhs**2).sum(dim=0).clamp(min=1e-300)
    direction = residual.clone()
    energy = (residual**2).sum(dim=0)
    for _ in range(CG_MAX_ITER):
        if bool((energy <= limit).all()):
            return solution, True
        product = apply(direction)
        step = energy / (direction * product).sum(dim=0).clamp(min=1e-300)
        solution += step * direction
        residual -= step * product
        new_energy = (residual**2).sum(dim=0)
        direction = residual + (new_energy / energy.clamp(min=1e-300)) * direction
        energy = new_energy
    return solution, bool((energy <= limit).all())


def fit_mask_baselines(
    train: Iterable[Rows], val: Iterable[Rows], n: int, d: int, grid: Sequence[float] = RIDGE_GRID
) -> tuple[MeanParams, MaskRidge]:
    """The mean θ and the ridge on the mask from blocks of training rows, the ridge
    strength chosen on blocks of validation rows among those whose solve converged; ``n``
    points, ``d`` parameters."""
    sums: Sums | None = None
    for rows in train:
        if sums is None:  # a shift near the parameters keeps their sums of squares exact
            shift = torch.as_tensor(rows.params, dtype=torch.float64).mean(dim=0)
            sums = Sums.zeros(n, shift, gram=True)
        sums.add(rows.masks, rows.params)
    if sums is None or sums.count == 0:
        raise ValueError("no training rows to fit the baselines on")
    path = RidgePath.of(sums, grid)
    totals, count = torch.zeros(len(path.alphas), dtype=torch.float64), 0
    for rows in val:
        theta = rows.params.astype(np.float64)
        for k, predicted in enumerate(path.predict_all(rows.masks).numpy()):
            totals[k] += relative_errors(predicted, theta).sum()
        count += len(rows)
    if count == 0:
        raise ValueError("no validation rows to choose the ridge strength on")
    errors = np.where(path.converged, (totals / count).numpy(), np.inf)
    best = int(np.argmin(errors))
    val_errors = dict(zip(path.alphas.tolist(), errors.tolist(), strict=True))
    weights, bias = path.solution(best)
    ridge = MaskRidge(weights, bias, float(path.alphas[best]), val_errors)
    return MeanParams(path.theta_mean, n), ridge


def fit_store_baselines(
    store: ExperimentStore, val_fraction: float, test_fraction: float
) -> tuple[MeanParams, MaskRidge]:
    """:func:`fit_mask_baselines` on the store's training and validation rows, split as
    by the given shares (the config's ``splits`` section)."""
    fractions = (val_fraction, test_fraction)
    spec = store.spec
    try:
        return fit_mask_baselines(
            split_blocks(store, TRAIN, *fractions),
            split_blocks(store, VAL, *fractions),
            spec.n_train,
            spec.n_params,
        )
    except ValueError as err:
        raise ValueError(f"store {store.uri} has {err}") from None
