"""Samplers: every row's mask comes from (root seed, row) alone."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import SamplerConfig
from mp_ray.sampling import make_sampler, permutation_groups, row_seeds

N = 40
KINDS = ["bernoulli", "fixed_size", "uniform_size", "leave_one_out", "permutation"]


def sampler(kind: str, seed: int = 0, n: int = N, **fields):
    return make_sampler(SamplerConfig(kind=kind, **fields), n, seed)


@pytest.mark.parametrize("kind", KINDS)
def test_a_row_is_the_same_in_any_batch_or_order(kind):
    rows = np.arange(N + 1 if kind == "leave_one_out" else 3 * N)  # three permutation chains
    full = sampler(kind).masks(rows)
    assert full.shape == (len(rows), N) and full.dtype == bool
    shuffled = np.random.default_rng(1).permutation(rows)
    np.testing.assert_array_equal(sampler(kind).masks(shuffled), full[shuffled])
    for block in np.array_split(rows, 7):
        np.testing.assert_array_equal(sampler(kind).masks(block), full[block])
    np.testing.assert_array_equal(sampler(kind).masks([7, 7]), full[[7, 7]])
    assert sampler(kind).masks(np.array([], dtype=np.int64)).shape == (0, N)


@pytest.mark.parametrize("kind", ["bernoulli", "fixed_size", "uniform_size", "permutation"])
def test_seeds_and_rows_differ(kind):
    masks = sampler(kind).masks(np.arange(2 * N))
    assert not np.array_equal(sampler(kind, seed=1).masks(np.arange(2 * N)), masks)
    assert len(np.unique(masks, axis=0)) > N


def test_bernoulli_rate():
    masks = sampler("bernoulli", n=200, seed=5, alpha=0.3).masks(np.arange(500))
    assert masks.mean() == pytest.approx(0.3, abs=0.01)
    assert masks.mean(axis=0) == pytest.approx(0.3, abs=0.1)  # no point favoured


def test_fixed_size_is_exact():
    sizes = sampler("fixed_size", alpha=0.25).masks(np.arange(200)).sum(axis=1)
    assert (sizes == 10).all()
    with pytest.raises(ValueError, match=r"round\(alpha·n\) = round\(0\.01·40\) is 0 points"):
        sampler("fixed_size", alpha=0.01)


def test_uniform_size_is_in_range_and_roughly_uniform():
    masks = sampler("uniform_size", min_size=5, max_size=25).masks(np.arange(4200))
    sizes = masks.sum(axis=1)
    assert sizes.min() == 5 and sizes.max() == 25
    counts = np.bincount(sizes, minlength=26)[5:]
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
    assert chi2 < 45  # 20 degrees of freedom: p ≈ 0.001
    assert masks.mean(axis=0) == pytest.approx(15 / N, abs=0.05)  # points uniform
    assert sampler("uniform_size").masks(np.arange(500)).sum(axis=1).max() == N  # default n


def test_leave_one_out_structure():
    loo = sampler("leave_one_out")
    assert loo.default_rows == loo.valid_rows == N + 1
    masks = loo.masks(np.arange(N + 1))
    assert masks[0].all()
    np.testing.assert_array_equal(~masks[1:], np.eye(N, dtype=bool))
    with pytest.raises(ValueError, match=r"row 41 does not exist: this sampler has 41 rows"):
        loo.masks([3, 41])


@pytest.mark.parametrize("kind", ["bernoulli", "fixed_size", "uniform_size", "permutation"])
def test_other_kinds_are_unbounded(kind):
    assert sampler(kind).default_rows is None and sampler(kind).valid_rows is None
    assert sampler(kind).masks([10**12]).shape == (1, N)


def test_permutation_prefixes_are_nested_chains():
    rows = np.arange(3 * N)
    masks = sampler("permutation").masks(rows)
    np.testing.assert_array_equal(masks.sum(axis=1), rows % N + 1)
    chains = permutation_groups(rows, N)
    np.testing.assert_array_equal(chains, rows // N)
    for chain in range(3):
        block = masks[chains == chain]
        assert (block[1:] >= block[:-1]).all()  # each prefix contains the previous one
        assert block[-1].all()
    assert not np.array_equal(masks[:N], masks[N : 2 * N])
    late = sampler("permutation").masks([5 * N + 3])  # chain 5 alone, position 3
    np.testing.assert_array_equal(late, sampler("permutation").masks(np.arange(5 * N, 6 * N))[3:4])


def test_row_seeds_are_reproducible_and_distinct():
    seeds = row_seeds(3, np.arange(1000))
    assert seeds.dtype == np.int64 and (seeds >= 0).all()
    assert len(np.unique(seeds)) == 1000
    np.testing.assert_array_equal(row_seeds(3, [999, 5]), seeds[[999, 5]])
    assert not np.array_equal(row_seeds(4, np.arange(10)), seeds[:10])


def test_bad_rows_and_sizes_are_named():
    bernoulli = sampler("bernoulli")
    with pytest.raises(ValueError, match="row indices must be non-negative, got -1"):
        bernoulli.masks([3, -1])
    with pytest.raises(ValueError, match="rows must be a 1-d array of integers"):
        bernoulli.masks(np.array([0.5]))
    with pytest.raises(ValueError, match="rows must be a 1-d array of integers"):
        bernoulli.masks(np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="row indices must be non-negative"):
        row_seeds(0, [-2])
    with pytest.raises(ValueError, match="max_size=50 exceeds the ground set n=40"):
        sampler("uniform_size", max_size=50)
    with pytest.raises(ValueError, match="min_size=41 exceeds max_size=40"):
        sampler("uniform_size", min_size=41)
    with pytest.raises(ValueError, match="at least one point, got n=0"):
        sampler("bernoulli", n=0)
    with pytest.raises(ValueError, match="at least one point, got n=0"):
        permutation_groups([1], 0)
