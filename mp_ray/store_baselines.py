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
block at a time (:func:`~mp_ray.store.rows.split_blocks`): :class:`NormalEquations`
sums Σ a aᵀ ``(n+1, n+1)`` and Σ a θᵀ ``(n+1, d)`` over rows a = [1_S, 1] in float64, and
one eigendecomposition of the centred Gram matrix serves every α of the grid. Memory is
bounded by n², n·d and one block of rows, never by the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.baselines import ConstantParams
from mp_ray.methods import Masks, check_masks
from mp_ray.scores import relative_errors
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import TRAIN, VAL, Rows, split_blocks

RIDGE_GRID = tuple(10.0 ** np.arange(-4.0, 2.5, 0.5))  # × the centred Gram's mean eigenvalue


class MeanParams(ConstantParams):
    """The mean θ of the training rows, whatever the subset."""

    name = "mean θ"


class MaskRidge:
    """θ̂(S) = Wᵀ1_S + b from ``weights (n, d)`` and ``bias (d,)``; ``alpha`` is its ridge
    strength and ``val_errors`` the validation relative error of each strength tried."""

    name = "ridge on the mask"

    def __init__(
        self, weights: np.ndarray, bias: np.ndarray, alpha: float, val_errors: dict[float, float]
    ) -> None:
        self.weights = torch.as_tensor(weights)
        self.bias = torch.as_tensor(bias)
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
class NormalEquations:
    """Sums over rows a = [1_S, 1] with parameters θ: ``gram`` = Σ a aᵀ ``(n+1, n+1)`` and
    ``cross`` = Σ a θᵀ ``(n+1, d)``, float64 (the last row counts rows and sums θ)."""

    gram: np.ndarray
    cross: np.ndarray

    @classmethod
    def zeros(cls, n: int, d: int) -> NormalEquations:
        return cls(np.zeros((n + 1, n + 1)), np.zeros((n + 1, d)))

    @property
    def count(self) -> int:
        return round(self.gram[-1, -1])

    def add(self, masks: np.ndarray, params: np.ndarray) -> None:
        """Add the rows ``masks (B, n)`` with their parameters ``params (B, d)``."""
        a = np.hstack([masks, np.ones((len(masks), 1))])
        self.gram += a.T @ a
        self.cross += a.T @ params.astype(np.float64)

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean mask ``(n,)`` and mean θ ``(d,)`` of the rows added."""
        return self.gram[:-1, -1] / self.count, self.cross[-1] / self.count

    def ridge_path(self, grid: Sequence[float]) -> RidgePath:
        """The ridge fits for α = each ``grid`` value times the mean eigenvalue of the
        centred Gram matrix."""
        mask_mean, theta_mean = self.means()
        gram = self.gram[:-1, :-1] - self.count * np.outer(mask_mean, mask_mean)
        cross = self.cross[:-1] - self.count * np.outer(mask_mean, theta_mean)
        eigenvalues, vectors = np.linalg.eigh(gram)
        eigenvalues = eigenvalues.clip(min=0)  # rounding below zero
        scale = float(eigenvalues.mean()) or 1.0  # masks that never vary: W = 0 for any α
        alphas = scale * np.asarray(grid, dtype=np.float64)
        return RidgePath(mask_mean, theta_mean, eigenvalues, vectors, vectors.T @ cross, alphas)


@dataclass
class RidgePath:
    """Ridge fits for each strength of ``alphas (G,)`` from the eigendecomposition
    V diag(λ) Vᵀ of the centred Gram matrix (``vectors (n, n)``, ``eigenvalues (n,)``):
    W_α = V diag(1/(λ + α)) ``projected``, b_α = θ̄ − W_αᵀ m̄, where ``projected`` ``(n, d)``
    is Vᵀ Σ (m − m̄)(θ − θ̄)ᵀ and m̄ ``(n,)``, θ̄ ``(d,)`` are the mean mask and θ. No W_α
    is formed until :meth:`solution`: predictions go through the spectral coordinates."""

    mask_mean: np.ndarray
    theta_mean: np.ndarray
    eigenvalues: np.ndarray
    vectors: np.ndarray
    projected: np.ndarray
    alphas: np.ndarray

    def spectral(self, masks: np.ndarray) -> np.ndarray:
        """(m − m̄)ᵀV for each row of ``masks (B, n)``, ``(B, n)``."""
        return (masks - self.mask_mean) @ self.vectors

    def predict(self, spectral: np.ndarray, k: int) -> np.ndarray:
        """θ̂ ``(B, d)`` at the ``k``-th strength from :meth:`spectral` coordinates."""
        return (spectral / (self.eigenvalues + self.alphas[k])) @ self.projected + self.theta_mean

    def solution(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """W ``(n, d)`` and b ``(d,)`` at the ``k``-th strength."""
        weights = self.vectors @ (self.projected / (self.eigenvalues + self.alphas[k])[:, None])
        return weights, self.theta_mean - self.mask_mean @ weights


def fit_mask_baselines(
    train: Iterable[Rows], val: Iterable[Rows], n: int, d: int, grid: Sequence[float] = RIDGE_GRID
) -> tuple[MeanParams, MaskRidge]:
    """The mean θ and the ridge on the mask from blocks of training rows, the ridge
    strength chosen on blocks of validation rows; ``n`` points, ``d`` parameters."""
    equations = NormalEquations.zeros(n, d)
    for rows in train:
        equations.add(rows.masks, rows.params)
    if equations.count == 0:
        raise ValueError("no training rows to fit the baselines on")
    path = equations.ridge_path(grid)
    totals, count = np.zeros(len(path.alphas)), 0
    for rows in val:
        spectral, theta = path.spectral(rows.masks), rows.params.astype(np.float64)
        for k in range(len(path.alphas)):
            totals[k] += relative_errors(path.predict(spectral, k), theta).sum()
        count += len(rows)
    if count == 0:
        raise ValueError("no validation rows to choose the ridge strength on")
    errors = totals / count
    best = int(np.argmin(errors))
    val_errors = dict(zip(path.alphas.tolist(), errors.tolist(), strict=True))
    ridge = MaskRidge(*path.solution(best), float(path.alphas[best]), val_errors)
    return MeanParams(torch.as_tensor(equations.means()[1]), n), ridge


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
