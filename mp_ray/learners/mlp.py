"""A one-hidden-layer MLP trained by seeded minibatch SGD, K subsets at once (non-convex).

Model: ``out(x) = W₂ tanh(W₁ x + b₁) + b₂`` with width h = ``hidden`` and c outputs (one
logit for two classes, one per class for more, one value for regression). Flattened
parameters ``(d,)``, d = h·p + h + c·h + c, in the order [W₁ (h, p), b₁, W₂ (c, h), b₂].

Objective on S (what SGD minimises, and what :meth:`MLP.objective` returns)::

    J_S(θ) = (1/|S|)·Σ_{i∈S} ℓ_i(θ) + (weight_decay/2)·‖θ‖²

with ℓ the cross-entropy (binary / softmax) or the squared error (regression).

Algorithm A(S, seed), as a ``DataLoader(shuffle=True, drop_last=False)`` loop would run it:
initialise like ``torch.nn.Linear`` (uniform in ±1/√fan_in); then ``epochs`` passes over
S, each a fresh random permutation of S cut into ⌈|S|/batch_size⌉ minibatches (the last
one shorter), one SGD step ``θ ← θ − lr·(∇ mean_{i∈B} ℓ_i + weight_decay·θ)`` per
minibatch. The initialisation and the permutations come from two numpy generators seeded
by the row's seed alone.

Vectorisation: the K models step together, ``torch.func.vmap`` over ``torch.func.grad`` of
one model's minibatch loss. Minibatches are padded to ``batch_size`` with zero-weight
entries, and a model with fewer steps than the largest subset of the batch idles (no
update, no decay) once its own steps are done, so a row's result depends only on
(data, mask, seed), never on the other rows of its batch.

Degenerate subsets: an empty subset takes no steps and keeps its initialisation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from mp_ray.config import MLPLearnerConfig
from mp_ray.learners.base import ArrayLike, Learner


class MLP(Learner):
    """One-hidden-layer tanh MLP trained by SGD; see the module docstring."""

    name = "mlp"

    def __init__(
        self,
        config: MLPLearnerConfig,
        X: ArrayLike,
        y: ArrayLike,
        n_classes: int,
        device: torch.device | str = "cpu",
        memory_budget: int | None = None,
    ) -> None:
        super().__init__(config, X, y, n_classes, device, memory_budget)
        p, h, c = self.X.shape[1], config.hidden, self.n_outputs
        # (name, shape, fan_in) of each parameter block, in flattening order.
        self.blocks = [("W1", (h, p), p), ("b1", (h,), p), ("W2", (c, h), h), ("b2", (c,), h)]

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape, _ in self.blocks)

    def intercept_mask(self) -> torch.Tensor:
        return torch.cat(
            [torch.full((math.prod(s),), n.startswith("b")) for n, s, _ in self.blocks]
        ).to(self.device)

    def _forward(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """One model: ``theta (d,)``, ``X (m, p)`` → outputs (m, c)."""
        w1, b1, w2, b2 = torch.split(theta, [math.prod(s) for _, s, _ in self.blocks])
        hidden = torch.tanh(X @ w1.view(self.blocks[0][1]).T + b1)
        return hidden @ w2.view(self.blocks[2][1]).T + b2

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example loss of outputs ``(..., m, c)`` against labels ``(m,)``, (..., m)."""
        if self.n_classes == 1:
            return (out[..., 0] - y) ** 2
        if self.n_classes == 2:
            return F.binary_cross_entropy_with_logits(
                out[..., 0], y.to(out.dtype).expand_as(out[..., 0]), reduction="none"
            )
        logp = torch.log_softmax(out, dim=-1)
        return -logp.gather(-1, y.expand(*out.shape[:-1]).unsqueeze(-1)).squeeze(-1)

    def decision(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        return vmap(self._forward, in_dims=(0, None))(params.to(self.dtype), self.as_tensor(X))

    def per_sample_loss(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        return self._loss(self.decision(params, X), self.labels(y))

    def loss_floats(self) -> int:
        """The hidden layer's pre-activations, activations and their sum with the bias,
        ``(K, m, h)`` each, beside the outputs' floats."""
        return 3 * self.config.hidden + super().loss_floats()

    def objective(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        mean = self.mean_subset_loss(params, masks)
        return mean + 0.5 * self.config.weight_decay * (params.to(self.dtype) ** 2).sum(dim=1)

    def degenerate(self, masks: ArrayLike) -> torch.Tensor:
        """Only the empty subset: SGD is defined on any non-empty one."""
        return self.masks_tensor(masks).sum(dim=1) == 0

    # -- training --------------------------------------------------------------------------

    def initial_params(self, seeds: ArrayLike) -> torch.Tensor:
        """``torch.nn.Linear``-style uniform initialisation from each row's seed, (K, d)."""
        rows = [
            np.concatenate(
                [
                    rng.uniform(-1, 1, math.prod(shape)) / math.sqrt(fan_in)
                    for _, shape, fan_in in self.blocks
                ]
            )
            for rng in _generators(seeds, stream=0)
        ]
        return torch.as_tensor(np.stack(rows), dtype=self.dtype, device=self.device)

    def minibatches(self, masks: np.ndarray, seeds: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step's minibatch per model: indices int32 and a bool mask of real entries
        (False = padding), both ``(K, steps, batch_size)``, steps = epochs·⌈max_k |S_k|/B⌉.

        Model k's steps are ``epochs`` passes over its subset in the order of random
        permutations from ``seeds[k]``; the last minibatch of a pass is padded, and the
        model's steps after its own are all padding."""
        batch, epochs = self.config.batch_size, self.config.epochs
        sizes = masks.sum(axis=1)
        per_epoch = -(-sizes // batch)  # ⌈|S_k| / B⌉
        steps = epochs * int(per_epoch.max(initial=0))
        index = np.zeros((len(masks), steps * batch), dtype=np.int32)
        weight = np.zeros((len(masks), steps * batch), dtype=bool)
        for k, rng in enumerate(_generators(seeds, stream=1)):
            subset = np.flatnonzero(masks[k])
            span = per_epoch[k] * batch
            for epoch in range(epochs if subset.size else 0):
                start = epoch * span
                index[k, start : start + subset.size] = rng.permutation(subset)
                weight[k, start : start + subset.size] = True
        shape = (len(masks), steps, batch)
        return (
            torch.as_tensor(index.reshape(shape), device=self.device),
            torch.as_tensor(weight.reshape(shape), device=self.device),
        )

    def _fit(self, weights: torch.Tensor, seeds: ArrayLike | None) -> torch.Tensor:
        """Train K models by SGD; ``seeds`` default to 0 for every row."""
        mask_np = weights.bool().cpu().numpy()
        seeds = np.zeros(len(mask_np), dtype=np.int64) if seeds is None else _numpy(seeds)
        cfg = self.config
        theta = self.initial_params(seeds)
        index, weight = self.minibatches(mask_np, seeds)

        def batch_loss(
            th: torch.Tensor, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor
        ) -> torch.Tensor:
            """Mean loss of one model over the real entries of its minibatch."""
            return (self._loss(self._forward(th, X), y) * w).sum() / w.sum().clamp(min=1.0)

        step_grad = vmap(grad(batch_loss))
        for step in range(index.shape[1]):
            rows, w = index[:, step].long(), weight[:, step].to(self.dtype)
            live = w[:, :1]  # a step's first entry is real unless the model idles
            g = step_grad(theta, self.X[rows], self.y[rows], w)
            theta = theta - cfg.lr * live * (g + cfg.weight_decay * theta)
        return theta


def _numpy(array: ArrayLike) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _generators(seeds: ArrayLike, stream: int) -> list[np.random.Generator]:
    """One numpy generator per row, seeded by (seed, stream): stream 0 initialises, stream 1
    orders the minibatches, so each is independent of how much the other draws."""
    return [np.random.default_rng([int(seed), stream]) for seed in _numpy(seeds).reshape(-1)]
