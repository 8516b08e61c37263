"""Subset samplers: which training points each retrained model sees.

Row r of a store is drawn from (root seed, r) alone, through a numpy ``SeedSequence`` with
spawn key ``(stream, r)``, so any worker produces the same mask for the same row whatever
block or batch it comes in. Separate streams give masks and training seeds independent
randomness. Kinds (``SamplerConfig.kind``):

- ``bernoulli``: each point kept independently with probability α (Datamodels' masks).
- ``fixed_size``: a uniform subset of exactly round(α·n) points.
- ``uniform_size``: size uniform in [min_size, max_size], then a uniform subset (ModelPred).
- ``leave_one_out``: row 0 is the full set, row i + 1 drops point i (n + 1 rows in all).
- ``permutation``: row r is the prefix of length (r mod n) + 1 of permutation r // n, whose
  order is drawn from (seed, r // n): the chains of permutation-sampling Shapley.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from mp_ray.config import SamplerConfig

MASK_STREAM = 0
SEED_STREAM = 1
PERMUTATION_STREAM = 2


def row_rng(root_seed: int, stream: int, row: int) -> np.random.Generator:
    """The generator of one row's randomness in one stream."""
    return np.random.default_rng(np.random.SeedSequence(root_seed, spawn_key=(stream, int(row))))


def row_seeds(root_seed: int, rows: np.ndarray | list[int]) -> np.ndarray:
    """Each row's training seed, int64 ``(K,)`` in [0, 2⁶³)."""
    rows = _checked_rows(rows)
    seeds = [
        np.random.SeedSequence(root_seed, spawn_key=(SEED_STREAM, int(r))).generate_state(
            2, np.uint32
        )
        for r in rows
    ]
    return np.array([(int(hi) << 31) ^ int(lo) for lo, hi in seeds], dtype=np.int64)


def _checked_rows(rows: np.ndarray | list[int]) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValueError(f"rows must be a 1-d array of integers, got shape {rows.shape}")
    if rows.size and rows.min() < 0:
        raise ValueError(f"row indices must be non-negative, got {int(rows.min())}")
    return rows.astype(np.int64)


class Sampler(ABC):
    """Draws boolean masks over a ground set of ``n`` points, one per store row."""

    def __init__(self, n: int, seed: int) -> None:
        if n <= 0:
            raise ValueError(f"the ground set must hold at least one point, got n={n}")
        self.n = n
        self.seed = seed

    @property
    def default_rows(self) -> int | None:
        """The natural number of rows (leave-one-out: n + 1), or None when unbounded."""
        return None

    def masks(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """Masks of ``rows (K,)``, bool ``(K, n)``."""
        rows = _checked_rows(rows)
        limit = self.default_rows
        if limit is not None and rows.size and rows.max() >= limit:
            raise ValueError(f"row {int(rows.max())} does not exist: this sampler has {limit} rows")
        out = np.zeros((rows.size, self.n), dtype=bool)
        for k, row in enumerate(rows):
            out[k] = self._mask(int(row))
        return out

    @abstractmethod
    def _mask(self, row: int) -> np.ndarray:
        """The mask of one row, bool ``(n,)``."""

    def _rng(self, row: int) -> np.random.Generator:
        return row_rng(self.seed, MASK_STREAM, row)

    def _subset_of_size(self, row: int, size: int) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        mask[self._rng(row).choice(self.n, size=size, replace=False)] = True
        return mask


class BernoulliSampler(Sampler):
    def __init__(self, n: int, seed: int, alpha: float) -> None:
        super().__init__(n, seed)
        self.alpha = alpha

    def _mask(self, row: int) -> np.ndarray:
        return self._rng(row).random(self.n) < self.alpha


class FixedSizeSampler(Sampler):
    def __init__(self, n: int, seed: int, alpha: float) -> None:
        super().__init__(n, seed)
        self.size = round(alpha * n)

    def _mask(self, row: int) -> np.ndarray:
        return self._subset_of_size(row, self.size)


class UniformSizeSampler(Sampler):
    def __init__(self, n: int, seed: int, min_size: int, max_size: int | None) -> None:
        super().__init__(n, seed)
        self.max_size = n if max_size is None else max_size
        if self.max_size > n:
            raise ValueError(f"sampler.max_size={self.max_size} exceeds the ground set n={n}")
        if min_size > self.max_size:
            raise ValueError(f"sampler.min_size={min_size} exceeds max_size={self.max_size}")
        self.min_size = min_size

    def _mask(self, row: int) -> np.ndarray:
        size = int(self._rng(row).integers(self.min_size, self.max_size + 1))
        mask = np.zeros(self.n, dtype=bool)
        order = row_rng(self.seed, PERMUTATION_STREAM, row).permutation(self.n)
        mask[order[:size]] = True
        return mask


class LeaveOneOutSampler(Sampler):
    @property
    def default_rows(self) -> int:
        return self.n + 1

    def _mask(self, row: int) -> np.ndarray:
        mask = np.ones(self.n, dtype=bool)
        if row > 0:
            mask[row - 1] = False
        return mask


class PermutationSampler(Sampler):
    def _mask(self, row: int) -> np.ndarray:
        chain, position = divmod(row, self.n)
        order = row_rng(self.seed, PERMUTATION_STREAM, chain).permutation(self.n)
        mask = np.zeros(self.n, dtype=bool)
        mask[order[: position + 1]] = True
        return mask


def permutation_groups(rows: np.ndarray | list[int], n: int) -> np.ndarray:
    """The permutation chain of each row of a ``permutation`` store, int64 ``(K,)``."""
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
