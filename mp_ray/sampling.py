"""Subset samplers: which training points each retrained model sees.

Row r of a store is drawn from (root seed, r) alone, through a numpy ``SeedSequence`` with
spawn key ``(stream, r)``, so any worker produces the same mask for the same row whatever
block, batch or order it comes in. Separate streams give masks and training seeds
independent randomness. Kinds (``SamplerConfig.kind``), over a ground set of n points:

- ``bernoulli``: each point kept independently with probability α (Datamodels' masks).
- ``fixed_size``: a uniform subset of exactly round(α·n) points.
- ``uniform_size``: size uniform in [min_size, max_size], then a uniform subset (ModelPred).
- ``leave_one_out``: row 0 is the full set, row i + 1 drops point i (n + 1 rows in all).
- ``permutation``: row r is the prefix of length (r mod n) + 1 of permutation r // n (its
  chain), drawn from (seed, r // n) on its own stream: the chains of permutation-sampling
  Shapley, every row of a chain consistent with the others.

Example::

    sampler = make_sampler(SamplerConfig(kind="bernoulli", alpha=0.5), n=100, seed=0)
    masks = sampler.masks(np.arange(1000, 1250))  # bool (250, 100)
    seeds = row_seeds(0, np.arange(1000, 1250))  # int64 (250,)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from mp_ray.config import SamplerConfig

MASK_STREAM = 0
SEED_STREAM = 1
PERMUTATION_STREAM = 2

Rows = np.ndarray | Sequence[int]


def row_rng(root_seed: int, stream: int, row: int) -> np.random.Generator:
    """The generator of one row's randomness in one stream."""
    return np.random.default_rng(np.random.SeedSequence(root_seed, spawn_key=(stream, row)))


def row_seeds(root_seed: int, rows: Rows) -> np.ndarray:
    """Each row's training seed, int64 ``(K,)`` in [0, 2⁶³), from its own stream."""
    rows = _checked_rows(rows)
    seeds = np.empty(rows.size, dtype=np.uint64)
    for k, row in enumerate(rows.tolist()):
        sequence = np.random.SeedSequence(root_seed, spawn_key=(SEED_STREAM, row))
        seeds[k] = sequence.generate_state(1, np.uint64)[0]
    return (seeds >> np.uint64(1)).astype(np.int64)


def permutation_groups(rows: Rows, n: int) -> np.ndarray:
    """The permutation chain ``r // n`` of each row of a ``permutation`` store, int64 ``(K,)``;
    splitting store rows by chain keeps nested prefixes on one side."""
    _check_ground_set(n)
    return _checked_rows(rows) // n


def make_sampler(config: SamplerConfig, n: int, seed: int) -> Sampler:
    """The sampler ``config`` describes, over a ground set of ``n`` points."""
    if config.kind == "bernoulli":
        return BernoulliSampler(n, seed, config.alpha)
    if config.kind == "fixed_size":
        return FixedSizeSampler(n, seed, config.alpha)
    if config.kind == "uniform_size":
        return UniformSizeSampler(n, seed, config.min_size, config.max_size)
    if config.kind == "leave_one_out":
        return LeaveOneOutSampler(n, seed)
    return PermutationSampler(n, seed)


class Sampler(ABC):
    """Draws boolean masks over a ground set of ``n`` points, one per store row."""

    def __init__(self, n: int, seed: int) -> None:
        _check_ground_set(n)
        self.n = n
        self.seed = seed

    @property
    def default_rows(self) -> int | None:
        """The natural number of rows (leave-one-out: n + 1), or None when there is none."""
        return None

    @property
    def valid_rows(self) -> int | None:
        """How many rows exist (rows ``0..valid_rows-1``), or None when unbounded."""
        return None

    def masks(self, rows: Rows) -> np.ndarray:
        """Masks of ``rows (K,)``, bool ``(K, n)``; row k is a function of (seed, rows[k])."""
        rows = _checked_rows(rows)
        limit = self.valid_rows
        if limit is not None and rows.size and rows.max() >= limit:
            raise ValueError(
                f"row {int(rows.max())} does not exist: this sampler has {limit} rows "
                f"(0..{limit - 1})"
            )
        return self._masks(rows)

    @abstractmethod
    def _masks(self, rows: np.ndarray) -> np.ndarray:
        """Masks of checked ``rows (K,)`` int64, bool ``(K, n)``."""


class _RowwiseSampler(Sampler):
    """Each row's mask drawn from the row's own generator on the mask stream."""

    def _masks(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((rows.size, self.n), dtype=bool)
        for k, row in enumerate(rows.tolist()):
            out[k] = self._draw(row_rng(self.seed, MASK_STREAM, row))
        return out

    @abstractmethod
    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        """One mask, bool ``(n,)``."""

    def _subset(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A uniform subset of ``size`` points: those a random permutation ranks first."""
        return rng.permutation(self.n) < size


class BernoulliSampler(_RowwiseSampler):
    def __init__(self, n: int, seed: int, alpha: float) -> None:
        super().__init__(n, seed)
        self.alpha = alpha

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        return rng.random(self.n) < self.alpha


class FixedSizeSampler(_RowwiseSampler):
    def __init__(self, n: int, seed: int, alpha: float) -> None:
        super().__init__(n, seed)
        self.size = round(alpha * n)
        if self.size == 0:
            raise ValueError(f"fixed_size: round(alpha·n) = round({alpha}·{n}) is 0 points")

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        return self._subset(rng, self.size)


class UniformSizeSampler(_RowwiseSampler):
    def __init__(self, n: int, seed: int, min_size: int, max_size: int | None) -> None:
        super().__init__(n, seed)
        self.min_size = min_size
        self.max_size = n if max_size is None else max_size
        if self.max_size > n:
            raise ValueError(f"uniform_size: max_size={self.max_size} exceeds the ground set n={n}")
        if min_size > self.max_size:
            raise ValueError(f"uniform_size: min_size={min_size} exceeds max_size={self.max_size}")

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        return self._subset(rng, int(rng.integers(self.min_size, self.max_size, endpoint=True)))


class LeaveOneOutSampler(Sampler):
    @property
    def default_rows(self) -> int:
        return self.n + 1

    @property
    def valid_rows(self) -> int:
        return self.n + 1

    def _masks(self, rows: np.ndarray) -> np.ndarray:
        out = np.ones((rows.size, self.n), dtype=bool)
        dropped = np.flatnonzero(rows > 0)
        out[dropped, rows[dropped] - 1] = False
        return out


class PermutationSampler(Sampler):
    def _masks(self, rows: np.ndarray) -> np.ndarray:
        chains, positions = np.divmod(rows, self.n)
        unique, which = np.unique(chains, return_inverse=True)
        ranks = np.empty((unique.size, self.n), dtype=np.int64)
        for k, chain in enumerate(unique.tolist()):
            ranks[k] = self.ranks(chain)
        return ranks[which] <= positions[:, None]

    def ranks(self, chain: int) -> np.ndarray:
        """The position of each point in permutation ``chain``, int64 ``(n,)``: row
        ``chain·n + j`` holds the points of rank ≤ j."""
        return row_rng(self.seed, PERMUTATION_STREAM, chain).permutation(self.n)


def _check_ground_set(n: int) -> None:
    if n <= 0:
        raise ValueError(f"the ground set must hold at least one point, got n={n}")


def _checked_rows(rows: Rows) -> np.ndarray:
    """``rows`` as int64 ``(K,)`` after checking they are non-negative integers."""
    array = np.asarray(rows)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"rows must be a 1-d array of integers, got shape {array.shape} ({array.dtype})"
        )
    if array.size and array.min() < 0:
        raise ValueError(f"row indices must be non-negative, got {int(array.min())}")
    return array.astype(np.int64)
