"""A one-hidden-layer MLP trained by seeded minibatch SGD, K subsets at once (non-convex).

Model: ``out(x) = W₂ tanh(W₁ x + b₁) + b₂`` with width h = ``hidden`` and c outputs (one
logit for two classes, one per class for more, one value for regression). Flattened
parameters ``(d,)``, d = h·p + h + c·h + c, in the order [W₁ (h, p), b₁, W₂ (c, h), b₂].

Objective on S (what SGD minimises, and what :meth:`objective` returns)::

    J_S(θ) = (1/|S|)·Σ_{i∈S} ℓ_i(θ) + (weight_decay/2)·‖θ‖²

with ℓ the cross-entropy (binary / softmax) or the squared error (regression).

Algorithm, identical for every subset: initialise like ``torch.nn.Linear`` (uniform in
±1/√fan_in) from the row's seed; then ``epochs·⌈n/batch_size⌉`` SGD steps with learning
rate ``lr``, each on ``batch_size`` points taken in order from a stream of random
permutations of the subset (the stream also comes from the row's seed). Every subset gets
the same number of steps (n is the ground-set size), so a row's result depends only on
(data, mask, seed), never on the other rows of its batch. The K models train together:
``torch.func.vmap`` over ``torch.func.grad`` of one model's minibatch loss.

Degenerate subsets: an empty subset takes no steps and keeps its initialisation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from mp_ray.learners.base import ArrayLike, Learner


class MLP(Learner):
    """One-hidden-layer tanh MLP trained by SGD; see the module docstring."""

    name = "mlp"

    def __init__(self, config, X, y, n_classes, device="cpu") -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, X, y, n_classes, device)
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

    def _unflatten(self, theta: torch.Tensor) -> list[torch.Tensor]:
        parts, start = [], 0
        for _, shape, _ in self.blocks:
            size = math.prod(shape)
            parts.append(theta[start : start + size].reshape(shape))
            start += size
        return parts

    def _forward(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """One model: ``theta (d,)``, ``X (m, p)`` → outputs (m, c)."""
        w1, b1, w2, b2 = self._unflatten(theta)
        return torch.tanh(X @ w1.T + b1) @ w2.T + b2

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

    def objective(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        weights = self.masks_tensor(masks)
        losses = self.per_sample_loss(params, self.X, self.y)
        mean = (weights * losses).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return mean + 0.5 * self.config.weight_decay * (params.to(self.dtype) ** 2).sum(dim=1)

    def degenerate(self, masks: ArrayLike) -> torch.Tensor:
        """Only the empty subset: SGD is defined on any non-empty one."""
        return self.masks_tensor(masks).sum(dim=1) == 0

    # -- training --------------------------------------------------------------------------

    def initial_params(self, seeds: np.ndarray) -> torch.Tensor:
        """``torch.nn.Linear``-style uniform initialisation from each row's seed, (K, d)."""
        rows = []
        for seed in seeds:
            generator = torch.Generator().manual_seed(int(seed))
            rows.append(
                torch.cat(
                    [
                        (
                            torch.rand(math.prod(shape), generator=generator, dtype=torch.float64)
                            * 2
                            - 1
                        )
                        / math.sqrt(fan_in)
                        for _, shape, fan_in in self.blocks
                    ]
                )
            )
        return torch.stack(rows).to(device=self.device, dtype=self.dtype)

    def minibatch_stream(self, masks: np.ndarray, seeds: np.ndarray, n_steps: int) -> np.ndarray:
        """Indices of every step's minibatch per model, int64 ``(K, n_steps, batch_size)``.

        Model k reads its subset in the order of consecutive random permutations drawn from
        ``seeds[k]``; an empty subset gets zeros (its steps are masked out).
        """
        batch = self.config.batch_size
        out = np.zeros((len(seeds), n_steps * batch), dtype=np.int64)
        for k, (mask, seed) in enumerate(zip(masks, seeds, strict=True)):
            subset = np.flatnonzero(mask)
            if subset.size == 0:
                continue
            rng = np.random.default_rng(int(seed))
            laps = -(-out.shape[1] // subset.size)
            out[k] = np.concatenate([rng.permutation(subset) for _ in range(laps)])[: out.shape[1]]
        return out.reshape(len(seeds), n_steps, batch)

    def fit_batch(self, masks: ArrayLike, seeds: ArrayLike | None = None) -> torch.Tensor:
        weights = self.masks_tensor(masks)
        mask_np = weights.bool().cpu().numpy()
        seeds_np = (
            np.arange(len(mask_np)) if seeds is None else np.asarray(torch.as_tensor(seeds).cpu())
        )
        cfg = self.config
        n_steps = cfg.epochs * -(-self.n_train // cfg.batch_size)
        theta = self.initial_params(seeds_np)
        stream = torch.as_tensor(
            self.minibatch_stream(mask_np, seeds_np, n_steps), device=self.device
        )
        active = (weights.sum(dim=1) > 0).to(self.dtype)[:, None]

        def batch_loss(th: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self._loss(self._forward(th, X), y).mean()

        step_grad = vmap(grad(batch_loss))
        for step in range(n_steps):
            index = stream[:, step]
            g = step_grad(theta, self.X[index], self.y[index])
            theta = theta - cfg.lr * active * (g + cfg.weight_decay * theta)
        return theta
