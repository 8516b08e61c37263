"""Fitting linear datamodels along a regularisation path, all targets of a block at once.

For each target t, on the training rows (masks M (m, n), outputs y_t (m,)):

1. columns standardised on the training rows; λ path λ_max,t · r^k, k = 0…K−1, geometric
   from λ_max,t (all weights 0) down to ``lambda_min_ratio`` · λ_max,t;
2. every target of the block solved at its own λ by :func:`~mp_ray.datamodels.solver.lasso`,
   warm-started from the previous λ, then scored by its mean squared error on the
   validation rows; a target leaves the path after ``path_patience`` λ's without a new
   validation minimum (as ``fast_l1`` stops early);
3. the λ with the lowest validation error is refitted on training + validation rows (as
   scikit-learn's ``LassoCV`` refits), with columns standardised on those rows.

The result is stored in raw mask units: g_t(1_S) = weights[t] · 1_S + bias[t].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.config import DatamodelsConfig
from mp_ray.datamodels.solver import Moments, Standardisation, lasso, lipschitz
from mp_ray.methods import Masks, check_masks

PROGRESS_BLOCKS = 10  # blocks of targets at least, so that progress shows as they finish
MIN_BLOCK = 64  # targets: smaller blocks would only add passes over the Gram matrix


@dataclass
class Datamodels:
    """Linear datamodels of T targets over n training points.

    ``weights (T, n)`` and ``bias (T,)`` in raw mask units; ``lam (T,)`` the chosen λ (in
    standardised units, as scikit-learn's ``Lasso(alpha=λ)`` on standardised columns);
    ``val_mse (T,)`` the validation error at that λ; ``val_path (K, T)`` the validation
    error along the path (NaN after a target left it); ``lambdas (K, T)`` the path.
    """

    weights: np.ndarray
    bias: np.ndarray
    lam: np.ndarray
    val_mse: np.ndarray
    val_path: np.ndarray
    lambdas: np.ndarray

    @property
    def n_targets(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_train(self) -> int:
        return int(self.weights.shape[1])

    def outputs(self, masks: Masks) -> np.ndarray:
        """Predicted outputs of the models trained on ``masks (B, n)``, ``(B, T)`` float64."""
        masks = check_masks(masks, self.n_train).cpu().numpy()
        return masks.astype(np.float64) @ self.weights.T.astype(np.float64) + self.bias


def solver_device(config: DatamodelsConfig) -> torch.device:
    """The device the solver runs on: ``config.device``, with ``auto`` picking a GPU."""
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("datamodels.device is 'cuda' but no GPU is visible to this process")
    return torch.device(config.device)


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), device=device).to(torch.float64)


def fit_datamodels(
    train_masks: np.ndarray,
    train_outputs: np.ndarray,
    val_masks: np.ndarray,
    val_outputs: np.ndarray,
    config: DatamodelsConfig,
    on_progress: Callable[[int], None] | None = None,
) -> Datamodels:
    """Datamodels for every column of the outputs ``(m, T)`` from masks ``(m, n)``; see the
    module docstring. Targets are solved in blocks of at most ``config.target_block``
    (each target alone: the blocks do not change the answer), and in about
    ``PROGRESS_BLOCKS`` blocks when there are many, so that ``on_progress`` is called with
    each block's number of targets as it is fitted."""
    _check_rows(train_masks, train_outputs, "training")
    _check_rows(val_masks, val_outputs, "validation")
    if val_masks.shape[1] != train_masks.shape[1] or val_outputs.shape[1] != train_outputs.shape[1]:
        raise ValueError("training and validation rows differ in points or targets")
    device = solver_device(config)
    X_train, X_val = _tensor(train_masks, device), _tensor(val_masks, device)
    Y_train, Y_val = _tensor(train_outputs, device), _tensor(val_outputs, device)
    X_all, Y_all = torch.cat([X_train, X_val]), torch.cat([Y_train, Y_val])

    path = _PathSolver(X_train, X_val, config)
    refit = _Refit(X_all, config)
    n_targets = Y_train.shape[1]
    size = min(config.target_block, max(MIN_BLOCK, -(-n_targets // PROGRESS_BLOCKS)))
    parts = []
    for start in range(0, n_targets, size):
        block = slice(start, min(start + size, n_targets))
        best = path.solve(Y_train[:, block], Y_val[:, block])
        parts.append(refit.solve(Y_all[:, block], best, path.design.standardisation))
        if on_progress is not None:
            on_progress(block.stop - block.start)
    # Every array has the targets on its last axis except the weights (T, n).
    weights, *rest = zip(*parts, strict=True)
    return Datamodels(np.concatenate(weights), *(np.concatenate(a, axis=-1) for a in rest))


def _check_rows(masks: np.ndarray, outputs: np.ndarray, what: str) -> None:
    if masks.ndim != 2 or outputs.ndim != 2 or len(masks) != len(outputs):
        raise ValueError(
            f"{what} rows: masks must be (m, n) and outputs (m, T) with the same m, got "
            f"{masks.shape} and {outputs.shape}"
        )
    if len(masks) < 2:
        raise ValueError(f"{what} rows: need at least 2 rows, got {len(masks)}")
    if not np.isfinite(outputs).all():
        raise ValueError(f"{what} rows: outputs contain NaN or infinite values")


@dataclass
class _PathResult:
    """The best point of each target's path: weights (n, T) in the training
    standardisation, λ (T,), validation errors at it (T,), along the path (K, T), and the
    path (K, T)."""

    weights: torch.Tensor
    lam: torch.Tensor
    val_mse: torch.Tensor
    val_path: torch.Tensor
    lambdas: torch.Tensor


@dataclass
class _Design:
    """Masks ``(m, n)`` standardised on themselves, with their Gram matrix and the solver's
    step 1/L, shared by every block of targets."""

    standardisation: Standardisation
    X: torch.Tensor
    gram: torch.Tensor
    step: float

    @classmethod
    def of(cls, masks: torch.Tensor) -> _Design:
        standardisation = Standardisation.of(masks)
        X = standardisation.apply(masks)
        gram = X.T @ X / X.shape[0]
        return cls(standardisation, X, gram, 1.0 / lipschitz(gram))

    def moments(self, Y: torch.Tensor) -> Moments:
        return Moments.of(self.X, Y, gram=self.gram)


class _PathSolver:
    """The λ path on the training rows, scored on the validation rows."""

    def __init__(self, X_train: torch.Tensor, X_val: torch.Tensor, config: DatamodelsConfig):
        self.config = config
        self.design = _Design.of(X_train)
        self.X_val = self.design.standardisation.apply(X_val)

    def solve(self, Y: torch.Tensor, Y_val: torch.Tensor) -> _PathResult:
        cfg = self.config
        moments = self.design.moments(Y)
        ratios = torch.logspace(
            0, np.log10(cfg.lambda_min_ratio), cfg.n_lambdas, dtype=Y.dtype, device=Y.device
        )
        lambdas = ratios[:, None] * moments.lambda_max()[None, :]  # (K, T)
        n, n_targets = moments.corr.shape
        weights = torch.zeros(n, n_targets, dtype=Y.dtype, device=Y.device)
        best = weights.clone()
        best_mse = torch.full((n_targets,), torch.inf, dtype=Y.dtype, device=Y.device)
        best_lam = lambdas[0].clone()
        val_path = torch.full_like(lambdas, torch.nan)
        stale = torch.zeros(n_targets, dtype=torch.long, device=Y.device)
        on_path = torch.arange(n_targets, device=Y.device)
        for k in range(cfg.n_lambdas):
            part = moments.columns(on_path)
            solved = lasso(
                part,
                lambdas[k, on_path],
                weights[:, on_path],
                cfg.tol,
                cfg.max_iter,
                self.design.step,
            ).weights
            weights[:, on_path] = solved
            predicted = self.X_val @ solved + part.offset
            mse = ((Y_val[:, on_path] - predicted) ** 2).mean(dim=0)
            val_path[k, on_path] = mse
            improved = mse < best_mse[on_path]
            winners = on_path[improved]
            best[:, winners] = solved[:, improved]
            best_mse[winners], best_lam[winners] = mse[improved], lambdas[k, winners]
            stale[winners] = 0
            stale[on_path[~improved]] += 1
            on_path = on_path[stale[on_path] < cfg.path_patience]
            if on_path.numel() == 0:
                break
        return _PathResult(best, best_lam, best_mse, val_path, lambdas)


class _Refit:
    """The chosen λ refitted on training + validation rows."""

    def __init__(self, X_all: torch.Tensor, config: DatamodelsConfig) -> None:
        self.config = config
        self.design = _Design.of(X_all)

    def solve(
        self, Y: torch.Tensor, best: _PathResult, path_standardisation: Standardisation
    ) -> tuple[np.ndarray, ...]:
        cfg, mine = self.config, self.design.standardisation
        moments = self.design.moments(Y)
        # Warm start: the path's solution, moved to this standardisation's units.
        start = best.weights / path_standardisation.scale[:, None] * mine.scale[:, None]
        start = start * mine.informative[:, None]
        scaled = lasso(moments, best.lam, start, cfg.tol, cfg.max_iter, self.design.step).weights
        raw = (scaled * mine.informative[:, None] / mine.scale[:, None]).T  # (T, n)
        bias = moments.offset - raw @ mine.mean
        return tuple(
            array.cpu().numpy()
            for array in (
                raw.to(torch.float32),
                bias,
                best.lam,
                best.val_mse,
                best.val_path,
                best.lambdas,
            )
        )
