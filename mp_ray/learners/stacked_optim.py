"""First-order optimizers over K stacked parameter vectors ``θ (K, d)``, one model per row.

Row k steps exactly as ``torch.optim.SGD`` / ``torch.optim.Adam`` would step model k alone
(both are elementwise, so stacking the models changes nothing but the rounding of a few
fused operations): weight decay is the coupled L2 term ``g + weight_decay·θ`` of both,
SGD's momentum buffer starts as the first step's direction (no dampening, no Nesterov),
Adam has torch's defaults β = (0.9, 0.999), ε = 1e-8 and its bias corrections.

Each step takes the gradients ``(K, d)`` and ``live (K, 1)``: 1.0 for a model that steps,
0.0 for one that idles (its parameters stay). A model's idle steps come after all of its
own (:mod:`mp_ray.learners.minibatch`), so step t is the (t + 1)-th step of every live
model; what an idling model's optimizer state does is never read again.

Learning-rate schedules, per model k with T_k steps of its own: ``constant`` (lr) or
``cosine``, ``lr·½(1 + cos(π t / T_k))`` at step t = 0 … T_k − 1 — what
``torch.optim.lr_scheduler.LambdaLR`` with that factor, stepped after every minibatch, gives.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch

Schedule = Literal["constant", "cosine"]
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass
class StackedOptimizer(ABC):
    """Steps ``θ (K, d)`` with learning rate ``lr`` under ``schedule`` and L2
    ``weight_decay``; ``total_steps (K, 1)``, each model's own step count, is needed by the
    cosine schedule only."""

    lr: float
    weight_decay: float
    schedule: Schedule = "constant"
    total_steps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.schedule == "cosine" and self.total_steps is None:
            raise ValueError("the cosine schedule needs each model's total_steps")

    def rate(self, step: int) -> float | torch.Tensor:
        """The learning rate of step ``step``: a float, or per model ``(K, 1)``."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1 + torch.cos(math.pi * step / self.total_steps.clamp(min=1)))

    scratch: torch.Tensor | None = field(default=None, init=False)  # (K, d), reused

    @abstractmethod
    def step(
        self, theta: torch.Tensor, grad: torch.Tensor, live: torch.Tensor, step: int
    ) -> torch.Tensor:
        """Update ``θ (K, d)`` in place by step number ``step`` (from 0) with gradients
        ``grad (K, d)`` of the unregularised loss (overwritten); models with ``live (K, 1)``
        = 0 keep theirs. Returns θ."""

    def _regularised(self, theta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``grad + weight_decay·θ``, in place of ``grad``."""
        if self.scratch is None:
            self.scratch = torch.empty_like(theta)
        return grad.add_(torch.mul(theta, self.weight_decay, out=self.scratch))


@dataclass
class StackedSGD(StackedOptimizer):
    """SGD with optional heavy-ball momentum: ``b ← μ·b + (g + wd·θ)``, ``θ ← θ − lr·b``
    (``b`` = the first direction at the first step; μ = 0: plain SGD, no buffer)."""

    momentum: float = 0.0
    buffer: torch.Tensor | None = field(default=None, init=False)  # (K, d), from the first step

    def step(
        self, theta: torch.Tensor, grad: torch.Tensor, live: torch.Tensor, step: int
    ) -> torch.Tensor:
        direction = self._regularised(theta, grad)
        if self.momentum:
            if self.buffer is None:
                self.buffer = direction.clone()
            else:
                self.buffer.mul_(self.momentum).add_(direction)
            direction = self.buffer
        return theta.sub_(torch.mul(direction, self.rate(step) * live, out=self.scratch))


@dataclass
class StackedAdam(StackedOptimizer):
    """Adam (coupled weight decay, as ``torch.optim.Adam``'s ``weight_decay``)."""

    # The moment estimates, (K, d), from the first step.
    first: torch.Tensor | None = field(default=None, init=False)
    second: torch.Tensor | None = field(default=None, init=False)

    def step(
        self, theta: torch.Tensor, grad: torch.Tensor, live: torch.Tensor, step: int
    ) -> torch.Tensor:
        beta1, beta2 = ADAM_BETAS
        g = self._regularised(theta, grad)
        if self.first is None or self.second is None:
            self.first, self.second = torch.zeros_like(theta), torch.zeros_like(theta)
        self.first.lerp_(g, 1 - beta1)
        self.second.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        correction1 = 1 - beta1 ** (step + 1)
        correction2 = 1 - beta2 ** (step + 1)
        denominator = torch.sqrt(self.second, out=self.scratch)
        denominator.div_(math.sqrt(correction2)).add_(ADAM_EPS)
        update = torch.div(self.first, denominator, out=g)
        return theta.sub_(update.mul_(self.rate(step) * live / correction1))
