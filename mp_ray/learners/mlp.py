"""A one-hidden-layer MLP trained by seeded minibatch SGD, K subsets at once (non-convex).

Model: ``out(x) = W₂ tanh(W₁ x + b₁) + b₂`` with width h = ``hidden`` and c outputs (one
logit for two classes, one per class for more, one value for regression). Flattened
parameters ``(d,)``, d = h·p + h + c·h + c, in the order [W₁ (h, p), b₁, W₂ (c, h), b₂].

Objective and algorithm: those of :mod:`mp_ray.learners.minibatch`, with the initialisation
of ``torch.nn.Linear`` (uniform in ±1/√fan_in, from the numpy generator of (seed, 0)) and
plain SGD at a constant rate: one step ``θ ← θ − lr·(∇ mean_{i∈B} ℓ_i + weight_decay·θ)``
per minibatch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mp_ray.config import MLPLearnerConfig
from mp_ray.learners.base import ArrayLike
from mp_ray.learners.minibatch import MinibatchLearner, generators
from mp_ray.learners.stacked_optim import StackedSGD


class MLP(MinibatchLearner):
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
        w1, b1, w2, b2 = torch.split(theta, [math.prod(s) for _, s, _ in self.blocks])
        hidden = torch.tanh(X @ w1.view(self.blocks[0][1]).T + b1)
        return hidden @ w2.view(self.blocks[2][1]).T + b2

    def loss_floats(self) -> int:
        """The hidden layer's pre-activations, activations and their sum with the bias,
        ``(K, m, h)`` each, beside the outputs' floats."""
        return 3 * self.config.hidden + super().loss_floats()

    def initial_params(self, seeds: ArrayLike) -> torch.Tensor:
        """``torch.nn.Linear``-style uniform initialisation from each row's seed, (K, d)."""
        rows = [
            np.concatenate(
                [
                    rng.uniform(-1, 1, math.prod(shape)) / math.sqrt(fan_in)
                    for _, shape, fan_in in self.blocks
                ]
            )
            for rng in generators(seeds, stream=0)
        ]
        return torch.as_tensor(np.stack(rows), dtype=self.dtype, device=self.device)

    def optimizer(self, live: torch.Tensor) -> StackedSGD:
        """Plain SGD at the constant rate ``lr``."""
        return StackedSGD(self.config.lr, self.config.weight_decay, live)
