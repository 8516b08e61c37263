"""Fitting the ModelPred predictor with Ray Train: data-parallel workers over store blocks.

Worker r of W reads blocks r, r + W, r + 2W, … of the store (whole chunks, never the whole
store) and keeps its training and validation rows (:mod:`mp_ray.predictor.rows`). The
model is wrapped by ``ray.train.torch.prepare_model`` (DDP: gloo on CPU, NCCL on GPU);
a step's ``batch_size`` subsets are shared out over the workers, and every worker takes the
same steps. The workers are placed with
the SPREAD strategy (one per node while nodes have room): each reads its own blocks from
the store, so spreading them spreads the reads over the nodes' network links, and the model
is small enough that the all-reduce between nodes costs little.
Training is budgeted in optimizer steps (``predictor.steps``), not passes over the rows, so
the same default trains a model to the same point on a store of any size: each worker
walks through its training rows in a fresh random order per pass, a function of (seed,
pass, rank), and the cosine schedule is a function of the step. Every ``eval_every`` steps
the validation error — mean relative parameter error ‖θ̂ − θ‖/‖θ‖ over the validation rows
of all workers — is all-reduced, so every worker makes the same early-stopping decision
(``patience`` validations without improvement). Rank 0 then reports a checkpoint holding
the training state and the best predictor so far (a
:class:`~mp_ray.predictor.predictor.Predictor` directory); running again with the same run
name resumes from the latest one.

The run's settings are the config's ``fit`` section (workers, storage path, failure and
checkpoint policy); the run folder ``<fit.storage_path>/<name>`` also holds the config it ran
with, resolved (:data:`~mp_ray.config.RESOLVED_CONFIG`), from which the same fit runs again.

    from mp_ray.predictor.fit import fit_predictor
    outcome = fit_predictor(config, name="quickstart")
    Predictor.load(outcome.predictor_uri)
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from mp_ray.config import ExperimentConfig, PredictorConfig, write_resolved_config
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner
from mp_ray.predictor.losses import LossWeights, modelpred_loss
from mp_ray.predictor.model import SetFunction, element_features
from mp_ray.predictor.predictor import Predictor, PredictorMeta
from mp_ray.predictor.rows import TRAIN, VAL, Rows, read_split, split_blocks
from mp_ray.predictor.scaling import OutputScaler, Scaler, TargetScaler, scaler_from_json
from mp_ray.ray_resources import check_cluster_fits
from mp_ray.ray_session import relay
from mp_ray.sampling import make_sampler
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import FIT_UNREAD

if TYPE_CHECKING:
    from ray.util.queue import Queue

STATE_FILE = "state.pt"
TRAIN_LOG_LEVEL = "WARNING"  # Ray Train's console logs: its INFO lines stay in its log files
PREDICTOR_DIR = "predictor"


@dataclass
class FitOutcome:
    """Where the fitted predictor is, the last reported metrics and the config the fit ran
    with (``auto`` values resolved, paths absolute)."""

    predictor_uri: str
    checkpoint_path: str
    metrics: dict[str, Any]
    config: ExperimentConfig


def training_moments(
    store: ExperimentStore, settings: PredictorConfig, metric: torch.Tensor | None
) -> tuple[Scaler, np.ndarray, int]:
    """The coordinates the set function predicts in (``settings.targets``; ``outputs`` needs
    the learner's output ``metric`` and is standardised without one), the mean training
    mask m̄ ``(n,)`` and the number of training rows, from the training rows streamed block
    by block."""
    use_outputs = settings.targets == "outputs" and metric is not None
    factor = OutputScaler.factor_of(metric.numpy()) if use_outputs else None
    total = np.zeros(store.spec.n_params)
    total_sq = np.zeros(store.spec.n_params)
    energy = 0.0
    mask_total = np.zeros(store.spec.n_train)
    count = 0
    for rows in split_blocks(store, TRAIN, settings.val_fraction, settings.test_fraction):
        params = rows.params.astype(np.float64)
        total += params.sum(axis=0)
        total_sq += (params**2).sum(axis=0)
        if factor is not None:
            energy += OutputScaler.energy(params, factor)
        mask_total += rows.masks.sum(axis=0)
        count += len(rows)
    center = mask_total / max(count, 1)
    if settings.targets == "raw":
        scaler: Scaler = TargetScaler.identity(store.spec.n_params)
    elif factor is not None:
        scaler = OutputScaler.from_moments(count, total, energy, factor)
    else:
        scaler = TargetScaler.from_moments(count, total, total_sq)
    return scaler, center, count


def fit_predictor(
    config: ExperimentConfig,
    name: str,
    resources_per_worker: dict[str, float] | None = None,
    callbacks: list[ray.train.UserCallback] | None = None,
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> FitOutcome:
    """Fit the predictor on the experiment's store as run ``name``, with the config's ``fit``
    settings; writes the resolved config into the run folder first.

    ``resources_per_worker`` and ``callbacks`` pass through to Ray Train (Tune's driver sets
    them, see :mod:`mp_ray.tuning`); ``on_report`` is called in this driver with the
    metrics of each validation. Ray Train's own logs below warnings stay in its log files."""
    config = config.with_absolute_paths()
    run = config.fit
    worker = {**(resources_per_worker or {"CPU": 1.0}), **({"GPU": 1.0} if run.use_gpu else {})}
    check_cluster_fits("Ray Train worker", worker, "the workers' resources (fit.use_gpu, --gpu)")
    dataset = load_dataset(config.dataset)
    store = ExperimentStore.open_for(config, dataset.fingerprint, FIT_UNREAD, complete=True)
    learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    scaler, center, labelled = training_moments(store, config.predictor, learner.output_metric())
    settings = config.predictor.resolved(labelled, store.spec.n_params)
    config = config.model_copy(update={"predictor": settings})
    write_resolved_config(config, f"{run.storage_path}/{name}")
    with relay(on_report) as queue:
        trainer = ray.train.torch.TorchTrainer(
            train_loop,
            train_loop_config={
                "experiment": config.model_dump(mode="json"),
                "scaler": scaler.to_json(),
                "center": center.tolist() if config.predictor.center else None,
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


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over workers (identity on one worker)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def _all_min(value: int, device: torch.device) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


@torch.no_grad()
def relative_error_sum(
    model: torch.nn.Module,
    scaler: Scaler,
    elements: torch.Tensor,
    rows: Rows,
    device: torch.device,
    chunk: int = 1024,
) -> float:
    """Σ over ``rows`` of ‖θ̂ − θ‖ / ‖θ‖ (a sum, for all-reducing into a mean)."""
    total = 0.0
    for start in range(0, len(rows), chunk):
        masks = torch.as_tensor(rows.masks[start : start + chunk], device=device).float()
        target = torch.as_tensor(rows.params[start : start + chunk], device=device).double()
        predicted = scaler.inverse(model(masks, elements)).double()
        error = torch.linalg.vector_norm(predicted - target, dim=1)
        total += float((error / torch.linalg.vector_norm(target, dim=1).clamp(min=1e-12)).sum())
    return total


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker; see the module docstring."""
    torch.set_num_threads(1)
    # Ray Train logs every report at INFO through the root logger (on a logger named by its
    # file path), which the run's LoggingConfig does not reach.
    logging.getLogger().setLevel(TRAIN_LOG_LEVEL)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    config = ExperimentConfig.model_validate(loop_config["experiment"])
    settings = config.predictor
    scaler = scaler_from_json(loop_config["scaler"])
    device = ray.train.torch.get_device()
    dataset = load_dataset(config.dataset)
    store = ExperimentStore.open_for(config, dataset.fingerprint, FIT_UNREAD, complete=True)
    learner = make_learner(
        config.learner.model_copy(update={"dtype": "float32"}),
        dataset.X_train,
        dataset.y_train,
        dataset.n_classes,
        device,
    )
    elements = element_features(dataset.X_train, dataset.y_train, dataset.n_classes).to(device)
    blocks = list(range(rank, store.n_blocks, world))
    fractions = (settings.val_fraction, settings.test_fraction)
    train_rows = read_split(store, blocks, TRAIN, *fractions)
    val_rows = read_split(store, blocks, VAL, *fractions)
    n_val = int(_all_sum([float(len(val_rows))], device)[0])
    if n_val == 0:
        raise ValueError("no validation rows: raise predictor.val_fraction or store.n_rows")

    center = None if loop_config["center"] is None else torch.tensor(loop_config["center"])
    torch.manual_seed(config.seed)  # the same initialisation on every worker and every run
    model = SetFunction(
        elements.shape[1], store.spec.n_params, settings.width, center, settings.pooling
    )
    state = _restore()
    if state is not None:
        model.load_state_dict(state["model"])
    model = ray.train.torch.prepare_model(model)
    module = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    progress = (
        state["progress"]
        if state is not None
        else {"step": 0, "best": float("inf"), "bad_validations": 0}
    )
    resumed_from = progress["step"]
    best_model = state["best_model"] if state is not None else copy.deepcopy(module.state_dict())

    weights = LossWeights.of(settings)
    sampler = make_sampler(config.sampler, dataset.n_train, config.seed)
    # batch_size and unlabelled_per_batch count over all workers; each takes its share.
    unlabelled_count = (
        _share(settings.unlabelled_per_batch, world) if sampler.default_rows is None else 0
    )
    batch = _share(settings.batch_size, world)
    per_pass = _all_min(max(1, -(-len(train_rows) // batch)), device)  # steps per pass
    order, order_pass = np.arange(0), -1
    loss_sum, loss_steps = 0.0, 0
    model.train()
    for step in range(progress["step"], settings.steps):
        passes, position = divmod(step, per_pass)
        if passes != order_pass:
            rng = np.random.default_rng([config.seed, passes, rank])
            order, order_pass = rng.permutation(len(train_rows)), passes
        for group in optimizer.param_groups:
            group["lr"] = step_lr(settings, step)
        index = order[position * batch : (position + 1) * batch]
        masks = torch.as_tensor(train_rows.masks[index], device=device).float()
        targets = torch.as_tensor(train_rows.params[index], device=device)
        unlabelled = None
        if unlabelled_count:
            first = store.spec.n_rows + (step * world + rank) * unlabelled_count
            unlabelled = torch.as_tensor(
                sampler.masks(np.arange(first, first + unlabelled_count)), device=device
            ).float()
        loss, _ = modelpred_loss(
            model, learner, scaler, elements, masks, targets, unlabelled, weights
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum, loss_steps = loss_sum + float(loss.detach()), loss_steps + 1
        if (step + 1) % settings.eval_every and step + 1 < settings.steps:
            continue

        model.eval()
        val_sum, train_loss = _all_sum(
            [relative_error_sum(model, scaler, elements, val_rows, device), loss_sum / loss_steps],
            device,
        )
        model.train()
        loss_sum, loss_steps = 0.0, 0
        val_error = val_sum / n_val
        if val_error < progress["best"]:
            progress.update(best=val_error, bad_validations=0)
            best_model = copy.deepcopy(module.state_dict())
        else:
            progress["bad_validations"] += 1
        progress["step"] = step + 1
        stop = progress["bad_validations"] >= settings.patience
        metrics = {
            "step": step + 1,
            "resumed_from_step": resumed_from,
            "train_loss": train_loss / world,
            "val_rel_error": val_error,
            "best_val_rel_error": progress["best"],
        }
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if rank == 0:
                torch.save(
                    {
                        "model": module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "progress": progress,
                        "best_model": best_model,
                    },
                    os.path.join(directory, STATE_FILE),
                )
                best = SetFunction(
                    elements.shape[1], store.spec.n_params, settings.width, center, settings.pooling
                )
                best.load_state_dict(best_model)
                meta = PredictorMeta(
                    width=settings.width,
                    n_params=store.spec.n_params,
                    n_classes=dataset.n_classes,
                    scaler=scaler,
                    learner=store.spec.learner,
                    dataset_fingerprint=store.spec.dataset_fingerprint,
                    store_uri=store.uri,
                    extra={"val_rel_error": progress["best"], "steps": step + 1},
                    store_identity=store.spec.identity,
                    pooling=settings.pooling,
                )
                Predictor(best, elements.cpu(), meta).save(os.path.join(directory, PREDICTOR_DIR))
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)
        if stop:
            break


def _share(total: int, world: int) -> int:
    """One worker's part of a per-step count (at least 1 when the count is not 0)."""
    return max(1, -(-total // world)) if total else 0


def step_lr(settings: PredictorConfig, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) under ``settings.lr_schedule``:
    a function of the step alone, so a resumed run continues the same schedule."""
    if settings.lr_schedule == "cosine":
        return settings.lr * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
    return settings.lr


def _restore() -> dict[str, Any] | None:
    """The training state of the latest checkpoint of this run, if it has one."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(os.path.join(directory, STATE_FILE), weights_only=False)
