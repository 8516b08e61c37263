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

Nothing here holds the rows: every step takes the sums of the training and validation rows
(:mod:`mp_ray.datamodels.sums`), gathered window by window, as a :class:`Problem` — their
moments and the validation error they give, or, past the memory budget, their Gram-free
counterparts that stream the store (:mod:`mp_ray.datamodels.streamed`). Memory is at most
the two summed (n, n) Gram matrices, of the training and of the validation rows (none for
the Gram-free solver), whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mp_ray.config import DatamodelsConfig
from mp_ray.datamodels.solver import GramOperator, Moments, Standardisation, lasso, lipschitz
from mp_ray.datamodels.sums import Centred, MomentsValidation, Sums
from mp_ray.methods import Masks, check_masks

PROGRESS_BLOCKS = 10  # blocks of targets at least, so that progress shows as they finish
MIN_BLOCK = 64  # targets: smaller blocks would only add passes over the Gram matrix
WINDOW = 4096  # rows of in-memory arrays summed at a time


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

    @classmethod
    def concatenate(cls, parts: Sequence[Datamodels]) -> Datamodels:
        """The datamodels of ``parts``' targets, in order."""
        # Every array has the targets on its last axis except the weights (T, n).
        weights = np.concatenate([part.weights for part in parts])
        rest = (
            np.concatenate([getattr(part, name) for part in parts], axis=-1)
            for name in ("bias", "lam", "val_mse", "val_path", "lambdas")
        )
        return cls(weights, *rest)


def solver_device(config: DatamodelsConfig) -> torch.device:
    """The device the solver runs on: ``config.device``, with ``auto`` picking a GPU."""
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("datamodels.device is 'cuda' but no GPU is visible to this process")
    return torch.device(config.device)


class ValidationError(Protocol):
    """The mean squared error on the validation rows of path weights."""

    def __call__(
        self, weights: torch.Tensor, offset: torch.Tensor, columns: torch.Tensor
    ) -> torch.Tensor:
        """Errors ``(A,)`` of ``weights (n, A)`` (the training rows' standardised units) with
        ``offset (A,)``, fitted to the targets ``columns (A,)``."""
        ...


@dataclass
class Design:
    """Some rows as the solver sees them: their columns' standardisation, the Lasso moments
    of every target on them, and the solver's step 1/L."""

    standardisation: Standardisation
    moments: Moments
    step: float

    @classmethod
    def of(
        cls, rows: Centred, operator: Callable[[Standardisation], GramOperator] | None = None
    ) -> Design:
        """From the rows' statistics; where they hold no Gram matrix, ``operator`` makes the
        operator that stands for it in the rows' standardisation."""
        standardisation = rows.standardisation()
        gram = None if operator is None else operator(standardisation)
        moments = rows.moments(standardisation, gram)
        return cls(standardisation, moments, 1.0 / lipschitz(moments))


@dataclass
class Problem:
    """What fitting needs: the training rows (the λ path), the validation error, and the
    training + validation rows (the refit)."""

    path: Design
    validation: ValidationError
    refit: Design

    @classmethod
    def of_sums(cls, train: Sums, val: Sums) -> Problem:
        """From the sums, Gram matrices included, of the training and validation rows: every
        step reads their two Gram matrices (the refit both), none copies them."""
        refit = Design.of((train + val).centred())
        path = Design.of(train.centred())
        return cls(path, MomentsValidation(val.centred(), path.standardisation), refit)

    @property
    def n_targets(self) -> int:
        return int(self.path.moments.corr.shape[1])


def fit_problem(
    problem: Problem,
    config: DatamodelsConfig,
    on_progress: Callable[[int], None] | None = None,
    block: int | None = None,
) -> Datamodels:
    """Datamodels of every target of ``problem`` (see the module docstring), solved in blocks
    of ``block`` targets (each target alone: the blocks do not change the answer); by default
    at most ``config.target_block``, and about ``PROGRESS_BLOCKS`` blocks when there are
    many, so that ``on_progress`` is called with each block's number of targets as it is
    fitted."""
    n_targets = problem.n_targets
    if block is None:
        block = min(config.target_block, max(MIN_BLOCK, -(-n_targets // PROGRESS_BLOCKS)))
    device = problem.path.moments.corr.device
    parts = []
    for start in range(0, n_targets, block):
        columns = torch.arange(start, min(start + block, n_targets), device=device)
        best = _solve_path(problem.path, problem.validation, columns, config)
        parts.append(_refit(problem.refit, columns, best, problem.path.standardisation, config))
        if on_progress is not None:
            on_progress(len(columns))
    return Datamodels.concatenate(parts)


def fit_datamodels(
    train_masks: np.ndarray,
    train_outputs: np.ndarray,
    val_masks: np.ndarray,
    val_outputs: np.ndarray,
    config: DatamodelsConfig,
    on_progress: Callable[[int], None] | None = None,
) -> Datamodels:
    """Datamodels for every column of the outputs ``(m, T)`` from 0/1 masks ``(m, n)`` held
    in memory: their sums (:mod:`mp_ray.datamodels.sums`) added ``WINDOW`` rows at a time,
    then :func:`fit_problem`."""
    _check_rows(train_masks, train_outputs, "training")
    _check_rows(val_masks, val_outputs, "validation")
    if val_masks.shape[1] != train_masks.shape[1] or val_outputs.shape[1] != train_outputs.shape[1]:
        raise ValueError("training and validation rows differ in points or targets")
    device = solver_device(config)
    shift = torch.as_tensor(train_outputs[:WINDOW], dtype=torch.float64, device=device).mean(0)
    train, val = (
        _array_sums(masks, outputs, shift)
        for masks, outputs in ((train_masks, train_outputs), (val_masks, val_outputs))
    )
    return fit_problem(Problem.of_sums(train, val), config, on_progress)


def _array_sums(masks: np.ndarray, outputs: np.ndarray, shift: torch.Tensor) -> Sums:
    sums = Sums.zeros(masks.shape[1], shift, gram=True)
    for start in range(0, len(masks), WINDOW):
        sums.add(masks[start : start + WINDOW], outputs[start : start + WINDOW])
    return sums


def _check_rows(masks: np.ndarray, outputs: np.ndarray, what: str) -> None:
    if masks.ndim != 2 or outputs.ndim != 2 or len(masks) != len(outputs):
        raise ValueError(
            f"{what} rows: masks must be (m, n) and outputs (m, T) with the same m, got "
            f"{masks.shape} and {outputs.shape}"
        )
    if len(masks) < 2:
        raise ValueError(f"{what} rows: need at least 2 rows, got {len(masks)}")
    if masks.dtype != bool and not ((masks == 0) | (masks == 1)).all():
        raise ValueError(f"{what} rows: masks must hold 0 and 1 only")
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


def _solve_path(
    design: Design, validation: ValidationError, columns: torch.Tensor, cfg: DatamodelsConfig
) -> _PathResult:
    """The λ path of the targets ``columns`` on the training rows, scored on the validation
    rows."""
    moments = design.moments.columns(columns)
    dtype, device = moments.corr.dtype, moments.corr.device
    ratios = torch.logspace(
        0, np.log10(cfg.lambda_min_ratio), cfg.n_lambdas, dtype=dtype, device=device
    )
    lambdas = ratios[:, None] * moments.lambda_max()[None, :]  # (K, T)
    n, n_targets = moments.corr.shape
    weights = torch.zeros(n, n_targets, dtype=dtype, device=device)
    best = weights.clone()
    best_mse = torch.full((n_targets,), torch.inf, dtype=dtype, device=device)
    best_lam = lambdas[0].clone()
    val_path = torch.full_like(lambdas, torch.nan)
    stale = torch.zeros(n_targets, dtype=torch.long, device=device)
    on_path = torch.arange(n_targets, device=device)
    for k in range(cfg.n_lambdas):
        part = moments.columns(on_path)
        solved = lasso(
            part, lambdas[k, on_path], weights[:, on_path], cfg.tol, cfg.max_iter, design.step
        ).weights
        weights[:, on_path] = solved
        mse = validation(solved, part.offset, columns[on_path])
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


def _refit(
    design: Design,
    columns: torch.Tensor,
    best: _PathResult,
    path_standardisation: Standardisation,
    cfg: DatamodelsConfig,
) -> Datamodels:
    """The chosen λ of the targets ``columns`` refitted on training + validation rows."""
    mine = design.standardisation
    moments = design.moments.columns(columns)
    # Warm start: the path's solution, moved to this standardisation's units.
    start = best.weights / path_standardisation.scale[:, None] * mine.scale[:, None]
    start = start * mine.informative[:, None]
    scaled = lasso(moments, best.lam, start, cfg.tol, cfg.max_iter, design.step).weights
    raw = (scaled * mine.informative[:, None] / mine.scale[:, None]).T  # (T, n)
    bias = moments.offset - raw @ mine.mean
    arrays = (raw.to(torch.float32), bias, best.lam, best.val_mse, best.val_path, best.lambdas)
    return Datamodels(*(array.cpu().numpy() for array in arrays))
