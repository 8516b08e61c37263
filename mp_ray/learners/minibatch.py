"""What learners trained by seeded minibatch steps share (``mlp``, ``torch``): K models at once.

Objective on S (what the steps minimise, and what :meth:`MinibatchLearner.objective` returns)::

    J_S(θ) = (1/|S|)·Σ_{i∈S} ℓ_i(θ) + (weight_decay/2)·‖θ‖²

with ℓ the cross-entropy (binary with one logit / softmax) or the squared error (regression),
and θ every parameter, biases included.

Algorithm A(S, seed), as a ``DataLoader(shuffle=True, drop_last=False)`` loop would run it:
initialise θ from the row's seed (each learner states how); then ``epochs`` passes over S,
each a fresh random permutation of S cut into ⌈|S|/batch_size⌉ minibatches (the last one
shorter), one optimizer step per minibatch on the gradient of ``mean_{i∈B} ℓ_i`` (the
optimizer adds ``weight_decay·θ``, :mod:`mp_ray.learners.stacked_optim`). The permutations
come from a numpy generator seeded by (seed, 1) alone, the initialisation from one seeded by
(seed, 0), so neither depends on how much the other draws.

Vectorisation: the K models step together, ``torch.func.vmap`` over ``torch.func.grad`` of
one model's minibatch loss. Minibatches are padded to ``batch_size`` with zero-weight
entries, and a model with fewer steps than the largest subset of the batch idles (no
update, no decay) once its own steps are done, so a row's result depends only on
(data, mask, seed), never on the other rows of its batch.

Degenerate subsets: an empty subset takes no steps and keeps its initialisation.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from mp_ray.learners.base import ArrayLike, Learner
from mp_ray.learners.stacked_optim import StackedOptimizer


class MinibatchLearner(Learner):
    """A non-convex learner trained by seeded minibatch steps; see the module docstring.

    Its config has ``epochs``, ``batch_size`` and ``weight_decay``; a subclass gives the
    model (:meth:`_forward`), its initialisation and its optimizer."""

    @abstractmethod
    def _forward(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """One model: ``theta (d,)``, ``X (m, p)`` → outputs (m, c)."""

    @abstractmethod
    def initial_params(self, seeds: ArrayLike) -> torch.Tensor:
        """Each row's initialisation from its seed alone, (K, d)."""

    @abstractmethod
    def optimizer(self, live: torch.Tensor) -> StackedOptimizer:
        """A fresh optimizer for K models, ``live (K, steps)`` 1.0 where model k takes step t
        and 0.0 where it idles."""

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example loss of outputs ``(..., m, c)`` against labels ``(m,)``, (..., m)."""
        if self.n_classes == 1:
            return (out[..., 0] - y) ** 2
        if self.n_classes == 2:
            return F.binary_cross_entropy_with_logits(
                out[..., 0], y.to(out.dtype).expand_as(out[..., 0]), reduction="none"
            )
        # log Σ exp − the label's output: torch's (log_)softmax over a short last dimension
        # is slow on a CPU (58–71 against 19–23 µs for outputs (17, 32, 10), one thread).
        label = out.gather(-1, y.expand(*out.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return torch.logsumexp(out, dim=-1) - label

    def _loss_grad(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each example's loss's gradient with respect to its outputs: outputs ``(..., m, c)``,
        labels ``(m,)`` or ``(..., m)``, ``(..., m, c)`` (those of :meth:`_loss`, in closed
        form)."""
        if self.n_classes == 1:
            return 2 * (out - y.to(out.dtype)[..., None])
        if self.n_classes == 2:
            return torch.sigmoid(out) - y.to(out.dtype)[..., None]
        # softmax − one-hot(label), the label's −1 added in place (F.one_hot checks its
        # labels' range and builds a tensor of its own: five operations more a step).
        grad = torch.sub(out, torch.logsumexp(out, dim=-1, keepdim=True)).exp_()
        label = y.expand(*out.shape[:-1]).unsqueeze(-1)
        return grad.scatter_(-1, label, -1.0, reduce="add")

    def decision(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        return vmap(self._forward, in_dims=(0, None))(params.to(self.dtype), self.as_tensor(X))

    def per_sample_loss(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        return self.loss_from_outputs(self.decision(params, X), y)

    def loss_from_outputs(self, out: torch.Tensor, y: ArrayLike) -> torch.Tensor:
        return self._loss(out, self.labels(y))

    def objective(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        return self.mean_subset_loss(params, masks) + self._decay(params)

    def _decay(self, params: torch.Tensor) -> torch.Tensor:
        """The objective's (weight_decay/2)·‖θ‖², (K,)."""
        return 0.5 * self.config.weight_decay * (params.to(self.dtype) ** 2).sum(dim=1)

    def degenerate(self, masks: ArrayLike) -> torch.Tensor:
        """Only the empty subset: the steps are defined on any non-empty one."""
        return self.masks_tensor(masks).sum(dim=1) == 0

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
        for k, rng in enumerate(generators(seeds, stream=1)):
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

    @staticmethod
    def shares(real: torch.Tensor) -> torch.Tensor:
        """Each entry's weight in the mean loss over a minibatch or subset, from ``real
        (..., b)`` (:meth:`minibatches`' mask or a subset's, as floats, 1.0 for a member):
        1/|B| for the |B| members, 0 elsewhere (all 0 for an empty one)."""
        return real / real.sum(dim=-1, keepdim=True).clamp(min=1.0)

    def _fit(self, weights: torch.Tensor, seeds: ArrayLike | None) -> torch.Tensor:
        """Train K models; ``seeds`` default to 0 for every row."""
        mask_np = weights.bool().cpu().numpy()
        seeds = np.zeros(len(mask_np), dtype=np.int64) if seeds is None else as_numpy(seeds)
        theta = self.initial_params(seeds)
        index, real = self.minibatches(mask_np, seeds)
        real = real.to(self.dtype)
        # A model steps while the first entry of its minibatch is real.
        optimizer = self.optimizer(real[:, :, 0])
        shares = self.shares(real)
        step_grad = self.step_gradient()
        for step in range(index.shape[1]):
            rows = index[:, step]
            g = step_grad(theta, self.X[rows], self.y[rows], shares[:, step])
            theta = optimizer.step(theta, g, step)
        return theta

    def step_gradient(self) -> Callable[..., torch.Tensor]:
        """One training step's gradients of K models: ``(θ (K, d), X (K, b, p), y (K, b),
        share (K, b)) -> (K, d)``, each model's mean loss over the real entries of its
        minibatch of b examples (``share``: :meth:`shares`), vectorised over the models."""

        def batch_loss(
            th: torch.Tensor, X: torch.Tensor, y: torch.Tensor, share: torch.Tensor
        ) -> torch.Tensor:
            """Mean loss of one model over the real entries of its minibatch."""
            return self._minibatch_loss(self._forward(th, X), y, share)

        return vmap(grad(batch_loss))

    def _minibatch_loss(
        self, out: torch.Tensor, y: torch.Tensor, share: torch.Tensor
    ) -> torch.Tensor:
        """The mean loss over the real entries of minibatches (or a subset's share of it on a
        chunk of its rows): outputs ``(..., b, c)``, labels ``(b,)`` or ``(..., b)``,
        :meth:`shares` ``(..., b)``; ``(...)``."""
        return (self._loss(out, y) * share).sum(dim=-1)

    def _minibatch_loss_grad(
        self, out: torch.Tensor, y: torch.Tensor, share: torch.Tensor
    ) -> torch.Tensor:
        """The gradient of :meth:`_minibatch_loss` with respect to the outputs ``(..., b, c)``."""
        return self._loss_grad(out, y).mul_(share[..., None])


def as_numpy(array: ArrayLike) -> np.ndarray:
    """An array or tensor as a numpy array (on the CPU)."""
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def generators(seeds: ArrayLike, stream: int) -> list[np.random.Generator]:
    """One numpy generator per row, seeded by (seed, stream): stream 0 initialises, stream 1
    orders the minibatches, so each is independent of how much the other draws."""
    return [np.random.default_rng([int(seed), stream]) for seed in as_numpy(seeds).reshape(-1)]
