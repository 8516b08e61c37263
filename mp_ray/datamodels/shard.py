"""One shard of a store's datamodels: the targets ``[start, stop)`` fitted from one pass over
the store's rows, in the process that calls :func:`fit_shard` (a Ray task, from
:mod:`mp_ray.datamodels.job`).

The pass sums the statistics of the training and validation rows
(:func:`~mp_ray.datamodels.streamed.sum_splits`); the moments solver then fits from them,
unless its n × n matrices would exceed ``datamodels.memory_budget_mb``, in which case the
Gram-free solver streams the rows for every gradient. A second pass over the test rows
scores the result (Spearman's ρ per target, for the LDS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mp_ray.config import DatamodelsConfig, SplitsConfig
from mp_ray.datamodels.fit import Datamodels, Problem, fit_problem, solver_device
from mp_ray.datamodels.streamed import held_out_correlations, streamed_problem, sum_splits
from mp_ray.peak_memory import peak_rss_mib
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import SPLIT_NAMES, TEST, TRAIN, VAL

MOMENT_MATRICES = 2  # float64 (n, n) matrices the moments solver holds: Σxxᵀ per split
MIN_TEST_ROWS = 3  # the LDS needs at least 3 held-out subsets


def uses_moments(n: int, config: DatamodelsConfig) -> bool:
    """Whether the moments solver's matrices for ``n`` points fit ``config``'s budget."""
    return MOMENT_MATRICES * 8 * n**2 <= config.memory_budget_mb * 2**20


@dataclass
class ShardResult:
    """The datamodels of a shard's targets, the rows of each split (``rows``: train, val,
    test counts), Spearman's ρ per target on the test rows (None with fewer than
    ``MIN_TEST_ROWS``), the solver (``moments`` or ``streamed``) and device used, and the
    process's peak resident memory in MiB when it finished."""

    datamodels: Datamodels
    rows: dict[str, int]
    test_correlations: np.ndarray | None
    solver: str
    device: str
    peak_rss_mib: float


def fit_shard(
    store: ExperimentStore,
    splits: SplitsConfig,
    config: DatamodelsConfig,
    targets: slice,
    on_progress: Callable[[int], None] | None = None,
) -> ShardResult:
    """Fit, then score on the test rows, the datamodels of the store's ``targets``;
    ``on_progress`` hears the number of targets of each block fitted."""
    device = solver_device(config)
    moments = uses_moments(store.spec.n_train, config)
    sums = sum_splits(store, splits, targets, moments, device)
    for split in (TRAIN, VAL):
        if len(sums.rows[split]) < 2:
            raise ValueError(
                f"store {store.uri}: {len(sums.rows[split])} {SPLIT_NAMES[split]} rows; the "
                "datamodels need at least 2"
            )
    if moments:
        datamodels = fit_problem(Problem.of_sums(sums.train, sums.val), config, on_progress)
    else:  # every block of targets costs passes over the rows: one block
        problem = streamed_problem(store, sums, targets, device)
        datamodels = fit_problem(problem, config, on_progress, block=problem.n_targets)
    test = sums.rows[TEST][: splits.max_test_rows]  # the rows every evaluation scores
    correlations = (
        held_out_correlations(store, test, datamodels, targets)
        if len(test) >= MIN_TEST_ROWS
        else None
    )
    return ShardResult(
        datamodels,
        {name: len(sums.rows[split]) for split, name in enumerate(SPLIT_NAMES)},
        correlations,
        "moments" if moments else "streamed",
        str(device),
        peak_rss_mib(),
    )


def shard_task(
    uri: str,
    storage_options: dict[str, Any] | None,
    splits: SplitsConfig,
    config: DatamodelsConfig,
    targets: slice,
    on_progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> ShardResult:
    """:func:`fit_shard` on the store at ``uri``, opened read-only in this process, with
    ``threads`` torch intra-op threads when given."""
    if threads is not None:
        torch.set_num_threads(threads)
    store = ExperimentStore.open(uri, storage_options)
    return fit_shard(store, splits, config, targets, on_progress)
