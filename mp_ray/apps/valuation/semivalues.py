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
  Truncation (Ghorbani & Zou, 2019, TMC): once a prefix's utility is within
  ``truncation_rtol·|U(D) − U(∅)|`` of U(D), a share of the utility's range rather than of
  |U(D)| (an arbitrary value for a loss), the rest of that permutation contributes 0 and is
  not scored (if U(D) = U(∅), only a prefix scoring exactly U(D) truncates). With
  ``burn_in_fraction`` the check starts at prefix length ⌈burn_in·n⌉, as in pyDVL's
  ``RelativeTruncation(rtol, burn_in_fraction)`` (whose scale is |U(D)|). The result's
  params record the range (``utility_range``), the share of permutations truncated
  (``truncated_share``) and the mean prefix length at the cut, as a share of n, over the
  truncated permutations (``mean_truncation_prefix``, None if none was).
- :func:`banzhaf_msr` (Wang & Jia, 2023, maximum sample reuse): Bernoulli(½) subsets, each
  scored once and used for every point: v_i = mean U(S ∋ i) − mean U(S ∌ i).

Convergence (:class:`Convergence`): samples (permutations, or subsets for MSR) are drawn in
rounds; after each round, stop once every point's standard error is ≤ ``stderr_tol``
(utility units; after ``min_samples``) or the budget ``max_samples`` is spent. Sample r is
drawn from (seed, r) alone, so runs are reproducible and extend each other. The estimators
call ``on_progress`` with the number of samples of each round as it finishes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mp_ray.apps.utility import SubsetUtility
from mp_ray.apps.valuation.result import ValuationResult
from mp_ray.sampling import BernoulliSampler, PermutationSampler


@dataclass(frozen=True)
class Convergence:
    """When a Monte-Carlo valuation stops; see the module docstring."""

    max_samples: int = 500
    min_samples: int = 20
    stderr_tol: float | None = None
    round_size: int = 16

    def __post_init__(self) -> None:
        if self.max_samples < 1 or self.round_size < 1 or self.min_samples < 0:
            raise ValueError("max_samples and round_size must be ≥ 1, min_samples ≥ 0")
        if self.stderr_tol is not None and self.stderr_tol <= 0:
            raise ValueError("stderr_tol must be positive (or None)")

    def met(self, samples: int, stderr: np.ndarray) -> bool:
        """Whether the criterion holds after ``samples`` samples with these errors."""
        if self.stderr_tol is None or samples < max(self.min_samples, 2):
            return False
        return bool(np.all(stderr <= self.stderr_tol))


class RunningMoments:
    """Per-point mean and variance of samples arriving in batches (Chan et al.'s update)."""

    def __init__(self, n: int) -> None:
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)

    def add(self, samples: np.ndarray) -> None:
        """Add ``samples (B, n)``: B new samples of every point."""
        b = samples.shape[0]
        if b == 0:
            return
        mean = samples.mean(axis=0)
        m2 = ((samples - mean) ** 2).sum(axis=0)
        total = self.count + b
        delta = mean - self.mean
        self.mean = self.mean + delta * b / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * b / total
        self.count = total

    @property
    def stderr(self) -> np.ndarray:
        variance = np.where(self.count > 1, self.m2 / np.maximum(self.count - 1, 1), np.inf)
        return np.sqrt(variance / np.maximum(self.count, 1))


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


def _run_params(utility: SubsetUtility, convergence: Convergence, seed: int, samples: int) -> dict:
    """What every Monte-Carlo result records about its run."""
    return {
        "metric": utility.metric,
        "seed": seed,
        "samples": samples,
        "max_samples": convergence.max_samples,
        "stderr_tol": convergence.stderr_tol,
    }


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
    convergence: Convergence,
    seed: int = 0,
    truncation_rtol: float | None = None,
    batch_size: int = 1024,
    method: str = "semivalue",
    burn_in_fraction: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
) -> ValuationResult:
    """Permutation-sampling estimate of the semivalue with weights ``ω (n,)`` (see the
    module docstring); ``batch_size`` subsets are scored per call; a permutation is
    truncated once a prefix is within ``truncation_rtol·|U(D) − U(∅)|`` of U(D), checked
    from prefix length ``burn_in_fraction·n`` on."""
    if not 0 <= burn_in_fraction <= 1:
        raise ValueError(f"burn_in_fraction must lie in [0, 1], got {burn_in_fraction}")
    start = time.perf_counter()
    n = utility.n_train
    if weights.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {weights.shape}")
    ends = utility(np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]))
    empty, full = float(ends[0]), float(ends[1])
    utility_range = abs(full - empty)
    tolerance = None if truncation_rtol is None else truncation_rtol * utility_range
    evaluations = 2
    moments = RunningMoments(n)
    cuts: list[np.ndarray] = []  # per round, the prefix length of each cut
    samples, converged = 0, False
    while samples < convergence.max_samples and not converged:
        count = min(convergence.round_size, convergence.max_samples - samples)
        permutations = _permutations(seed, samples, count, n)
        prefix, scored, round_cuts = _prefix_utilities(
            utility,
            permutations,
            full,
            empty,
            tolerance,
            batch_size,
            math.ceil(burn_in_fraction * n),
        )
        evaluations += scored
        cuts.append(round_cuts)
        marginals = np.empty((count, n))
        # The point at position k joins a prefix of size k.
        marginals[np.arange(count)[:, None], permutations] = np.diff(prefix, axis=1) * weights
        moments.add(marginals)
        samples += count
        converged = convergence.met(samples, moments.stderr)
        if on_progress is not None:
            on_progress(count)
    return ValuationResult(
        method=method,
        values=moments.mean,
        stderr=moments.stderr,
        counts=moments.count,
        n_evaluations=evaluations,
        converged=converged,
        seconds=time.perf_counter() - start,
        params={
            **_run_params(utility, convergence, seed, samples),
            "truncation_rtol": truncation_rtol,
            "burn_in_fraction": burn_in_fraction,
            **_truncation_summary(np.concatenate(cuts), n, utility_range),
        },
    )


def _truncation_summary(cuts: np.ndarray, n: int, utility_range: float) -> dict[str, float | None]:
    """What the result records about truncation, from the prefix length of each
    permutation's cut ``(P,)`` (n where it was not truncated); see the module docstring."""
    truncated = cuts < n
    return {
        "utility_range": utility_range,
        "truncated_share": float(truncated.mean()),
        "mean_truncation_prefix": float(cuts[truncated].mean() / n) if truncated.any() else None,
    }


def tmc_shapley(
    utility: SubsetUtility,
    convergence: Convergence,
    seed: int = 0,
    truncation_rtol: float | None = 0.01,
    batch_size: int = 1024,
    burn_in_fraction: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
) -> ValuationResult:
    """Truncated Monte-Carlo Shapley (Ghorbani & Zou, 2019)."""
    return permutation_semivalue(
        utility,
        shapley_weights(utility.n_train),
        convergence,
        seed,
        truncation_rtol,
        batch_size,
        method="tmc_shapley",
        burn_in_fraction=burn_in_fraction,
        on_progress=on_progress,
    )


def beta_shapley(
    utility: SubsetUtility,
    convergence: Convergence,
    alpha: float = 16.0,
    beta: float = 1.0,
    seed: int = 0,
    truncation_rtol: float | None = None,
    batch_size: int = 1024,
    on_progress: Callable[[int], None] | None = None,
) -> ValuationResult:
    """Beta(α, β)-Shapley (Kwon & Zou, 2022) by weighted permutation sampling."""
    result = permutation_semivalue(
        utility,
        beta_weights(utility.n_train, alpha, beta),
        convergence,
        seed,
        truncation_rtol,
        batch_size,
        method="beta_shapley",
        on_progress=on_progress,
    )
    result.params.update(alpha=alpha, beta=beta)
    return result


def banzhaf_msr(
    utility: SubsetUtility,
    convergence: Convergence,
    seed: int = 0,
    batch_size: int = 1024,
    on_progress: Callable[[int], None] | None = None,
) -> ValuationResult:
    """Data Banzhaf by maximum sample reuse (Wang & Jia, 2023); a sample is one subset and
    ``convergence.round_size`` is ignored in favour of ``batch_size`` subsets per round."""
    start = time.perf_counter()
    n = utility.n_train
    sums = np.zeros((2, n))  # Σ U over subsets without / with i
    squares = np.zeros((2, n))
    counts = np.zeros((2, n), dtype=np.int64)
    sampler = BernoulliSampler(n, seed, 0.5)
    samples, converged, stderr = 0, False, np.full(n, np.inf)
    while samples < convergence.max_samples and not converged:
        count = min(batch_size, convergence.max_samples - samples)
        masks = sampler.masks(np.arange(samples, samples + count))
        scores = utility(masks)
        inside = masks.T.astype(np.float64)  # (n, B)
        for side, member in ((1, inside), (0, 1.0 - inside)):
            sums[side] += member @ scores
            squares[side] += member @ scores**2
            counts[side] += member.sum(axis=1).astype(np.int64)
        samples += count
        means = sums / np.maximum(counts, 1)
        variances = (squares - counts * means**2) / np.maximum(counts - 1, 1)
        spread = (np.maximum(variances, 0.0) / np.maximum(counts, 1)).sum(axis=0)
        stderr = np.where((counts > 1).all(axis=0), np.sqrt(spread), np.inf)
        converged = convergence.met(samples, stderr)
        if on_progress is not None:
            on_progress(count)
    means = sums / np.maximum(counts, 1)
    return ValuationResult(
        method="banzhaf_msr",
        values=means[1] - means[0],
        stderr=stderr,
        counts=counts.sum(axis=0),
        n_evaluations=samples,
        converged=converged,
        seconds=time.perf_counter() - start,
        params=_run_params(utility, convergence, seed, samples),
    )
