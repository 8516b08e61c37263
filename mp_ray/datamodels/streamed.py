"""Passes over a store's rows for the datamodels of some of its targets, one row window (at
most one block, :meth:`~mp_ray.store.experiment.ExperimentStore.iter_rows`) at a time.

- :func:`sum_splits` — the one pass every fit starts with: the sums of the training and
  validation rows (:class:`~mp_ray.datamodels.sums.Sums`, the masks' Gram matrix included
  or not) and the row ids of each split.
- :func:`streamed_problem` — the Gram-free solver, for ground sets whose n × n matrices
  exceed the memory budget: :class:`StreamedGram` forms each product G·W in a pass over the
  rows (full-gradient proximal steps summed window by window: the same FISTA, duality-gap
  stop, validation choice and refit as the moments solver, at the cost of a pass per
  gradient; the step's estimate of G's largest eigenvalue takes a few dozen passes at most,
  :func:`~mp_ray.datamodels.solver.lipschitz`), and :class:`StreamedValidation` scores path
  weights in a pass over the validation rows.
- :func:`held_out_correlations` — Spearman's ρ per target between predicted and retrained
  outputs on the test rows, predicted window by window (the masks are never gathered).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.config import SplitsConfig
from mp_ray.datamodels.fit import Datamodels, Design, Problem
from mp_ray.datamodels.solver import Standardisation
from mp_ray.datamodels.sums import Sums
from mp_ray.scores import columnwise_correlation
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import TEST, TRAIN, VAL, usable_splits


@dataclass
class SplitSums:
    """The training and validation rows' sums over some targets, and the row ids ``(M,)`` of
    each split (TRAIN, VAL, TEST; degenerate rows in none)."""

    train: Sums
    val: Sums
    rows: dict[int, np.ndarray]


def sum_splits(
    store: ExperimentStore,
    splits: SplitsConfig,
    targets: slice,
    gram: bool,
    device: torch.device,
) -> SplitSums:
    """One pass over every row of ``store``: the sums of the ``targets`` (with the masks' Gram
    matrix when ``gram``) over the training and validation rows. The outputs are shifted by
    their mean over the first window's rows."""
    sums: dict[int, Sums] = {}
    ids: dict[int, list[np.ndarray]] = {TRAIN: [], VAL: [], TEST: []}
    fractions = (splits.val_fraction, splits.test_fraction)
    for window in store.iter_rows(("masks", "outputs", "metrics")):
        codes = usable_splits(store, window.rows, window["metrics"], *fractions)
        outputs = window["outputs"][:, targets]
        if not sums:
            shift = torch.as_tensor(outputs, dtype=torch.float64, device=device).mean(dim=0)
            sums = {split: Sums.zeros(store.spec.n_train, shift, gram) for split in (TRAIN, VAL)}
        for split, rows in ids.items():
            keep = codes == split
            rows.append(window.rows[keep])
            if split in sums:
                sums[split].add(window["masks"][keep], outputs[keep])
    if not sums:
        raise ValueError(f"store {store.uri} has no completed rows")
    return SplitSums(sums[TRAIN], sums[VAL], {split: np.concatenate(r) for split, r in ids.items()})


class StreamedGram:
    """G = XᵀX/m of the standardised masks of ``rows`` (m of them), never held: each product
    is a pass over the rows (:class:`~mp_ray.datamodels.solver.GramOperator`). ``passes``
    counts them."""

    def __init__(
        self,
        store: ExperimentStore,
        rows: np.ndarray,
        standardisation: Standardisation,
        device: torch.device,
    ) -> None:
        self.store, self.rows = store, rows
        self.standardisation, self.device = standardisation, device
        self.passes = 0

    def __matmul__(self, weights: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(weights)
        for window in self.store.iter_rows(("masks",), self.rows):
            X = _standardised(window["masks"], self.standardisation, self.device)
            total += X.T @ (X @ weights)
        self.passes += 1
        return total / len(self.rows)


class StreamedValidation:
    """The validation error of path weights (:class:`~mp_ray.datamodels.fit.ValidationError`)
    in a pass over the validation ``rows`` of the store's ``targets``."""

    def __init__(
        self,
        store: ExperimentStore,
        rows: np.ndarray,
        targets: slice,
        standardisation: Standardisation,
        device: torch.device,
    ) -> None:
        self.store, self.rows, self.targets = store, rows, targets
        self.standardisation, self.device = standardisation, device

    def __call__(
        self, weights: torch.Tensor, offset: torch.Tensor, columns: torch.Tensor
    ) -> torch.Tensor:
        total = torch.zeros(len(columns), dtype=torch.float64, device=self.device)
        for window in self.store.iter_rows(("masks", "outputs"), self.rows):
            X = _standardised(window["masks"], self.standardisation, self.device)
            outputs = window["outputs"][:, self.targets]
            Y = torch.as_tensor(outputs, device=self.device).to(torch.float64)[:, columns]
            total += ((Y - X @ weights - offset) ** 2).sum(dim=0)
        return total / len(self.rows)


def _standardised(
    masks: np.ndarray, standardisation: Standardisation, device: torch.device
) -> torch.Tensor:
    return standardisation.apply(torch.as_tensor(masks, device=device).to(torch.float64))


def streamed_problem(
    store: ExperimentStore, sums: SplitSums, targets: slice, device: torch.device
) -> Problem:
    """The fitting problem of :func:`sum_splits`' targets without Gram matrices (sums taken
    with ``gram=False``): every product with G and every validation error is a pass."""
    train, val = sums.rows[TRAIN], sums.rows[VAL]
    both = np.concatenate([train, val])  # iter_rows reads them in row order
    path = Design.of(sums.train.centred(), lambda s: StreamedGram(store, train, s, device))
    return Problem(
        path,
        StreamedValidation(store, val, targets, path.standardisation, device),
        Design.of(
            (sums.train + sums.val).centred(), lambda s: StreamedGram(store, both, s, device)
        ),
    )


def held_out_correlations(
    store: ExperimentStore, rows: np.ndarray, datamodels: Datamodels, targets: slice
) -> np.ndarray:
    """Spearman's ρ per target ``(T,)`` between the outputs ``datamodels`` predict for the
    masks of ``rows`` and their retrained outputs (NaN where either is constant)."""
    predicted, actual = [], []
    for window in store.iter_rows(("masks", "outputs"), rows):
        predicted.append(datamodels.outputs(window["masks"]))
        actual.append(window["outputs"][:, targets])
    return columnwise_correlation(np.concatenate(predicted), np.concatenate(actual))
