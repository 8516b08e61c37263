"""The compiled CPU solver of the SVM's problems against the batched torch solver and against
the optimality condition of the objective both minimise."""

from __future__ import annotations

import pytest
import torch

from mp_ray.learners import hinge_newton, hinge_newton_cpu

C = 0.7


def problems(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs ``(n, q)`` and 60 problems' starts, weights and signs: 0/1 weights (subsets),
    fractional ones (anchors), an empty subset and a single point."""
    generator = torch.Generator().manual_seed(seed)
    n, q, count = 90, 7, 60
    X = torch.randn(n, q, generator=generator, dtype=dtype)
    X[:, -1] = 1  # the intercept's constant feature
    weights = (torch.rand(count, n, generator=generator) < 0.5).to(dtype)
    weights[:10] = torch.rand(10, 1, generator=generator, dtype=dtype)  # anchors' weights f
    weights[10] = 0
    weights[11] = 0
    weights[11, 3] = 1
    signs = torch.where(torch.rand(count, n, generator=generator) < 0.4, -1.0, 1.0).to(dtype)
    start = 0.5 * torch.randn(count, q, generator=generator, dtype=dtype)
    return X, start, weights, signs


def gradient(
    X: torch.Tensor, theta: torch.Tensor, weights: torch.Tensor, signs: torch.Tensor
) -> torch.Tensor:
    """∇J per problem, ``(P, q)``: θ − 2C Σ_i w_i s_i max(0, 1 − s_i x̃_i·θ) x̃_i."""
    hinge = (1 - signs * (theta @ X.T)).clamp(min=0)
    return theta - 2 * C * ((weights * signs * hinge) @ X)


def test_optima_equal_the_batched_solver_and_zero_the_gradient():
    X, start, weights, signs = problems(torch.float64)
    compiled = hinge_newton_cpu.solve(X, start, weights, signs, C, 1e-12, 100)
    batched = hinge_newton.solve(X, start, weights, signs, C, 1e-12, 100, 2**20)
    torch.testing.assert_close(compiled, batched, rtol=1e-10, atol=1e-12)
    assert gradient(X, compiled, weights, signs).abs().max() < 1e-10
    assert (compiled[10] == 0).all()  # no points: θ = 0
    assert compiled.dtype == torch.float64 and (start != compiled).any()


def test_float32_optima_are_the_float64_ones_to_its_precision():
    X, start, weights, signs = problems(torch.float64, seed=1)
    exact = hinge_newton_cpu.solve(X, start, weights, signs, C, 1e-12, 100)
    single = hinge_newton_cpu.solve(*(t.float() for t in (X, start, weights, signs)), C, 0, 100)
    assert single.dtype == torch.float32
    error = (single.double() - exact).norm(dim=1) / exact.norm(dim=1).clamp(min=1e-12)
    assert error.max() < 1e-4


@pytest.mark.parametrize("tol", [1e-12, 0.3])
def test_results_do_not_depend_on_the_thread_count_or_the_other_problems(tol):
    X, start, weights, signs = problems(torch.float64, seed=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = torch.cat(
            [
                hinge_newton_cpu.solve(
                    X, start[i : i + 1], weights[i : i + 1], signs[i : i + 1], C, tol, 100
                )
                for i in range(len(start))
            ]
        )
        torch.set_num_threads(2)
        together = hinge_newton_cpu.solve(X, start, weights, signs, C, tol, 100)
        assert torch.get_num_threads() == 2  # the caller's count, kept
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(alone, together)


def test_the_iteration_cap_and_a_loose_tolerance_stop_early():
    X, start, weights, signs = problems(torch.float64, seed=3)
    assert torch.equal(hinge_newton_cpu.solve(X, start, weights, signs, C, 1e-12, 0), start)
    loose = hinge_newton_cpu.solve(X, start, weights, signs, C, 0.5, 100)
    exact = hinge_newton_cpu.solve(X, start, weights, signs, C, 1e-12, 100)
    batched = hinge_newton.solve(X, start, weights, signs, C, 0.5, 100, 2**20)
    # The same stopping rule as the batched solver's: the same problems stop early.
    torch.testing.assert_close(loose, batched, rtol=1e-8, atol=1e-10)
    assert not torch.allclose(loose, exact)
