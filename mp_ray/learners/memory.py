"""How many training rows one pass of a learner takes at once, under a memory budget.

A pass over the training set for K models (an objective, its gradient, the per-example
losses) holds intermediates of about ``floats_per_model`` floats per training row and model:
a linear learner's ``(rows, c, K)`` outputs and a few ``(rows, K)`` vectors, an MLP's
hidden layer as well. On a GPU the whole set in one pass can exceed the device: n = 10⁵
rows, c = 10 classes and K = 2,000 models make 8 GB of float32 logits alone, and a GPU may
be shared by several retraining actors (a fractional ``retrain.num_gpus``). A learner
therefore takes its rows in chunks whose intermediates fit its **memory budget**: on a CUDA
device, ``SAFETY`` × the actor's share of the GPU × the device's free memory when the
learner is built, or ``retrain.gpu_memory_budget_mb`` when set. A CPU learner has no budget
and sizes its chunks to the cache instead (:mod:`mp_ray.learners.linear`).
"""

from __future__ import annotations

import torch

# The part of the actor's share of free GPU memory that a pass's intermediates may take:
# room for what the count of intermediates leaves out (the solver's (K, d) arrays, the
# caching allocator's fragmentation, the data the learner already holds).
SAFETY = 0.5
MIB = 2**20


def rows_per_chunk(
    budget_bytes: int, n_models: int, floats_per_model: int, element_bytes: int
) -> int:
    """The most training rows whose intermediates, ``floats_per_model`` floats of
    ``element_bytes`` bytes per row and model for ``n_models`` models, fit in
    ``budget_bytes``; at least one row (a budget below one row's needs cannot be met)."""
    row_bytes = max(1, n_models) * floats_per_model * element_bytes
    return max(1, budget_bytes // row_bytes)


def chunk_slices(n_rows: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` rows covering ``range(n_rows)``."""
    return [slice(start, start + size) for start in range(0, n_rows, size)]


def device_budget(
    device: torch.device, share: float = 1.0, override_mb: float | None = None
) -> int | None:
    """The memory budget in bytes of a learner on ``device``: ``override_mb`` MiB when
    given, else ``SAFETY`` × ``share`` (the part of the GPU granted, at most 1) × the
    device's free memory now; None on a device other than CUDA (no budget: a CPU learner
    chunks rows to its cache, and other accelerators take all rows at once)."""
    if device.type != "cuda":
        return None
    if override_mb is not None:
        return int(override_mb * MIB)
    free_bytes, _ = torch.cuda.mem_get_info(device)
    return int(SAFETY * min(1.0, share) * free_bytes)
