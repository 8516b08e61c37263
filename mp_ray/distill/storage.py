"""A distilled datamodel saved as an artifact (:mod:`mp_ray.store.artifacts`), with the
retrained models it was fitted and validated on.

By default it is the ``distill`` group of the experiment's store (which must exist and be
built from the same dataset); ``distill.uri`` puts it at the root of a Zarr group of its own
instead. Layout (n training points, G groups, m synthetic examples per group, p features,
c classes, d parameters, R held-out removals)::

    groups        (n,)        int64    each training point's group
    theta         (d,)        float64  θ*, the full-data model
    features      (G, m, p)   float64  synthetic examples
    labels        (G, m, c)   float64  their soft labels (rows sum to 1)
    weights       (G, m)      float64  their weights
    single        (G, d)      float64  θ_{−k} retrained without group k (supervision)
    unions        (R, G)      bool     held-out removals (never distilled on)
    union_params  (R, d)      float64  θ retrained without each of them
    attrs: {"mp_ray_distill": {dataset fingerprint, η, shapes, config, report}}

The metadata is written last and removed first when the artifact is overwritten: without it
the write was interrupted, and reading it is an error.
"""

from __future__ import annotations

from typing import Any

import torch

from mp_ray.config import ExperimentConfig
from mp_ray.distill.model import DistilledDatamodel
from mp_ray.distill.supervision import GroundTruth
from mp_ray.distill.synset import Synsets
from mp_ray.errors import MpRayError
from mp_ray.learners import Learner
from mp_ray.store import (
    ArtifactIncompleteError,
    ArtifactNotFoundError,
    Artifacts,
    ExperimentStore,
    StoreMismatchError,
    StoreNotFoundError,
)
from mp_ray.store.identity import SEEDED_UNREAD

FORMAT_VERSION = 1


class DistilledNotFoundError(MpRayError, FileNotFoundError):
    """No complete distilled datamodel where one was expected."""


def open_destination(config: ExperimentConfig, fingerprint: str, write: bool) -> Artifacts:
    """The artifacts that hold the experiment's distilled datamodel (see the module
    docstring), writable when ``write``; where they are the experiment's store, that store is
    refused unless made with the config's identity over the dataset with ``fingerprint``."""
    if config.distill.uri:
        try:
            return Artifacts.at_own_uri(
                config.distill.uri, config.store.storage_options, "distill", write
            )
        except ArtifactNotFoundError as err:
            raise DistilledNotFoundError(str(err)) from None
    try:
        store = ExperimentStore.open_for(config, fingerprint, SEEDED_UNREAD, read_only=not write)
    except StoreNotFoundError as err:
        raise StoreNotFoundError(
            f"{err}: the distilled datamodel is saved in the experiment's store; run "
            "`mp-ray retrain` first or set distill.uri"
        ) from None
    return store.artifacts


def write_distilled(
    destination: Artifacts,
    model: DistilledDatamodel,
    truth: GroundTruth,
    fingerprint: str,
    meta: dict[str, Any],
) -> None:
    """Write ``model`` and its ground truth, then the metadata (``meta``: JSON-able)."""
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
            arrays[name] = value.detach().cpu().to(torch.float64).numpy()
    destination.write(
        "distill",
        None,
        arrays,
        {
            **meta,
            "format_version": FORMAT_VERSION,
            "dataset_fingerprint": fingerprint,
            "eta": model.eta,
            "n_train": model.learner.n_train,
            "n_params": model.learner.n_params,
            "n_groups": model.n_groups,
            "per_group": synsets.per_group,
        },
    )


def read_distilled(
    destination: Artifacts, learner: Learner, fingerprint: str
) -> tuple[DistilledDatamodel, GroundTruth, dict[str, Any]]:
    """The distilled datamodel in ``destination`` over ``learner``, its ground truth and
    metadata; a model saved for another dataset (``fingerprint``) or learner is an error."""
    try:
        values, meta = destination.read("distill", fingerprint=fingerprint)
    except ArtifactIncompleteError:
        raise DistilledNotFoundError(
            "no complete distilled datamodel here (missing or interrupted write): run "
            "`mp-ray distill` again"
        ) from None
    except ArtifactNotFoundError:
        raise DistilledNotFoundError(
            f"store {destination.uri} holds no distilled datamodel: run `mp-ray distill` first"
        ) from None
    if (meta["n_train"], meta["n_params"]) != (learner.n_train, learner.n_params):
        raise StoreMismatchError(
            f"this distilled datamodel has n={meta['n_train']} points and d={meta['n_params']} "
            f"parameters; the learner has n={learner.n_train}, d={learner.n_params}"
        )

    def tensor(name: str) -> torch.Tensor:
        return torch.as_tensor(values[name], device=learner.device, dtype=learner.dtype)

    synsets = Synsets(tensor("features"), tensor("labels"), tensor("weights"))
    model = DistilledDatamodel(learner, tensor("theta"), values["groups"], synsets, meta["eta"])
    truth = GroundTruth(tensor("single"), values["unions"].astype(bool), tensor("union_params"))
    return model, truth, meta
