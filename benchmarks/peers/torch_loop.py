"""A plain per-model torch loop: one ``nn.Module`` trained by ``torch.optim`` on one subset,
with the initialisation, minibatch order, optimizer and schedule that ``learner.kind: torch``
documents (mp_ray/learners/torch_module.py), so each model equals the learner's row for the
same seed. The peer of ``benchmarks/learners.py`` and the reference of
tests/learners/test_torch_learner.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mp_ray.learners import TorchModuleLearner
from mp_ray.learners.plugin import function


def reference_fit(learner: TorchModuleLearner, mask: np.ndarray, seed: int) -> torch.Tensor:
    """One model trained on the subset ``mask (n,)`` of ``learner``'s training set by a plain
    torch loop in the learner's dtype, its parameters flattened ``(d,)``."""
    cfg = learner.config
    X = torch.as_tensor(learner.X, dtype=learner.dtype)
    y = learner.y
    torch.manual_seed(int(np.random.default_rng([seed, 0]).integers(2**63)))
    model = function(cfg.factory)(X.shape[1], learner.n_outputs, **cfg.factory_kwargs)
    model = model.to(learner.dtype)
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    subset = np.flatnonzero(mask)
    total = cfg.epochs * math.ceil(subset.size / cfg.batch_size)
    factor = (lambda t: 0.5 * (1 + math.cos(math.pi * t / total))) if total else None
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, factor if cfg.lr_schedule == "cosine" else (lambda t: 1.0)
    )
    order = np.random.default_rng([seed, 1])
    for _ in range(cfg.epochs if subset.size else 0):
        permutation = order.permutation(subset)
        for start in range(0, subset.size, cfg.batch_size):
            batch = torch.as_tensor(permutation[start : start + cfg.batch_size])
            out = model(X[batch])
            if learner.n_classes == 1:
                loss = F.mse_loss(out[:, 0], y[batch].to(out.dtype))
            elif learner.n_classes == 2:
                loss = F.binary_cross_entropy_with_logits(out[:, 0], y[batch].to(out.dtype))
            else:
                loss = F.cross_entropy(out, y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return nn.utils.parameters_to_vector(model.parameters()).detach()
