"""Data values with their uncertainty, saved to Parquet or to the experiment's Zarr store.

A :class:`ValuationResult` holds one value per training point, the standard error of its
Monte-Carlo estimate (0 for exact methods such as leave-one-out), how many samples
contributed to it, and how the run went (method, parameters, utility evaluations, whether
the convergence criterion was met, wall time).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mp_ray.outputs import atomic_output
from mp_ray.store import (
    ArtifactIncompleteError,
    ArtifactNotFoundError,
    ExperimentStore,
    StoreMismatchError,
)


@dataclass
class ValuationResult:
    """Values ``(n,)`` float64, their standard errors ``(n,)`` and sample counts ``(n,)``."""

    method: str
    values: np.ndarray
    stderr: np.ndarray
    counts: np.ndarray
    n_evaluations: int
    converged: bool
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        self.stderr = np.asarray(self.stderr, dtype=np.float64)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if not self.values.shape == self.stderr.shape == self.counts.shape:
            raise ValueError("values, stderr and counts must have the same shape (n,)")

    def __len__(self) -> int:
        return len(self.values)

    def ranking(self) -> np.ndarray:
        """Training indices from the most to the least valuable, ``(n,)``."""
        return np.argsort(-self.values, kind="stable")

    def _meta(self) -> dict[str, Any]:
        meta = asdict(self)
        for array in ("values", "stderr", "counts"):
            meta.pop(array)
        return meta

    # -- Parquet -----------------------------------------------------------------------------

    def to_parquet(self, path: str) -> None:
        """One row per training point (index, value, stderr, count); the run's metadata in
        the file's key-value metadata."""
        table = pa.table(
            {
                "index": np.arange(len(self)),
                "value": self.values,
                "stderr": self.stderr,
                "count": self.counts,
            }
        )
        table = table.replace_schema_metadata({"mp_ray.valuation": json.dumps(self._meta())})
        with atomic_output(path) as partial:
            pq.write_table(table, partial)

    @classmethod
    def from_parquet(cls, path: str) -> ValuationResult:
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(b"mp_ray.valuation")
        if raw is None:
            raise ValueError(f"{path} is not an mp-ray valuation result (no metadata)")
        columns = table.to_pydict()
        return cls(
            values=columns["value"],
            stderr=columns["stderr"],
            counts=columns["count"],
            **json.loads(raw),
        )

    # -- the experiment's store ------------------------------------------------------------

    def to_store(self, store: ExperimentStore, name: str) -> None:
        """Write under ``valuation/<name>`` of the store (opened writable), replacing an
        earlier result of that name; the store must be built on the same dataset. The
        metadata is written last: a group without it is an interrupted write."""
        fingerprint = self.params.get("dataset_fingerprint")
        if fingerprint and fingerprint != store.spec.dataset_fingerprint:
            raise StoreMismatchError(
                f"these values were computed on another dataset than store {store.uri}'s"
            )
        if len(self) != store.spec.n_train:
            raise ValueError(
                f"{len(self)} values do not match the store's {store.spec.n_train} points"
            )
        arrays = {"values": self.values, "stderr": self.stderr, "counts": self.counts}
        store.artifacts.write("valuation", name, arrays, self._meta())

    @classmethod
    def from_store(cls, store: ExperimentStore, name: str) -> ValuationResult:
        """The result under ``valuation/<name>``; KeyError when it is absent or was not
        completely written."""
        try:
            arrays, meta = store.artifacts.read("valuation", name)
        except ArtifactIncompleteError:
            raise KeyError(
                f"valuation result {name!r} in {store.uri} was not completely written: run "
                "`mp-ray value` again"
            ) from None
        except ArtifactNotFoundError:
            raise KeyError(f"store {store.uri} has no valuation result named {name!r}") from None
        return cls(**arrays, **meta)
