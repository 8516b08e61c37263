"""The retraining store: one Zarr v3 group per experiment, rows = retrained models.

Layout (N rows, n training points, d parameters, T targets, k metrics, B = block_rows)::

    <uri>/                  group attrs: {"mp_ray": StoreSpec as JSON,
                                          "mp_ray_config": the latest retrain's config}
        masks    (N, n) bool     chunks (B, n)   which training points each model saw
        params   (N, d) float32  chunks (B, d)   the trained parameter vectors
        outputs  (N, T) float32  chunks (B, T)   model outputs on the test split (margins)
        metrics  (N, k) float32  chunks (B, k)   names in the spec's metric_names
        seeds    (N,)   int64    chunks (B,)     each row's training seed
        done     (N/B,) bool     chunks (1,)     block b is complete

A block is one chunk of every array, written by exactly one worker, so writers never share
a chunk and need no lock. ``done[b]`` is set only after the block's data is written: a
rerun skips done blocks and rewrites half-written ones whole. Plain zarr-python reads it::

    zarr.open_group(uri, mode="r")["params"][:100]

Stages read rows with :meth:`ExperimentStore.iter_rows`, one row window (at most one block)
at a time, so no process holds every row of an array.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from mp_ray.errors import MpRayError
from mp_ray.store.artifacts import Artifacts
from mp_ray.store.identity import check_identity
from mp_ray.store.location import normalise_uri, open_store
from mp_ray.store.spec import SPEC_ATTR, StoreMismatchError, StoreSpec
from mp_ray.store.storage_errors import storage_errors

if TYPE_CHECKING:
    from mp_ray.config import ExperimentConfig

ROW_ARRAYS = ("masks", "params", "outputs", "metrics", "seeds")
CONFIG_ATTR = "mp_ray_config"  # the resolved config of the latest retraining run


class StoreNotFoundError(MpRayError, FileNotFoundError):
    """No mp-ray store exists at the URI."""


class StoreIncompleteError(MpRayError, ValueError):
    """A store still has blocks to retrain where every row is needed."""


class BlockShapeError(ValueError):
    """Data handed to :meth:`ExperimentStore.write_block` does not fit the block."""


@dataclass(frozen=True)
class RowWindow:
    """Some rows of the store read together: their indices ``rows``, int64 ``(K,)`` ascending,
    and ``arrays[name]`` for each array read, first axis ``K`` (masks ``(K, n)`` bool, params
    ``(K, d)``, outputs ``(K, T)``, metrics ``(K, k)`` float32, seeds ``(K,)`` int64)."""

    rows: np.ndarray
    arrays: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __len__(self) -> int:
        return len(self.rows)


def _unknown_array(name: str) -> KeyError:
    return KeyError(f"unknown array {name!r}; the store has {', '.join(ROW_ARRAYS)}")


def _row_array_layout(spec: StoreSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape per row (after the row axis) and dtype of each row array."""
    return {
        "masks": ((spec.n_train,), "bool"),
        "params": ((spec.n_params,), "float32"),
        "outputs": ((spec.n_targets,), "float32"),
        "metrics": ((len(spec.metric_names),), "float32"),
        "seeds": ((), "int64"),
    }


class ExperimentStore:
    """Read and write one experiment's rows; see the module docstring for the layout."""

    def __init__(self, group: zarr.Group, spec: StoreSpec, uri: str) -> None:
        self.group = group
        self.spec = spec
        self.uri = uri

    @property
    def artifacts(self) -> Artifacts:
        """The named results saved beside the rows (:mod:`mp_ray.store.artifacts`)."""
        return Artifacts(self.group, self.uri)

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def create_or_open(
        cls, uri: str, spec: StoreSpec, storage_options: dict[str, Any] | None = None
    ) -> ExperimentStore:
        """Create the store declared by ``spec``, or reopen it if it already matches ``spec``.

        Raises :class:`StoreMismatchError` when a store exists at ``uri`` with another spec
        or another dataset's fingerprint; nothing in it is changed.
        """
        uri = normalise_uri(uri)
        with storage_errors(uri, storage_options):
            group = zarr.open_group(open_store(uri, storage_options), mode="a")
            if SPEC_ATTR in group.attrs:
                existing = StoreSpec.from_json(dict(group.attrs[SPEC_ATTR]))
                spec.check_compatible(existing, uri)
                return cls(group, existing, uri)
            if len(list(group.keys())) > 0:
                raise StoreMismatchError(f"{uri} holds a Zarr group that is not an mp-ray store")
            cls._declare(group, spec)
        return cls(group, spec, uri)

    @classmethod
    def open(
        cls, uri: str, storage_options: dict[str, Any] | None = None, read_only: bool = True
    ) -> ExperimentStore:
        """Open an existing store; raises :class:`StoreNotFoundError` if there is none."""
        uri = normalise_uri(uri)
        try:  # read-only first: a writable local store would create a missing folder
            with storage_errors(uri, storage_options):
                group = zarr.open_group(open_store(uri, storage_options, read_only=True), mode="r")
        except FileNotFoundError as err:
            raise StoreNotFoundError(f"no mp-ray store at {uri}") from err
        if not read_only:
            with storage_errors(uri, storage_options):
                group = zarr.open_group(open_store(uri, storage_options), mode="r+")
        if SPEC_ATTR not in group.attrs:
            raise StoreNotFoundError(f"{uri} is a Zarr group but not an mp-ray store")
        return cls(group, StoreSpec.from_json(dict(group.attrs[SPEC_ATTR])), uri)

    @classmethod
    def open_for(
        cls,
        config: ExperimentConfig,
        fingerprint: str,
        unread: Iterable[str],
        read_only: bool = True,
        complete: bool = False,
    ) -> ExperimentStore:
        """Open ``config``'s store, refused (:class:`StoreMismatchError`) unless it was made
        with the config's identity over the dataset with ``fingerprint``, fields in
        ``unread`` excepted (see :mod:`mp_ray.store.identity`); with ``complete``, refused
        (:class:`StoreIncompleteError`) while blocks are pending."""
        store = cls.open(config.store.uri, config.store.storage_options, read_only)
        check_identity(store.spec.identity, config, fingerprint, "store", store.uri, unread)
        pending = store.pending_blocks() if complete else []
        if pending:
            raise StoreIncompleteError(
                f"store {store.uri} has {len(pending)} unfinished blocks; run `mp-ray retrain` "
                "first"
            )
        return store

    @staticmethod
    def _declare(group: zarr.Group, spec: StoreSpec) -> None:
        block = spec.block_rows
        for name, (row_shape, dtype) in _row_array_layout(spec).items():
            group.create_array(
                name,
                shape=(spec.n_rows, *row_shape),
                chunks=(block, *row_shape),
                dtype=dtype,
                fill_value=0,
                dimension_names=("row", *(f"{name}_col",) * len(row_shape)),
            )
        group.create_array("done", shape=(spec.n_blocks,), chunks=(1,), dtype="bool")
        group["metrics"].attrs["names"] = list(spec.metric_names)
        # The spec goes last: a store without it is an interrupted declaration.
        group.attrs[SPEC_ATTR] = spec.to_json()

    def record_config(self, config: ExperimentConfig) -> None:
        """Record ``config`` whole (every default filled in) as the config the store's
        latest retraining ran with (attribute :data:`CONFIG_ATTR`)."""
        self.group.attrs[CONFIG_ATTR] = config.model_dump(mode="json")

    def recorded_config(self) -> dict[str, Any] | None:
        """The config the latest retraining ran with, as recorded; None before any."""
        recorded = self.group.attrs.get(CONFIG_ATTR)
        return None if recorded is None else dict(recorded)

    # -- blocks ------------------------------------------------------------------------

    @property
    def n_blocks(self) -> int:
        return self.spec.n_blocks

    def block_rows(self, block: int) -> np.ndarray:
        """The row indices of ``block`` (the last block may be short), int64 (≤ B,)."""
        if not 0 <= block < self.n_blocks:
            raise IndexError(f"block {block} out of range: the store has {self.n_blocks} blocks")
        start = block * self.spec.block_rows
        return np.arange(start, min(start + self.spec.block_rows, self.spec.n_rows))

    def done_blocks(self) -> np.ndarray:
        """Completion flag of every block, bool ``(n_blocks,)``."""
        return np.asarray(self.array("done")[:], dtype=bool)

    def pending_blocks(self) -> list[int]:
        """Blocks not yet marked done, in order."""
        return [int(b) for b in np.flatnonzero(~self.done_blocks())]

    def is_block_done(self, block: int) -> bool:
        return bool(self.array("done")[block])

    def write_block(self, block: int, rows: Mapping[str, np.ndarray]) -> None:
        """Write every row array of ``block``, then mark it done.

        ``rows`` maps each of masks, params, outputs, metrics, seeds to an array whose first
        axis is the block's rows. Shapes and finiteness are checked before anything is
        written, so a bad block leaves the store as it was.
        """
        rows_of_block = self.block_rows(block)
        checked = {
            name: self._checked(name, rows.get(name), len(rows_of_block), block)
            for name in ROW_ARRAYS
        }
        span = slice(int(rows_of_block[0]), int(rows_of_block[-1]) + 1)
        for name, values in checked.items():
            self.group[name][span] = values
        self.group["done"][block] = True

    def _checked(self, name: str, values: np.ndarray | None, n: int, block: int) -> np.ndarray:
        row_shape, dtype = _row_array_layout(self.spec)[name]
        if values is None:
            raise BlockShapeError(f"block {block}: missing array {name!r}")
        values = np.asarray(values)
        if values.shape != (n, *row_shape):
            raise BlockShapeError(
                f"block {block}: {name} has shape {values.shape}, expected {(n, *row_shape)}"
            )
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise BlockShapeError(f"block {block}: {name} holds NaN or infinite values")
        return values.astype(dtype, copy=False)

    # -- reading -----------------------------------------------------------------------

    def completed_rows(self) -> np.ndarray:
        """Indices of all rows in done blocks, int64 ``(M,)``."""
        done = np.flatnonzero(self.done_blocks())
        if done.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.block_rows(int(b)) for b in done])

    def array(self, name: str) -> zarr.Array:
        """The Zarr array ``name`` (a row array or ``done``); every read of this store goes
        through it."""
        if name not in (*ROW_ARRAYS, "done"):
            raise _unknown_array(name)
        return self.group[name]

    def _checked_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.spec.n_rows):
            raise IndexError(f"row indices must lie in [0, {self.spec.n_rows}) for {self.uri}")
        return rows

    def read(self, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Rows of one array in one read (all rows when ``rows`` is None); fancy indices are
        allowed.

        For a few rows, or the ``done`` flags. A whole row array is read this way only by
        tests and benchmarks that compare a small store with expected values; stages
        stream with :meth:`iter_rows`."""
        array = self.array(name)
        if rows is None:
            return array[:]
        if isinstance(rows, slice):
            return array[rows]
        rows = self._checked_rows(rows)
        return array.get_orthogonal_selection((rows, *(slice(None),) * (array.ndim - 1)))

    def iter_rows(
        self,
        names: Sequence[str] = ("masks", "params"),
        rows: np.ndarray | None = None,
        window: int | None = None,
    ) -> Iterator[RowWindow]:
        """The arrays ``names`` over ``rows`` (default: every completed row), in ascending row
        order, one :class:`RowWindow` at a time: the store's one streaming read path.

        A window holds the given rows of one block, at most ``window`` of them (default and
        cap: the store's ``block_rows`` B; windows start at a block's first row and every
        ``window`` rows after it), and each array is read with one request for the span from
        the window's first row to its last. Zarr decodes whole chunks, so a reader holds at
        most one block of each array it reads: B × n bytes of masks, 4·B·d of params, 4·B·T
        of outputs, 4·B·k of metrics and 8·B of seeds, whatever the number of rows.
        """
        for name in names:
            if name not in ROW_ARRAYS:
                raise _unknown_array(name)
        block = self.spec.block_rows
        size = block if window is None else window
        if not 0 < size <= block:
            raise ValueError(f"window must lie in [1, {block}] rows (the block size), got {size}")
        rows = self.completed_rows() if rows is None else self._checked_rows(rows)
        rows = np.sort(rows, kind="stable")
        windows_per_block = -(-block // size)
        keys = (rows // block) * windows_per_block + (rows % block) // size
        for part in np.split(rows, np.flatnonzero(np.diff(keys)) + 1):
            if part.size:
                yield RowWindow(part, {name: self._read_window(name, part) for name in names})

    def _read_window(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Array ``name`` at ascending ``rows`` of one window, read as one span."""
        start, stop = int(rows[0]), int(rows[-1]) + 1
        values = self.array(name)[start:stop]
        contiguous = rows.size == stop - start and bool(np.all(np.diff(rows) == 1))
        return values if contiguous else values[rows - start]

    def read_rows(self, names: Sequence[str], rows: np.ndarray) -> RowWindow:
        """The arrays ``names`` at ``rows`` (ascending order), gathered window by window by
        :meth:`iter_rows`: for callers that need these rows together, which then hold them
        all (a split's test rows, every row's metrics)."""
        windows = list(self.iter_rows(names, rows))
        if not windows:
            layout = _row_array_layout(self.spec)
            return RowWindow(
                np.zeros(0, dtype=np.int64),
                {name: np.zeros((0, *layout[name][0]), layout[name][1]) for name in names},
            )
        return RowWindow(
            np.concatenate([part.rows for part in windows]),
            {name: np.concatenate([part[name] for part in windows]) for name in names},
        )

    def metrics_table(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The metrics of ``rows`` (default: all completed rows), in ascending row order, as
        named columns, float32 ``(M,)`` each; read window by window."""
        rows = self.completed_rows() if rows is None else rows
        values = self.read_rows(("metrics",), rows)["metrics"]
        return {name: values[:, j] for j, name in enumerate(self.spec.metric_names)}
