"""The steps of one Ray Train worker fitting the predictor (the loop is
:func:`mp_ray.predictor.fit.train_loop`; the module docstring there tells the whole scheme).

:meth:`TrainWorker.set_up` counts the worker's share of the store rows (a
:class:`~mp_ray.predictor.shard.Shard`, streamed block by block) and builds the set
function and its optimiser, resumed from the run's latest checkpoint when there is one;
:meth:`TrainWorker.train` takes the optimizer steps up to the next validation;
:meth:`TrainWorker.validate` measures the validation error over all workers and decides
whether to stop; :meth:`TrainWorker.report` hands the metrics, and on rank 0 a checkpoint,
to Ray Train. Steps count from 0; a validation after step ``s`` is reported as step ``s + 1``.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from mp_ray.config import ExperimentConfig, PredictorConfig
from mp_ray.data import load_dataset
from mp_ray.learners import Learner, make_learner
from mp_ray.metrics import record_fit
from mp_ray.peak_memory import peak_rss_mib
from mp_ray.predictor.losses import LossWeights, modelpred_loss
from mp_ray.predictor.model import SetFunction, element_features
from mp_ray.predictor.predictor import Predictor, PredictorMeta
from mp_ray.predictor.scaling import Scaler, scaler_from_json
from mp_ray.predictor.shard import Shard
from mp_ray.sampling import Sampler, make_sampler
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import FIT_UNREAD
from mp_ray.store.rows import Rows
from mp_ray.tracking import FitTracker, fit_tracker

STATE_FILE = "state.pt"  # a checkpoint's training state: model, optimizer, progress, best model
PREDICTOR_DIR = "predictor"  # a checkpoint's best predictor so far (a Predictor directory)


@dataclass
class TrainWorker:
    """What one worker of ``world`` holds while it fits: its share of the store, the model
    and where the run stands.

    ``elements (n, e)`` are the ground set's set elements; ``shard`` is this worker's
    blocks, read a block at a time; ``n_val`` counts validation rows over all workers.
    ``progress`` (``step``: steps taken, ``best``: lowest validation error,
    ``bad_validations``: validations since it fell) and ``best_model`` (the state dict of
    the best model) travel in checkpoints. ``batch`` and ``unlabelled_count`` are this
    worker's share of a step's labelled and unlabelled subsets, ``per_pass`` the steps of
    one pass over the training rows (the same on every worker); ``run`` is the Ray Train
    run's name and ``tracker`` rank 0's MLflow run when tracking is on; ``batches`` streams
    the current pass's minibatches and ``next_step`` is the step its next one is for (-1
    before the first)."""

    config: ExperimentConfig
    rank: int
    world: int
    device: torch.device
    store: ExperimentStore
    n_classes: int
    learner: Learner
    scaler: Scaler
    elements: torch.Tensor
    center: torch.Tensor | None
    shard: Shard
    n_val: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    progress: dict[str, Any]
    resumed_from: int
    best_model: dict[str, torch.Tensor]
    weights: LossWeights
    sampler: Sampler
    unlabelled_count: int
    batch: int
    per_pass: int
    run: str
    tracker: FitTracker | None = None
    batches: Iterator[Rows] | None = None
    next_step: int = -1

    @property
    def settings(self) -> PredictorConfig:
        """The predictor section of the run's config (``auto`` values resolved)."""
        return self.config.predictor

    @property
    def module(self) -> torch.nn.Module:
        """The set function itself, outside its data-parallel wrapper."""
        return _unwrapped(self.model)

    @classmethod
    def set_up(cls, loop_config: dict[str, Any]) -> TrainWorker:
        """This worker's rows, model and optimiser from ``loop_config`` (the experiment, the
        target scaler and the centre m̄ ``(n,)`` or None that :func:`fit_predictor` passes),
        resumed from the run's latest checkpoint when it has one."""
        context = ray.train.get_context()
        rank, world = context.get_world_rank(), context.get_world_size()
        run = context.get_experiment_name()
        config = ExperimentConfig.model_validate(loop_config["experiment"])
        settings = config.predictor
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
        elements = element_features(dataset.X_train, dataset.y_train, dataset.n_classes)
        elements = elements.to(device)
        shard, n_val = _count_shard(store, rank, world, config, device)

        center = None if loop_config["center"] is None else torch.tensor(loop_config["center"])
        torch.manual_seed(config.seed)  # the same initialisation on every worker and every run
        model = _set_function(settings, elements, store.spec.n_params, center)
        state = _restore()
        if state is not None:
            model.load_state_dict(state["model"])
        model = ray.train.torch.prepare_model(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            progress, best_model = state["progress"], state["best_model"]
        else:
            progress = {"step": 0, "best": float("inf"), "bad_validations": 0}
            best_model = copy.deepcopy(_unwrapped(model).state_dict())

        sampler = make_sampler(config.sampler, dataset.n_train, config.seed)
        # batch_size and unlabelled_per_batch count over all workers; each takes its share.
        unlabelled_count = (
            _share(settings.unlabelled_per_batch, world) if sampler.default_rows is None else 0
        )
        batch = _share(settings.batch_size, world)
        per_pass = _all_reduce(-(-shard.n_train // batch), dist.ReduceOp.MIN, device)
        model.train()
        return cls(
            config=config,
            rank=rank,
            world=world,
            device=device,
            store=store,
            n_classes=dataset.n_classes,
            learner=learner,
            scaler=scaler_from_json(loop_config["scaler"]),
            elements=elements,
            center=center,
            shard=shard,
            n_val=n_val,
            model=model,
            optimizer=optimizer,
            progress=progress,
            resumed_from=progress["step"],
            best_model=best_model,
            weights=LossWeights.of(settings),
            sampler=sampler,
            unlabelled_count=unlabelled_count,
            batch=batch,
            per_pass=per_pass,
            run=run,
            tracker=fit_tracker(config, rank, run),
        )

    def train(self, start: int, end: int) -> float:
        """Take optimizer steps ``start`` … ``end − 1``; returns this worker's mean loss over
        them (the ModelPred loss of its minibatches, in the scaler's target units)."""
        loss_sum, loss_steps = 0.0, 0
        for step in range(start, end):
            loss_sum, loss_steps = loss_sum + self._step(step), loss_steps + 1
        return loss_sum / loss_steps

    def _step(self, step: int) -> float:
        """One optimizer step on this worker's minibatch of ``step``; returns its loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = step_lr(self.settings, step)
        masks, targets, unlabelled = self._minibatch(step)
        loss, _ = modelpred_loss(
            self.model,
            self.learner,
            self.scaler,
            self.elements,
            masks,
            targets,
            unlabelled,
            self.weights,
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def _minibatch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Step ``step``'s labelled masks ``(B, n)`` float and their retrained parameters
        ``(B, d)``, the next ``B`` training rows of the pass's stream (a function of (seed,
        pass, rank), see :meth:`~mp_ray.predictor.shard.Shard.batches`), and its
        unlabelled masks ``(B_u, n)`` float drawn past the store's rows, or None when there
        are none."""
        passes, position = divmod(step, self.per_pass)
        if self.batches is None or position == 0 or step != self.next_step:
            self.batches = self.shard.batches(self.config.seed, passes, self.batch, position)
        rows, self.next_step = next(self.batches), step + 1
        masks = torch.as_tensor(rows.masks, device=self.device).float()
        targets = torch.as_tensor(rows.params, device=self.device)
        if not self.unlabelled_count:
            return masks, targets, None
        count = self.unlabelled_count
        first = self.store.spec.n_rows + (step * self.world + self.rank) * count
        drawn = self.sampler.masks(np.arange(first, first + count))
        return masks, targets, torch.as_tensor(drawn, device=self.device).float()

    def validate(self, steps: int, train_loss: float) -> tuple[dict[str, Any], bool]:
        """The metrics after ``steps`` steps — this worker's mean training loss
        ``train_loss`` averaged over workers, the mean relative parameter error ‖θ̂ − θ‖/‖θ‖
        over every worker's validation rows, the best so far, this worker's peak resident
        memory and the largest over workers (KiB) — and whether to stop (``patience``
        validations without improvement). Keeps the best model."""
        self.model.eval()
        val_error_sum = sum(
            relative_error_sum(self.model, self.scaler, self.elements, rows, self.device)
            for rows in self.shard.validation_rows()
        )
        val_sum, train_loss_sum = _all_sum([val_error_sum, train_loss], self.device)
        self.model.train()
        peak_rss = round(peak_rss_mib())  # whole MiB: reduced over workers as an integer
        val_error = val_sum / self.n_val
        progress = self.progress
        if val_error < progress["best"]:
            progress.update(best=val_error, bad_validations=0)
            self.best_model = copy.deepcopy(self.module.state_dict())
        else:
            progress["bad_validations"] += 1
        progress["step"] = steps
        metrics = {
            "step": steps,
            "resumed_from_step": self.resumed_from,
            "train_loss": train_loss_sum / self.world,
            "val_rel_error": val_error,
            "best_val_rel_error": progress["best"],
            "peak_rss_mib": peak_rss,
            "max_peak_rss_mib": _all_reduce(peak_rss, dist.ReduceOp.MAX, self.device),
        }
        return metrics, progress["bad_validations"] >= self.settings.patience

    def report(self, metrics: dict[str, Any]) -> None:
        """Report ``metrics`` to Ray Train, every worker; rank 0 adds a checkpoint of the
        training state (:data:`STATE_FILE`) and the best predictor (:data:`PREDICTOR_DIR`),
        and records them as the fit's gauges (:func:`~mp_ray.metrics.record_fit`) and in
        its MLflow run when tracking is on."""
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if self.rank == 0:
                self._save(directory)
                checkpoint = ray.train.Checkpoint.from_directory(directory)
                if self.config.observability.metrics:
                    record_fit(self.config, self.run, metrics)
                if self.tracker is not None:
                    self.tracker.log(metrics)
            ray.train.report(metrics, checkpoint=checkpoint)

    @contextmanager
    def tracked(self) -> Iterator[None]:
        """Run the block, then end this worker's MLflow run (when it has one): FAILED when
        the block raised, else FINISHED."""
        if self.tracker is None:
            yield
            return
        try:
            yield
        except BaseException:
            self.tracker.end(failed=True)
            raise
        self.tracker.end(failed=False)

    def _save(self, directory: str) -> None:
        """Write the training state and the best predictor so far into ``directory``."""
        state = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "progress": self.progress,
            "best_model": self.best_model,
        }
        torch.save(state, os.path.join(directory, STATE_FILE))
        settings, spec = self.settings, self.store.spec
        best = _set_function(settings, self.elements, spec.n_params, self.center)
        best.load_state_dict(self.best_model)
        meta = PredictorMeta(
            width=settings.width,
            n_params=spec.n_params,
            n_classes=self.n_classes,
            scaler=self.scaler,
            learner=spec.learner,
            dataset_fingerprint=spec.dataset_fingerprint,
            store_uri=self.store.uri,
            extra={"val_rel_error": self.progress["best"], "steps": self.progress["step"]},
            store_identity=spec.identity,
            pooling=settings.pooling,
        )
        Predictor(best, self.elements.cpu(), meta).save(os.path.join(directory, PREDICTOR_DIR))


def next_validation(step: int, settings: PredictorConfig) -> int:
    """The step count at the first validation after ``step`` steps: the next multiple of
    ``eval_every``, or the budget ``steps`` when that comes first."""
    return min(settings.steps, (step // settings.eval_every + 1) * settings.eval_every)


def step_lr(settings: PredictorConfig, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) under ``settings.lr_schedule``:
    a function of the step alone, so a resumed run continues the same schedule."""
    if settings.lr_schedule == "cosine":
        return settings.lr * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
    return settings.lr


def _count_shard(
    store: ExperimentStore, rank: int, world: int, config: ExperimentConfig, device: torch.device
) -> tuple[Shard, int]:
    """Worker ``rank``'s blocks rank, rank + world, … (rows counted, not read), and the
    number of validation rows over all workers."""
    shard = Shard.of_worker(store, config.splits, rank, world)
    if shard.n_train == 0:
        raise ValueError(
            f"Ray Train worker {rank} of {world} has no training rows: use fewer workers "
            "(fit.num_workers) or more store blocks"
        )
    n_val = int(_all_sum([float(shard.n_val)], device)[0])
    if n_val == 0:
        raise ValueError("no validation rows: raise splits.val_fraction or store.n_rows")
    return shard, n_val


def _set_function(
    settings: PredictorConfig, elements: torch.Tensor, n_params: int, center: torch.Tensor | None
) -> SetFunction:
    """A fresh set function from elements ``(n, e)`` to ``n_params`` parameters."""
    return SetFunction(elements.shape[1], n_params, settings.width, center, settings.pooling)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` outside its data-parallel wrapper, if it has one."""
    return model.module if hasattr(model, "module") else model


def _share(total: int, world: int) -> int:
    """One worker's part of a per-step count (at least 1 when the count is not 0)."""
    return max(1, -(-total // world)) if total else 0


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over workers (identity on one worker)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def _all_reduce(value: int, op: dist.ReduceOp.RedOpType, device: torch.device) -> int:
    """``value`` reduced over workers by ``op`` (MIN, MAX; itself on one worker)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=op)
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


def _restore() -> dict[str, Any] | None:
    """The training state of the latest checkpoint of this run, if it has one."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(os.path.join(directory, STATE_FILE), weights_only=False)
