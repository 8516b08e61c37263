"""The Zarr store that holds retrained models row by row (see :mod:`mp_ray.store.experiment`)."""

from mp_ray.store.experiment import (
    BlockShapeError,
    ExperimentStore,
    StoreIncompleteError,
    StoreNotFoundError,
)
from mp_ray.store.spec import StoreMismatchError, StoreSpec
from mp_ray.store.summary import export_parquet, format_summary, summarize

__all__ = [
    "BlockShapeError",
    "ExperimentStore",
    "StoreIncompleteError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "StoreSpec",
    "export_parquet",
    "format_summary",
    "summarize",
]
