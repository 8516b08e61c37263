"""What datamodels answer without retraining (Ilyas et al., 2022, §4–5).

- :func:`removal_effect`: the predicted change of every target's output when a set of
  training points is removed, −Σ_{i∈R} w_t,i (the model is linear in the subset).
- :func:`support`: a target's most supportive (largest positive weights) and most opposing
  (most negative) training points.
- :func:`brittleness`: per target, the smallest number k of its top supporters whose
  removal is predicted to flip its prediction (margin ≤ 0), checked by retraining without
  them.
- :func:`nearest_targets`: datamodel embeddings — each target's weight vector, normalised —
  and the targets whose embeddings are closest (cosine similarity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mp_ray.datamodels.fit import Datamodels
from mp_ray.errors import InputError
from mp_ray.indices import checked_points
from mp_ray.methods import OutputMethod


def checked_target(target: int, n_targets: int) -> int:
    if not 0 <= int(target) < n_targets:
        raise InputError(f"target {target} out of range 0…{n_targets - 1}")
    return int(target)


def removal_effect(datamodels: Datamodels, removed: np.ndarray | list[int]) -> np.ndarray:
    """Predicted output change of every target when ``removed`` points leave, ``(T,)``."""
    removed = checked_points(removed, datamodels.n_train, "removed points")
    return -datamodels.weights[:, removed].astype(np.float64).sum(axis=1)


@dataclass
class Support:
    """A target's top supporters and opponents: indices and weights, strongest first."""

    supporters: np.ndarray
    supporter_weights: np.ndarray
    opponents: np.ndarray
    opponent_weights: np.ndarray


def support(datamodels: Datamodels, target: int, k: int) -> Support:
    """The ≤ k largest positive and ≤ k most negative weights of ``target``'s datamodel."""
    weights = datamodels.weights[checked_target(target, datamodels.n_targets)]
    order = np.argsort(-weights, kind="stable")
    up = order[:k][weights[order[:k]] > 0]
    down = order[::-1][:k]
    down = down[weights[down] < 0]
    return Support(up, weights[up], down, weights[down])


@dataclass
class Brittleness:
    """Per target ``(T,)``: the full-data model's actual margin, the predicted smallest
    flipping support size k (0 where no k ≤ max_k flips it or the prediction was already
    wrong), and the retrained margin without those k points (NaN where k = 0)."""

    targets: np.ndarray
    full_margin: np.ndarray
    predicted_k: np.ndarray
    retrained_margin: np.ndarray

    @property
    def confirmed(self) -> np.ndarray:
        """Targets whose predicted flip retraining confirms, bool ``(T,)``."""
        return (self.predicted_k > 0) & (self.retrained_margin <= 0)


def brittleness(
    datamodels: Datamodels, retrained: OutputMethod, targets: np.ndarray, max_k: int
) -> Brittleness:
    """Smallest predicted flipping support per target, checked with the outputs of
    ``retrained`` (retraining as an output method) on the full set minus those points."""
    n = datamodels.n_train
    targets = checked_points(targets, datamodels.n_targets, "targets")
    full = retrained.outputs(np.ones((1, n), dtype=bool))[0]
    predicted_full = datamodels.outputs(np.ones((1, n), dtype=bool))[0]
    predicted_k = np.zeros(len(targets), dtype=np.int64)
    masks = np.ones((len(targets), n), dtype=bool)
    for row, target in enumerate(targets):
        if full[target] <= 0:
            continue
        weights = datamodels.weights[target].astype(np.float64)
        order = np.argsort(-weights, kind="stable")[:max_k]
        cumulative = predicted_full[target] - np.cumsum(np.clip(weights[order], 0, None))
        flips = np.nonzero(cumulative <= 0)[0]
        if flips.size:
            predicted_k[row] = flips[0] + 1
            masks[row, order[: flips[0] + 1]] = False
    retrained_margin = np.full(len(targets), np.nan)
    flipped = np.nonzero(predicted_k)[0]
    if flipped.size:
        outputs = retrained.outputs(masks[flipped])
        retrained_margin[flipped] = outputs[np.arange(flipped.size), targets[flipped]]
    return Brittleness(targets, full[targets], predicted_k, retrained_margin)


def embeddings(datamodels: Datamodels) -> np.ndarray:
    """Unit-norm datamodel weight vectors ``(T, n)`` (zero rows stay zero)."""
    weights = datamodels.weights.astype(np.float64)
    norms = np.linalg.norm(weights, axis=1, keepdims=True)
    return np.divide(weights, norms, out=np.zeros_like(weights), where=norms > 0)


def nearest_targets(datamodels: Datamodels, target: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ≤ k other targets most similar to ``target`` and their cosine similarities."""
    target = checked_target(target, datamodels.n_targets)
    unit = embeddings(datamodels)
    similarity = unit @ unit[target]
    similarity[target] = -np.inf
    order = np.argsort(-similarity, kind="stable")[: min(k, datamodels.n_targets - 1)]
    return order, similarity[order]
