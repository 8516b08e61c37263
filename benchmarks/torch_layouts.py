"""``kind: torch`` and the plain per-model loop (:mod:`peers.torch_loop`) on the same subsets
and seeds, set up once for both of benchmarks/learners.py's layouts: one process with all
the CPU threads, and one single-threaded process per core, each on its share of the subsets.

The second is how the retraining job runs on a CPU (one actor per core, ``retrain.num_cpus:
1``, one torch thread each) and how a user would spread the plain loop over the cores; it
also keeps torch's interpreter lock out of the way. In one process, ``fit_batch`` trains its
groups of rows on concurrent threads that each take the lock at every torch operation, and
the loop gains nothing from a second thread on a network this small (digits_cnn: 9.2–9.4
models/s on one thread, 8.4–9.5 on two).

Timing in the processes follows the one-process protocol: ``rounds`` rounds, each a slice
of the loop and then one run of ``fit_batch`` on all subsets (after an untimed warm-up of
a few), every process on its own share of both. The processes start each timed phase
together (a barrier), so a phase lasts as long as its slowest process; the loop's throughput
is over all its slices, the learner's the median over its runs.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peers.torch_loop import reference_fit

from mp_ray.config import LearnerConfig, load_experiment
from mp_ray.data import Dataset, load_dataset
from mp_ray.learners import TorchModuleLearner, make_learner

CNN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits_cnn.yaml"
WARM_UP = 4  # subsets of the untimed learner run before each timed one
BARRIER_SECONDS = 1800.0  # a process that waits longer at a phase's start: another failed


@dataclass
class TorchCase:
    """The learner of configs/digits_cnn.yaml with ``factory``, its data, and the
    ``n_models`` Bernoulli(½) subsets ``masks (K, n)`` with their ``seeds (K,)``."""

    learner: TorchModuleLearner
    data: Dataset
    masks: np.ndarray
    seeds: np.ndarray


def torch_case(factory: str, n_models: int) -> TorchCase:
    """The CNN config's optimizer and data with ``factory``'s network, on ``n_models``
    subsets drawn from generator 0."""
    experiment = load_experiment(CNN_CONFIG)
    settings = experiment.learner.model_dump()
    if factory != settings["factory"]:
        settings.update(factory=factory, factory_kwargs={})
    data = load_dataset(experiment.dataset)
    learner = make_learner(LearnerConfig(**settings), data.X_train, data.y_train, data.n_classes)
    masks = np.random.default_rng(0).random((n_models, data.n_train)) < 0.5
    return TorchCase(learner, data, masks, np.arange(n_models))


def _share(rows: np.ndarray, processes: int, rank: int) -> np.ndarray:
    """Process ``rank``'s share of ``rows``."""
    return np.array_split(rows, processes)[rank]


def _process(
    rank: int,
    processes: int,
    factory: str,
    n_models: int,
    rounds: int,
    barrier: Any,
    results: Any,
) -> None:
    """One single-threaded process of :func:`process_throughput`: puts ``(rank, round,
    loop seconds, learner seconds)`` on ``results`` for each round."""
    torch.set_num_threads(1)
    case = torch_case(factory, n_models)
    learner, masks, seeds = case.learner, case.masks, case.seeds
    mine = _share(seeds, processes, rank)
    reference_fit(learner, masks[0], 0)  # untimed: the loop's first model sets torch up
    for round_, piece in enumerate(np.array_split(seeds, rounds)):
        barrier.wait(BARRIER_SECONDS)
        start = time.perf_counter()
        for k in _share(piece, processes, rank):
            reference_fit(learner, masks[k], int(k))
        loop = time.perf_counter() - start
        learner.fit_batch(masks[mine[:WARM_UP]], seeds[mine[:WARM_UP]])  # untimed
        barrier.wait(BARRIER_SECONDS)
        start = time.perf_counter()
        learner.fit_batch(masks[mine], seeds[mine])
        results.put((rank, round_, loop, time.perf_counter() - start))


def process_throughput(factory: str, n_models: int, rounds: int, processes: int) -> dict[str, Any]:
    """Models per second of the loop and of ``fit_batch`` over ``processes`` single-threaded
    processes (spawned: a fork would copy the caller's threads' state)."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(
            target=_process, args=(rank, processes, factory, n_models, rounds, barrier, results)
        )
        for rank in range(processes)
    ]
    for worker in workers:
        worker.start()
    times = []
    while len(times) < processes * rounds:
        try:
            times.append(results.get(timeout=5))
        except queue.Empty:
            if any(worker.exitcode not in (None, 0) for worker in workers):
                for worker in workers:
                    worker.terminate()
                codes = [worker.exitcode for worker in workers]
                raise RuntimeError(f"a benchmark process failed (exit codes {codes})") from None
    for worker in workers:
        worker.join()
    loop = np.zeros(rounds)
    fit = np.zeros(rounds)
    for _, round_, loop_seconds, fit_seconds in times:
        loop[round_] = max(loop[round_], loop_seconds)
        fit[round_] = max(fit[round_], fit_seconds)
    return {
        "processes": processes,
        "loop_models_per_s": n_models / float(loop.sum()),
        "mp_ray_models_per_s": n_models / float(np.median(fit)),
        "loop_round_seconds": loop.round(3).tolist(),
        "mp_ray_round_seconds": fit.round(3).tolist(),
    }
