"""Synthetic sets ("synsets"): a few weighted, softly labelled examples per group, and the
gradient of their loss at a model.

Group k's synset holds m examples ``(x_ks, q_ks, w_ks)``: features in the learner's input
space, a soft label q (a distribution over the c classes) and a weight w > 0. Its loss is
the learner's own per-example loss, averaged over the classes by the soft label::

    L(synset_k; θ) = Σ_s w_ks Σ_j q_ksj ℓ(θ; x_ks, j)

(for logistic regression Σ_j q_j ℓ(θ; x, j) is the cross-entropy against q). The reverse
step of the distilled datamodel is ``η · ∇_θ L(synset_k; θ*)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from mp_ray.distill.groups import DISTILL_STREAM, INIT_ROW, kmeans_labels
from mp_ray.learners import Learner
from mp_ray.learners.base import ArrayLike
from mp_ray.sampling import row_rng

LABEL_FLOOR = 1e-12  # smallest starting soft-label probability (its logit stays finite)


@dataclass
class Synsets:
    """G groups × m synthetic examples: ``features (G, m, p)``, soft ``labels (G, m, c)``
    (rows sum to 1) and ``weights (G, m)`` (> 0), as tensors of one device and dtype."""

    features: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self) -> None:
        G, m, _ = self.features.shape
        if self.labels.shape[:2] != (G, m) or self.weights.shape != (G, m):
            raise ValueError(
                f"synset shapes disagree: features {tuple(self.features.shape)}, labels "
                f"{tuple(self.labels.shape)}, weights {tuple(self.weights.shape)}"
            )

    @property
    def n_groups(self) -> int:
        return int(self.features.shape[0])

    @property
    def per_group(self) -> int:
        return int(self.features.shape[1])

    def to(self, device: torch.device, dtype: torch.dtype) -> Synsets:
        """The same synsets on ``device`` in ``dtype``."""
        return Synsets(
            *(t.to(device=device, dtype=dtype) for t in (self.features, self.labels, self.weights))
        )


def initial_synsets(
    learner: Learner,
    theta: torch.Tensor,
    groups: np.ndarray,
    per_group: int,
    init: Literal["real", "random"],
    root_seed: int,
) -> Synsets:
    """The starting synsets (float64, CPU) for the learner's training set and θ* ``theta``.

    real: k-means centroids x̄ of each group's own points (repeated when the group has fewer
    than m distinct clusters), soft label q = (p(x̄; θ*) + onehot(class)) / 2, halfway between
    the model's prediction and the group's class, so that the first step is the ordinary
    (hard-label) loss gradient at x̄, halved (a fixed smoothed label such as 0.9 would
    reverse it wherever θ* predicts the class with more than 0.9).

    random: Gaussian features with each training feature's mean and standard deviation,
    soft labels the softmax of standard normal logits.

    Weights start at |group| / m, so each synthetic example stands for its share of the
    group's points.
    """
    X = learner.X.detach().cpu().double().numpy()
    y = learner.y.detach().cpu().numpy()
    c = learner.n_classes
    n_groups = int(groups.max()) + 1
    sizes = np.bincount(groups, minlength=n_groups).astype(np.float64)
    weights = np.repeat(sizes[:, None] / per_group, per_group, axis=1)
    rng = row_rng(root_seed, DISTILL_STREAM, INIT_ROW)
    if init == "random":
        noise = rng.standard_normal((n_groups, per_group, X.shape[1]))
        features = X.mean(axis=0) + X.std(axis=0) * noise
        logits = torch.as_tensor(rng.standard_normal((n_groups, per_group, c)))
        return Synsets(torch.as_tensor(features), logits.softmax(dim=-1), torch.as_tensor(weights))
    seeds = rng.integers(0, 2**31 - 1, size=n_groups)
    features = np.empty((n_groups, per_group, X.shape[1]))
    classes = np.empty(n_groups, dtype=np.int64)
    for k in range(n_groups):
        members = np.flatnonzero(groups == k)
        clusters = kmeans_labels(X[members], per_group, int(seeds[k]))
        centroids = np.stack(
            [X[members[clusters == j]].mean(axis=0) for j in range(clusters.max() + 1)]
        )
        features[k] = centroids[np.arange(per_group) % len(centroids)]
        classes[k] = y[members[0]]
    features_t = torch.as_tensor(features)
    with torch.no_grad():
        predicted = class_probabilities(learner, theta, features_t.reshape(-1, X.shape[1]))
    onehot = torch.nn.functional.one_hot(torch.as_tensor(classes), c).to(torch.float64)
    labels = 0.5 * (predicted.cpu().double().reshape(n_groups, per_group, c) + onehot[:, None])
    labels = labels.clamp(min=LABEL_FLOOR)
    return Synsets(features_t, labels / labels.sum(dim=-1, keepdim=True), torch.as_tensor(weights))


def class_probabilities(learner: Learner, theta: torch.Tensor, X: ArrayLike) -> torch.Tensor:
    """The model's class probabilities at ``X (m, p)``, ``(m, c)``: the sigmoid (one output)
    or softmax of its outputs."""
    out = learner.decision(theta[None], X)[0]
    if out.shape[1] == 1:
        positive = torch.sigmoid(out[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return out.softmax(dim=1)


def synset_gradients(
    learner: Learner, theta: torch.Tensor, synsets: Synsets, chunk: int = 8
) -> torch.Tensor:
    """``∇_θ L(synset_k; θ)`` for every group k at one model ``theta (d,)``, ``(G, d)``.

    Differentiable in the synset tensors when they require grad. Groups are processed
    ``chunk`` at a time: a chunk of b groups evaluates b copies of θ on its b·m·c
    (example, class) pairs and keeps each copy's own group, so memory stays at b²·m·c².
    """
    features, labels, weights = synsets.features, synsets.labels, synsets.weights
    n_groups, m, p = features.shape
    c = labels.shape[2]
    track = torch.is_grad_enabled() and any(t.requires_grad for t in (features, labels, weights))
    out = []
    for start in range(0, n_groups, chunk):
        stop = min(start + chunk, n_groups)
        b = stop - start
        X = features[start:stop].reshape(b * m, p).repeat(c, 1)  # class-major (c·b·m, p)
        y = torch.arange(c, device=learner.device).repeat_interleave(b * m)
        coef = (weights[start:stop, :, None] * labels[start:stop]).permute(2, 0, 1)  # (c, b, m)
        own = torch.eye(b, dtype=coef.dtype, device=coef.device)[:, None, :, None]
        coef = (own * coef[None]).reshape(b, c * b * m)  # model i sees only group i
        with torch.enable_grad():
            models = theta.detach().to(learner.dtype).expand(b, -1).clone().requires_grad_(True)
            total = (learner.per_sample_loss(models, X, y) * coef).sum()
            out.append(torch.autograd.grad(total, models, create_graph=track)[0])
    return torch.cat(out)
