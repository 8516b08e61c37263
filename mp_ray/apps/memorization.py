"""Memorisation and influence estimates over sampled subsets (Feldman, 2020; Feldman & Zhang,
2020), from any :class:`~mp_ray.apps.models.SubsetModels`.

For B subsets S_1..S_B drawn with each point kept with probability α (row r from
(seed, r)), and h_S the model trained on S:

    mem(i)     = P[h_S(x_i) = y_i | i ∈ S] − P[h_S(x_i) = y_i | i ∉ S]
    infl(i, j) = P[h_S(x'_j) = y'_j | i ∈ S] − P[h_S(x'_j) = y'_j | i ∉ S]

for training points i and test points j, each probability the share over the sampled
subsets that contain (or miss) i. All B models come from one batched call; the conditional
means are matrix products of the masks with the correctness matrices, with the standard
error of the difference of two means. Run on :class:`RetrainedModels` it is the estimator
of the papers; on :class:`PredictedModels` the same estimator without retraining.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mp_ray.apps.models import SubsetModels
from mp_ray.sampling import BernoulliSampler


@dataclass
class MemorizationResult:
    """``memorization (n,)`` and its standard error, ``influence (n, m)`` on the test points
    and its standard error, from ``n_subsets`` models."""

    memorization: np.ndarray
    memorization_stderr: np.ndarray
    influence: np.ndarray
    influence_stderr: np.ndarray
    n_subsets: int
    alpha: float
    seconds: float


def sample_masks(n: int, count: int, alpha: float, seed: int) -> np.ndarray:
    """Bernoulli(α) masks ``(count, n)``, row r from (seed, r)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return BernoulliSampler(n, seed, alpha).masks(np.arange(count))


def conditional_gap(
    masks: np.ndarray, correct: np.ndarray, diagonal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """mean(correct | i ∈ S) − mean(correct | i ∉ S) and its standard error.

    ``masks (B, n)``; ``correct (B, m)`` gives two ``(n, m)`` arrays (every point against
    every column), or with ``diagonal`` and ``correct (B, n)`` two ``(n,)`` arrays (point i
    against its own column, without forming n × n)."""
    inside = masks.astype(np.float64)
    correct = correct.astype(np.float64)
    means, variances = [], []
    for member in (inside, 1.0 - inside):
        count = member.sum(axis=0)
        if np.any(count < 2):
            raise ValueError(
                "some point is in (or out of) fewer than 2 sampled subsets; sample more subsets"
            )
        if diagonal:
            first, second = (member * correct).sum(axis=0), (member * correct**2).sum(axis=0)
        else:
            first, second = member.T @ correct, member.T @ correct**2
            count = count[:, None]
        mean = first / count
        means.append(mean)
        variances.append(np.maximum(second / count - mean**2, 0.0) / (count - 1))
    return means[0] - means[1], np.sqrt(variances[0] + variances[1])


def memorization(
    models: SubsetModels,
    X_test: np.ndarray,
    y_test: np.ndarray,
    n_subsets: int = 2000,
    alpha: float = 0.7,
    seed: int = 0,
    block: int = 1024,
    on_progress: Callable[[int], None] | None = None,
) -> MemorizationResult:
    """Memorisation of every training point and its influence on every test point;
    ``on_progress`` is called with the number of models of each block as it is scored."""
    start = time.perf_counter()
    learner = models.learner
    masks = sample_masks(models.n_train, n_subsets, alpha, seed)
    train_correct, test_correct = [], []
    for first in range(0, n_subsets, block):
        params = models.params(masks[first : first + block])
        train_correct.append((learner.predict(params, learner.X) == learner.y).cpu().numpy())
        test_correct.append(
            (learner.predict(params, X_test) == learner.labels(y_test)).cpu().numpy()
        )
        if on_progress is not None:
            on_progress(len(params))
    mem, mem_err = conditional_gap(masks, np.concatenate(train_correct), diagonal=True)
    infl, infl_err = conditional_gap(masks, np.concatenate(test_correct))
    return MemorizationResult(
        memorization=mem,
        memorization_stderr=mem_err,
        influence=infl,
        influence_stderr=infl_err,
        n_subsets=n_subsets,
        alpha=alpha,
        seconds=time.perf_counter() - start,
    )
