"""Samplers: every row's mask comes from (root seed, row) alone."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import SamplerConfig
from mp_ray.sampling import make_sampler, permutation_groups, row_seeds

N = 40


def sampler(kind: str, seed: int = 0, **fields):
    return make_sampler(SamplerConfig(kind=kind, **fields), N, seed)


@pytest.mark.parametrize(
    "kind", ["bernoulli", "fixed_size", "uniform_size", "leave_one_out", "permutation"]
)
def test_rows_are_reproducible_in_any_order_and_batch(kind):
    rows = np.arange(30)
    full = sampler(kind).masks(rows)
    shuffled = np.random.default_rng(1).permutation(rows)
    np.testing.assert_array_equal(sampler(kind).masks(shuffled), full[shuffled])
    np.testing.assert_array_equal(sampler(kind).masks([7]), full[7:8])
    if kind != "leave_one_out":
        assert not np.array_equal(sampler(kind, seed=1).masks(rows), full)


def test_bernoulli_rate():
    masks = make_sampler(SamplerConfig(kind="bernoulli", alpha=0.3), 200, 5).masks(np.arange(500))
    assert masks.mean() == pytest.approx(0.3, abs=0.01)


def test_fixed_and_uniform_sizes():
    sizes = sampler("fixed_size", alpha=0.25).masks(np.arange(50)).sum(axis=1)
    assert (sizes == 10).all()
    sizes = sampler("uniform_size", min_size=5, max_size=25).masks(np.arange(4000)).sum(axis=1)
    assert sizes.min() == 5 and sizes.max() == 25
    counts = np.bincount(sizes, minlength=26)[5:]
    assert counts.min() > 0.6 * counts.mean()  # roughly uniform over 21 sizes


def test_leave_one_out_structure():
    loo = sampler("leave_one_out")
    assert loo.default_rows == N + 1
    masks = loo.masks(np.arange(N + 1))
    assert masks[0].all()
    np.testing.assert_array_equal(~masks[1:], np.eye(N, dtype=bool))
    with pytest.raises(ValueError, match="row 41 does not exist: this sampler has 41 rows"):
        loo.masks([41])


def test_permutation_prefixes_are_nested_chains():
    rows = np.arange(3 * N)
    masks = sampler("permutation").masks(rows)
    np.testing.assert_array_equal(masks.sum(axis=1), rows % N + 1)
    chains = permutation_groups(rows, N)
    np.testing.assert_array_equal(chains, rows // N)
    for chain in range(3):
        block = masks[chains == chain]
        assert (block[1:] >= block[:-1]).all()  # each prefix contains the previous one
    assert not np.array_equal(masks[:N], masks[N : 2 * N])


def test_row_seeds_are_reproducible_and_distinct():
    seeds = row_seeds(3, np.arange(1000))
    assert seeds.dtype == np.int64 and (seeds >= 0).all()
    assert len(np.unique(seeds)) == 1000
    np.testing.assert_array_equal(row_seeds(3, [999, 5]), seeds[[999, 5]])
    assert not np.array_equal(row_seeds(4, np.arange(10)), seeds[:10])


def test_bad_rows_and_sizes_are_named():
    with pytest.raises(ValueError, match="non-negative"):
        sampler("bernoulli").masks([-1])
    with pytest.raises(ValueError, match="1-d array of integers"):
        sampler("bernoulli").masks(np.array([0.5]))
    with pytest.raises(ValueError, match="max_size=50 exceeds the ground set n=40"):
        sampler("uniform_size", max_size=50)
