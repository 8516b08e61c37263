"""One Ray Train worker's share of the store, streamed a block at a time.

Worker ``rank`` of ``world`` owns blocks rank, rank + world, rank + 2·world, … . At set-up it
reads only their metrics, to count the training and validation rows each holds (rows
flagged ``degenerate`` are left out, see :mod:`mp_ray.store.rows`). Each pass over the
training rows then reads the blocks again, one at a time, in an order drawn from (root
seed, pass, rank), and shuffles each block's rows by (root seed, pass, block): a minibatch
is the next ``batch`` rows of that stream, so a worker holds one block and less than one
minibatch of rows, whatever the number of rows. Validation reads the blocks' validation
rows the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mp_ray.config import SplitsConfig
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import TRAIN, VAL, Rows, block_split, read_split


@dataclass(frozen=True)
class Shard:
    """Worker ``rank``'s ``blocks`` of ``store``, with the non-degenerate training rows of
    each ``train_counts (len(blocks),)`` and its number of validation rows ``n_val``."""

    store: ExperimentStore
    splits: SplitsConfig
    rank: int
    blocks: list[int]
    train_counts: np.ndarray
    n_val: int

    @classmethod
    def of_worker(
        cls, store: ExperimentStore, splits: SplitsConfig, rank: int, world: int
    ) -> Shard:
        """The shard of worker ``rank`` of ``world``, counted from its blocks' metrics."""
        blocks = list(range(rank, store.n_blocks, world))
        counts = {
            split: [int(cls._kept(store, block, split, splits)) for block in blocks]
            for split in (TRAIN, VAL)
        }
        return cls(store, splits, rank, blocks, np.asarray(counts[TRAIN]), sum(counts[VAL]))

    @staticmethod
    def _kept(store: ExperimentStore, block: int, split: int, splits: SplitsConfig) -> int:
        """The number of non-degenerate rows of ``split`` in ``block``."""
        _, _, keep, _ = block_split(store, block, split, splits.val_fraction, splits.test_fraction)
        return int(keep.sum())

    @property
    def n_train(self) -> int:
        """This worker's training rows."""
        return int(self.train_counts.sum())

    def _read(self, block: int, split: int) -> Rows:
        fractions = (self.splits.val_fraction, self.splits.test_fraction)
        return read_split(self.store, [block], split, *fractions)

    def batches(self, seed: int, epoch: int, batch: int, start: int = 0) -> Iterator[Rows]:
        """Pass ``epoch``'s minibatches of ``batch`` training rows (the last one shorter),
        from minibatch ``start`` on: blocks before it are passed over unread."""
        order = np.random.default_rng([seed, epoch, self.rank]).permutation(len(self.blocks))
        skip = start * batch
        held = None
        for position in order:
            block, count = self.blocks[position], int(self.train_counts[position])
            if skip >= count:
                skip -= count
                continue
            rows = self._read(block, TRAIN)
            shuffled = np.random.default_rng([seed, epoch, block]).permutation(len(rows))
            rows = _take(rows, shuffled[skip:])
            skip = 0
            held = rows if held is None else _join(held, rows)
            while len(held) >= batch:
                yield _take(held, np.arange(batch))
                held = _take(held, np.arange(batch, len(held)))
        if held is not None and len(held):
            yield held

    def validation_rows(self) -> Iterator[Rows]:
        """The validation rows, one block at a time."""
        for block in self.blocks:
            yield self._read(block, VAL)


def _take(rows: Rows, index: np.ndarray) -> Rows:
    """The rows at positions ``index``."""
    return Rows(rows.index[index], rows.masks[index], rows.params[index])


def _join(first: Rows, second: Rows) -> Rows:
    """``first``'s rows, then ``second``'s."""
    return Rows(
        np.concatenate([first.index, second.index]),
        np.concatenate([first.masks, second.masks]),
        np.concatenate([first.params, second.params]),
    )
