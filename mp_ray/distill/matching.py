"""Reverse gradient matching: learn the synsets whose ascent step from θ* lands on the
models retrained without each group.

For groups k = 1..G with retrained changes Δ_k = θ_{−k} − θ* (supervision), minimise over
the synthetic features, soft labels (softmax of free logits), weights (exp of free logs) and
one step size η > 0 shared by all groups (exp of a free log, unless fixed)::

    R = Σ_k ‖θ* + η ∇_θ L(synset_k; θ*) − θ_{−k}‖² / Σ_k ‖Δ_k‖²

with full-batch Adam, keeping the iterate of lowest R. η starts where the initial steps
have the supervised changes' total norm: η₀ = (Σ_k‖Δ_k‖² / Σ_k‖∇L(synset_k; θ*)‖²)^½.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mp_ray.distill.synset import Synsets, synset_gradients
from mp_ray.learners import Learner


@dataclass
class Distillation:
    """The learned synsets and step size η, the relative residual √R at them on the
    supervised removals, R per Adam step (``history``) and the seconds taken."""

    synsets: Synsets
    eta: float
    residual: float
    seconds: float
    history: list[float] = field(default_factory=list)


def distil(
    learner: Learner,
    theta: torch.Tensor,
    changes: torch.Tensor,
    start: Synsets,
    iterations: int,
    lr: float,
    learn_step: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> Distillation:
    """Fit synsets to the retrained changes ``changes (G, d)`` = θ_{−k} − θ* at
    ``theta (d,)`` = θ*, from ``start``; see the module docstring. ``on_progress`` is
    called with 1 after each iteration."""
    began = time.perf_counter()
    if changes.shape != (start.n_groups, learner.n_params):
        raise ValueError(
            f"changes must have shape ({start.n_groups}, {learner.n_params}) (one per group), "
            f"got {tuple(changes.shape)}"
        )
    device, dtype = learner.device, learner.dtype
    start = start.to(device, dtype)
    changes = changes.to(device=device, dtype=dtype)
    scale = (changes**2).sum()
    if float(scale) == 0.0:
        raise ValueError("no group removal changes the retrained model: nothing to distil")
    with torch.no_grad():
        initial = (synset_gradients(learner, theta, start) ** 2).sum()
    log_eta = torch.tensor(
        0.5 * math.log(float(scale) / max(float(initial), torch.finfo(dtype).tiny)),
        dtype=dtype,
        device=device,
        requires_grad=learn_step,
    )
    free = {
        "features": start.features.clone().requires_grad_(True),
        "label_logits": start.labels.log().requires_grad_(True),
        "log_weights": start.weights.log().requires_grad_(True),
    }
    optimiser = torch.optim.Adam([*free.values(), *([log_eta] if learn_step else [])], lr=lr)

    def residual() -> torch.Tensor:
        steps = log_eta.exp() * synset_gradients(learner, theta, _synsets(free))
        return ((steps - changes) ** 2).sum() / scale

    def snapshot(value: float) -> tuple[float, Synsets, float]:
        return value, _synsets(free, detach=True), float(log_eta.detach().exp())

    loss = residual()
    history = [float(loss.detach())]
    best = snapshot(history[0])
    for _ in range(iterations):
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        loss = residual()
        history.append(float(loss.detach()))
        if history[-1] < best[0]:
            best = snapshot(history[-1])
        if on_progress is not None:
            on_progress(1)
    value, synsets, eta = best
    return Distillation(synsets, eta, math.sqrt(value), time.perf_counter() - began, history)


def _synsets(free: dict[str, torch.Tensor], detach: bool = False) -> Synsets:
    """Synsets from the free parameters (softmax labels, exp weights)."""
    synsets = Synsets(
        free["features"], free["label_logits"].softmax(dim=-1), free["log_weights"].exp()
    )
    if detach:
        return Synsets(
            *(t.detach().clone() for t in (synsets.features, synsets.labels, synsets.weights))
        )
    return synsets
