"""Memorisation and influence estimates over sampled subsets (Feldman, 2020; Feldman & Zhang,
2020), from any :class:`~mp_ray.apps.models.SubsetModels`.

For B subsets S_1..S_B drawn with each point kept with probability α (row r from
(seed, r)), h_S the model trained on S and s(h, x, y) a score of model h on example (x, y):

    mem(i)     = E[s(h_S, x_i, y_i) | i ∈ S] − E[s(h_S, x_i, y_i) | i ∉ S]
    infl(i, j) = E[s(h_S, x'_j, y'_j) | i ∈ S] − E[s(h_S, x'_j, y'_j) | i ∉ S]

for training points i and test points j, each expectation the mean over the sampled
subsets that contain (or miss) i. The score (:data:`Score`) is

- ``probability`` (default): p_{h_S}(y | x), the probability the model gives the example's
  own label (:func:`~mp_ray.apps.utility.class_probabilities`). Continuous, so the estimate
  keeps its dynamic range when removing a point moves the model only a little, as it does
  for regularised convex learners and for a predictor's smooth models (which with 0/1
  correctness give exactly 0 for nearly every point);
- ``correct``: 1[h_S(x) = y], Feldman's original definition, in which each expectation is
  the probability that the model classifies the example correctly.

Both need a classifier; a regression learner (``n_classes == 1``) is refused. All B models
come from batched calls; the conditional means are matrix products of the masks with the
score matrices, with the standard error of the difference of two means. Run on
:class:`RetrainedModels` it is the estimator of the papers; on :class:`PredictedModels` the
same estimator without retraining.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from mp_ray.apps.models import SubsetModels
from mp_ray.apps.utility import class_probabilities
from mp_ray.learners import Learner
from mp_ray.sampling import BernoulliSampler

Score = Literal["probability", "correct"]
SCORES: tuple[Score, ...] = ("probability", "correct")
# Sampled subsets by default, by where the models come from: a predictor answers 20,000 in
# about a second, and its estimate is then far less noisy than 2,000 retrained models'.
DEFAULT_SUBSETS = {"predictor": 20_000, "retrain": 2_000}


@dataclass
class MemorizationResult:
    """``memorization (n,)`` and its standard error, ``influence (n, m)`` on the test points
    and its standard error, from ``n_subsets`` models, with the per-example ``score`` used."""

    memorization: np.ndarray
    memorization_stderr: np.ndarray
    influence: np.ndarray
    influence_stderr: np.ndarray
    n_subsets: int
    alpha: float
    score: Score
    seconds: float


def sample_masks(n: int, count: int, alpha: float, seed: int) -> np.ndarray:
    """Bernoulli(α) masks ``(count, n)``, row r from (seed, r)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return BernoulliSampler(n, seed, alpha).masks(np.arange(count))


def label_scores(
    learner: Learner,
    params: torch.Tensor,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    score: Score,
) -> np.ndarray:
    """The score of each model ``params (B, d)`` on each example ``X (m, p)``, ``y (m,)``,
    float64 ``(B, m)``: the probability of its label, or 1 if predicted correctly else 0."""
    labels = learner.labels(y)
    if score == "correct":
        values = learner.predict(params, X) == labels
    else:
        probabilities = class_probabilities(learner, params, X)  # (B, m, c)
        index = labels.expand(probabilities.shape[0], -1).unsqueeze(-1)
        values = probabilities.gather(-1, index).squeeze(-1)
    return values.double().cpu().numpy()


def conditional_gap(
    masks: np.ndarray, scores: np.ndarray, diagonal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """mean(scores | i ∈ S) − mean(scores | i ∉ S) and its standard error.

    ``masks (B, n)``; ``scores (B, m)`` gives two ``(n, m)`` arrays (every point against
    every column), or with ``diagonal`` and ``scores (B, n)`` two ``(n,)`` arrays (point i
    against its own column, without forming n × n)."""
    inside = masks.astype(np.float64)
    scores = scores.astype(np.float64)
    means, variances = [], []
    for member in (inside, 1.0 - inside):
        count = member.sum(axis=0)
        if np.any(count < 2):
            raise ValueError(
                "some point is in (or out of) fewer than 2 sampled subsets; sample more subsets"
            )
        if diagonal:
            first, second = (member * scores).sum(axis=0), (member * scores**2).sum(axis=0)
        else:
            first, second = member.T @ scores, member.T @ scores**2
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
    score: Score = "probability",
) -> MemorizationResult:
    """Memorisation of every training point and its influence on every test point
    ``X_test (m, p)``, ``y_test (m,)``, by ``score`` (see the module docstring);
    ``on_progress`` is called with the number of models of each block as it is scored."""
    if score not in SCORES:
        raise ValueError(f"unknown memorisation score {score!r}; use 'probability' or 'correct'")
    learner = models.learner
    if learner.n_classes < 2:
        raise ValueError(
            "memorisation needs a classifier: a regression learner has no class probabilities, "
            "and its real-valued predictions are never exactly correct"
        )
    start = time.perf_counter()
    masks = sample_masks(models.n_train, n_subsets, alpha, seed)
    train_scores, test_scores = [], []
    for first in range(0, n_subsets, block):
        params = models.predict(masks[first : first + block])
        train_scores.append(label_scores(learner, params, learner.X, learner.y, score))
        test_scores.append(label_scores(learner, params, X_test, y_test, score))
        if on_progress is not None:
            on_progress(len(params))
    mem, mem_err = conditional_gap(masks, np.concatenate(train_scores), diagonal=True)
    infl, infl_err = conditional_gap(masks, np.concatenate(test_scores))
    return MemorizationResult(
        memorization=mem,
        memorization_stderr=mem_err,
        influence=infl,
        influence_stderr=infl_err,
        n_subsets=n_subsets,
        alpha=alpha,
        score=score,
        seconds=time.perf_counter() - start,
    )
