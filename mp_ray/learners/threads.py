"""A batch's models trained in groups, one CPU thread each, instead of one multi-threaded pass.

A batch's K problems are independent, so on a CPU with t intra-op threads the rows can be
split into t groups, each solved by its own thread with single-threaded torch operations,
rather than every operation of one pass over all K rows being split across the t threads.
The groups run with no synchronisation between them; the one pass synchronises its threads
at the end of each of its few hundred operations. On a shared 2-core virtual machine, in
paired, alternating runs of 1,000 float32 digits fits (4 blocks of 250), one pass took
290–330 ms in some periods and 455–500 ms in others; two groups took 285–390 ms throughout.
The groups share the interpreter lock, which every torch operation releases and takes back:
a learner whose steps are many small operations (the minibatch learners) loses to it, and
trains faster in one single-threaded process per core (digits' CNN: 96 models/s in two
groups against 120 in two processes; benchmarks/README.md, "Learners").

The intra-op thread count is per thread in torch (OpenMP's and MKL's settings of the calling
thread), which is what lets a worker thread run single-threaded while the caller keeps its
own. ``torch.set_num_threads`` also stores the count as the default that threads which have
not used torch yet start from; a worker initialises its own first (``torch.get_num_threads``)
so that the caller's restoring of that default cannot reach it, and the caller restores the
default when its groups are done.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from itertools import pairwise
from typing import TypeVar

import torch

Result = TypeVar("Result")
_POOL = ThreadPoolExecutor(thread_name_prefix="mp-ray-model-group")


def model_groups(n_models: int, device: torch.device, min_group: int | None) -> list[slice]:
    """Consecutive row ranges of a batch of ``n_models``: on a CPU, one per intra-op thread of
    the calling thread, each of at least ``min_group`` rows; one range on an accelerator,
    or when ``min_group`` is None."""
    count = 1
    if device.type == "cpu" and min_group is not None:
        count = max(1, min(torch.get_num_threads(), n_models // min_group))
    bounds = [round(i * n_models / count) for i in range(count + 1)]
    return [slice(start, stop) for start, stop in pairwise(bounds)]


def run_single_threaded(tasks: list[Callable[[], Result]]) -> list[Result]:
    """Each task's result, in order; the tasks run concurrently on worker threads, each with
    one intra-op thread and the caller's autograd mode."""
    caller_threads = torch.get_num_threads()
    grad_enabled = torch.is_grad_enabled()

    def single_threaded(task: Callable[[], Result]) -> Result:
        torch.get_num_threads()  # this thread's own initialisation, before the change below
        torch.set_num_threads(1)
        with torch.set_grad_enabled(grad_enabled):
            return task()

    try:
        futures = [_POOL.submit(single_threaded, task) for task in tasks]
        wait(futures)  # all of them, even when one fails: none outlives this call
        return [future.result() for future in futures]
    finally:
        torch.set_num_threads(caller_threads)
