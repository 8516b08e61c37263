"""Data values by retraining against exact semivalues computed by enumerating every subset."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.special import beta as beta_function

from mp_ray.apps.models import RetrainedModels
from mp_ray.apps.utility import Utility
from mp_ray.apps.valuation import (
    AbsoluteStandardError,
    MaxSamples,
    NoTruncation,
    RelativeTruncation,
    ValuationResult,
    banzhaf_msr,
    beta_shapley,
    leave_one_out,
    tmc_shapley,
)
from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner

N = 8


@pytest.fixture(scope="module")
def game():
    """A utility over 8 breast_cancer points and U of every one of its 256 subsets."""
    data = load_dataset(DatasetConfig(source="sklearn", name="breast_cancer", max_train=N))
    learner = make_learner(
        LearnerConfig(kind="logistic", tol=1e-8), data.X_train, data.y_train, data.n_classes
    )
    utility = Utility(RetrainedModels(learner), data.X_val, data.y_val, "neg_loss")
    subsets = np.array(list(itertools.product([False, True], repeat=N)))
    table = {tuple(mask): value for mask, value in zip(subsets, utility(subsets), strict=True)}
    return utility, table


def exact_semivalue(table: dict, p) -> np.ndarray:
    """Σ_{S ⊆ D∖i} p(|S|)·(U(S ∪ i) − U(S)), straight from the definition."""
    values = np.zeros(N)
    for subset in table:
        for i in range(N):
            if not subset[i]:
                joined = tuple(True if j == i else m for j, m in enumerate(subset))
                values[i] += p(sum(subset)) * (table[joined] - table[subset])
    return values


def shapley_p(k: int) -> float:
    return math.factorial(k) * math.factorial(N - 1 - k) / math.factorial(N)


def test_leave_one_out_is_exact(game):
    utility, table = game
    result = leave_one_out(utility)
    full = table[(True,) * N]
    expected = [full - table[tuple(j != i for j in range(N))] for i in range(N)]
    np.testing.assert_allclose(result.values, expected, atol=1e-12)
    assert result.n_evaluations == N + 1 and result.converged


def test_tmc_shapley_without_truncation_matches_exact_shapley(game):
    utility, table = game
    exact = exact_semivalue(table, shapley_p)
    result = tmc_shapley(utility, MaxSamples(1500), truncation=NoTruncation(), round_size=500)
    # The estimate is unbiased: every point within 4 standard errors of the exact value.
    assert np.all(np.abs(result.values - exact) <= 4 * result.stderr + 1e-9)
    assert result.stderr.max() < 0.1 * np.abs(exact).max()
    # Shapley's efficiency: values sum to U(D) − U(∅) in every permutation.
    assert result.values.sum() == pytest.approx(table[(True,) * N] - table[(False,) * N])


def test_truncation_scores_fewer_models_and_stays_close(game):
    utility, table = game
    exact = exact_semivalue(table, shapley_p)
    budget = MaxSamples(300)
    # One prefix per permutation and call, so truncated tails are never scored.
    untruncated = tmc_shapley(utility, budget, 0, NoTruncation(), round_size=100, batch_size=100)
    truncated = tmc_shapley(
        utility, budget, 0, RelativeTruncation(0.05), round_size=100, batch_size=100
    )
    assert truncated.n_evaluations < untruncated.n_evaluations
    assert np.corrcoef(truncated.values, exact)[0, 1] > 0.95


def test_beta_shapley_matches_its_exact_semivalue(game):
    utility, table = game
    alpha, beta = 4.0, 1.0
    exact = exact_semivalue(
        table, lambda k: beta_function(k + beta, N - 1 - k + alpha) / beta_function(alpha, beta)
    )
    result = beta_shapley(utility, MaxSamples(1500), alpha=alpha, beta=beta, round_size=500)
    assert np.all(np.abs(result.values - exact) <= 4 * result.stderr + 1e-9)
    # α = β = 1 is the Shapley value.
    one = beta_shapley(utility, MaxSamples(50), alpha=1, beta=1, seed=3, round_size=50)
    shapley = tmc_shapley(utility, MaxSamples(50), 3, NoTruncation(), round_size=50)
    np.testing.assert_allclose(one.values, shapley.values, atol=1e-12)


def test_banzhaf_msr_matches_exact_banzhaf_and_stops_on_its_criterion(game):
    utility, table = game
    exact = exact_semivalue(table, lambda k: 2.0 ** -(N - 1))
    result = banzhaf_msr(utility, MaxSamples(8000), round_size=2000)
    assert np.all(np.abs(result.values - exact) <= 4 * result.stderr + 1e-9)
    assert not result.converged  # only the budget stopped it
    loose = banzhaf_msr(utility, MaxSamples(8000) | AbsoluteStandardError(0.05), round_size=500)
    assert loose.converged and loose.n_evaluations < 8000 and loose.stderr.max() <= 0.05
    assert loose.params["stopping"] == "max 8,000 samples | stderr ≤ 0.05"


def test_runs_are_reproducible_from_the_seed(game):
    utility, _ = game
    budget = MaxSamples(40)
    first = tmc_shapley(utility, budget, seed=7, round_size=20)
    again = tmc_shapley(utility, budget, seed=7, round_size=20)
    np.testing.assert_array_equal(first.values, again.values)
    other = tmc_shapley(utility, budget, seed=8, round_size=20)
    assert not np.array_equal(first.values, other.values)


def test_result_round_trips_through_parquet(game, tmp_path):
    utility, _ = game
    result = tmc_shapley(utility, MaxSamples(20), round_size=10)
    result.to_parquet(str(tmp_path / "values.parquet"))
    back = ValuationResult.from_parquet(str(tmp_path / "values.parquet"))
    np.testing.assert_array_equal(back.values, result.values)
    np.testing.assert_array_equal(back.stderr, result.stderr)
    assert back.method == "tmc_shapley" and back.params == result.params


def test_bad_inputs_are_named(game):
    utility, _ = game
    with pytest.raises(ValueError, match="MaxSamples needs a whole number"):
        MaxSamples(0)
    with pytest.raises(ValueError, match="AbsoluteStandardError needs a tolerance > 0"):
        AbsoluteStandardError(-1.0)
    with pytest.raises(ValueError, match="burn_in_fraction must lie in"):
        RelativeTruncation(0.1, 1.5)
    with pytest.raises(ValueError, match="round_size must be ≥ 1"):
        tmc_shapley(utility, MaxSamples(5), round_size=0)


def test_truncation_waits_for_the_burn_in(game):
    utility, _ = game
    budget = MaxSamples(100)
    early = tmc_shapley(utility, budget, 0, RelativeTruncation(0.5), round_size=100, batch_size=100)
    late = tmc_shapley(
        utility, budget, 0, RelativeTruncation(0.5, 0.75), round_size=100, batch_size=100
    )
    # A loose tolerance truncates at once; with the burn-in, 6 of 8 prefixes are scored first.
    assert early.n_evaluations < late.n_evaluations
    assert late.n_evaluations >= 2 + 100 * 5
