"""How Ray Train workers get their rows: mp-ray's block iterator against Ray Data.

Both feed the same data-parallel workers (a ``TorchTrainer``, ``--workers`` of them, one CPU
each) one pass over a store's training rows, in minibatches of ``--batch`` subsets per
worker, as torch tensors (masks as float32, parameters as float32):

- **block iterator** (what ``mp-ray fit`` uses, :mod:`mp_ray.predictor.shard`): worker r
  reads its own blocks r, r + W, … one at a time, in a seeded order, shuffling each block's
  rows;
- **Ray Data**: a dataset of the store's block numbers, each mapped to its training rows by
  a Ray Data task (``map_batches``, one block per batch), its blocks in random order
  (``randomize_block_order``), split between the workers by Ray Train
  (``get_dataset_shard``) and consumed with ``iter_torch_batches`` and a local shuffle
  buffer of one store block.

Ray is started with two logical CPUs more than the workers take, for Ray Data's tasks.
Per mode: wall time of the pass (``TorchTrainer.fit`` end to end, start-up included, and the
pass alone as the slowest worker timed it), rows per second, and the peak resident memory of
each role (Train workers, Ray Data's tasks, the driver), sampled as ``scale.py`` samples it.

    .venv/bin/python benchmarks/train_input.py
        --store runs/benchmarks/scale/breast_cancer-r100000.zarr [--workers 2] [--batch 64]
        [--repeats 2] [--out benchmarks/results/train_input]

The store is any complete mp-ray store (``benchmarks/scale.py`` leaves one per case).
Writes ``train_input.{json,md,png}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from memory_sampler import ProcessMemory

from mp_ray.config import SplitsConfig
from mp_ray.predictor.shard import Shard
from mp_ray.ray_session import connect
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import TRAIN, read_split

MODES = ("block iterator", "Ray Data")
TRAIN_WORKER = "RayTrainWorker"
# Ray Data's processes: the map actors that read blocks and the coordinator of the split.
DATA_ROLES = ("MapWorker", "MapBatches", "ReadRange", "SplitCoordinator")


def _finish(config: dict[str, Any], rows: int, batches: int, seconds: float) -> None:
    """Write this worker's figures where the driver collects them."""
    rank = ray.train.get_context().get_world_rank()
    figures = {
        "rows": rows,
        "batches": batches,
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(figures))


def block_iterator_loop(config: dict[str, Any]) -> None:
    """One pass over this worker's blocks, as ``mp-ray fit`` reads them."""
    context = ray.train.get_context()
    store = ExperimentStore.open(config["store"])
    shard = Shard.of_worker(
        store, SplitsConfig(), context.get_world_rank(), context.get_world_size()
    )
    start, rows, batches = time.perf_counter(), 0, 0
    for batch in shard.batches(seed=0, epoch=0, batch=config["batch"]):
        masks, params = (torch.as_tensor(a).to(torch.float32) for a in (batch.masks, batch.params))
        assert len(masks) == len(params)
        rows, batches = rows + len(masks), batches + 1
    _finish(config, rows, batches, time.perf_counter() - start)


def ray_data_loop(config: dict[str, Any]) -> None:
    """One pass over this worker's split of the Ray dataset."""
    shard = ray.train.get_dataset_shard("train")
    start, rows, batches = time.perf_counter(), 0, 0
    for batch in shard.iter_torch_batches(
        batch_size=config["batch"],
        local_shuffle_buffer_size=config["block_rows"],
        dtypes={"masks": torch.float32, "params": torch.float32},
    ):
        rows, batches = rows + len(batch["masks"]), batches + 1
    _finish(config, rows, batches, time.perf_counter() - start)


class TrainingRows:
    """Ray Data's map over block numbers: a block's training rows (degenerate ones left
    out, as the block iterator does)."""

    def __init__(self, store: str) -> None:
        self.store = ExperimentStore.open(store)
        self.splits = SplitsConfig()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fractions = (self.splits.val_fraction, self.splits.test_fraction)
        parts = [read_split(self.store, [int(b)], TRAIN, *fractions) for b in batch["id"]]
        return {
            "masks": np.concatenate([p.masks for p in parts]),
            "params": np.concatenate([p.params for p in parts]),
        }


def run_mode(mode: str, store: ExperimentStore, args: argparse.Namespace) -> dict[str, Any]:
    """One pass in ``mode``; its figures."""
    out = tempfile.mkdtemp(prefix="train-input-")
    config = {"store": store.uri, "batch": args.batch, "out": out}
    config["block_rows"] = store.spec.block_rows
    datasets = None
    loop = block_iterator_loop
    if mode == "Ray Data":
        loop = ray_data_loop
        datasets = {
            "train": ray.data.range(store.n_blocks, override_num_blocks=store.n_blocks)
            .map_batches(TrainingRows, fn_constructor_args=(store.uri,), batch_size=1)
            .randomize_block_order(seed=0)
        }
    trainer = ray.train.torch.TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=args.workers),
        run_config=ray.train.RunConfig(storage_path=str(args.work), name=f"input-{time.time()}"),
        datasets=datasets,
    )
    start = time.perf_counter()
    with ProcessMemory() as memory:
        trainer.fit()
    seconds = time.perf_counter() - start
    workers = [json.loads(path.read_text()) for path in sorted(Path(out).glob("rank*.json"))]
    rows = sum(w["rows"] for w in workers)
    passed = max(w["seconds"] for w in workers)
    peaks = memory.peaks()
    return {
        "mode": mode,
        "seconds": seconds,
        "pass_seconds": passed,
        "rows": rows,
        "rows_per_second": rows / passed,
        "worker_reported_peak_mib": max(w["peak_rss_mib"] for w in workers),
        "peak_mib": peaks,
        "worker_peak_mib": peaks.get(TRAIN_WORKER, 0.0),
        "data_peak_mib": max(
            (mib for role, mib in peaks.items() if role.startswith(DATA_ROLES)), default=0.0
        ),
    }


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The table of both modes, each repeat, and their ratios (best pass of each)."""
    lines = [
        f"Store: {meta['store']} ({meta['rows']:,} rows, {meta['blocks']} blocks, n = "
        f"{meta['n']:,}); {meta['workers']} workers, minibatch {meta['batch']} per worker; "
        f"load {meta['load']}.",
        "",
        "| mode | rows | fit s (start-up included) | pass s | rows/s | peak MiB of a Train "
        "worker (sampled; self-reported) | peak MiB of Ray Data's processes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['rows']:,} | {r['seconds']:.1f} | {r['pass_seconds']:.1f} | "
            f"{r['rows_per_second']:,.0f} | {r['worker_peak_mib']:,.0f}; "
            f"{r['worker_reported_peak_mib']:,.0f} | {r['data_peak_mib']:,.0f} |"
        )
    best = {
        m: min((r for r in results if r["mode"] == m), key=lambda r: r["seconds"]) for m in MODES
    }
    ratio = best["Ray Data"]["seconds"] / best["block iterator"]["seconds"]
    memory = best["Ray Data"]["worker_peak_mib"] / best["block iterator"]["worker_peak_mib"]
    lines += [
        "",
        f"Ray Data : block iterator — time {ratio:.2f}×, a Train worker's peak memory "
        f"{memory:.2f}× (Ray Data's own processes besides).",
    ]
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Pass time and peak worker memory of each mode (best repeat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, label in (
        (time_ax, "seconds", "fit wall time (s)"),
        (memory_ax, "worker_peak_mib", "peak RSS of a Train worker (MiB)"),
    ):
        values = [min(r[key] for r in results if r["mode"] == m) for m in MODES]
        ax.bar(MODES, values, color=["tab:blue", "tab:orange"])
        ax.set_ylabel(label)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="subsets per worker")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/benchmarks/train_input"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_input"))
    args = parser.parse_args()
    args.work = args.work.resolve()
    store = ExperimentStore.open(str(args.store.resolve()))
    meta = {
        "store": str(args.store),
        "rows": store.spec.n_rows,
        "blocks": store.n_blocks,
        "n": store.spec.n_train,
        "workers": args.workers,
        "batch": args.batch,
        "load": os.getloadavg(),
    }
    # Ray Data's read and map need CPUs beside the Train workers': two more logical CPUs
    # (the machine's cores are shared by all of them either way).
    connect(num_cpus=args.workers + 2)
    results = []
    for _ in range(args.repeats):
        for mode in MODES:  # alternating, so that a change of load hits both
            results.append(run_mode(mode, store, args))
            print(json.dumps({k: results[-1][k] for k in ("mode", "seconds", "pass_seconds")}))
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, meta)
    (args.out / "train_input.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1)
    )
    (args.out / "train_input.md").write_text(table)
    plot(results, args.out / "train_input.png")
    print(table)


if __name__ == "__main__":
    main()
