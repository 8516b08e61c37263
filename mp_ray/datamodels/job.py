"""Fit the datamodels of an experiment from its store, sharded by target, and write them
back into the store.

    summary = run_datamodels(config)       # from a driver connected to Ray: a task per shard
    summary = run_datamodels(config, on_progress=lambda targets: ...)  # per block fitted
    summary = fit_from_store(config)       # every shard in this process

The targets are split into shards of ``datamodels.targets_per_task``; each shard
(:mod:`mp_ray.datamodels.shard`) streams the store's rows — training and validation rows
(the predictor's row split, so the test rows stay held out for every method) to fit, then
the test rows to score — and returns its (T_shard, n) datamodels and per-target test
correlations. The driver gathers them, writes ``datamodels/<name>`` and records the LDS and
each shard's peak memory in the summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset, load_dataset
from mp_ray.datamodels.fit import Datamodels
from mp_ray.datamodels.shard import MIN_TEST_ROWS, ShardResult, shard_task
from mp_ray.datamodels.storage import write_datamodels
from mp_ray.ray_resources import check_cluster_fits
from mp_ray.ray_session import relay
from mp_ray.scores import Score
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import DATAMODELS_UNREAD
from mp_ray.store.rows import TEST, row_splits


def fit_shape(config: ExperimentConfig) -> tuple[int, int, int]:
    """Rows the datamodels of ``config``'s store are fitted on (training and validation,
    degenerate ones included), ground-set points and targets, from its spec alone."""
    store = ExperimentStore.open(config.store.uri, config.store.storage_options)
    spec, shares = store.spec, config.splits
    splits = row_splits(store, np.arange(spec.n_rows), shares.val_fraction, shares.test_fraction)
    return int((splits != TEST).sum()), spec.n_train, spec.n_targets


def open_checked(
    config: ExperimentConfig, read_only: bool = True, dataset: Dataset | None = None
) -> ExperimentStore:
    """``config``'s store, refused unless complete and built from the config's dataset
    (``dataset`` when already loaded; datamodels read nothing else of the config's
    identity)."""
    fingerprint = (dataset if dataset is not None else load_dataset(config.dataset)).fingerprint
    return ExperimentStore.open_for(
        config, fingerprint, DATAMODELS_UNREAD, read_only=read_only, complete=True
    )


def target_shards(n_targets: int, per_task: int) -> list[slice]:
    """The targets ``0…n_targets−1`` in consecutive shards of at most ``per_task``."""
    return [slice(s, min(s + per_task, n_targets)) for s in range(0, n_targets, per_task)]


def fit_from_store(
    config: ExperimentConfig,
    name: str = "default",
    on_progress: Callable[[int], None] | None = None,
    dataset: Dataset | None = None,
    in_ray_tasks: bool = False,
) -> dict[str, Any]:
    """Fit, write and score the datamodels of ``config``'s store; a JSON-able summary.
    ``on_progress`` is called with the number of targets of each block fitted; ``dataset``
    is the config's dataset when the caller holds it (else it is loaded for its
    fingerprint). The shards run one after the other in this process, or, with
    ``in_ray_tasks``, as Ray tasks with ``datamodels.num_cpus`` / ``num_gpus`` each and a
    torch thread per CPU (then ``on_progress`` must be callable from them, e.g. a Ray
    queue's ``put``)."""
    store = open_checked(config, read_only=False, dataset=dataset)
    settings = config.datamodels
    shards = target_shards(store.spec.n_targets, settings.targets_per_task)
    location = (store.uri, config.store.storage_options, config.splits, settings)
    start = time.perf_counter()
    if in_ray_tasks:
        task = ray.remote(num_cpus=settings.num_cpus, num_gpus=settings.num_gpus)(shard_task)
        threads = max(1, round(settings.num_cpus))  # Ray starts a worker's torch with one
        results: list[ShardResult] = ray.get(
            [task.remote(*location, targets, on_progress, threads) for targets in shards]
        )
    else:
        results = [shard_task(*location, targets, on_progress) for targets in shards]
    seconds = time.perf_counter() - start
    datamodels = Datamodels.concatenate([result.datamodels for result in results])
    rows = results[0].rows
    summary: dict[str, Any] = {
        "name": name,
        "store": store.uri,
        "sampler": dict(store.spec.sampler),
        "rows": rows,
        "n_train": datamodels.n_train,
        "n_targets": datamodels.n_targets,
        "device": results[0].device,
        "solver": results[0].solver,
        "shards": len(shards),
        "fit_seconds": seconds,  # every shard's passes over the store and its fit
        "peak_rss_mib": [result.peak_rss_mib for result in results],
        "mean_nonzero": float((datamodels.weights != 0).sum(axis=1).mean()),
        "config": settings.model_dump(),
    }
    if rows["test"] >= MIN_TEST_ROWS:
        score = Score.of(np.concatenate([result.test_correlations for result in results]))
        # None (null) where no target's LDS is defined: every prediction constant.
        summary["test_lds"] = score.mean if score.defined else None
        summary["test_lds_targets"] = score.defined
    write_datamodels(store, datamodels, summary, name)
    return summary


def run_datamodels(
    config: ExperimentConfig,
    name: str = "default",
    on_progress: Callable[[int], None] | None = None,
    dataset: Dataset | None = None,
) -> dict[str, Any]:
    """:func:`fit_from_store` with a Ray task per shard, each with the config's CPUs and
    GPUs; ``on_progress`` is called in this driver with the number of targets of each block
    fitted."""
    config = config.with_absolute_paths()
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    open_checked(config, dataset=dataset)  # a mismatch is refused before the cluster check
    settings = config.datamodels
    check_cluster_fits(
        "datamodels task",
        {"CPU": settings.num_cpus, "GPU": settings.num_gpus},
        "datamodels.num_cpus / num_gpus",
    )
    with relay(on_progress) as queue:
        put = None if queue is None else queue.put
        return fit_from_store(config, name, put, dataset, in_ray_tasks=True)
