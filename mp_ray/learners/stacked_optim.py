"""First-order optimizers over K stacked parameter vectors ``θ (K, d)``, one model per row.

Row k steps exactly as ``torch.optim.SGD`` / ``torch.optim.Adam`` would step model k alone
(both are elementwise, so stacking the models changes nothing but the rounding of a few
fused operations): weight decay is the coupled L2 term ``g + weight_decay·θ`` of both,
SGD's momentum buffer starts as the first step's direction (no dampening, no Nesterov),
Adam has torch's defaults β = (0.9, 0.999), ε = 1e-8 and its bias corrections.

The optimizer is built for a batch's whole run from ``live (K, steps)``: 1.0 where model k
takes step t, 0.0 where it idles (its parameters stay). A model's idle steps come after all
of its own (:mod:`mp_ray.learners.minibatch`), so step t is the (t + 1)-th step of every live
model, and its step count T_k is its row's sum; what an idling model's optimizer state does
is never read again. Each step's learning rate times ``live`` is computed once for the run,
``(steps, K, 1)``, and a step is a few fused in-place operations on ``(K, d)``.

Learning-rate schedules, per model k: ``constant`` (lr) or ``cosine``,
``lr·½(1 + cos(π t / T_k))`` at step t = 0 … T_k − 1 — what
``torch.optim.lr_scheduler.LambdaLR`` with that factor, stepped after every minibatch, gives.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import InitVar, dataclass, field
from typing import Literal

import torch

Schedule = Literal["constant", "cosine"]
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass
class StackedOptimizer(ABC):
    """Steps ``θ (K, d)`` with learning rate ``lr`` under ``schedule`` and L2
    ``weight_decay``, where ``live (K, steps)`` says which models take each step."""

    lr: float
    weight_decay: float
    live: InitVar[torch.Tensor]
    schedule: Schedule = "constant"
    rates: torch.Tensor = field(init=False)  # (steps, K, 1): step t's rate times live

    def __post_init__(self, live: torch.Tensor) -> None:
        live = live.T[:, :, None]
        if self.schedule == "constant":
            self.rates = self.lr * live
            return
        steps = torch.arange(live.shape[0], dtype=live.dtype, device=live.device)[:, None, None]
        total = live.sum(dim=0, keepdim=True).clamp(min=1)  # (1, K, 1): T_k
        self.rates = self.lr * 0.5 * (1 + torch.cos(math.pi * steps / total)) * live

    @abstractmethod
    def step(self, theta: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        """Update ``θ (K, d)`` in place by step number ``step`` (from 0) with gradients
        ``grad (K, d)`` of the unregularised loss (overwritten). Returns θ."""


@dataclass
class StackedSGD(StackedOptimizer):
    """SGD with optional heavy-ball momentum: ``b ← μ·b + (g + wd·θ)``, ``θ ← θ − lr·b``
    (``b`` = the first direction at the first step; μ = 0: plain SGD, no buffer)."""

    momentum: float = 0.0
    buffer: torch.Tensor | None = field(default=None, init=False)  # (K, d), from the first step

    def step(self, theta: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        direction = grad.add_(theta, alpha=self.weight_decay)
        if self.momentum:
            if self.buffer is None:
                self.buffer = direction.clone()
            else:
                self.buffer.mul_(self.momentum).add_(direction)
            direction = self.buffer
        return theta.addcmul_(direction, self.rates[step], value=-1)


@dataclass
class StackedAdam(StackedOptimizer):
    """Adam (coupled weight decay, as ``torch.optim.Adam``'s ``weight_decay``)."""

    # The moment estimates, (K, d), from the first step.
    first: torch.Tensor | None = field(default=None, init=False)
    second: torch.Tensor | None = field(default=None, init=False)

    def step(self, theta: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        beta1, beta2 = ADAM_BETAS
        g = grad.add_(theta, alpha=self.weight_decay)
        if self.first is None or self.second is None:
            self.first, self.second = torch.zeros_like(theta), torch.zeros_like(theta)
        self.first.lerp_(g, 1 - beta1)
        self.second.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        correction1 = 1 - beta1 ** (step + 1)
        correction2 = 1 - beta2 ** (step + 1)
        denominator = torch.sqrt(self.second, out=g)  # g is no longer needed
        denominator.div_(math.sqrt(correction2)).add_(ADAM_EPS)
        update = torch.div(self.first, denominator, out=g)
        return theta.addcmul_(update, self.rates[step], value=-1 / correction1)
