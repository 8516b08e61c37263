"""The pipeline at scale: retrain → fit → datamodels → evaluate → LDS, from 10^4 to 10^6
models, with the peak resident memory of every process that did the work.

Cases (``--cases``): breast_cancer (399 training points, 85 targets) at 10^4, 10^5 and
10^6 models, and a synthetic classification problem with about 20,000 training points (30
targets) at 10^4 and 10^5; ``--s3 ROWS`` adds breast_cancer on an S3 store (a moto server on
127.0.0.1, in the case's process). Each case runs in a fresh process with its own local
Ray, so that one case's memory cannot show in another's. Every stage is sampled by
:class:`memory_sampler.ProcessMemory` (psutil, every 0.2 s): the driver and each Ray
worker (retraining actors, Train workers, datamodels tasks) by role.

    .venv/bin/python benchmarks/scale.py [--cases breast_cancer:10000,100000,1000000
        synthetic:10000,100000] [--s3 100000] [--work runs/benchmarks/scale]
        [--out benchmarks/results/scale] [--reuse]

Per stage and case: wall time, rows per second, store bytes per model, and the peak
resident memory (MiB) of each role. Writes ``scale.{json,md,png}`` to ``--out``; the
ratios the targets are stated in (memory 10^6 : 10^5 per process, time per model against
linear) are in the Markdown table. With ``--reuse``, cases whose JSON an earlier run left in
``--work`` are read, not run again: an interrupted run resumes at its first unfinished case,
and the tables can be rebuilt from runs made at different times.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memory_sampler import RAY_DAEMONS, ProcessMemory

BENCHMARKS = Path(__file__).resolve().parent
DATASETS: dict[str, dict[str, Any]] = {
    "breast_cancer": {"source": "sklearn", "name": "breast_cancer"},
    "synthetic": {  # about 20,000 training points, 100 validation, 30 test (the targets)
        "source": "synthetic",
        "n_samples": 20_132,
        "n_features": 10,
        "class_sep": 1.0,
        "val_fraction": 0.005,
        "test_fraction": 0.0015,
    },
}
BLOCK_ROWS = {"breast_cancer": 2000, "synthetic": 500}
# The moments solver holds two float64 n × n matrices: 6.1 GiB at n = 20,000. Its one task
# (30 targets: one shard) takes both CPUs.
DATAMODELS = {"breast_cancer": {}, "synthetic": {"memory_budget_mb": 8192, "num_cpus": 2}}
STAGES = ("retrain", "fit", "datamodels", "evaluate", "lds")
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def case_config(dataset: str, rows: int, work: Path, s3: dict[str, str] | None) -> Any:
    """The experiment of one case: logistic regression on Bernoulli(½) subsets."""
    from mp_ray.config import ExperimentConfig

    name = f"{dataset}-r{rows}"
    store: dict[str, Any] = {"uri": str(work / f"{name}.zarr")}
    if s3 is not None:
        store = {"uri": f"s3://{s3['bucket']}/{name}.zarr", "storage_options": s3["options"]}
    return ExperimentConfig.model_validate(
        {
            "seed": 0,
            "dataset": DATASETS[dataset],
            "learner": {"kind": "logistic", "C": 1.0},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {**store, "n_rows": rows, "block_rows": BLOCK_ROWS[dataset]},
            "retrain": {"num_actors": 2, "num_cpus": 1},
            "fit": {"storage_path": str(work / "train"), "num_workers": 2},
            "datamodels": DATAMODELS[dataset],
        }
    ).with_absolute_paths()


def moto_bucket() -> dict[str, Any]:
    """A moto S3 server on 127.0.0.1 in this process and a bucket on it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 request
    os.environ.update(S3_CREDENTIALS)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()  # port 0: the OS chose one
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint).create_bucket(Bucket="scale")
    return {"bucket": "scale", "options": {"endpoint_url": endpoint}}


def store_bytes(config: Any) -> int:
    """Bytes the case's store takes (local directory or S3 prefix)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(config.store.uri, **config.store.storage_options)
    return int(fs.du(path))


def timed(stage: str, work: Callable[[], Any], rows: int, figures: dict[str, Any]) -> Any:
    """Run ``work`` under the memory sampler; record its time and peaks under ``stage``."""
    start = time.perf_counter()
    with ProcessMemory() as memory:
        result = work()
    seconds = time.perf_counter() - start
    figures[stage] = {
        "seconds": seconds,
        "rows_per_second": rows / seconds,
        "peak_mib": memory.peaks(),
        "processes": memory.processes(),
    }
    print(f"  {stage}: {seconds:.0f} s, peaks (MiB) {memory.peaks()}", flush=True)
    return result


def run_case(dataset: str, rows: int, work: Path, s3: bool) -> dict[str, Any]:
    """Every stage of one case, in this process (with its own local Ray)."""
    from mp_ray.datamodels.job import run_datamodels
    from mp_ray.evaluation.report import behaviour_report
    from mp_ray.predictor.evaluation import evaluate_on_store
    from mp_ray.predictor.fit import fit_predictor
    from mp_ray.ray_session import connect
    from mp_ray.retrain import run_retrain

    load = os.getloadavg()
    config = case_config(dataset, rows, work, moto_bucket() if s3 else None)
    connect()
    figures: dict[str, Any] = {}
    name = f"scale-{dataset}-r{rows}{'-s3' if s3 else ''}"
    timed("retrain", lambda: run_retrain(config), rows, figures)
    fit = timed("fit", lambda: fit_predictor(config, name), rows, figures)
    predictors = {"modelpred": fit.predictor_uri}
    datamodels = timed("datamodels", lambda: run_datamodels(config), rows, figures)
    evaluation = timed("evaluate", lambda: evaluate_on_store(config, predictors), rows, figures)
    report = timed("lds", lambda: behaviour_report(config, predictors), rows, figures)
    # What the workers report of themselves (their ru_maxrss), beside the sampled peaks.
    figures["fit"]["worker_reported_peak_mib"] = fit.metrics["max_peak_rss_mib"]
    figures["datamodels"]["task_reported_peak_mib"] = datamodels["peak_rss_mib"]
    return {
        "dataset": dataset,
        "rows": rows,
        "store": "s3 (moto)" if s3 else "local",
        "load": {"start": load, "end": os.getloadavg()},
        "n_train": datamodels["n_train"],
        "n_targets": datamodels["n_targets"],
        "store_bytes_per_model": store_bytes(config) / rows,
        "stages": figures,
        "predictor_val_rel_error": fit.metrics.get("best_val_rel_error"),
        "datamodels_lds": datamodels.get("test_lds"),
        "evaluation": evaluation,
        "lds_table": report.table,
    }


def run_in_child(dataset: str, rows: int, s3: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One case in a fresh Python process; its JSON result."""
    result_path = args.work / f"{dataset}-r{rows}{'-s3' if s3 else ''}.json"
    if args.reuse and result_path.exists():
        print(f"{dataset}, {rows:,} models{' on S3' if s3 else ''}: from {result_path}")
        return json.loads(result_path.read_text())
    command = [sys.executable, str(Path(__file__).resolve()), "--child", dataset, str(rows)]
    command += ["--work", str(args.work), "--result", str(result_path)]
    command += ["--on-s3"] if s3 else []
    print(f"{dataset}, {rows:,} models{' on S3' if s3 else ''}", flush=True)
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": _pythonpath()})
    return json.loads(result_path.read_text())


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(BENCHMARKS), os.environ.get("PYTHONPATH")) if p)


# The processes that do each stage's work; Ray's own actors (Train's controller, the
# placement-group cleaner…) and the previous stage's actors while they exit are the others.
WORKING_ROLES = {
    "retrain": ("driver", "RetrainActor"),
    "fit": ("driver", "RayTrainWorker"),
    "datamodels": ("driver", "shard_task"),
    "evaluate": ("driver",),
    "lds": ("driver",),
}


def role_peaks(stage_name: str, stage: dict[str, Any]) -> dict[str, float]:
    """The peaks (MiB) of the processes that did ``stage_name``'s work."""
    return {r: stage["peak_mib"][r] for r in WORKING_ROLES[stage_name] if r in stage["peak_mib"]}


def other_peak(stage_name: str, stage: dict[str, Any]) -> float:
    """The largest peak (MiB) of any other process but Ray's daemons."""
    working = set(WORKING_ROLES[stage_name]) | {RAY_DAEMONS}
    return max((mib for role, mib in stage["peak_mib"].items() if role not in working), default=0)


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The table of every case and stage, and the scaling ratios between sizes."""
    loads = "; ".join(
        f"{r['dataset']} {r['rows']:,} ({r['store']}): {_load(r['load']['start'])} → "
        f"{_load(r['load']['end'])}"
        for r in results
        if "load" in r
    )
    lines = [
        f"Load before the run: {_load(meta['load'])}. Block rows: {BLOCK_ROWS}.",
        f"Load (1, 5, 15 min) at the start and end of each case: {loads}.",
        "",
        "| data set | store | models | stage | seconds | rows/s | store bytes/model | "
        "peak MiB of the working processes | largest other (Ray's actors) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for stage in STAGES:
            s = r["stages"][stage]
            peaks = ", ".join(f"{k} {v:,.0f}" for k, v in role_peaks(stage, s).items())
            lines.append(
                f"| {r['dataset']} (n={r['n_train']:,}) | {r['store']} | {r['rows']:,} | {stage}"
                f" | {s['seconds']:,.1f} | {s['rows_per_second']:,.0f}"
                f" | {r['store_bytes_per_model']:,.0f} | {peaks} | {other_peak(stage, s):,.0f} |"
            )
    lines += ["", "Between consecutive sizes of a data set (local store):", ""]
    lines += [
        "| data set | models | stage | memory ratio (working process) | time per model ratio |",
        "|---|---|---|---|---|",
    ]
    for small, large in scaling_pairs(results):
        for stage in STAGES:
            a, b = small["stages"][stage], large["stages"][stage]
            memory = max(
                mib / role_peaks(stage, a)[role] for role, mib in role_peaks(stage, b).items()
            )
            per_model = (b["seconds"] / large["rows"]) / (a["seconds"] / small["rows"])
            lines.append(
                f"| {small['dataset']} | {small['rows']:,} → {large['rows']:,} | {stage}"
                f" | {memory:.2f}× | {per_model:.2f}× |"
            )
    return "\n".join(lines) + "\n"


def _load(averages: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in averages)


def scaling_pairs(results: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """Consecutive sizes of each data set on a local store."""
    local = [r for r in results if r["store"] == "local"]
    pairs = []
    for dataset in dict.fromkeys(r["dataset"] for r in local):
        cases = sorted((r for r in local if r["dataset"] == dataset), key=lambda r: r["rows"])
        pairs += list(itertools.pairwise(cases))
    return pairs


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Peak memory (largest working process) and wall time against models, log–log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        cases = sorted(
            (r for r in results if r["dataset"] == dataset and r["store"] == "local"),
            key=lambda r: r["rows"],
        )
        rows = [r["rows"] for r in cases]
        for stage in STAGES:
            label = f"{dataset}: {stage}"
            peaks = [max(role_peaks(stage, r["stages"][stage]).values()) for r in cases]
            memory_ax.plot(rows, peaks, marker="o", label=label)
            time_ax.plot(rows, [r["stages"][stage]["seconds"] for r in cases], marker="o")
    memory_label = "peak RSS of the largest working process (MiB)"
    for ax, ylabel in ((memory_ax, memory_label), (time_ax, "wall time (s)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("models in the store")
        ax.set_ylabel(ylabel)
    memory_ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_cases(specs: list[str]) -> list[tuple[str, int]]:
    """``dataset:rows,rows`` items → (dataset, rows) pairs."""
    cases = []
    for spec in specs:
        dataset, sizes = spec.split(":")
        if dataset not in DATASETS:
            raise SystemExit(f"unknown data set {dataset!r}; one of {', '.join(DATASETS)}")
        cases += [(dataset, int(size)) for size in sizes.split(",")]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["breast_cancer:10000,100000,1000000", "synthetic:10000,100000"],
    )
    parser.add_argument("--s3", type=int, nargs="*", default=[100_000], help="breast_cancer rows")
    parser.add_argument("--work", type=Path, default=Path("runs/benchmarks/scale"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale"))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a case's figures from its JSON in --work where an earlier run left one",
    )
    parser.add_argument("--child", nargs=2, metavar=("DATASET", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--on-s3", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work = args.work.resolve()
    if args.child:
        dataset, rows = args.child[0], int(args.child[1])
        result = run_case(dataset, rows, args.work, args.on_s3)
        args.result.write_text(json.dumps(result, default=str))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    meta = {"load": os.getloadavg(), "cases": args.cases, "s3": args.s3}
    results = [run_in_child(d, rows, False, args) for d, rows in parse_cases(args.cases)]
    results += [run_in_child("breast_cancer", rows, True, args) for rows in args.s3]
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, meta)
    (args.out / "scale.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (args.out / "scale.md").write_text(table)
    plot(results, args.out / "scale.png")
    print(table)


if __name__ == "__main__":
    main()
