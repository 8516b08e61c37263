"""The store's row split — which rows fit, validate and evaluate every method fitted on the
store (the predictor, datamodels, the distilled datamodel; shares from the config's
``splits`` section) — and reading a split's rows by block.

Each row falls in one split — train, validation or test — by a hash of (root seed, unit),
where the unit is the row itself, or its permutation chain for ``permutation`` stores so
that test subsets never share a chain with training ones (as Zeng et al. split). Readers
take one block at a time through the store's streaming path
(:meth:`~mp_ray.store.experiment.ExperimentStore.iter_rows`): its metrics, then the rows of
the split they need; rows flagged ``degenerate`` (no optimum, θ = 0 by convention) are left
out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mp_ray.sampling import permutation_groups
from mp_ray.store.experiment import ExperimentStore, RowWindow

if TYPE_CHECKING:
    from mp_ray.config import SplitsConfig

TRAIN, VAL, TEST = 0, 1, 2
LEFT_OUT = -1  # a degenerate row: in no split
SPLIT_NAMES = ("train", "val", "test")


def _uniform_hash(units: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic value in [0, 1) per unit (splitmix64 of seed and unit)."""
    with np.errstate(over="ignore"):
        x = units.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def row_splits(
    store: ExperimentStore, rows: np.ndarray, val_fraction: float, test_fraction: float
) -> np.ndarray:
    """The split code (TRAIN, VAL or TEST) of each row, int8 ``(K,)``."""
    spec = store.spec
    permutation = spec.sampler.get("kind") == "permutation"
    units = permutation_groups(rows, spec.n_train) if permutation else rows
    u = _uniform_hash(np.asarray(units), spec.root_seed)
    return np.where(u < test_fraction, TEST, np.where(u < test_fraction + val_fraction, VAL, TRAIN))


def usable_splits(
    store: ExperimentStore,
    rows: np.ndarray,
    metrics: np.ndarray,
    val_fraction: float,
    test_fraction: float,
) -> np.ndarray:
    """The split code of each of ``rows`` given their ``metrics (K, M)``, with degenerate rows
    ``LEFT_OUT``, int8 ``(K,)``."""
    splits = row_splits(store, rows, val_fraction, test_fraction)
    degenerate = metrics[:, store.spec.metric_names.index("degenerate")] != 0
    return np.where(degenerate, LEFT_OUT, splits).astype(np.int8)


@dataclass
class Rows:
    """Masks ``(M, n)`` bool and retrained parameters ``(M, d)`` float32 of some store rows,
    and their outputs on the targets ``(M, T)`` float32 when read."""

    index: np.ndarray
    masks: np.ndarray
    params: np.ndarray
    outputs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)

    def head(self, k: int) -> Rows:
        """The first ``k`` rows."""
        outputs = None if self.outputs is None else self.outputs[:k]
        return Rows(self.index[:k], self.masks[:k], self.params[:k], outputs)


def block_split(
    store: ExperimentStore, block: int, split: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, slice, np.ndarray, np.ndarray]:
    """One block's row ids ``(K,)``, their span, which of them are non-degenerate rows of
    ``split`` (bool ``(K,)``) and their metrics ``(K, M)``, the one array read to decide."""
    rows = store.block_rows(block)
    span = slice(int(rows[0]), int(rows[-1]) + 1)
    metrics = store.read_rows(("metrics",), rows)["metrics"]
    keep = usable_splits(store, rows, metrics, val_fraction, test_fraction) == split
    return rows, span, keep, metrics


def _names(with_outputs: bool) -> tuple[str, ...]:
    return ("masks", "params", "outputs") if with_outputs else ("masks", "params")


def _as_rows(window: RowWindow) -> Rows:
    return Rows(window.rows, window["masks"], window["params"], window.arrays.get("outputs"))


def _split_rows(
    store: ExperimentStore,
    block: int,
    split: int,
    val_fraction: float,
    test_fraction: float,
    with_outputs: bool,
) -> Rows:
    """The non-degenerate rows of ``split`` in one block: the block's metrics, then the
    span of its rows of ``split``, read through :meth:`ExperimentStore.read_rows`."""
    rows, _, keep, _ = block_split(store, block, split, val_fraction, test_fraction)
    return _as_rows(store.read_rows(_names(with_outputs), rows[keep]))


def read_split(
    store: ExperimentStore,
    blocks: list[int],
    split: int,
    val_fraction: float,
    test_fraction: float,
    with_outputs: bool = False,
) -> Rows:
    """The non-degenerate rows of ``split`` in ``blocks``, read one block at a time and
    kept together (in the order of ``blocks``), with their ``outputs`` when
    ``with_outputs``."""
    parts = [
        _split_rows(store, block, split, val_fraction, test_fraction, with_outputs)
        for block in blocks
    ]
    if not parts:
        return _as_rows(store.read_rows(_names(with_outputs), np.zeros(0, dtype=np.int64)))
    outputs = np.concatenate([part.outputs for part in parts]) if with_outputs else None
    return Rows(
        np.concatenate([part.index for part in parts]),
        np.concatenate([part.masks for part in parts]),
        np.concatenate([part.params for part in parts]),
        outputs,
    )


def split_blocks(
    store: ExperimentStore,
    split: int,
    val_fraction: float,
    test_fraction: float,
    blocks: Iterable[int] | None = None,
    with_outputs: bool = False,
) -> Iterator[Rows]:
    """The rows of ``split``, one store block at a time (every block unless ``blocks``), so
    that a pass over them holds one block, never the whole store; with their ``outputs``
    when ``with_outputs``."""
    for block in range(store.n_blocks) if blocks is None else blocks:
        yield _split_rows(store, block, split, val_fraction, test_fraction, with_outputs)


def held_out_blocks(
    store: ExperimentStore, splits: SplitsConfig, with_outputs: bool = False
) -> Iterator[Rows]:
    """The held-out rows every evaluation scores, one block at a time: the test split's rows
    in row order, at most ``splits.max_test_rows`` of them (the first: rows are independent
    draws, so they are a random sample of the split), with their ``outputs`` when
    ``with_outputs``."""
    left = splits.max_test_rows
    test = split_blocks(store, TEST, splits.val_fraction, splits.test_fraction, None, with_outputs)
    for rows in test:
        if left is not None:
            if left <= 0:
                return
            rows = rows.head(left)
            left -= len(rows)
        yield rows
