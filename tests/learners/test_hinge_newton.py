"""The SVM solver's parts: Hessians over the violators against the dense sum over all points,
and the line search against the one-dimensional objective it minimises."""

from __future__ import annotations

import pytest
import torch

from mp_ray.learners import hinge_newton


def test_sparse_grams_equal_the_sum_over_all_points(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    n, q, problems = 50, 6, 300  # more problems than a bucket: two buckets
    X = torch.randn(n, q, generator=generator, dtype=torch.float64)
    nonzero = torch.rand(problems, n, generator=generator) < torch.rand(problems, 1)
    nonzero[7] = False  # a problem without points: zero
    # Signed coefficients, as the changes between two iterations' curvatures.
    coefficients = nonzero * torch.randn(problems, n, generator=generator, dtype=torch.float64)
    dense = torch.einsum("pi,ij,ik->pjk", coefficients, X, X)
    torch.testing.assert_close(hinge_newton.sparse_grams(X, coefficients, 10**8), dense)
    torch.testing.assert_close(hinge_newton.sparse_grams(X, coefficients, 1), dense)
    few = hinge_newton.sparse_grams(X, coefficients[:100], 10**8)  # one bucket, taken whole
    torch.testing.assert_close(few, dense[:100])
    # No nonzero coefficient at all (no point changed sides): zeros.
    nothing = hinge_newton.sparse_grams(X, torch.zeros_like(coefficients), 10**8)
    assert nothing.shape == (problems, q, q) and (nothing == 0).all()
    monkeypatch.setattr(hinge_newton, "BUCKET", 7)
    torch.testing.assert_close(hinge_newton.sparse_grams(X, coefficients, 10**8), dense)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_step_lengths_meet_the_strong_wolfe_condition_and_descend(scale):
    """Directions scaled so that the best step is far below, at, or far above t = 1."""
    generator = torch.Generator().manual_seed(1)
    n, q, problems, C = 80, 5, 40, 0.7
    X = torch.randn(n, q, generator=generator, dtype=torch.float64)
    theta = torch.randn(problems, q, generator=generator, dtype=torch.float64)
    signs = torch.where(torch.rand(problems, n, generator=generator) < 0.5, -1.0, 1.0).double()
    weights = (torch.rand(problems, n, generator=generator) < 0.5).double()
    slack = 1 - signs * (theta @ X.T)
    gradient = theta - 2 * C * ((weights * slack.clamp(min=0) * signs) @ X)
    direction = -gradient / scale

    def phi(t: torch.Tensor) -> torch.Tensor:
        """J(θ + t·d) per problem for steps ``t (P, T)``, (P, T)."""
        moved = theta[:, None] + t[..., None] * direction[:, None]
        hinge = (1 - signs[:, None] * (moved @ X.T)).clamp(min=0)
        return 0.5 * (moved**2).sum(-1) + C * (weights[:, None] * hinge**2).sum(-1)

    along = signs * (direction @ X.T)
    slope0 = torch.linalg.vecdot(gradient, direction)
    t = hinge_newton.step_lengths(slack, along, weights, theta, direction, slope0, C)
    assert (t > 0).all()
    h = 1e-6 * t[:, None] * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    slope = (phi(t[:, None] + h) @ torch.tensor([-1.0, 1.0], dtype=torch.float64)) / h[:, 1] / 2
    assert (slope.abs() <= hinge_newton.CURVATURE * slope0.abs() * (1 + 1e-6)).all()
    start, reached = phi(torch.zeros(problems, 1, dtype=torch.float64))[:, 0], phi(t[:, None])[:, 0]
    assert (reached < start).all()
    grid = phi(torch.logspace(-6, 3, 2000, dtype=torch.float64).expand(problems, -1)).amin(1)
    assert ((reached - grid) <= 0.25 * (start - grid)).all()
