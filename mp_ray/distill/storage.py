"""A distilled datamodel saved as a Zarr group, with the retrained models it was fitted and
validated on.

By default the group is ``distill`` inside the experiment's store (which must exist and be
built from the same dataset); ``distill.uri`` puts it at a URI of its own instead. Layout
(n training points, G groups, m synthetic examples per group, p features, c classes,
d parameters, R held-out removals)::

    groups        (n,)        int64    each training point's group
    theta         (d,)        float64  θ*, the full-data model
    features      (G, m, p)   float64  synthetic examples
    labels        (G, m, c)   float64  their soft labels (rows sum to 1)
    weights       (G, m)      float64  their weights
    single        (G, d)      float64  θ_{−k} retrained without group k (supervision)
    unions        (R, G)      bool     held-out removals (never distilled on)
    union_params  (R, d)      float64  θ retrained without each of them
    attrs: {"mp_ray_distill": {dataset fingerprint, η, shapes, config, report}}

The attributes are written last and removed first when a group is overwritten: a group
without them is an interrupted write, and reading it is an error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import zarr

from mp_ray.config import ExperimentConfig
from mp_ray.distill.model import DistilledDatamodel
from mp_ray.distill.supervision import GroundTruth
from mp_ray.distill.synset import Synsets
from mp_ray.errors import MpRayError
from mp_ray.learners import Learner
from mp_ray.store import ExperimentStore, StoreMismatchError, StoreNotFoundError
from mp_ray.store.experiment import SPEC_ATTR
from mp_ray.store.identity import SEEDED_UNREAD
from mp_ray.store.location import open_store
from mp_ray.store_artifacts import DISTILL_GROUP as GROUP
from mp_ray.store_artifacts import DISTILL_META as META_ATTR

FORMAT_VERSION = 1
ARRAYS = ("groups", "theta", "features", "labels", "weights", "single", "unions", "union_params")


class DistilledNotFoundError(MpRayError, FileNotFoundError):
    """No complete distilled datamodel where one was expected."""


def open_destination(config: ExperimentConfig, fingerprint: str, write: bool) -> zarr.Group:
    """The Zarr group of the experiment's distilled datamodel (see the module docstring),
    writable when ``write``; where it is the experiment's store, that store is refused unless
    made with the config's identity over the dataset with ``fingerprint``."""
    options = config.store.storage_options
    if config.distill.uri:
        uri = config.distill.uri
        try:
            group = zarr.open_group(
                open_store(uri, options, read_only=not write), mode="a" if write else "r"
            )
        except FileNotFoundError:
            raise DistilledNotFoundError(f"no distilled datamodel at {uri}") from None
        if SPEC_ATTR in group.attrs:
            raise StoreMismatchError(
                f"distill.uri {uri} is an experiment store; leave distill.uri unset to save in "
                f"its '{GROUP}' group"
            )
        unknown = set(group.keys()) - set(ARRAYS)
        if unknown:
            raise StoreMismatchError(
                f"distill.uri {uri} holds other Zarr content ({', '.join(sorted(unknown))}), "
                "not a distilled datamodel"
            )
        return group
    try:
        store = ExperimentStore.open_for(config, fingerprint, SEEDED_UNREAD, read_only=not write)
    except StoreNotFoundError as err:
        raise StoreNotFoundError(
            f"{err}: the distilled datamodel is saved in the experiment's store; run "
            "`mp-ray retrain` first or set distill.uri"
        ) from None
    if write:
        return store.group.require_group(GROUP)
    if GROUP not in store.group:
        raise DistilledNotFoundError(
            f"store {store.uri} holds no distilled datamodel: run `mp-ray distill` first"
        )
    return store.group[GROUP]


def write_distilled(
    group: zarr.Group,
    model: DistilledDatamodel,
    truth: GroundTruth,
    fingerprint: str,
    meta: dict[str, Any],
) -> None:
    """Write ``model`` and its ground truth, then the metadata (``meta``: JSON-able)."""
    if META_ATTR in group.attrs:
        del group.attrs[META_ATTR]
    synsets = model.synsets
    arrays = {
        "groups": model.groups,
        "theta": model.theta,
        "features": synsets.features,
        "labels": synsets.labels,
        "weights": synsets.weights,
        "single": truth.single,
        "unions": truth.unions,
        "union_params": truth.union_params,
    }
    for name, value in arrays.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().to(torch.float64).numpy()
        group.create_array(name, data=np.ascontiguousarray(value), overwrite=True)
    group.attrs[META_ATTR] = {
        **meta,
        "format_version": FORMAT_VERSION,
        "dataset_fingerprint": fingerprint,
        "eta": model.eta,
        "n_train": model.learner.n_train,
        "n_params": model.learner.n_params,
        "n_groups": model.n_groups,
        "per_group": synsets.per_group,
    }


def read_distilled(
    group: zarr.Group, learner: Learner, fingerprint: str
) -> tuple[DistilledDatamodel, GroundTruth, dict[str, Any]]:
    """The distilled datamodel in ``group`` over ``learner``, its ground truth and metadata;
    a model saved for another dataset (``fingerprint``) or learner is an error."""
    meta = dict(group.attrs.get(META_ATTR, {}))
    if not meta:
        raise DistilledNotFoundError(
            "no complete distilled datamodel here (missing or interrupted write): run "
            "`mp-ray distill` again"
        )
    if meta["dataset_fingerprint"] != fingerprint:
        raise StoreMismatchError(
            "this distilled datamodel was fitted on another dataset (fingerprint "
            f"{meta['dataset_fingerprint'][:16]}…, this dataset's is {fingerprint[:16]}…)"
        )
    if (meta["n_train"], meta["n_params"]) != (learner.n_train, learner.n_params):
        raise StoreMismatchError(
            f"this distilled datamodel has n={meta['n_train']} points and d={meta['n_params']} "
            f"parameters; the learner has n={learner.n_train}, d={learner.n_params}"
        )
    values = {name: group[name][:] for name in ARRAYS}

    def tensor(name: str) -> torch.Tensor:
        return torch.as_tensor(values[name], device=learner.device, dtype=learner.dtype)

    synsets = Synsets(tensor("features"), tensor("labels"), tensor("weights"))
    model = DistilledDatamodel(learner, tensor("theta"), values["groups"], synsets, meta["eta"])
    truth = GroundTruth(tensor("single"), values["unions"].astype(bool), tensor("union_params"))
    return model, truth, meta
