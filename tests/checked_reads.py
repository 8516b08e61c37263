"""A store that fails any read of a row array reaching past one block: the check that a stage
streams the store (:meth:`~mp_ray.store.experiment.ExperimentStore.iter_rows`) instead of
reading whole arrays.

    store = CheckedReadsStore.open(uri)
    summarize(store)        # AssertionError if it read rows of two blocks in one request
    store.reads             # [("metrics", 0, 250), ...]: every row read, (array, start, stop)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from mp_ray.store import ExperimentStore, StoreSpec
from mp_ray.store.experiment import ROW_ARRAYS

Read = tuple[str, int, int]  # array name, first row, one past the last row


def row_extent(selection: Any, n_rows: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` a Zarr selection spans on the first axis."""
    first = selection[0] if isinstance(selection, tuple) else selection
    if first is Ellipsis:
        return 0, n_rows
    if isinstance(first, slice):
        start, stop, _ = first.indices(n_rows)
        return start, max(start, stop)
    if isinstance(first, int | np.integer):
        return int(first), int(first) + 1
    indices = np.asarray(first)
    if indices.dtype == bool:
        indices = np.flatnonzero(indices)
    return (int(indices.min()), int(indices.max()) + 1) if indices.size else (0, 0)


class CheckedArray:
    """A row array that records each read's row extent and fails one spanning two blocks.

    Only the read methods the store uses are offered; any other way into the array is an
    AttributeError, so a read cannot pass unchecked."""

    def __init__(self, name: str, array: zarr.Array, block_rows: int, reads: list[Read]) -> None:
        self.name = name
        self._array = array
        self._block_rows = block_rows
        self._reads = reads
        self.shape = array.shape
        self.ndim = array.ndim
        self.dtype = array.dtype

    def _check(self, selection: Any) -> None:
        start, stop = row_extent(selection, self.shape[0])
        self._reads.append((self.name, start, stop))
        block = self._block_rows
        if stop > start and start // block != (stop - 1) // block:
            raise AssertionError(
                f"a read of {self.name} rows [{start}, {stop}) spans more than one block of "
                f"{block} rows"
            )

    def __getitem__(self, selection: Any) -> np.ndarray:
        self._check(selection)
        return self._array[selection]

    def get_orthogonal_selection(self, selection: Any) -> np.ndarray:
        self._check(selection)
        return self._array.get_orthogonal_selection(selection)


class CheckedReadsStore(ExperimentStore):
    """An :class:`ExperimentStore` whose row arrays are :class:`CheckedArray` s; ``reads``
    lists every row read made through it."""

    def __init__(self, group: zarr.Group, spec: StoreSpec, uri: str) -> None:
        super().__init__(group, spec, uri)
        self.reads: list[Read] = []

    def array(self, name: str) -> Any:
        array = super().array(name)
        if name not in ROW_ARRAYS:
            return array
        return CheckedArray(name, array, self.spec.block_rows, self.reads)

    def read_arrays(self) -> set[str]:
        """The names of the row arrays read so far."""
        return {name for name, _, _ in self.reads}
