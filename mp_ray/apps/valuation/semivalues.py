"""Data values: leave-one-out and Monte-Carlo semivalues, every batch of subsets one call.

With U(S) the utility of the model trained on S (a :class:`~mp_ray.apps.utility.Utility`,
or any :class:`~mp_ray.apps.utility.SubsetUtility` such as a learned one) and
Δ_i(S) = U(S ∪ {i}) − U(S) for S ⊆ D ∖ {i}, n = |D|:

- **leave-one-out**: v_i = U(D) − U(D ∖ {i}) (n + 1 models, exact).
- **semivalues** v_i = Σ_{S ⊆ D∖{i}} p(|S|) Δ_i(S) with Σ_k C(n−1, k) p(k) = 1:

  - Shapley: p(k) = k!(n−1−k)!/n!;
  - Beta(α, β)-Shapley (Kwon & Zou, 2022): p(k) = B(k + β, n − 1 − k + α) / B(α, β),
    α > β favours small subsets (Beta(16, 1) is their default); α = β = 1 is Shapley;
  - Banzhaf: p(k) = 2^{−(n−1)}.

Estimators:

- :func:`permutation_semivalue` (TMC-Shapley, Beta-Shapley): uniformly random permutations
  π; the prefix before i has size k with probability 1/n and is uniform given k, so
  ω(k)·Δ_i(prefix) with ω(k) = n·C(n−1, k)·p(k) is unbiased (ω = 1 for Shapley). The prefixes
  of all permutations in a round are scored in chunks, one batch of masks per call.
  ``truncation=`` a policy (:mod:`~mp_ray.apps.valuation.truncation`: ``NoTruncation()``,
  ``RelativeTruncation(rtol, burn_in_fraction)``) cuts a permutation once its prefixes come
  close to U(D); the result's params record the policy and what it cut.
- :func:`banzhaf_msr` (Wang & Jia, 2023, maximum sample reuse): Bernoulli(½) subsets, each
  scored once and used for every point: v_i = mean U(S ∋ i) − mean U(S ∌ i).

Samples (permutations, or subsets for MSR) are drawn in rounds of ``round_size`` until the
stopping criterion (:mod:`~mp_ray.apps.valuation.stopping`, e.g. ``MaxSamples(500) |
AbsoluteStandardError(0.01)``) is met after a round; a round never draws past the
criterion's sample limit. Sample r is drawn from (seed, r) alone, so runs are reproducible,
and ``continue_from=`` an earlier result of the same method, seed and settings draws
samples r = its count onwards and pools them with its moments: the values equal those of
one longer run with the same seed (up to rounding). The estimators call ``on_progress``
with the run's :class:`~mp_ray.apps.valuation.stopping.SamplingState` after each round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mp_ray.apps.utility import SubsetUtility
from mp_ray.apps.valuation.moments import Moments
from mp_ray.apps.valuation.result import ValuationResult
from mp_ray.apps.valuation.stopping import SamplingState, StoppingCriterion
from mp_ray.apps.valuation.truncation import (
    NoTruncation,
    RelativeTruncation,
    Truncation,
    TruncationTally,
)
from mp_ray.sampling import BernoulliSampler, PermutationSampler

ProgressCallback = Callable[[SamplingState], None]
NO_TRUNCATION = NoTruncation()
TMC_TRUNCATION = RelativeTruncation(0.01)  # TMC's default policy


def shapley_weights(n: int) -> np.ndarray:
    """ω(k) = 1 for k = 0..n−1 (the Shapley value)."""
    return np.ones(n)


def beta_weights(n: int, alpha: float = 16.0, beta: float = 1.0) -> np.ndarray:
    """ω(k) = n·C(n−1, k)·B(k + β, n − 1 − k + α)/B(α, β) for k = 0..n−1, ``(n,)``."""
    if alpha <= 0 or beta <= 0:
        raise ValueError("Beta-Shapley needs alpha > 0 and beta > 0")

    def log_beta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    return np.array(
        [
            math.exp(
                math.log(n)
                + math.lgamma(n)
                - math.lgamma(k + 1)
                - math.lgamma(n - k)
                + log_beta(k + beta, n - 1 - k + alpha)
                - log_beta(alpha, beta)
            )
            for k in range(n)
        ]
    )


def leave_one_out(utility: SubsetUtility) -> ValuationResult:
    """v_i = U(D) − U(D ∖ {i}) from n + 1 models scored as one batch."""
    start = time.perf_counter()
    n = utility.n_train
    masks = ~np.eye(n + 1, n, k=-1, dtype=bool)  # row 0: D; row i + 1: D without i
    scores = utility(masks)
    return ValuationResult(
        method="leave_one_out",
        values=scores[0] - scores[1:],
        stderr=np.zeros(n),
        counts=np.ones(n, dtype=np.int64),
        n_evaluations=n + 1,
        converged=True,
        seconds=time.perf_counter() - start,
        params={"metric": utility.metric},
    )


def _permutations(seed: int, first: int, count: int, n: int) -> np.ndarray:
    """Permutations ``first .. first + count − 1`` of range(n): the orders of the sampler's
    permutation chains, each from (seed, index)."""
    sampler = PermutationSampler(n, seed)
    return np.stack([np.argsort(sampler.ranks(index)) for index in range(first, first + count)])


def _start(
    continue_from: ValuationResult | None,
    method: str,
    streams: int,
    n: int,
    seed: int,
    setting: dict[str, Any],
) -> tuple[Moments, int]:
    """The moments ``(streams, n)`` and sample count a run starts from: none, or those of
    the result it continues (checked to be this run's method, seed and ``setting``)."""
    if continue_from is None:
        return Moments.empty(streams, n), 0
    moments = continue_from.continued_moments(method, seed, setting, n)
    return moments, int(continue_from.params["samples"])


def _sample(
    stopping: StoppingCriterion,
    round_size: int,
    moments: Moments,
    samples: int,
    draw: Callable[[int, int], None],
    start: float,
    on_progress: ProgressCallback | None,
) -> tuple[int, bool]:
    """Draw rounds until ``stopping`` is met: ``draw(first, count)`` adds samples ``first ..
    first + count − 1`` to ``moments``; rounds of ``round_size``, none past the criterion's
    sample limit. Returns the samples drawn in all and whether the run converged."""
    if round_size < 1:
        raise ValueError(f"round_size must be ≥ 1, got {round_size}")

    def state() -> SamplingState:
        return SamplingState(
            samples,
            moments.values(),
            moments.stderr(),
            moments.counts(),
            time.perf_counter() - start,
        )

    now = state()
    while not stopping(now):
        limit = stopping.sample_limit
        count = round_size if limit is None else min(round_size, limit - samples)
        draw(samples, count)
        samples += count
        now = state()
        if on_progress is not None:
            on_progress(now)
    return samples, stopping.converged(now)


def _finish(
    method: str,
    moments: Moments,
    evaluations: int,
    converged: bool,
    start: float,
    params: dict[str, Any],
    continue_from: ValuationResult | None,
) -> ValuationResult:
    """The run's result; continuing another, its evaluations and seconds add to that run's,
    and params it recorded besides this run's (dataset, models…) are kept."""
    seconds = time.perf_counter() - start
    if continue_from is not None:
        evaluations += continue_from.n_evaluations
        seconds += continue_from.seconds
        params = {**continue_from.params, **params}
        params.pop("fidelity", None)  # a check of the earlier run's values
    return ValuationResult.from_moments(method, moments, evaluations, converged, seconds, params)


def _prefix_utilities(
    utility: SubsetUtility,
    permutations: np.ndarray,
    full: float,
    empty: float,
    tolerance: float | None,
    batch_size: int,
    burn_in: int = 0,
) -> tuple[np.ndarray, int, np.ndarray]:
    """U of every prefix π[:j], j = 0..n, of each permutation ``(P, n)`` → ``(P, n + 1)``,
    each permutation truncated at the first prefix whose utility is within ``tolerance`` of
    U(D) (none before prefix length ``burn_in``; never with None) and its tail held at that
    value; the number of models scored; and the prefix length of each cut ``(P,)``, n for
    a permutation not truncated."""
    count, n = permutations.shape
    ranks = np.empty_like(permutations)
    ranks[np.arange(count)[:, None], permutations] = np.arange(n)
    values = np.full((count, n + 1), np.nan)
    values[:, 0], values[:, n] = empty, full
    position = np.ones(count, dtype=np.int64)  # next prefix length to score, per permutation
    cuts = np.full(count, n, dtype=np.int64)
    active = np.arange(count)
    scored = 0
    while active.size:
        chunk = max(1, batch_size // active.size)
        lengths = position[active, None] + np.arange(chunk)  # (A, chunk)
        valid = lengths < n  # U(D) is known
        rows, offsets = np.nonzero(valid)
        masks = ranks[active[rows]] < lengths[rows, offsets, None]
        values[active[rows], lengths[rows, offsets]] = utility(masks)
        scored += len(masks)
        still = []
        for a, p in enumerate(active):
            last = min(int(lengths[a, -1]), n - 1)
            first = max(int(position[p]), burn_in)
            if tolerance is not None and first <= last:
                span = values[p, first : last + 1]
                close = np.nonzero(np.abs(span - full) <= tolerance)[0]
                if close.size:
                    cuts[p] = first + int(close[0])
                    values[p, cuts[p] + 1 :] = values[p, cuts[p]]
                    continue
            if last + 1 >= n:
                continue
            position[p] = last + 1
            still.append(p)
        active = np.array(still, dtype=np.int64)
    return values, scored, cuts


def permutation_semivalue(
    utility: SubsetUtility,
    weights: np.ndarray,
    stopping: StoppingCriterion,
    seed: int = 0,
    truncation: Truncation = NO_TRUNCATION,
    *,
    round_size: int = 16,
    batch_size: int = 1024,
    method: str = "semivalue",
    params: dict[str, Any] | None = None,
    continue_from: ValuationResult | None = None,
    on_progress: ProgressCallback | None = None,
) -> ValuationResult:
    """Permutation-sampling estimate of the semivalue with weights ``ω (n,)`` (see the
    module docstring): ``round_size`` permutations per round until ``stopping`` is met,
    ``batch_size`` subsets scored per call, permutations cut by the ``truncation`` policy.
    ``params`` (e.g. Beta's α, β) are recorded with the result and must match those of
    ``continue_from``, the result this run continues."""
    start = time.perf_counter()
    n = utility.n_train
    if weights.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {weights.shape}")
    ends = utility(np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]))
    empty, full = float(ends[0]), float(ends[1])
    utility_range = abs(full - empty)
    setting = {
        "metric": utility.metric,
        **truncation.params(),
        **(params or {}),
        "utility_range": utility_range,
    }
    moments, samples = _start(continue_from, method, 1, n, seed, setting)
    tolerance, burn_in = truncation.tolerance(full, empty), truncation.burn_in(n)
    evaluations = 2
    tally = TruncationTally(n)

    def draw(first: int, count: int) -> None:
        nonlocal evaluations, tally
        permutations = _permutations(seed, first, count, n)
        prefix, scored, cuts = _prefix_utilities(
            utility, permutations, full, empty, tolerance, batch_size, burn_in
        )
        evaluations += scored
        tally += TruncationTally.of_cuts(cuts, n)
        marginals = np.empty((count, n))
        # The point at position k joins a prefix of size k.
        marginals[np.arange(count)[:, None], permutations] = np.diff(prefix, axis=1) * weights
        moments.add(marginals)

    samples, converged = _sample(stopping, round_size, moments, samples, draw, start, on_progress)
    if continue_from is not None:
        tally = TruncationTally.of_params(continue_from.params, n) + tally
    return _finish(
        method,
        moments,
        evaluations,
        converged,
        start,
        {
            **setting,
            "seed": seed,
            "samples": samples,
            "stopping": str(stopping),
            **tally.params(utility_range),
        },
        continue_from,
    )


def tmc_shapley(
    utility: SubsetUtility,
    stopping: StoppingCriterion,
    seed: int = 0,
    truncation: Truncation = TMC_TRUNCATION,
    *,
    round_size: int = 16,
    batch_size: int = 1024,
    continue_from: ValuationResult | None = None,
    on_progress: ProgressCallback | None = None,
) -> ValuationResult:
    """Truncated Monte-Carlo Shapley (Ghorbani & Zou, 2019); see
    :func:`permutation_semivalue`."""
    return permutation_semivalue(
        utility,
        shapley_weights(utility.n_train),
        stopping,
        seed,
        truncation,
        round_size=round_size,
        batch_size=batch_size,
        method="tmc_shapley",
        continue_from=continue_from,
        on_progress=on_progress,
    )


def beta_shapley(
    utility: SubsetUtility,
    stopping: StoppingCriterion,
    alpha: float = 16.0,
    beta: float = 1.0,
    seed: int = 0,
    truncation: Truncation = NO_TRUNCATION,
    *,
    round_size: int = 16,
    batch_size: int = 1024,
    continue_from: ValuationResult | None = None,
    on_progress: ProgressCallback | None = None,
) -> ValuationResult:
    """Beta(α, β)-Shapley (Kwon & Zou, 2022) by weighted permutation sampling; see
    :func:`permutation_semivalue`."""
    return permutation_semivalue(
        utility,
        beta_weights(utility.n_train, alpha, beta),
        stopping,
        seed,
        truncation,
        round_size=round_size,
        batch_size=batch_size,
        method="beta_shapley",
        params={"alpha": alpha, "beta": beta},
        continue_from=continue_from,
        on_progress=on_progress,
    )


def banzhaf_msr(
    utility: SubsetUtility,
    stopping: StoppingCriterion,
    seed: int = 0,
    *,
    round_size: int = 1024,
    continue_from: ValuationResult | None = None,
    on_progress: ProgressCallback | None = None,
) -> ValuationResult:
    """Data Banzhaf by maximum sample reuse (Wang & Jia, 2023): ``round_size`` Bernoulli(½)
    subsets per round, scored in one call, until ``stopping`` is met; a sample is one
    subset. Its moments keep two streams per point: the utilities of the subsets with it and
    of those without it."""
    start = time.perf_counter()
    n = utility.n_train
    setting = {"metric": utility.metric}
    moments, samples = _start(continue_from, "banzhaf_msr", 2, n, seed, setting)
    sampler = BernoulliSampler(n, seed, 0.5)

    def draw(first: int, count: int) -> None:
        masks = sampler.masks(np.arange(first, first + count))
        scores = np.broadcast_to(utility(masks)[:, None], masks.shape)
        moments.add(scores, 0, where=masks)
        moments.add(scores, 1, where=~masks)

    first = samples
    samples, converged = _sample(stopping, round_size, moments, samples, draw, start, on_progress)
    return _finish(
        "banzhaf_msr",
        moments,
        samples - first,
        converged,
        start,
        {**setting, "seed": seed, "samples": samples, "stopping": str(stopping)},
        continue_from,
    )
