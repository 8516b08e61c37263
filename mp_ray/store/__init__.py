"""The Zarr store that holds retrained models row by row (see :mod:`mp_ray.store.experiment`),
and the artifacts saved beside them (:mod:`mp_ray.store.artifacts`); no other package
touches its Zarr groups."""

from mp_ray.store.artifacts import (
    ArtifactIncompleteError,
    ArtifactNotFoundError,
    Artifacts,
    format_artifacts,
)
from mp_ray.store.experiment import (
    BlockShapeError,
    ExperimentStore,
    StoreIncompleteError,
    StoreNotFoundError,
)
from mp_ray.store.spec import StoreMismatchError, StoreSpec
from mp_ray.store.summary import export_parquet, format_summary, rows_table, summarize

__all__ = [
    "ArtifactIncompleteError",
    "ArtifactNotFoundError",
    "Artifacts",
    "BlockShapeError",
    "ExperimentStore",
    "StoreIncompleteError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "StoreSpec",
    "export_parquet",
    "format_artifacts",
    "format_summary",
    "rows_table",
    "summarize",
]
