"""Data selection: a training subset of a given size with the highest utility.

- :func:`greedy_selection` — forward selection: starting from a seed set (one random
  point per class, so the first models are well defined), add the point whose addition
  maximises U; every step scores all remaining candidates S ∪ {j} as one batch. Works with
  a predictor or with retraining (Σ_k (n − k) models).
- :func:`relaxed_selection` — the continuous relaxation through the predictor: memberships
  w = σ(z) ∈ (0, 1)^n, minimise the validation loss of f(w) plus ρ·((Σw − k)/k)² by Adam
  on z (gradients flow through ``Predictor.predict_soft``), then keep the k largest w.
- :func:`compare_selections` — retrain each selected subset and score it, beside random
  subsets and the top-k points of a value vector of the same size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from mp_ray.apps.models import PredictedModels
from mp_ray.apps.utility import Utility
from mp_ray.sampling import FixedSizeSampler


@dataclass
class SelectionResult:
    """The selected ``mask (n,)`` and the utility the selecting models gave it."""

    method: str
    mask: np.ndarray
    utility: float
    evaluations: int
    seconds: float
    history: list[float] = field(default_factory=list)

    @property
    def indices(self) -> np.ndarray:
        return np.nonzero(self.mask)[0]


def seed_set(y: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """One random point of each class (none for regression), bool ``(n,)``."""
    mask = np.zeros(len(y), dtype=bool)
    rng = np.random.default_rng([seed, 0x5E1EC7])
    for label in range(n_classes if n_classes > 1 else 0):
        members = np.nonzero(y == label)[0]
        if members.size:
            mask[rng.choice(members)] = True
    return mask


def _check_size(size: int, n: int) -> None:
    if not 0 < size <= n:
        raise ValueError(f"selection size must lie in [1, {n}], got {size}")


def greedy_selection(
    utility: Utility, size: int, initial: np.ndarray | None = None, seed: int = 0
) -> SelectionResult:
    """Greedy forward selection up to ``size`` points; see the module docstring."""
    start = time.perf_counter()
    n = utility.n_train
    _check_size(size, n)
    learner = utility.learner
    labels = learner.y.cpu().numpy()
    mask = seed_set(labels, learner.n_classes, seed) if initial is None else initial.copy()
    if mask.shape != (n,) or mask.sum() > size:
        raise ValueError(f"the initial set must be a mask of shape ({n},) with ≤ {size} points")
    evaluations, history = 0, []
    current = float(utility(mask[None])[0])
    while mask.sum() < size:
        candidates = np.nonzero(~mask)[0]
        trials = np.repeat(mask[None], len(candidates), axis=0)
        trials[np.arange(len(candidates)), candidates] = True
        scores = utility(trials)
        evaluations += len(candidates)
        best = int(np.argmax(scores))
        mask[candidates[best]] = True
        current = float(scores[best])
        history.append(current)
    return SelectionResult(
        "greedy", mask, current, evaluations, time.perf_counter() - start, history
    )


def relaxed_selection(
    models: PredictedModels,
    X_val: np.ndarray,
    y_val: np.ndarray,
    size: int,
    steps: int = 300,
    lr: float = 0.05,
    size_penalty: float = 10.0,
    seed: int = 0,
) -> SelectionResult:
    """Gradient-based selection through the predictor; see the module docstring."""
    start = time.perf_counter()
    n = models.n_train
    _check_size(size, n)
    learner = models.learner
    X, y = learner.as_tensor(X_val), learner.labels(y_val)
    generator = torch.Generator().manual_seed(seed)
    init = torch.logit(torch.tensor(size / n)).item() if size < n else 4.0
    logits = (init + 0.01 * torch.randn(1, n, generator=generator)).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    history = []
    for _ in range(steps):
        weights = torch.sigmoid(logits)
        params = models.predictor.predict_soft(weights).to(learner.dtype)
        loss = learner.per_sample_loss(params, X, y).mean()
        penalty = size_penalty * ((weights.sum() - size) / size) ** 2
        optimizer.zero_grad()
        (loss + penalty).backward()
        optimizer.step()
        history.append(float(loss.detach()))
    mask = np.zeros(n, dtype=bool)
    mask[torch.topk(logits.detach()[0], size).indices.numpy()] = True
    value = float(Utility(models, X_val, y_val, "accuracy")(mask[None])[0])
    return SelectionResult("relaxed", mask, value, steps, time.perf_counter() - start, history)


def compare_selections(
    retrained: Utility,
    selections: dict[str, np.ndarray],
    size: int,
    values: np.ndarray | None = None,
    n_random: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Retrained utility of each selected mask, of the top-``size`` points by ``values``
    (if given) and the mean over ``n_random`` random subsets of the same size."""
    n = retrained.n_train
    rows = dict(selections)
    if values is not None:
        top = np.zeros(n, dtype=bool)
        top[np.argsort(-np.asarray(values), kind="stable")[:size]] = True
        rows["top values"] = top
    random_masks = FixedSizeSampler(n, seed, size / n).masks(np.arange(n_random))
    names = list(rows)
    scores = retrained(np.concatenate([np.stack([rows[k] for k in names]), random_masks]))
    out = dict(zip(names, scores[: len(names)].tolist(), strict=True))
    out[f"random (mean of {n_random})"] = float(scores[len(names) :].mean())
    return out
