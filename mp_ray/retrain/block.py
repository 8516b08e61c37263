"""Training one block of store rows: masks → one batched fit → params, outputs, metrics.

:class:`BlockTrainer` is plain Python (no Ray): the retraining actors wrap it, and it can be
used directly in a notebook or a test. Everything about a row is derived from the root seed
and the row index, so any worker on any node trains a block to the same result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch

from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset
from mp_ray.errors import MpRayError
from mp_ray.learners import Learner, make_learner
from mp_ray.learners.memory import device_budget
from mp_ray.sampling import make_sampler, row_seeds
from mp_ray.store import ExperimentStore, StoreSpec

logger = logging.getLogger(__name__)

CLASSIFICATION_METRICS = (
    "subset_size",
    "degenerate",
    "objective",
    "grad_norm",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
)
REGRESSION_METRICS = tuple(name.replace("accuracy", "r2") for name in CLASSIFICATION_METRICS)
# The columns that need an optional method of the learner (mp_ray.learners.capabilities),
# left out of the store of a learner without it.
NEEDS = {
    "objective": "objective_and_grad",
    "grad_norm": "objective_and_grad",
    "train_loss": "per_sample_loss",
    "val_loss": "per_sample_loss",
    "test_loss": "per_sample_loss",
}


def metric_names(dataset: Dataset, learner: Learner) -> tuple[str, ...]:
    """The per-row metric columns for ``dataset``'s task that ``learner`` can give."""
    names = CLASSIFICATION_METRICS if dataset.task == "classification" else REGRESSION_METRICS
    return tuple(name for name in names if name not in NEEDS or learner.provides(NEEDS[name]))


def n_rows_for(config: ExperimentConfig, n_train: int) -> int:
    """Rows of the store: ``store.n_rows``, else the sampler's natural count (LOO: n + 1)."""
    if config.store.n_rows is not None:
        return config.store.n_rows
    default = make_sampler(config.sampler, n_train, config.seed).default_rows
    if default is None:
        raise ValueError(f"store.n_rows is required for sampler kind {config.sampler.kind!r}")
    return default


def build_spec(config: ExperimentConfig, dataset: Dataset, learner: Learner) -> StoreSpec:
    """The store declaration of an experiment over ``dataset``."""
    return StoreSpec(
        n_rows=n_rows_for(config, dataset.n_train),
        n_train=dataset.n_train,
        n_params=learner.n_params,
        n_targets=int(dataset.X_test.shape[0]),
        metric_names=metric_names(dataset, learner),
        block_rows=config.store.block_rows,
        dataset_fingerprint=dataset.fingerprint,
        dataset_name=dataset.name,
        root_seed=config.seed,
        learner=config.learner.model_dump(mode="json"),
        sampler=config.sampler.model_dump(mode="json"),
    )


class RunStopped(RuntimeError):
    """A block was trained after its run was stopped; it was not written."""


class WriteFence:
    """Lets a stopping run close a trainer's writes: after :meth:`close` returns, no block
    write is in progress and none starts (the block stays pending for the next run)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def write(self, block: int) -> Iterator[None]:
        """Hold the fence open while ``block`` is written; raises RunStopped once closed."""
        with self._lock:
            if self._closed:
                raise RunStopped(f"block {block} was trained after its run stopped; not written")
            yield

    def close(self) -> None:
        """Wait for a write in progress to end, then refuse every later one."""
        with self._lock:
            self._closed = True


def pick_device(use_gpu: bool) -> torch.device:
    """CUDA when a GPU was granted and is visible, else CPU."""
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


class GpuNotVisibleError(MpRayError, RuntimeError):
    """Ray granted a GPU that torch cannot use; training on CPU instead would be silent."""


def granted_device(
    gpus: float, cuda_available: bool, on_missing: Literal["error", "warn"] = "error"
) -> torch.device:
    """The device of a worker that Ray granted ``gpus`` GPUs (its assigned resources): CUDA
    when it has some, else CPU. When it has some but torch sees no CUDA device
    (``cuda_available``: ``torch.cuda.is_available()``) it raises
    :class:`GpuNotVisibleError`, or with ``on_missing="warn"`` logs the problem and returns
    CPU."""
    if gpus <= 0:
        return torch.device("cpu")
    if cuda_available:
        return torch.device("cuda")
    problem = (
        f"Ray granted this actor {gpus:g} GPU but torch sees no CUDA device: a CPU build "
        "of torch, a driver that does not match it, or CUDA_VISIBLE_DEVICES hiding the device"
    )
    if on_missing == "warn":
        logger.warning("%s; training on CPU (retrain.on_missing_gpu: warn)", problem)
        return torch.device("cpu")
    raise GpuNotVisibleError(
        f"{problem}; install a CUDA build of torch where the actors run, set "
        "retrain.num_gpus: 0 to train on CPU, or retrain.on_missing_gpu: warn to train on "
        "CPU with a warning"
    )


class BlockTrainer:
    """Trains blocks of one experiment's rows and writes them to its store.

    On a GPU the learner's passes over the training set fit a memory budget: its share of
    the GPU (``retrain.num_gpus``, at most 1) of the free memory, or
    ``retrain.gpu_memory_budget_mb`` (:func:`~mp_ray.learners.memory.device_budget`)."""

    def __init__(
        self,
        config: ExperimentConfig,
        dataset: Dataset,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.dataset = dataset
        retrain = config.retrain
        budget = device_budget(
            torch.device(device), retrain.num_gpus or 1.0, retrain.gpu_memory_budget_mb
        )
        self.learner = make_learner(
            config.learner, dataset.X_train, dataset.y_train, dataset.n_classes, device, budget
        )
        self.sampler = make_sampler(config.sampler, dataset.n_train, config.seed)
        self.spec = build_spec(config, dataset, self.learner)
        self.store = ExperimentStore.create_or_open(
            config.store.uri, self.spec, config.store.storage_options
        )
        self.fence = WriteFence()

    def train_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Train the models of ``rows (K,)``; returns the row arrays of the store layout."""
        masks = self.sampler.masks(rows)
        seeds = row_seeds(self.config.seed, rows)
        learner, data = self.learner, self.dataset
        mask_t = torch.as_tensor(masks, device=learner.device)
        params = learner.fit_batch(mask_t, seeds)
        score = "accuracy" if data.task == "classification" else "r2"
        names = self.spec.metric_names
        losses = "train_loss" in names
        val_score, val_loss, _ = self._evaluated(params, data.X_val, data.y_val, losses)
        test_score, test_loss, test_out = self._evaluated(params, data.X_test, data.y_test, losses)
        columns = {
            "subset_size": mask_t.sum(dim=1).to(learner.dtype),
            "degenerate": learner.degenerate(mask_t).to(learner.dtype),
            f"val_{score}": val_score,
            f"test_{score}": test_score,
        }
        train_loss = None
        if "objective" in names:
            if losses:  # a learner may give both from one pass
                objective, gradient, train_loss = learner.objective_grad_and_loss(params, mask_t)
            else:
                objective, gradient = learner.objective_and_grad(params, mask_t)
            columns |= {
                "objective": objective,
                "grad_norm": torch.linalg.vector_norm(gradient, dim=1),
            }
        if losses:
            if train_loss is None:
                train_loss = learner.mean_subset_loss(params, mask_t)
            columns |= {"train_loss": train_loss, "val_loss": val_loss, "test_loss": test_loss}
        margins = learner.margin_from_outputs(test_out, data.y_test)
        return {
            "masks": masks,
            "params": params.detach().cpu().numpy(),
            "outputs": margins.detach().cpu().numpy(),
            "metrics": torch.stack([columns[name] for name in names], dim=1).detach().cpu().numpy(),
            "seeds": seeds,
        }

    def _evaluated(
        self, params: torch.Tensor, X: np.ndarray, y: np.ndarray, loss: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The score ``(K,)``, (when ``loss``) the mean loss ``(K,)`` and the outputs ``(K, m,
        c)`` of the models ``params`` on one evaluation set: one pass over it where the
        learner's loss is a function of its outputs, else a second for the loss."""
        learner = self.learner
        out = learner.decision(params, X)
        mean_loss = None
        if loss:
            if learner.provides("loss_from_outputs"):
                per_example = learner.loss_from_outputs(out, y)
            else:
                per_example = learner.per_sample_loss(params, X, y)
            mean_loss = per_example.mean(dim=1)
        return learner.score_from_outputs(out, y), mean_loss, out

    def run_block(self, block: int) -> dict[str, Any]:
        """Train and write ``block`` unless it is already done; returns timings."""
        start = time.perf_counter()
        rows = self.store.block_rows(block)
        if self.store.is_block_done(block):
            return {"block": block, "rows": len(rows), "skipped": True, "seconds": 0.0}
        values = self.train_rows(rows)
        trained = time.perf_counter()
        with self.fence.write(block):
            self.store.write_block(block, values)
        return {
            "block": block,
            "rows": len(rows),
            "skipped": False,
            "train_seconds": trained - start,
            "write_seconds": time.perf_counter() - trained,
            "seconds": time.perf_counter() - start,
        }
