"""Checks the learner tests share: a learner's closed-form calculus against autograd."""

from __future__ import annotations

import numpy as np
import torch

from mp_ray.learners import Learner


def random_params(learner: Learner, rows: int, seed: int = 0) -> torch.Tensor:
    """Small random parameters ``(rows, d)``, float64."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(rows, learner.n_params, generator=generator, dtype=torch.float64)


def check_closed_form_derivatives(learner: Learner, masks: np.ndarray) -> None:
    """The learner's closed-form gradient and Hessian-vector products at random parameters
    against autograd and central differences, on ``masks (K, n)``."""
    params = random_params(learner, len(masks))
    theta = params.clone().requires_grad_(True)
    autograd = torch.autograd.grad(learner.objective(theta, masks).sum(), theta)[0]
    torch.testing.assert_close(learner.objective_grad(params, masks), autograd)
    value, gradient = learner.objective_and_grad(params, masks)
    torch.testing.assert_close(value, learner.objective(params, masks))
    torch.testing.assert_close(gradient, autograd)
    # Hessian-vector products: the learner's closed form, the generic autograd one of the
    # base class, and central differences of the gradient agree.
    v = random_params(learner, len(masks), seed=1)
    hvp = learner.hvp(params, masks, v)
    torch.testing.assert_close(hvp, Learner.hvp(learner, params, masks, v))
    eps = 1e-5
    finite = (
        learner.objective_grad(params + eps * v, masks)
        - learner.objective_grad(params - eps * v, masks)
    ) / (2 * eps)
    torch.testing.assert_close(hvp, finite, rtol=1e-6, atol=1e-6)
    # The closed form stays differentiable (the predictor's KKT loss backpropagates it).
    residual = learner.objective_grad(theta, masks).pow(2).sum()
    second = torch.autograd.grad(residual, theta)[0]
    torch.testing.assert_close(second, 2 * learner.hvp(params, masks, autograd))
