"""Datamodels kept next to the rows they were fitted on, in the experiment's Zarr group.

Layout (T targets, n training points, K path points), under ``<store>/datamodels/<name>/``::

    weights   (T, n) float32   g_t(1_S) = weights[t] · 1_S + bias[t]
    bias      (T,)   float64
    lam       (T,)   float64   chosen λ (standardised units)
    val_mse   (T,)   float64   validation error at the chosen λ
    val_path  (K, T) float64   validation error along the path (NaN after a target left it)
    lambdas   (K, T) float64   the path
    attrs: {"mp_ray_datamodels": {dataset fingerprint, sampler, rows used, config}}

The metadata is written last (:meth:`mp_ray.store.Artifacts.write`): a group without it
is an interrupted write, and reading it is an error. Fitting again under the same name
replaces that group only; the store's rows are never touched.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from mp_ray.datamodels.fit import Datamodels
from mp_ray.errors import MpRayError
from mp_ray.store import (
    ArtifactIncompleteError,
    ArtifactNotFoundError,
    ExperimentStore,
)


class DatamodelsNotFoundError(MpRayError, FileNotFoundError):
    """The store holds no (complete) datamodels under the requested name."""


def write_datamodels(
    store: ExperimentStore, datamodels: Datamodels, meta: dict[str, Any], name: str = "default"
) -> None:
    """Write ``datamodels`` and ``meta`` (JSON-able) under ``datamodels/<name>``."""
    arrays = {field.name: getattr(datamodels, field.name) for field in fields(Datamodels)}
    store.artifacts.write(
        "datamodels",
        name,
        arrays,
        {
            **meta,
            "dataset_fingerprint": store.spec.dataset_fingerprint,
            "n_targets": datamodels.n_targets,
            "n_train": datamodels.n_train,
        },
    )


def read_datamodels(store: ExperimentStore, name: str = "default") -> tuple[Datamodels, dict]:
    """The datamodels under ``datamodels/<name>`` and their metadata."""
    try:
        arrays, meta = store.artifacts.read("datamodels", name, store.spec.dataset_fingerprint)
    except ArtifactIncompleteError:
        raise DatamodelsNotFoundError(
            f"datamodels {name!r} in {store.uri} were not completely written: fit them again"
        ) from None
    except ArtifactNotFoundError:
        raise DatamodelsNotFoundError(
            f"store {store.uri} has no datamodels named {name!r}: run `mp-ray datamodels` first"
        ) from None
    return Datamodels(**arrays), meta
