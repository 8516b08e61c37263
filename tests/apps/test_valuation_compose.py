"""Composable valuation: stopping criteria that combine, truncation policies, runs continued
from an earlier result and results that merge, on a closed-form utility (exact and fast)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from mp_ray.apps.valuation import (
    AbsoluteStandardError,
    AllOf,
    AnyOf,
    MaxSamples,
    MaxTime,
    MinSamples,
    NoTruncation,
    RelativeTruncation,
    SamplingState,
    ValuationResult,
    banzhaf_msr,
    beta_shapley,
    leave_one_out,
    tmc_shapley,
)
from mp_ray.sampling import BernoulliSampler, PermutationSampler
from mp_ray.store import ExperimentStore, StoreSpec

N = 10
README = Path(__file__).resolve().parents[2] / "README.md"


class Game:
    """U(S) = log(1 + Σ_{i∈S} w_i) − 0.02·|S| on ``masks (B, n)`` → ``(B,)``: each row
    scored on its own, so a subset's utility never depends on the batch it came in."""

    metric = "neg_loss"

    def __init__(self, n: int = N, scale: float = 1.0) -> None:
        self.weights = scale * np.random.default_rng(0).gamma(2.0, 1.0, n)
        self.evaluations = 0

    @property
    def n_train(self) -> int:
        return len(self.weights)

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=bool)
        self.evaluations += len(masks)
        return np.log1p((masks * self.weights).sum(axis=1)) - 0.02 * masks.sum(axis=1)


def state(samples: int, stderr: float = np.inf, seconds: float = 0.0) -> SamplingState:
    return SamplingState(samples, np.zeros(N), np.full(N, stderr), np.full(N, samples), seconds)


# -- stopping criteria --------------------------------------------------------------------


def test_criteria_compose_with_or_and_and():
    budget, precise = MaxSamples(500), AbsoluteStandardError(0.01)
    either = budget | MinSamples(20) & precise
    assert isinstance(either, AnyOf) and isinstance(either.parts[1], AllOf)
    assert str(budget | precise) == "max 500 samples | stderr ≤ 0.01"
    assert str(either) == "max 500 samples | (min 20 samples & stderr ≤ 0.01)"
    assert str(MaxSamples(10_000) | MaxTime(60) | precise) == (
        "max 10,000 samples | max 60 s | stderr ≤ 0.01"
    )  # flattened
    # Neither met: few samples, errors too large.
    assert not either(state(10, 0.5))
    # The guard holds the precise part back until 20 samples.
    assert not either(state(10, 0.005)) and either(state(20, 0.005))
    assert either.converged(state(20, 0.005))
    # The budget alone: met, not converged.
    assert either(state(500, 0.5)) and not either.converged(state(500, 0.5))
    # Both at once: converged (the errors are below the tolerance).
    assert either.converged(state(500, 0.005))
    # & of budgets only never converges.
    both = MaxSamples(50) & MaxTime(1.0)
    assert not both(state(60, seconds=0.5)) and both(state(60, seconds=1.5))
    assert not both.converged(state(60, 0.0, seconds=1.5))
    assert MaxTime(2.0)(state(0, seconds=2.0))
    # Precision needs two samples; a single sample's error is undefined.
    assert not precise(state(1, 0.0)) and precise(state(2, 0.01))


def test_completion_is_the_max_over_or_and_the_min_over_and():
    budget, precise = MaxSamples(100), AbsoluteStandardError(0.01)
    assert budget.completion(state(25)) == 0.25
    assert precise.completion(state(25)) == 0.0  # errors undefined
    # Errors fall as 1/√samples: at 0.02, a quarter of the samples needed are drawn.
    assert precise.completion(state(25, 0.02)) == pytest.approx(0.25)
    assert (budget | precise).completion(state(25, 0.01 * 2**0.5)) == pytest.approx(0.5)
    assert (MinSamples(50) & precise).completion(state(25, 0.005)) == 0.5
    assert (budget | precise).completion(state(25, 0.005)) == 1.0
    assert MaxTime(10.0).completion(state(0, seconds=2.5)) == 0.25


def test_sample_limits_bound_each_round():
    assert (MaxSamples(40) | AbsoluteStandardError(0.1)).sample_limit == 40
    assert (MaxSamples(40) | MaxSamples(30)).sample_limit == 30
    assert (MinSamples(20) & AbsoluteStandardError(0.1)).sample_limit is None
    assert (MaxSamples(40) & MinSamples(60)).sample_limit == 60
    # Rounds of 16 stop at the budget exactly.
    seen: list[int] = []
    result = tmc_shapley(Game(), MaxSamples(40), on_progress=lambda s: seen.append(s.samples))
    assert seen == [16, 32, 40] and result.params["samples"] == 40
    assert result.params["stopping"] == "max 40 samples"


def test_precision_stops_the_run_and_time_bounds_it():
    game = Game()
    result = banzhaf_msr(game, MaxSamples(50_000) | AbsoluteStandardError(0.05), round_size=256)
    assert result.converged and result.params["samples"] < 50_000
    assert result.stderr.max() <= 0.05
    guarded = tmc_shapley(
        game, MinSamples(64) & AbsoluteStandardError(10.0), round_size=16, truncation=NoTruncation()
    )
    assert guarded.converged and guarded.params["samples"] == 64
    # Time counts from the call: scoring U(∅) and U(D) already spent this budget.
    timed = tmc_shapley(game, MaxTime(1e-9) | MaxSamples(10_000))
    assert timed.params["samples"] == 0 and not timed.converged


def test_bad_criteria_are_refused():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="MaxSamples needs a whole number of samples"):
            MaxSamples(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MinSamples needs"):
        MinSamples(0)
    with pytest.raises(ValueError, match="MaxTime needs a positive number of seconds"):
        MaxTime(0)
    with pytest.raises(TypeError, match="only stopping criteria combine"):
        MaxSamples(5) | 3  # type: ignore[operator]
    with pytest.raises(ValueError, match="truncation rtol must be ≥ 0"):
        RelativeTruncation(-0.1)


# -- truncation policies --------------------------------------------------------------------


def test_truncation_policies_record_their_rule():
    game = Game()
    # One prefix per permutation and call, so truncated tails are never scored.
    cut = tmc_shapley(game, MaxSamples(32), 0, RelativeTruncation(0.2, 0.5), batch_size=16)
    assert cut.params["truncation_rtol"] == 0.2 and cut.params["burn_in_fraction"] == 0.5
    assert 0 < cut.params["truncated_share"] <= 1
    assert cut.params["mean_truncation_prefix"] >= 0.5
    whole = tmc_shapley(game, MaxSamples(32), 0, NoTruncation(), batch_size=16)
    assert whole.params["truncation_rtol"] is None and whole.params["truncated_share"] == 0.0
    assert whole.n_evaluations == 2 + 32 * (N - 1)
    assert cut.n_evaluations < whole.n_evaluations


# -- continue_from ------------------------------------------------------------------------

RUNS = {
    "tmc": partial(tmc_shapley, truncation=RelativeTruncation(0.05)),
    "banzhaf": partial(banzhaf_msr, round_size=16),
    "beta": partial(beta_shapley, alpha=4.0, beta=1.0),
}


@pytest.mark.parametrize("method", RUNS)
def test_continue_from_equals_one_longer_run_with_the_same_draws(method, tmp_path):
    game, run = Game(), RUNS[method]
    whole = run(game, MaxSamples(100), seed=3)
    first = run(game, MaxSamples(40), seed=3)
    # Saved and read back: a stored result continues as well as one in memory.
    first.to_parquet(str(tmp_path / "first.parquet"))
    saved = ValuationResult.from_parquet(str(tmp_path / "first.parquet"))
    continued = run(game, MaxSamples(100), seed=3, continue_from=saved)
    np.testing.assert_allclose(continued.values, whole.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(continued.stderr, whole.stderr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(continued.counts, whole.counts)
    assert continued.params["samples"] == 100 and continued.params["seed"] == 3
    ends = 0 if method == "banzhaf" else 2  # U(∅) and U(D), scored again
    assert continued.n_evaluations == whole.n_evaluations + ends
    if method == "tmc":
        assert continued.params["truncated_share"] == whole.params["truncated_share"] > 0
        assert continued.params["mean_truncation_prefix"] == pytest.approx(
            whole.params["mean_truncation_prefix"], abs=1e-12
        )
    # A result already past the criterion draws nothing more.
    again = run(game, MaxSamples(100), seed=3, continue_from=continued)
    np.testing.assert_array_equal(again.values, continued.values)


def test_continue_from_refuses_another_run():
    game = Game()
    tmc = tmc_shapley(game, MaxSamples(20), seed=3)
    with pytest.raises(ValueError, match="drew from seed 3, not 0: pass seed=3"):
        tmc_shapley(game, MaxSamples(40), continue_from=tmc)
    with pytest.raises(ValueError, match=r"truncation_rtol: 0\.01 vs 0\.1"):
        tmc_shapley(game, MaxSamples(40), 3, RelativeTruncation(0.1), continue_from=tmc)
    with pytest.raises(ValueError, match="a tmc_shapley result, not a banzhaf_msr one"):
        banzhaf_msr(game, MaxSamples(40), 3, continue_from=tmc)
    with pytest.raises(ValueError, match="utility_range"):
        tmc_shapley(Game(N, scale=2.0), MaxSamples(40), 3, continue_from=tmc)
    with pytest.raises(ValueError, match="values 10 points, this utility 12"):
        tmc_shapley(Game(12), MaxSamples(40), 3, continue_from=tmc)
    beta = beta_shapley(game, MaxSamples(20), alpha=4.0)
    with pytest.raises(ValueError, match=r"alpha: 4\.0 vs 16\.0"):
        beta_shapley(game, MaxSamples(40), continue_from=beta)
    merged = tmc + tmc_shapley(game, MaxSamples(20), seed=4)
    with pytest.raises(ValueError, match=r"merges the streams of seeds \[3, 4\]"):
        tmc_shapley(game, MaxSamples(60), 3, continue_from=merged)
    with pytest.raises(ValueError, match="leave_one_out result cannot be continued: it is exact"):
        tmc_shapley(game, MaxSamples(60), 3, continue_from=leave_one_out(game))


def test_results_saved_without_moments_cannot_be_continued_or_merged(tmp_path):
    """A result as the store held it before the moments were kept: values, stderr, counts."""
    game = Game()
    result = tmc_shapley(game, MaxSamples(20), seed=3)
    spec = StoreSpec(
        n_rows=4,
        n_train=N,
        n_params=3,
        n_targets=1,
        metric_names=("val_loss",),
        block_rows=4,
        dataset_fingerprint="synthetic",
        dataset_name="game",
        root_seed=0,
    )
    store = ExperimentStore.create_or_open(str(tmp_path / "store.zarr"), spec)
    result.to_store(store, "new")
    back = ValuationResult.from_store(ExperimentStore.open(store.uri), "new")
    assert back.moments is not None
    np.testing.assert_array_equal(back.moments.m2, result.moments.m2)  # type: ignore[union-attr]
    old = {"values": result.values, "stderr": result.stderr, "counts": result.counts}
    store.artifacts.write("valuation", "old", old, result._meta())
    old_result = ValuationResult.from_store(ExperimentStore.open(store.uri), "old")
    assert old_result.moments is None
    missing = "lacks the per-point moments \\(moment_count, moment_mean, moment_m2\\)"
    with pytest.raises(ValueError, match=f"cannot be continued: it {missing}"):
        tmc_shapley(game, MaxSamples(40), seed=3, continue_from=old_result)
    with pytest.raises(ValueError, match=f"cannot be merged: it {missing}"):
        old_result + tmc_shapley(game, MaxSamples(20), seed=4)


# -- merging ------------------------------------------------------------------------------


def pooled(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of samples ``(B, n)``, by hand."""
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(len(samples))


def test_merged_tmc_equals_the_pooled_marginals():
    game = Game()
    a = tmc_shapley(game, MaxSamples(30), seed=1, truncation=NoTruncation())
    b = tmc_shapley(game, MaxSamples(20), seed=2, truncation=NoTruncation())
    marginals = []
    for seed, count in ((1, 30), (2, 20)):
        sampler = PermutationSampler(N, seed)
        for c in range(count):
            order = np.argsort(sampler.ranks(c))
            prefixes = np.zeros((N + 1, N), dtype=bool)
            for j in range(1, N + 1):
                prefixes[j, order[:j]] = True
            row = np.empty(N)
            row[order] = np.diff(game(prefixes))
            marginals.append(row)
    values, stderr = pooled(np.array(marginals))
    merged = a + b
    np.testing.assert_allclose(merged.values, values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged.stderr, stderr, rtol=0, atol=1e-12)
    assert merged.counts.tolist() == [50] * N and merged.params["samples"] == 50
    assert merged.params["seeds"] == [1, 2] and "seed" not in merged.params
    assert merged.n_evaluations == a.n_evaluations + b.n_evaluations
    assert merged.method == "tmc_shapley" and not merged.converged


def test_merged_banzhaf_equals_the_pooled_subsets():
    game = Game()
    a = banzhaf_msr(game, MaxSamples(300), seed=1, round_size=64)
    b = banzhaf_msr(game, MaxSamples(200), seed=2)
    masks = np.concatenate(
        [
            BernoulliSampler(N, seed, 0.5).masks(np.arange(count))
            for seed, count in ((1, 300), (2, 200))
        ]
    )
    scores = game(masks)
    values, variance = np.empty(N), np.empty(N)
    for i in range(N):
        mean_in, se_in = pooled(scores[masks[:, i], None])
        mean_out, se_out = pooled(scores[~masks[:, i], None])
        values[i] = mean_in[0] - mean_out[0]
        variance[i] = se_in[0] ** 2 + se_out[0] ** 2
    merged = a.merge(b)
    np.testing.assert_allclose(merged.values, values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged.stderr, np.sqrt(variance), rtol=0, atol=1e-12)
    assert merged.counts.tolist() == [500] * N


def test_merge_refuses_mismatched_results():
    game = Game()
    tmc = tmc_shapley(game, MaxSamples(20), seed=1)
    with pytest.raises(ValueError, match="cannot merge a tmc_shapley result with a banzhaf_msr"):
        tmc + banzhaf_msr(game, MaxSamples(20), seed=2)
    with pytest.raises(ValueError, match="cannot merge values of 10 and 12 points"):
        tmc + tmc_shapley(Game(12), MaxSamples(20), seed=2)
    with pytest.raises(ValueError, match=r"same seed \(\[1, 1\]\): their samples overlap"):
        tmc + tmc_shapley(game, MaxSamples(20), seed=1)
    with pytest.raises(ValueError, match=r"computed otherwise: truncation_rtol: 0\.01 vs None"):
        tmc + tmc_shapley(game, MaxSamples(20), seed=2, truncation=NoTruncation())
    # Merged results merge on, and the truncation records pool.
    three = tmc + tmc_shapley(game, MaxSamples(10), seed=2) + tmc_shapley(game, MaxSamples(30), 3)
    assert three.params["seeds"] == [1, 2, 3] and three.params["samples"] == 60


# -- the README's example -------------------------------------------------------------------


def test_readme_example_runs():
    """The Python block of README's valuation section, run on a small utility."""
    section = README.read_text().split("### Data valuation — `mp-ray value`")[1].split("\n### ")[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    namespace = {"utility": Game()}
    exec(block.group(1), namespace)
    assert namespace["values"].params["samples"] == 500
    assert namespace["banzhaf"].params["seeds"] == [1, 2]
