"""Data utility learning: a DeepSets network fitted to U(S) itself, in place of retraining.

The data-valuation literature's usual surrogate (Wang et al., 2021, "data utility
learning"; "UtilityPred" in the ModelPred paper) and ModelPred's peer: where ModelPred
predicts the parameters θ(S) and scores them (:class:`~mp_ray.apps.utility.Utility`), this
learns the scalar utility of the retrained models directly:

    Û(S) = μ + σ · f(S)          f = SetFunction(element_dim, n_params=1)

f is ModelPred's DeepSets network (:class:`~mp_ray.predictor.model.SetFunction`, one output,
centred on the mean training mask m̄) over the same elements z_i = [x_i, onehot(y_i)]; μ and
σ are the mean and standard deviation of U over the training rows, so f fits the
standardised utility (U − μ)/σ.

Targets: each store row's retrained model scored on the dataset's validation split, read
from the store's ``metrics``: ``neg_loss`` is −``val_loss`` (minus the mean validation
loss: nats for cross-entropy), ``accuracy`` is ``val_accuracy`` (a share in [0, 1];
``val_r2`` for regression) — what :class:`~mp_ray.apps.utility.Utility` computes on
``(X_val, y_val)`` with the same metric. Rows fall in train / validation / test exactly as
for the predictor (:func:`~mp_ray.store.rows.row_splits` with the same fractions), and
rows flagged ``degenerate`` are left out.

Fitting reads the store one block at a time, never whole: one pass over the training rows
for μ, σ and m̄; then Adam steps of ``batch_size`` rows on the mean squared error in
standardised units, the learning rate annealed from ``lr`` to 0 by a cosine over ``steps``
(the predictor's schedule). Each pass over the training rows visits the blocks in a random
order and a block's training rows in a random order (a block's last batch may be short).
Every ``eval_every`` steps the validation MSE (standardised units) is computed over the
validation rows, block by block; the network with the lowest is kept, and fitting stops
after ``patience`` validations without improvement. Initialisation and order come from
``seed`` alone.

Answering: ``masks (B, n) → Û (B,)`` float64, one ``Φ = φ(Z)`` for all batches. Subsets
with no optimum (empty, or missing a class) get the utility of the learner's fallback θ = 0,
as every :class:`~mp_ray.apps.models.SubsetModels` answers them, so U(∅) is the same as
retraining's. A :class:`LearnedUtility` is a :class:`~mp_ray.apps.utility.SubsetUtility`:
the valuation estimators (:func:`~mp_ray.apps.valuation.tmc_shapley`, …) take it where they
take a :class:`~mp_ray.apps.utility.Utility`.

Shapes: n ground-set points, e element features, B subsets per call.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.apps.models import RetrainedModels
from mp_ray.apps.utility import Metric, Utility, check_metric
from mp_ray.config import LearnerConfig
from mp_ray.data import Dataset
from mp_ray.learners import Learner, make_learner
from mp_ray.methods import Masks, check_masks
from mp_ray.predictor.model import SetFunction, element_features
from mp_ray.store import ExperimentStore, StoreIncompleteError, StoreMismatchError
from mp_ray.store.rows import TRAIN, VAL, block_split

PREDICT_CHUNK = 4096  # subsets per forward pass when answering


def metric_column(metric: Metric, task: str) -> tuple[str, float]:
    """The store's metrics column that holds the utility ``metric`` of each row for a
    ``task`` ("classification" or "regression"), and its sign: U = sign · column."""
    check_metric(metric)
    if metric == "neg_loss":
        return "val_loss", -1.0
    return ("val_accuracy" if task == "classification" else "val_r2"), 1.0


@dataclass(frozen=True)
class UtilityFitReport:
    """How a fit went: rows used, steps taken, the best validation MSE (standardised
    units, i.e. a share of the training rows' variance of U), its step, and seconds."""

    train_rows: int
    val_rows: int
    steps: int
    best_step: int
    best_val_mse: float
    seconds: float


@dataclass
class _Fitted:
    """What answering needs: the network, φ of the elements ``(n, w)``, the learner (for
    degenerate subsets), μ and σ of the training utilities, and U at θ = 0."""

    network: SetFunction
    phi: torch.Tensor
    learner: Learner
    mean: float
    std: float
    fallback: float
    report: UtilityFitReport


class LearnedUtility:
    """Û(S), a DeepSets network fitted to the store's utilities; see the module docstring.

    ``width`` is the network's (φ and ρ, as the predictor's); ``steps`` the budget in Adam
    steps of ``batch_size`` rows at learning rate ``lr`` (cosine-annealed); validation
    every ``eval_every`` steps, stopping after ``patience`` without improvement; ``seed``
    fixes the initialisation and the row order. :meth:`fit` before calling."""

    def __init__(
        self,
        metric: Metric = "neg_loss",
        *,
        width: int = 128,
        steps: int = 5000,
        batch_size: int = 128,
        lr: float = 3e-3,
        eval_every: int = 250,
        patience: int = 8,
        seed: int = 0,
    ) -> None:
        check_metric(metric)
        if min(width, steps, batch_size, eval_every, patience) < 1 or lr <= 0:
            raise ValueError(
                "width, steps, batch_size, eval_every and patience must be ≥ 1 and lr > 0"
            )
        self.metric = metric
        self.width = width
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.eval_every = eval_every
        self.patience = patience
        self.seed = seed
        self.evaluations = 0  # subsets scored so far
        self._fitted: _Fitted | None = None

    def _state(self) -> _Fitted:
        if self._fitted is None:
            raise RuntimeError("LearnedUtility is not fitted: call fit(store, dataset, ...)")
        return self._fitted

    @property
    def n_train(self) -> int:
        return int(self._state().phi.shape[0])

    @property
    def report(self) -> UtilityFitReport:
        """How the fit went (rows, steps, best validation MSE, seconds)."""
        return self._state().report

    def __call__(self, masks: Masks) -> np.ndarray:
        """Û(S) for each row of ``masks (B, n)``, float64 ``(B,)`` in the metric's units."""
        fitted = self._state()
        masks = check_masks(masks, self.n_train)
        self.evaluations += len(masks)
        values = torch.empty(len(masks), dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, len(masks), PREDICT_CHUNK):
                chunk = masks[start : start + PREDICT_CHUNK]
                values[start : start + len(chunk)] = _standardised(
                    fitted.network, chunk, fitted.phi
                ).double()
        values = fitted.mean + fitted.std * values
        values[fitted.learner.degenerate(masks).cpu()] = fitted.fallback
        return values.numpy()

    def fit(
        self,
        store: ExperimentStore,
        dataset: Dataset,
        *,
        val_fraction: float,
        test_fraction: float,
    ) -> LearnedUtility:
        """Fit on the training rows of ``store`` (a complete store over ``dataset``, split
        with the predictor's ``val_fraction`` and ``test_fraction``), stopping early on its
        validation rows; returns ``self``. Refused (ValueError) when the store has no column
        for the metric, was made over another dataset, is incomplete, or lacks training or
        validation rows."""
        start = time.perf_counter()
        column, sign = metric_column(self.metric, dataset.task)
        names = store.spec.metric_names
        if column not in names or "degenerate" not in names:
            missing = column if column not in names else "degenerate"
            raise ValueError(
                f"store {store.uri} has no {missing!r} metric column, which the "
                f"{self.metric!r} utility is learned from; its columns: {', '.join(names)}"
            )
        if store.spec.dataset_fingerprint != dataset.fingerprint:
            raise StoreMismatchError(
                f"store {store.uri} was made over another dataset than {dataset.name!r} "
                "(fingerprints differ)"
            )
        pending = store.pending_blocks()
        if pending:
            raise StoreIncompleteError(
                f"store {store.uri} has {len(pending)} unfinished blocks; run `mp-ray retrain` "
                "first"
            )
        reader = _TargetReader(store, column, sign, val_fraction, test_fraction)
        count, total, total_sq = 0, 0.0, 0.0
        mask_total, train_blocks = np.zeros(store.spec.n_train), []
        for block in range(store.n_blocks):
            for masks, values in reader.blocks(TRAIN, [block]):
                count += len(values)
                total += float(values.sum())
                total_sq += float((values**2).sum())
                mask_total += masks.sum(axis=0)
                train_blocks.append(block)
        val_rows = sum(len(values) for _, values in reader.blocks(VAL))
        if count < 2 or val_rows == 0:
            raise ValueError(
                f"store {store.uri} has {count} training and {val_rows} validation rows for "
                "the learned utility; it needs at least 2 and 1 (more rows, or other fractions)"
            )
        mean = total / count
        std = math.sqrt(max(total_sq / count - mean**2, 0.0)) or 1.0

        elements = element_features(dataset.X_train, dataset.y_train, dataset.n_classes)
        center = torch.as_tensor(mask_total / count, dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            network = SetFunction(elements.shape[1], 1, self.width, center)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)
        rng = np.random.default_rng(self.seed)
        batches = _batches(reader, train_blocks, self.batch_size, rng)
        best = (math.inf, 0, copy.deepcopy(network.state_dict()))
        bad, step = 0, 0
        while step < self.steps and bad < self.patience:
            masks, values = next(batches)
            for group in optimizer.param_groups:
                group["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * step / self.steps))
            target = torch.as_tensor((values - mean) / std, dtype=torch.float32)
            predicted = network(torch.as_tensor(masks, dtype=torch.float32), elements)[:, 0]
            loss = torch.nn.functional.mse_loss(predicted, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % self.eval_every and step < self.steps:
                continue
            val_mse = _mse(network, elements, reader.blocks(VAL), mean, std, val_rows)
            if val_mse < best[0]:
                best, bad = (val_mse, step, copy.deepcopy(network.state_dict())), 0
            else:
                bad += 1
        network.load_state_dict(best[2])
        network.eval()
        with torch.no_grad():
            phi = network.embed(elements)
        learner = make_learner(
            LearnerConfig.from_record(store.spec.learner),
            dataset.X_train,
            dataset.y_train,
            dataset.n_classes,
        )
        fallback_utility = Utility(
            RetrainedModels(learner), dataset.X_val, dataset.y_val, self.metric
        )
        fallback = float(fallback_utility.of_params(torch.zeros(1, learner.n_params))[0])
        report = UtilityFitReport(
            train_rows=count,
            val_rows=val_rows,
            steps=step,
            best_step=best[1],
            best_val_mse=best[0],
            seconds=time.perf_counter() - start,
        )
        self._fitted = _Fitted(network, phi, learner, mean, std, fallback, report)
        return self


class _TargetReader:
    """The masks and utilities of one split's non-degenerate rows, one store block at a
    time."""

    def __init__(
        self,
        store: ExperimentStore,
        column: str,
        sign: float,
        val_fraction: float,
        test_fraction: float,
    ) -> None:
        self.store = store
        self.column = store.spec.metric_names.index(column)
        self.sign = sign
        self.fractions = (val_fraction, test_fraction)

    def blocks(
        self, split: int, blocks: Iterable[int] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``masks (M, n)`` bool and utilities ``(M,)`` float64 of the rows of ``split`` in
        each of ``blocks`` (every block when None) that has any."""
        store = self.store
        for block in range(store.n_blocks) if blocks is None else blocks:
            _, span, keep, metrics = block_split(store, block, split, *self.fractions)
            if keep.any():
                values = self.sign * metrics[keep, self.column].astype(np.float64)
                yield store.read("masks", span)[keep], values


def _batches(
    reader: _TargetReader, blocks: list[int], batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Training batches without end: pass after pass over ``blocks`` in a random order,
    each block's rows in a random order, ``batch_size`` at a time."""
    while True:
        for block in rng.permutation(blocks):
            for masks, values in reader.blocks(TRAIN, [int(block)]):
                order = rng.permutation(len(values))
                for start in range(0, len(order), batch_size):
                    index = order[start : start + batch_size]
                    yield masks[index], values[index]


def _standardised(network: SetFunction, masks: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """f(S) ``(B,)`` for ``masks (B, n)`` from the elements' φ ``(n, w)``."""
    return network.from_pooled(network.pooled(masks, phi, phi.shape[0]))[:, 0]


@torch.no_grad()
def _mse(
    network: SetFunction,
    elements: torch.Tensor,
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    mean: float,
    std: float,
    count: int,
) -> float:
    """Mean squared error of f against the standardised utilities of ``blocks`` (``count``
    rows in all)."""
    network.eval()
    phi = network.embed(elements)
    total = 0.0
    for masks, values in blocks:
        predicted = _standardised(network, torch.as_tensor(masks), phi).double()
        total += float(((predicted - torch.as_tensor((values - mean) / std)) ** 2).sum())
    network.train()
    return total / count
