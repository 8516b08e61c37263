"""The statistics of the store's training rows that the predictor's coordinates come from,
gathered in one streaming pass (a block at a time, merged in float64).

:func:`training_moments` reads the training rows of every block once and returns
:class:`TrainingMoments`: the row count, the mean and the sum of squared deviations of
each parameter, the output energy about the mean (for the output coordinates, when the
learner has an output metric) and the mean training mask m̄. Each block's statistics are
taken about the block's own mean and merged with Chan et al.'s pairwise update, so no
variance is formed as the difference of two large sums. The predictor's coordinates
(:meth:`TrainingMoments.scaler`) follow from the moments for any ``predictor.targets``,
so a hyperparameter search computes them once and hands them to every trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.config import SplitsConfig
from mp_ray.predictor.scaling import OutputScaler, Scaler, TargetScaler
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import TRAIN, split_blocks


@dataclass(frozen=True)
class TrainingMoments:
    """Moments of ``count`` training rows: per parameter the mean ``(d,)`` and the sum of
    squared deviations from it ``(d,)``, Σ_rows Σ_j ‖(θ_j − mean_j) · L‖² about the mean
    (None without an output ``factor`` L ``(p + 1, p + 1)``), and the summed masks
    ``(n,)``; all float64."""

    count: int
    mean: np.ndarray
    squares: np.ndarray
    output_energy: float | None
    factor: np.ndarray | None
    mask_total: np.ndarray

    @classmethod
    def empty(cls, n_params: int, n_train: int, factor: np.ndarray | None) -> TrainingMoments:
        """The moments of no rows."""
        return cls(
            0,
            np.zeros(n_params),
            np.zeros(n_params),
            None if factor is None else 0.0,
            factor,
            np.zeros(n_train),
        )

    @classmethod
    def of_rows(
        cls, masks: np.ndarray, params: np.ndarray, factor: np.ndarray | None
    ) -> TrainingMoments:
        """The moments of one block of rows: masks ``(K, n)`` bool, params ``(K, d)``."""
        params = params.astype(np.float64)
        mean = params.mean(axis=0) if len(params) else np.zeros(params.shape[1])
        deviations = params - mean
        energy = None if factor is None else OutputScaler.energy(deviations, factor)
        return cls(
            len(params),
            mean,
            (deviations**2).sum(axis=0),
            energy,
            factor,
            masks.sum(axis=0, dtype=np.float64),
        )

    def merged(self, other: TrainingMoments) -> TrainingMoments:
        """The moments of these rows and ``other``'s together (Chan et al.'s update)."""
        count = self.count + other.count
        if not self.count or not other.count:
            return other if not self.count else self
        shift = other.mean - self.mean
        weight = self.count * other.count / count
        energy = None
        if self.output_energy is not None and other.output_energy is not None:
            spread = OutputScaler.energy(shift[None], self.factor) * weight
            energy = self.output_energy + other.output_energy + spread
        return TrainingMoments(
            count,
            self.mean + shift * (other.count / count),
            self.squares + other.squares + shift**2 * weight,
            energy,
            self.factor,
            self.mask_total + other.mask_total,
        )

    @property
    def center(self) -> np.ndarray:
        """The mean training mask m̄ ``(n,)``."""
        return self.mask_total / max(self.count, 1)

    def scaler(self, targets: str) -> Scaler:
        """The coordinates of ``predictor.targets``: ``raw`` (identity), ``standardised``, or
        ``outputs`` (standardised when the learner has no output metric)."""
        if targets == "raw":
            return TargetScaler.identity(len(self.mean))
        if self.count <= 0:
            raise ValueError("cannot fit the target coordinates from zero rows")
        if targets == "outputs" and self.output_energy is not None and self.factor is not None:
            return OutputScaler.from_centred(
                self.mean, self.output_energy / self.count, self.factor
            )
        return TargetScaler.from_variance(self.mean, self.squares / self.count)


def training_moments(
    store: ExperimentStore, splits: SplitsConfig, metric: torch.Tensor | None
) -> TrainingMoments:
    """The moments of the training rows (of ``splits``), streamed block by block; with the
    learner's output ``metric`` ``(p + 1, p + 1)`` they include the output energy."""
    factor = None if metric is None else OutputScaler.factor_of(metric.numpy())
    moments = TrainingMoments.empty(store.spec.n_params, store.spec.n_train, factor)
    for rows in split_blocks(store, TRAIN, splits.val_fraction, splits.test_fraction):
        moments = moments.merged(TrainingMoments.of_rows(rows.masks, rows.params, factor))
    return moments
