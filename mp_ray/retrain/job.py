"""The retraining job: declare (or reopen) the store, then train every pending block on Ray.

Usage from Python (the CLI and ``jobs/retrain.py`` call the same function)::

    from mp_ray.config import load_experiment
    from mp_ray.retrain import run_retrain
    report = run_retrain(load_experiment("configs/quickstart.yaml"))

Ray must be initialised (see :func:`mp_ray.ray_session.connect`). A rerun of an interrupted
job skips the blocks already marked done and finishes the rest.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset
from mp_ray.learners import make_learner
from mp_ray.loaded import dataset_of
from mp_ray.metrics import RetrainMetrics
from mp_ray.retrain.block import build_spec
from mp_ray.retrain.pool import ActorPool, ProgressCallback
from mp_ray.store import ExperimentStore
from mp_ray.store.location import is_memory_uri


@dataclass
class RetrainReport:
    """What a retraining run did; ``blocks_trained`` counts each block once."""

    store_uri: str
    n_rows: int
    n_blocks: int
    blocks_skipped: int
    blocks_trained: int
    rows_trained: int
    seconds: float
    models_per_second: float
    retries: dict[int, int] = field(default_factory=dict)
    actors_replaced: int = 0
    blocks_per_node: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def prepare_store(
    config: ExperimentConfig, dataset: Dataset | None = None
) -> tuple[ExperimentStore, Dataset]:
    """Load the dataset and declare or reopen the experiment's store (validating its spec)."""
    if is_memory_uri(config.store.uri):
        raise ValueError(
            f"store.uri {config.store.uri!r} is an in-process memory store, which Ray actors "
            "cannot reach; use a local path or s3:// URI for retraining"
        )
    dataset = dataset_of(config, dataset)
    learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    spec = build_spec(config, dataset, learner)
    store = ExperimentStore.create_or_open(config.store.uri, spec, config.store.storage_options)
    return store, dataset


def run_retrain(
    config: ExperimentConfig,
    dataset: Dataset | None = None,
    on_result: ProgressCallback | None = None,
) -> RetrainReport:
    """Train every pending block of the experiment's store on a pool of Ray actors; the
    store records the config the run ran with (``mp-ray inspect --resolved-config``). The
    run's metrics (:class:`~mp_ray.metrics.RetrainMetrics`) are recorded in this driver
    unless ``observability.metrics`` is false."""
    config = config.with_absolute_paths()
    store, dataset = prepare_store(config, dataset)
    store.record_config(config)
    pending = store.pending_blocks()
    start = time.perf_counter()
    outcome = None
    if pending:
        metrics = None
        if config.observability.metrics:
            rows = sum(len(store.block_rows(block)) for block in pending)
            metrics = RetrainMetrics(config, store.uri, rows)
        pool = ActorPool(
            config,
            ray.put(dataset),
            store,
            name_prefix=f"mp-ray-retrain-{uuid.uuid4().hex[:8]}",
            metrics=metrics,
        )
        outcome = pool.run(pending, on_result)
    seconds = time.perf_counter() - start
    missing = store.pending_blocks()
    if missing:
        raise RuntimeError(f"retraining ended with blocks still pending: {missing[:10]}")
    results = outcome.results if outcome else []
    rows = sum(r["rows"] for r in results)
    per_node: dict[str, int] = {}
    for result in results:
        node = result.get("node_id", "driver")
        per_node[node] = per_node.get(node, 0) + 1
    return RetrainReport(
        store_uri=store.uri,
        n_rows=store.spec.n_rows,
        n_blocks=store.n_blocks,
        blocks_skipped=store.n_blocks - len(pending),
        blocks_trained=len(results),
        rows_trained=rows,
        seconds=seconds,
        models_per_second=rows / seconds if seconds > 0 else 0.0,
        retries=dict(outcome.retries) if outcome else {},
        actors_replaced=outcome.actors_replaced if outcome else 0,
        blocks_per_node=per_node,
    )
