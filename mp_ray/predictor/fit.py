"""Fitting the ModelPred predictor with Ray Train: data-parallel workers over store blocks.

The driver first streams the training rows once for the coordinates the set function
predicts in and the mean training mask (:mod:`mp_ray.predictor.moments`). Worker r of W
owns blocks r, r + W, r + 2W, … of the store and streams them (:mod:`mp_ray.predictor.shard`):
it holds one block (whole chunks) and less than a minibatch of rows at a time, never its
whole share, and reads its validation rows the same way (:mod:`mp_ray.store.rows`). The
model is wrapped by ``ray.train.torch.prepare_model`` (DDP: gloo on CPU, NCCL on GPU);
a step's ``batch_size`` subsets are shared out over the workers, and every worker takes the
same steps. The workers are placed with
the SPREAD strategy (one per node while nodes have room): each reads its own blocks from
the store, so spreading them spreads the reads over the nodes' network links, and the model
is small enough that the all-reduce between nodes costs little.
Training is budgeted in optimizer steps (``predictor.steps``), not passes over the rows, so
the same default trains a model to the same point on a store of any size: each worker
walks through its training rows in a fresh random order per pass — its blocks in an order
drawn from (seed, pass, rank), each block's rows shuffled by (seed, pass, block) — and the
cosine schedule is a function of the step. Every ``eval_every`` steps
the validation error — mean relative parameter error ‖θ̂ − θ‖/‖θ‖ over the validation rows
of all workers — is all-reduced, so every worker makes the same early-stopping decision
(``patience`` validations without improvement). Each report carries the worker's peak
resident memory and the largest over workers (``peak_rss_mib``, ``max_peak_rss_mib``,
MiB); rank 0 also reports a checkpoint holding
the training state and the best predictor so far (a
:class:`~mp_ray.predictor.predictor.Predictor` directory); running again with the same run
name resumes from the latest one. Rank 0 also sets the fit's gauges (:mod:`mp_ray.metrics`)
and, with ``observability.mlflow.enabled``, logs the run to MLflow (:mod:`mp_ray.tracking`).

The run's settings are the config's ``fit`` section (workers, storage path, failure and
checkpoint policy); the run folder ``<fit.storage_path>/<name>`` also holds the config it ran
with, resolved (:data:`~mp_ray.config.RESOLVED_CONFIG`), from which the same fit runs again.

    from mp_ray.predictor.fit import fit_predictor
    outcome = fit_predictor(config, name="quickstart")
    Predictor.load(outcome.predictor_uri)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray.train
import ray.train.torch
import torch

from mp_ray.config import ExperimentConfig, PredictorConfig, write_resolved_config
from mp_ray.data import Dataset, load_dataset
from mp_ray.learners import Learner
from mp_ray.learners.capabilities import GLOBAL_REGULARISER, LOCAL_REGULARISER, require
from mp_ray.loaded import learner_of
from mp_ray.predictor.moments import TrainingMoments, training_moments
from mp_ray.predictor.refine import newton_steps_for
from mp_ray.predictor.train_steps import PREDICTOR_DIR, TrainWorker, next_validation
from mp_ray.ray_resources import check_cluster_fits
from mp_ray.ray_session import relay
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import FIT_UNREAD
from mp_ray.tracking import check_tracking

if TYPE_CHECKING:
    from ray.util.queue import Queue

TRAIN_LOG_LEVEL = "WARNING"  # Ray Train's console logs: its INFO lines stay in its log files


@dataclass
class FitOutcome:
    """Where the fitted predictor is, the last reported metrics and the config the fit ran
    with (``auto`` values resolved, paths absolute)."""

    predictor_uri: str
    checkpoint_path: str
    metrics: dict[str, Any]
    config: ExperimentConfig


def fit_predictor(
    config: ExperimentConfig,
    name: str,
    resources_per_worker: dict[str, float] | None = None,
    callbacks: list[ray.train.UserCallback] | None = None,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    dataset: Dataset | None = None,
    moments: TrainingMoments | None = None,
) -> FitOutcome:
    """Fit the predictor on the experiment's store as run ``name``, with the config's ``fit``
    settings; writes the resolved config into the run folder first.

    ``resources_per_worker`` and ``callbacks`` pass through to Ray Train (Tune's driver sets
    them, see :mod:`mp_ray.tuning`); ``on_report`` is called in this driver with the
    metrics of each validation. ``dataset`` is the config's dataset when the caller has it
    loaded already, and ``moments`` the store's training moments when already computed
    (:func:`~mp_ray.predictor.moments.training_moments`; a search computes them once for
    all its trials); each is made here otherwise. Ray Train's own logs below warnings stay
    in its log files."""
    config = config.with_absolute_paths()
    check_tracking(config)
    run = config.fit
    worker = {**(resources_per_worker or {"CPU": 1.0}), **({"GPU": 1.0} if run.use_gpu else {})}
    check_cluster_fits("Ray Train worker", worker, "the workers' resources (fit.use_gpu, --gpu)")
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    store = ExperimentStore.open_for(config, dataset.fingerprint, FIT_UNREAD, complete=True)
    learner = learner_of(config, dataset)
    if moments is None:
        moments = store_moments(store, config, dataset, learner)
    scaler = moments.scaler(config.predictor.targets)
    settings = fit_settings(config.predictor, learner, moments.count, store.spec.n_params)
    config = config.model_copy(update={"predictor": settings})
    write_resolved_config(config, f"{run.storage_path}/{name}")
    with relay(on_report) as queue:
        trainer = ray.train.torch.TorchTrainer(
            train_loop,
            train_loop_config={
                "experiment": config.model_dump(mode="json"),
                "scaler": scaler.to_json(),
                "center": moments.center.tolist() if config.predictor.center else None,
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=run.num_workers,
                use_gpu=run.use_gpu,
                resources_per_worker=resources_per_worker,
                placement_strategy="SPREAD",
            ),
            run_config=ray.train.RunConfig(
                name=name,
                failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
                storage_path=run.storage_path,
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=run.checkpoints_to_keep),
                callbacks=[*(callbacks or []), *([] if queue is None else [_ReportRelay(queue)])],
                logging_config=ray.train.LoggingConfig(log_level=TRAIN_LOG_LEVEL),
            ),
        )
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"predictor fit {name} ended without a checkpoint: {result.error}")
    path = checkpoint_uri(result.checkpoint.path, run.storage_path)
    return FitOutcome(f"{path}/{PREDICTOR_DIR}", path, dict(result.metrics or {}), config)


def store_moments(
    store: ExperimentStore,
    config: ExperimentConfig,
    dataset: Dataset,
    learner: Learner | None = None,
) -> TrainingMoments:
    """The moments of ``store``'s training rows (of ``config.splits``), with the output
    energy of the config's learner on ``dataset`` (``learner`` when already made) when it
    has an output metric."""
    learner = learner_of(config, dataset, learner)
    return training_moments(store, config.splits, learner.output_metric())


def fit_settings(
    settings: PredictorConfig, learner: Learner, labelled_rows: int, n_params: int
) -> PredictorConfig:
    """The predictor ``settings`` a fit runs with: ``auto`` values decided for a store of
    ``n_params`` parameters with ``labelled_rows`` training rows and for ``learner`` (no
    global regulariser for one without ``objective_grad``); refused, before any work, where
    they need a method the learner lacks (:mod:`mp_ray.learners.capabilities`) or Newton
    steps it cannot take (:func:`~mp_ray.predictor.refine.newton_steps_for`)."""
    kkt = learner.provides("objective_grad")
    resolved = settings.resolved(labelled_rows, n_params, kkt=kkt)
    if resolved.lambda_global:
        stage = f"predictor.lambda_global: {resolved.lambda_global:g} (the global regulariser)"
        require(learner, *GLOBAL_REGULARISER, stage=stage)
    if resolved.lambda_local:
        stage = f"predictor.lambda_local: {resolved.lambda_local:g} (the local regulariser)"
        require(learner, *LOCAL_REGULARISER, stage=stage)
    newton_steps_for(resolved.newton_steps, learner)
    return resolved


class _ReportRelay(ray.train.UserCallback):
    """Puts each report's metrics (rank 0's) into a :func:`~mp_ray.ray_session.relay` queue;
    Ray Train calls it in its controller."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(
        self,
        run_context: Any,
        metrics: list[dict[str, Any]],
        checkpoint: ray.train.Checkpoint | None,
    ) -> None:
        self.queue.put(metrics[0])


def checkpoint_uri(path: str, storage_path: str) -> str:
    """A URI for a checkpoint path that Ray Train reports under ``storage_path``.

    Ray Train gives paths inside its pyarrow filesystem, without the scheme
    (``bucket/train/run/checkpoint_…`` for ``s3://bucket/train``); put it back so that fsspec
    reads the checkpoint from the same place. Local paths are returned unchanged."""
    scheme, sep, _ = storage_path.partition("://")
    return f"{scheme}://{path}" if sep and "://" not in path else path


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: train up to each validation, validate, report; stop at the
    step budget or when the validation error stops falling (see the module docstring and
    :mod:`mp_ray.predictor.train_steps`)."""
    torch.set_num_threads(1)
    # Ray Train logs every report at INFO through the root logger (on a logger named by its
    # file path), which the run's LoggingConfig does not reach.
    logging.getLogger().setLevel(TRAIN_LOG_LEVEL)
    worker = TrainWorker.set_up(loop_config)
    step = worker.progress["step"]
    with worker.tracked():
        while step < worker.settings.steps:
            end = next_validation(step, worker.settings)
            train_loss = worker.train(step, end)
            metrics, stop = worker.validate(end, train_loss)
            worker.report(metrics)
            if stop:
                break
            step = end
