"""Fit the datamodels of an experiment from its store, as a Ray task (on a GPU when the
config reserves one), and write them back into the store.

    summary = run_datamodels(config)       # from a driver connected to Ray
    summary = run_datamodels(config, on_progress=lambda targets: ...)  # per block fitted

The task reads the training and validation rows (the predictor's row split, so the test
rows stay held out for every method), fits, writes ``datamodels/<name>`` and scores the
result on the test rows (LDS).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from mp_ray.config import ExperimentConfig
from mp_ray.data import load_dataset
from mp_ray.datamodels.fit import fit_datamodels, solver_device
from mp_ray.datamodels.storage import write_datamodels
from mp_ray.ray_resources import check_cluster_fits
from mp_ray.ray_session import relay
from mp_ray.scores import lds
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import DATAMODELS_UNREAD
from mp_ray.store.rows import TEST, TRAIN, VAL, read_split, row_splits


def fit_shape(config: ExperimentConfig) -> tuple[int, int, int]:
    """Rows the datamodels of ``config``'s store are fitted on (training and validation,
    degenerate ones included), ground-set points and targets, from its spec alone."""
    store = ExperimentStore.open(config.store.uri, config.store.storage_options)
    spec, shares = store.spec, config.splits
    splits = row_splits(store, np.arange(spec.n_rows), shares.val_fraction, shares.test_fraction)
    return int((splits != TEST).sum()), spec.n_train, spec.n_targets


def open_checked(config: ExperimentConfig, read_only: bool = True) -> ExperimentStore:
    """``config``'s store, refused unless complete and built from the config's dataset
    (datamodels read nothing else of the config's identity)."""
    fingerprint = load_dataset(config.dataset).fingerprint
    return ExperimentStore.open_for(
        config, fingerprint, DATAMODELS_UNREAD, read_only=read_only, complete=True
    )


def fit_from_store(
    config: ExperimentConfig,
    name: str = "default",
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Fit, write and score the datamodels of ``config``'s store; a JSON-able summary.
    ``on_progress`` is called with the number of targets of each block fitted."""
    store = open_checked(config, read_only=False)
    blocks = list(range(store.n_blocks))
    fractions = (config.splits.val_fraction, config.splits.test_fraction)
    train, val, test = (
        read_split(store, blocks, split, *fractions, with_outputs=True)
        for split in (TRAIN, VAL, TEST)
    )
    start = time.perf_counter()
    datamodels = fit_datamodels(
        train.masks, train.outputs, val.masks, val.outputs, config.datamodels, on_progress
    )
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {
        "name": name,
        "store": store.uri,
        "sampler": dict(store.spec.sampler),
        "rows": {"train": len(train), "val": len(val), "test": len(test)},
        "n_train": datamodels.n_train,
        "n_targets": datamodels.n_targets,
        "device": str(solver_device(config.datamodels)),
        "fit_seconds": seconds,
        "mean_nonzero": float((datamodels.weights != 0).sum(axis=1).mean()),
        "config": config.datamodels.model_dump(),
    }
    if len(test) >= 3:
        score = lds(datamodels, test.masks, test.outputs)
        # None (null) where no target's LDS is defined: every prediction constant.
        summary["test_lds"] = score.mean if score.defined else None
        summary["test_lds_targets"] = score.defined
    write_datamodels(store, datamodels, summary, name)
    return summary


def run_datamodels(
    config: ExperimentConfig,
    name: str = "default",
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """:func:`fit_from_store` in a Ray task with the config's CPUs and GPUs; ``on_progress``
    is called in this driver with the number of targets of each block fitted."""
    config = config.with_absolute_paths()
    open_checked(config)  # a mismatch is refused here, not inside the task
    settings = config.datamodels
    check_cluster_fits(
        "datamodels task",
        {"CPU": settings.num_cpus, "GPU": settings.num_gpus},
        "datamodels.num_cpus / num_gpus",
    )
    task = ray.remote(num_cpus=settings.num_cpus, num_gpus=settings.num_gpus)(fit_from_store)
    with relay(on_progress) as queue:
        return ray.get(task.remote(config, name, None if queue is None else queue.put))
