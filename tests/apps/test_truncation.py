"""TMC truncation on the utility's range, what the result records about it, and
leave-one-out against scikit-learn retrained without each point."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from mp_ray.apps.models import RetrainedModels
from mp_ray.apps.utility import Utility
from mp_ray.apps.valuation import (
    MaxSamples,
    NoTruncation,
    RelativeTruncation,
    ValuationResult,
    leave_one_out,
    tmc_shapley,
)
from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import Dataset, load_dataset
from mp_ray.learners import make_learner
from mp_ray.sampling import PermutationSampler
from mp_ray.store import ExperimentStore, StoreSpec

N, PERMUTATIONS, SEED, RTOL = 12, 40, 5, 0.1


@pytest.fixture(scope="module")
def game() -> tuple[Dataset, Utility, np.ndarray, np.ndarray]:
    """A neg_loss utility over 12 breast_cancer points, the permutations TMC draws from
    ``SEED`` ``(P, n)`` and the utility of every prefix of each ``(P, n + 1)``."""
    data = load_dataset(DatasetConfig(source="sklearn", name="breast_cancer", max_train=N))
    learner = make_learner(
        LearnerConfig(kind="logistic", tol=1e-10), data.X_train, data.y_train, data.n_classes
    )
    utility = Utility(RetrainedModels(learner), data.X_val, data.y_val, "neg_loss")
    sampler = PermutationSampler(N, SEED)
    permutations = np.stack([np.argsort(sampler.ranks(c)) for c in range(PERMUTATIONS)])
    ranks = np.argsort(permutations, axis=1)
    masks = ranks[:, None, :] < np.arange(N + 1)[None, :, None]  # (P, n + 1, n)
    prefixes = utility(masks.reshape(-1, N)).reshape(PERMUTATIONS, N + 1)
    return data, utility, permutations, prefixes


def cuts_by_rule(prefixes: np.ndarray, tolerance: float, burn_in: int) -> np.ndarray:
    """The first prefix length j ≥ max(1, burn_in), j < n, with |U(π[:j]) − U(D)| ≤
    ``tolerance`` in each permutation ``(P,)``; n where there is none."""
    close = np.abs(prefixes[:, :N] - prefixes[:, N:]) <= tolerance
    close[:, : max(1, burn_in)] = False
    return np.where(close.any(axis=1), close.argmax(axis=1), N)


@pytest.mark.parametrize("burn_in_fraction", [0.0, 0.5])
def test_truncation_is_relative_to_the_utility_range(game, burn_in_fraction):
    _, utility, permutations, prefixes = game
    result = tmc_shapley(
        utility,
        MaxSamples(PERMUTATIONS),
        SEED,
        RelativeTruncation(RTOL, burn_in_fraction),
        round_size=16,
    )
    full, empty = prefixes[0, N], prefixes[0, 0]
    burn_in = math.ceil(burn_in_fraction * N)
    cuts = cuts_by_rule(prefixes, RTOL * abs(full - empty), burn_in)
    # The old scale, |U(D)|, cuts other permutations: the test tells the rules apart.
    assert not np.array_equal(cuts, cuts_by_rule(prefixes, RTOL * abs(full), burn_in))
    truncated = cuts < N
    assert 0 < truncated.mean() < 1
    # Every marginal from the prefix utilities, held at the cut.
    held = prefixes.copy()
    for p, cut in enumerate(cuts):
        held[p, cut + 1 :] = held[p, cut]
    marginals = np.empty((PERMUTATIONS, N))
    marginals[np.arange(PERMUTATIONS)[:, None], permutations] = np.diff(held, axis=1)
    np.testing.assert_allclose(result.values, marginals.mean(axis=0), atol=1e-7)
    assert result.params["utility_range"] == pytest.approx(abs(full - empty), abs=1e-9)
    assert result.params["truncated_share"] == truncated.mean()
    assert result.params["mean_truncation_prefix"] == pytest.approx(cuts[truncated].mean() / N)
    assert result.params["mean_truncation_prefix"] >= burn_in / N


def test_without_truncation_nothing_is_cut(game):
    _, utility, _, prefixes = game
    result = tmc_shapley(utility, MaxSamples(16), SEED, NoTruncation())
    assert result.params["truncated_share"] == 0.0
    assert result.params["mean_truncation_prefix"] is None
    assert result.params["utility_range"] == pytest.approx(abs(prefixes[0, N] - prefixes[0, 0]))
    assert result.n_evaluations == 2 + 16 * (N - 1)


@pytest.mark.parametrize("truncation", [RelativeTruncation(RTOL), NoTruncation()])
def test_truncation_params_round_trip_through_parquet_and_the_store(game, truncation, tmp_path):
    data, utility, _, _ = game
    result = tmc_shapley(utility, MaxSamples(16), SEED, truncation)
    result.to_parquet(str(tmp_path / "values.parquet"))
    assert ValuationResult.from_parquet(str(tmp_path / "values.parquet")).params == result.params
    spec = StoreSpec(
        n_rows=4,
        n_train=N,
        n_params=31,
        n_targets=1,
        metric_names=("val_loss",),
        block_rows=4,
        dataset_fingerprint=data.fingerprint,
        dataset_name=data.name,
        root_seed=0,
    )
    store = ExperimentStore.create_or_open(str(tmp_path / "store.zarr"), spec)
    result.to_store(store, "tmc")
    back = ValuationResult.from_store(ExperimentStore.open(str(tmp_path / "store.zarr")), "tmc")
    assert back.params == result.params
    np.testing.assert_array_equal(back.values, result.values)


@pytest.mark.parametrize("metric", ["neg_loss", "accuracy"])
def test_leave_one_out_is_the_difference_of_two_retrained_models(metric):
    data = load_dataset(DatasetConfig(source="sklearn", name="breast_cancer", max_train=N))
    learner = make_learner(
        LearnerConfig(kind="logistic", tol=1e-10), data.X_train, data.y_train, data.n_classes
    )
    result = leave_one_out(Utility(RetrainedModels(learner), data.X_val, data.y_val, metric))

    def utility(keep: np.ndarray) -> float:
        """scikit-learn's model on the kept points, scored on the validation split."""
        X = data.X_train.astype(np.float64)
        model = LogisticRegression(C=1.0, tol=1e-10, solver="newton-cholesky")
        model.fit(X[keep], data.y_train[keep])
        if metric == "accuracy":
            return model.score(data.X_val, data.y_val)
        return -log_loss(data.y_val, model.predict_proba(data.X_val))

    everything = np.ones(N, dtype=bool)
    expected = [utility(everything) - utility(np.arange(N) != i) for i in range(N)]
    np.testing.assert_allclose(result.values, expected, atol=1e-6)
    assert np.any(np.abs(expected) > 1e-3)  # not a trivially zero comparison
    assert result.params["metric"] == metric and result.n_evaluations == N + 1
