"""Datamodels kept next to the rows they were fitted on, in the experiment's Zarr group.

Layout (T targets, n training points, K path points), under ``<store>/datamodels/<name>/``::

    weights   (T, n) float32   g_t(1_S) = weights[t] · 1_S + bias[t]
    bias      (T,)   float64
    lam       (T,)   float64   chosen λ (standardised units)
    val_mse   (T,)   float64   validation error at the chosen λ
    val_path  (K, T) float64   validation error along the path (NaN after a target left it)
    lambdas   (K, T) float64   the path
    attrs: {"mp_ray_datamodels": {dataset fingerprint, sampler, rows used, config}}

The attributes are written last: a group without them is an interrupted write, and reading
it is an error. Fitting again under the same name replaces that group only; the store's
rows are never touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mp_ray.datamodels.fit import Datamodels
from mp_ray.errors import MpRayError
from mp_ray.store import ExperimentStore, StoreMismatchError
from mp_ray.store_artifacts import DATAMODELS_GROUP as GROUP
from mp_ray.store_artifacts import DATAMODELS_META as META_ATTR

ARRAYS = ("weights", "bias", "lam", "val_mse", "val_path", "lambdas")


class DatamodelsNotFoundError(MpRayError, FileNotFoundError):
    """The store holds no (complete) datamodels under the requested name."""


def write_datamodels(
    store: ExperimentStore, datamodels: Datamodels, meta: dict[str, Any], name: str = "default"
) -> None:
    """Write ``datamodels`` and ``meta`` (JSON-able) under ``datamodels/<name>``."""
    parent = store.group.require_group(GROUP)
    group = parent.create_group(name, overwrite=True)
    for array_name in ARRAYS:
        group.create_array(array_name, data=np.ascontiguousarray(getattr(datamodels, array_name)))
    group.attrs[META_ATTR] = {
        **meta,
        "dataset_fingerprint": store.spec.dataset_fingerprint,
        "n_targets": datamodels.n_targets,
        "n_train": datamodels.n_train,
    }


def read_datamodels(store: ExperimentStore, name: str = "default") -> tuple[Datamodels, dict]:
    """The datamodels under ``datamodels/<name>`` and their metadata."""
    try:
        group = store.group[f"{GROUP}/{name}"]
    except KeyError:
        raise DatamodelsNotFoundError(
            f"store {store.uri} has no datamodels named {name!r}: run `mp-ray datamodels` first"
        ) from None
    meta = dict(group.attrs.get(META_ATTR, {}))
    if not meta:
        raise DatamodelsNotFoundError(
            f"datamodels {name!r} in {store.uri} were not completely written: fit them again"
        )
    if meta["dataset_fingerprint"] != store.spec.dataset_fingerprint:
        raise StoreMismatchError(
            f"datamodels {name!r} in {store.uri} were fitted on another dataset "
            f"({meta['dataset_fingerprint'][:16]}…) than the store's "
            f"({store.spec.dataset_fingerprint[:16]}…)"
        )
    arrays = {array_name: group[array_name][...] for array_name in ARRAYS}
    return Datamodels(**arrays), meta
