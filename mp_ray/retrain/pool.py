"""A pool of Ray actors that trains store blocks, with backpressure, retries and progress.

Each actor holds the dataset (fetched once from the object store) and a
:class:`~mp_ray.retrain.block.BlockTrainer`; it trains whole blocks and writes them straight
to the store, returning only block ids and timings. The driver keeps at most
``max_in_flight`` blocks queued per actor. When an actor dies, its queued blocks go back to
the front of the queue (at most ``max_retries`` times each) and a fresh actor takes its
place; a block the dead actor managed to mark done is not trained again. A run that ends
(finished, failed or interrupted) first closes the writes of its actors that still have
blocks in flight, then kills them, so nothing is written after it returns.

Placement: actors are scheduled with ``retrain.scheduling_strategy`` (``SPREAD`` by default,
one actor per node before a second on any node) and ask for ``retrain.num_gpus`` each, so a
fractional value packs several actors of small models onto one GPU; an actor's learner
then keeps its passes within its share of the GPU's memory (see BlockTrainer). An actor
granted a GPU that torch cannot see fails to start, naming the problem, rather than train on
CPU (or, with ``retrain.on_missing_gpu: warn``, logs the problem and trains on CPU).
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from ray.exceptions import RayActorError

from mp_ray.config import ExperimentConfig, RetrainConfig
from mp_ray.data import Dataset
from mp_ray.errors import MpRayError
from mp_ray.metrics import RetrainMetrics
from mp_ray.ray_resources import check_cluster_fits
from mp_ray.retrain.block import BlockTrainer, RunStopped, granted_device
from mp_ray.store import ExperimentStore

STOP_WAIT_S = 60.0  # how long a stopping run waits for its actors' block writes to end


class RetrainError(MpRayError, RuntimeError):
    """Retraining could not complete (a block failed too often, or its code raised)."""


class RetrainActor:
    """Ray actor body: one BlockTrainer on the device Ray granted this actor (refusing to
    start when granted a GPU that torch cannot see, or training on CPU with a warning when
    ``retrain.on_missing_gpu`` is warn)."""

    def __init__(self, config: ExperimentConfig, dataset: Dataset, threads: int) -> None:
        torch.set_num_threads(threads)
        context = ray.get_runtime_context()
        gpus = context.get_assigned_resources().get("GPU", 0.0)
        device = granted_device(gpus, torch.cuda.is_available(), config.retrain.on_missing_gpu)
        self.trainer = BlockTrainer(config, dataset, device)
        self.node_id = context.get_node_id()
        self.device = str(device)

    def run_block(self, block: int) -> dict[str, Any]:
        try:
            result = self.trainer.run_block(block)
        except RunStopped:  # the driver stopped listening; the block stays pending
            return {"block": block, "stopped": True}
        result.update(node_id=self.node_id, pid=os.getpid(), device=self.device)
        return result

    @ray.method(concurrency_group="control")
    def stop(self) -> None:
        """Close the trainer's writes (runs beside a block in training; see WriteFence)."""
        self.trainer.fence.close()


@dataclass
class PoolOutcome:
    """What the pool did: per-block results, retry counts and actor replacements."""

    results: list[dict[str, Any]] = field(default_factory=list)
    retries: Counter[int] = field(default_factory=Counter)
    actors_replaced: int = 0


ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class _Task:
    """One queued block and the actor (by slot and handle) it was sent to."""

    slot: int
    actor: Any
    block: int


class ActorPool:
    """Runs a list of blocks on ``retrain.num_actors`` actors; see the module docstring.
    ``metrics``, when given, records each block written and each retry."""

    def __init__(
        self,
        config: ExperimentConfig,
        dataset_ref: ray.ObjectRef,
        store: ExperimentStore,
        name_prefix: str,
        metrics: RetrainMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.retrain: RetrainConfig = config.retrain
        self.dataset_ref = dataset_ref
        self.store = store
        self.name_prefix = name_prefix
        # run_block runs one at a time (the default group); stop has its own thread.
        self._remote = ray.remote(concurrency_groups={"control": 1})(RetrainActor)
        self._started = 0
        retrain = self.retrain
        check_cluster_fits(
            "retraining actor",
            {"CPU": retrain.num_cpus, "GPU": retrain.num_gpus, **retrain.resources},
            "retrain.num_cpus / num_gpus / resources",
        )
        self.actors = [self._start_actor() for _ in range(self.retrain.num_actors)]

    def _start_actor(self) -> ray.actor.ActorHandle:
        self._started += 1
        options: dict[str, Any] = {
            "num_cpus": self.retrain.num_cpus,
            "num_gpus": self.retrain.num_gpus,
            "max_restarts": 0,
            "name": f"{self.name_prefix}-{self._started}",
            "scheduling_strategy": self.retrain.scheduling_strategy,
        }
        if self.retrain.resources:
            options["resources"] = dict(self.retrain.resources)
        threads = max(1, round(self.retrain.num_cpus))
        return self._remote.options(**options).remote(self.config, self.dataset_ref, threads)

    def run(self, blocks: list[int], on_result: ProgressCallback | None = None) -> PoolOutcome:
        """Train every block in ``blocks``; raises :class:`RetrainError` if one cannot be."""
        outcome = PoolOutcome()
        queue = deque(blocks)
        in_flight: dict[ray.ObjectRef, _Task] = {}
        try:
            while queue or in_flight:
                self._submit(queue, in_flight)
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                task = in_flight.pop(ready[0])
                result = self._collect(ready[0], task, queue, outcome)
                if result is not None:
                    outcome.results.append(result)
                    if self.metrics is not None and not result["skipped"]:
                        self.metrics.block_written(result["rows"])
                    if on_result is not None:
                        on_result(result)
        finally:
            self._stop(in_flight)
        return outcome

    def _stop(self, in_flight: dict[ray.ObjectRef, _Task]) -> None:
        """Close the writes of actors with blocks in flight, then kill every actor.

        ray.kill alone is asynchronous: a killed actor could still write a block after an
        interrupted run returned, so a resumed run would see a store that is still changing.
        Closing the fence first waits for a write in progress and refuses later ones."""
        busy = {id(task.actor): task.actor for task in in_flight.values()}
        stops = [actor.stop.remote() for actor in busy.values()]
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=STOP_WAIT_S)
        for actor in self.actors:
            ray.kill(actor)

    def _submit(self, queue: deque[int], in_flight: dict[ray.ObjectRef, _Task]) -> None:
        """Top every actor up to ``max_in_flight`` queued blocks, round-robin."""
        load = Counter(task.slot for task in in_flight.values())
        for _ in range(self.retrain.max_in_flight):
            for slot, actor in enumerate(self.actors):
                if queue and load[slot] < self.retrain.max_in_flight:
                    task = _Task(slot=slot, actor=actor, block=queue.popleft())
                    in_flight[actor.run_block.remote(task.block)] = task
                    load[slot] += 1

    def _collect(
        self, ref: ray.ObjectRef, task: _Task, queue: deque[int], outcome: PoolOutcome
    ) -> dict[str, Any] | None:
        """The block's result, or None after re-queueing it because its actor died."""
        try:
            return ray.get(ref)
        except RayActorError as err:
            if err.actor_init_failed:
                raise RetrainError(f"a retraining actor failed to start: {err}") from err
            if self.actors[task.slot] is task.actor:
                self.actors[task.slot] = self._start_actor()
                outcome.actors_replaced += 1
            if self.store.is_block_done(task.block):
                # The actor died after marking the block done: it is complete, keep it.
                rows = len(self.store.block_rows(task.block))
                return {"block": task.block, "rows": rows, "skipped": False, "seconds": 0.0}
            outcome.retries[task.block] += 1
            if self.metrics is not None:
                self.metrics.block_retried()
            if outcome.retries[task.block] > self.retrain.max_retries:
                raise RetrainError(
                    f"block {task.block} failed {outcome.retries[task.block]} times (its actor "
                    f"died each time); last error: {err}"
                ) from err
            queue.appendleft(task.block)
            return None
        except ray.exceptions.RayTaskError as err:
            raise RetrainError(f"training block {task.block} raised: {err}") from err
