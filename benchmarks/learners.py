"""Bring your own model: the throughput of ``kind: torch`` and ``kind: svm`` against their
plain loops, and the behaviour table of a convolutional network on digits.

1. ``kind: torch`` against a plain per-model torch loop (:mod:`peers.torch_loop`: one
   ``nn.Module`` and ``torch.optim`` per subset), for the CNN of configs/digits_cnn.yaml
   (mp_ray.learners.zoo:digits_cnn) and mp_ray.learners.zoo:mlp with the same optimizer, on
   the same ``--n-models`` Bernoulli(½) subsets of digits (as mp-ray loads it) and seeds:
   the same initialisation, minibatches and steps, in the config's dtype (float32, the
   default of ``kind: torch``). The largest parameter difference between the two is
   reported, and each stack's test accuracy: in float64 the two agree to ~1e-15; in float32
   the order of the sums differs (grouped convolutions against one model's), and over the
   CNN's 172 momentum steps the rounding differences grow to parameter differences of a few
   1e-2 while the models' accuracy stays the same. Timing is interleaved as
   in retrain_throughput.py: the loop in ``--rounds`` slices, each followed by one run of
   the learner on all subsets (after an untimed warm-up of a few); the loop's throughput is
   over all slices, the learner's the median over its runs. Beside them, in thread-time
   per model-step (one model's one minibatch step): the loop's, the learner's, and that of
   the step's gradients alone (``MinibatchLearner.step_gradient`` on the models that train
   together, one thread, no optimizer or minibatch gathering). The loop's over the last is
   the **ceiling**: the speed-up batching would reach if training cost nothing but those
   gradients' kernels. Then the same comparison over the cores (:mod:`torch_layouts`): one
   single-threaded process per torch thread (``--threads``), each with its share of the
   loop's slices and of the learner's subsets — the retraining actors' layout, and the
   loop spread over the machine as a user would spread it; the loop gains nothing from a
   second thread in one process, so this is the per-core comparison.
2. ``kind: svm`` against a ``LinearSVC`` loop at equal accuracy, on breast_cancer and digits:
   retrain_throughput.py's protocol with LinearSVC in place of LogisticRegression (a tight
   reference optimum with the primal solver at tol = 1e-12 on ``--n-reference`` subsets;
   the loosest tol of the ladder whose parameter errors are no worse than LinearSVC's at its
   default tol = 1e-4).
3. The behaviour table of ``--cnn-rows`` retrained CNNs (configs/digits_cnn.yaml) through
   the pipeline in this process with its own local Ray: retrain, datamodels, the ModelPred
   fit, and the table of mp_ray.evaluation.report (LDS on the store's test rows, single
   removals, counterfactual removals of datamodels' top supporters) with influence
   functions damped by ``--damping`` (H_D + λI: the network's H_D at θ(D) is indefinite);
   beside it, the same table for logistic regression on digits at the same row count.
   The CNN's influence functions form H_D exactly (d = 3,818 Hessian-vector products over
   the 1,257 training points, in chunks) and pseudo-invert it once: conjugate gradients
   would take 50 products per predicted row at λ = 0.01 (16 at 0.1, 8 at 1), and the table
   predicts thousands of rows.

    .venv/bin/python benchmarks/learners.py [--n-models 400] [--cnn-rows 10000]
        [--predictor-steps N] [--damping 0.01] [--parts torch svm cnn logistic]
        [--work runs/benchmarks/learners] [--out benchmarks/results]

Each part saves its results in ``--work`` (``torch.json``, ``svm.json``,
``behaviour-<learner>-r<rows>.json``); ``--parts`` runs only those named and reads the
others from there, so the parts can each run on a quiet machine at different times (the
stores resume too).
Writes ``learners.{json,md,png}`` to ``--out`` and prints the tables and the ratios; the
load average (``uptime``) at the start and end of each part is recorded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from peers.torch_loop import reference_fit
from retrain_throughput import C, Family, host_meta, make_problem, run_problem
from retrain_throughput import markdown as throughput_markdown
from sklearn.svm import LinearSVC
from torch_layouts import CNN_CONFIG, WARM_UP, process_throughput, torch_case

from mp_ray.config import ExperimentConfig, load_experiment

ROOT = Path(__file__).resolve().parents[1]
SVM = Family(
    "svm",
    "Linear SVM (squared hinge)",
    lambda tol: LinearSVC(C=C, tol=tol, max_iter=10000),
    lambda: LinearSVC(C=C, tol=1e-12, max_iter=100_000, dual=False),
    (1e-4,),  # LinearSVC's default
)
SVM_DATASETS = ("breast_cancer", "digits")
PARTS = ("torch", "svm", "cnn", "logistic")  # the behaviour tables: cnn and logistic


def uptime() -> str:
    """The ``uptime`` line: the host's load while a part ran."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def torch_throughput(factory: str, n_models: int, rounds: int, processes: int) -> dict[str, Any]:
    """``kind: torch`` with the CNN config's optimizer and ``factory`` against the plain
    loop on the same subsets and seeds: in this process, then over ``processes``
    single-threaded processes (:mod:`torch_layouts`)."""
    case = torch_case(factory, n_models)
    learner, data, masks, seeds = case.learner, case.data, case.masks, case.seeds
    pieces = np.array_split(seeds, rounds)
    load = [uptime()]
    loop_parts, loop_seconds, runs = [], [], []
    for piece in pieces:
        start = time.perf_counter()
        loop_parts += [reference_fit(learner, masks[k], int(k)) for k in piece]
        loop_seconds.append(time.perf_counter() - start)
        learner.fit_batch(masks[:WARM_UP], seeds[:WARM_UP])  # untimed
        start = time.perf_counter()
        batched = learner.fit_batch(masks, seeds)
        runs.append(time.perf_counter() - start)
    load.append(uptime())
    steps = int(learner.minibatches(masks, seeds)[1][:, :, 0].sum())  # model-steps of all
    threads = torch.get_num_threads()
    floor = gradient_floor(learner, masks, seeds)
    looped = torch.stack(loop_parts)
    loop_accuracy = test_accuracy(learner, looped, data)
    accuracy = test_accuracy(learner, batched, data)
    loop_rate = n_models / sum(loop_seconds)
    rate = n_models / float(np.median(runs))
    slice_rates = [len(p) / t for p, t in zip(pieces, loop_seconds, strict=True)]
    return {
        "factory": factory,
        "n_params": learner.n_params,
        "n_models": n_models,
        "loop_models_per_s": loop_rate,
        "mp_ray_models_per_s": rate,
        "speedup": rate / loop_rate,
        "round_speedups": [
            round(n_models / t / r, 2) for t, r in zip(runs, slice_rates, strict=True)
        ],
        "max_abs_difference": float((batched - looped).abs().max()),
        # Thread-milliseconds per model-step: the loop's and mp-ray's whole training, and
        # the step's gradients alone; the ceiling is the speed-up if the batched training
        # cost only those gradients, on every thread.
        "loop_thread_ms_per_step": 1e3 * sum(loop_seconds) * threads / steps,
        "mp_ray_thread_ms_per_step": 1e3 * float(np.median(runs)) * threads / steps,
        "gradient_thread_ms_per_step": 1e3 * floor,
        "ceiling": sum(loop_seconds) * threads / steps / floor,
        "dtype": str(learner.dtype).removeprefix("torch."),
        "loop_test_accuracy": float(loop_accuracy.mean()),
        "mp_ray_test_accuracy": float(accuracy.mean()),
        "max_accuracy_difference": float((accuracy - loop_accuracy).abs().max()),
        "load": load,
        "over_processes": over_processes(factory, n_models, rounds, processes, loop_rate),
    }


def over_processes(
    factory: str, n_models: int, rounds: int, processes: int, plain_loop_rate: float
) -> dict[str, Any]:
    """:func:`torch_layouts.process_throughput` with its ratios: the learner's over the
    processes against the loop's over them and against ``plain_loop_rate`` (one process)."""
    load = [uptime()]
    result = process_throughput(factory, n_models, rounds, processes)
    load.append(uptime())
    rate = result["mp_ray_models_per_s"]
    return {
        **result,
        "speedup": rate / result["loop_models_per_s"],
        "speedup_vs_plain_loop": rate / plain_loop_rate,
        "load": load,
    }


def gradient_floor(learner: Any, masks: np.ndarray, seeds: np.ndarray, repeats: int = 20) -> float:
    """Thread-seconds per model-step of one training step's gradients alone (no optimizer,
    no minibatch gathering): the models that train together (one chunk) on their first
    minibatches, on one intra-op thread, as each group of a batch runs."""
    k = min(len(masks), learner.models_per_chunk(len(masks)))
    theta = learner.initial_params(seeds[:k])
    index, weight = learner.minibatches(masks[:k], seeds[:k])
    rows, share = index[:, 0], learner.shares(weight[:, 0].to(learner.dtype))
    inputs = (theta, learner.X[rows], learner.y[rows], share)
    step_gradient = learner.step_gradient()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        step_gradient(*inputs)  # untimed
        start = time.perf_counter()
        for _ in range(repeats):
            step_gradient(*inputs)
        return (time.perf_counter() - start) / (repeats * k)
    finally:
        torch.set_num_threads(threads)


def test_accuracy(learner: Any, params: torch.Tensor, data: Any) -> torch.Tensor:
    """Each model's accuracy on the data set's test split, ``(K,)``."""
    predicted = learner.decision(params, data.X_test).argmax(dim=-1)
    return (predicted == torch.as_tensor(data.y_test)).to(torch.float64).mean(dim=1)


def torch_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| factory (d) | models | plain loop models/s | kind: torch models/s | speed-up"
        " | per round: min–max | thread-ms per model-step: loop / mp-ray / gradients alone"
        " | ceiling | max |θ − θ_loop| | test accuracy: loop / mp-ray (max diff) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['factory'].rpartition(':')[2]} ({r['n_params']:,}, {r['dtype']}) "
            f"| {r['n_models']:,} "
            f"| {r['loop_models_per_s']:,.1f} | {r['mp_ray_models_per_s']:,.1f} "
            f"| **{r['speedup']:.1f}×** "
            f"| {min(r['round_speedups']):.1f}–{max(r['round_speedups']):.1f}× "
            f"| {r['loop_thread_ms_per_step']:.2f} / {r['mp_ray_thread_ms_per_step']:.2f} "
            f"/ {r['gradient_thread_ms_per_step']:.2f} | {r['ceiling']:.1f}× "
            f"| {r['max_abs_difference']:.1e} "
            f"| {r['loop_test_accuracy']:.4f} / {r['mp_ray_test_accuracy']:.4f} "
            f"({r['max_accuracy_difference']:.4f}) |"
        )
    lines += [
        "",
        "Over the cores: one single-threaded process per core, each on its share of the subsets",
        "",
        "| factory | processes | loop models/s | kind: torch models/s | speed-up"
        " | speed-up against the plain loop in one process |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r.get("over_processes")  # absent from a torch.json saved before this layout
        if p is None:
            continue
        lines.append(
            f"| {r['factory'].rpartition(':')[2]} | {p['processes']} "
            f"| {p['loop_models_per_s']:,.1f} | {p['mp_ray_models_per_s']:,.1f} "
            f"| **{p['speedup']:.1f}×** | {p['speedup_vs_plain_loop']:.1f}× |"
        )
    return "\n".join(lines)


def pipeline_config(learner: dict[str, Any] | None, rows: int, work: Path) -> ExperimentConfig:
    """configs/digits_cnn.yaml at ``rows`` rows in ``work``; with ``learner``, that learner
    and the predictor's defaults instead of the network's."""
    config = load_experiment(CNN_CONFIG)
    name = "cnn" if learner is None else learner["kind"]
    data = config.model_dump()
    data["store"].update(uri=str(work / f"digits-{name}-r{rows}.zarr"), n_rows=rows)
    data["store"]["block_rows"] = min(data["store"]["block_rows"], max(1, rows // 4))
    data["fit"]["storage_path"] = str(work / "train")
    if learner is not None:
        data["learner"], data["predictor"] = learner, {}
    return ExperimentConfig.model_validate(data).with_absolute_paths()


def behaviour(
    config: ExperimentConfig, name: str, steps: int | None, damping: float
) -> dict[str, Any]:
    """Retrain, datamodels, the ModelPred fit and the behaviour table of ``config``, each
    stage timed."""
    from mp_ray.datamodels.job import run_datamodels
    from mp_ray.evaluation.report import behaviour_report
    from mp_ray.predictor.fit import fit_predictor
    from mp_ray.ray_session import connect
    from mp_ray.retrain import run_retrain

    if steps is not None:
        config = config.model_copy(
            update={"predictor": config.predictor.model_copy(update={"steps": steps})}
        )
    seconds: dict[str, float] = {}

    def timed(stage: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = work()
        seconds[stage] = time.perf_counter() - start
        print(f"  {name} {stage}: {seconds[stage]:.0f} s", flush=True)
        return result

    connect()
    load = [uptime()]
    timed("retrain", lambda: run_retrain(config))
    datamodels = timed("datamodels", lambda: run_datamodels(config))
    fit = timed("fit", lambda: fit_predictor(config, f"learners-{name}"))
    report = timed(
        "lds",
        lambda: behaviour_report(
            config, {"modelpred": fit.predictor_uri}, influence_damping=damping
        ),
    )
    load.append(uptime())
    return {
        "learner": name,
        "rows": config.store.n_rows,
        "n_targets": datamodels["n_targets"],
        "predictor_steps": config.predictor.steps,
        "influence_damping": damping,
        "seconds": seconds,
        "load": load,
        "table": report.table,
        "notes": report.info.get("notes", []),
    }


def behaviour_markdown(cases: list[dict[str, Any]]) -> str:
    from mp_ray.evaluation.compare import COLUMNS

    keys = [key for key in COLUMNS if key != "seconds"]
    lines = [
        "| learner | method | " + " | ".join(COLUMNS[key] for key in keys) + " |",
        "|---" * (2 + len(keys)) + "|",
    ]
    for case in cases:
        for row in case["table"]:
            cells = " | ".join(_cell(row.get(key)) for key in keys)
            lines.append(f"| {case['learner']} ({case['rows']:,}) | {row['method']} | {cells} |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
    )


def plot(torch_rows: list[dict], svm_rows: list[dict], cases: list[dict], path: Path) -> None:
    """Left: models per second, plain loop against mp-ray (the torch learners in one process
    and over the cores); right: LDS per method."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    groups = [
        *(
            (r["factory"].rpartition(":")[2], r["loop_models_per_s"], r["mp_ray_models_per_s"])
            for r in torch_rows
        ),
        *(
            (
                f"{r['factory'].rpartition(':')[2]}\n{p['processes']} procs",
                p["loop_models_per_s"],
                p["mp_ray_models_per_s"],
            )
            for r in torch_rows
            if (p := r.get("over_processes")) is not None
        ),
        *(
            (f"svm\n{r['dataset']}", r["sklearn_models_per_s"], r["mp_ray_models_per_s"])
            for r in svm_rows
            if r["mp_ray_dtype"] == "float64"
        ),
    ]
    x = np.arange(len(groups))
    left.bar(x - 0.2, [g[1] for g in groups], 0.4, label="plain loop / LinearSVC")
    left.bar(x + 0.2, [g[2] for g in groups], 0.4, label="mp-ray")
    for xi, (_, peer, ours) in zip(x, groups, strict=True):
        left.annotate(f"{ours / peer:.0f}×", (xi + 0.2, ours), ha="center", va="bottom")
    left.set_xticks(x, [g[0] for g in groups], fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("models trained per second")
    left.legend(fontsize=8)
    methods = list(dict.fromkeys(row["method"] for case in cases for row in case["table"]))
    for c, case in enumerate(cases):
        lds = {row["method"]: row.get("lds") for row in case["table"]}
        values = [np.nan if lds.get(m) is None else lds[m] for m in methods]
        right.barh(np.arange(len(methods)) + 0.4 * c, values, 0.4, label=case["learner"])
    right.set_yticks(np.arange(len(methods)) + 0.2, methods, fontsize=8)
    right.set_xlabel("LDS (test rows)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def saved_part(work: Path, name: str, run: bool, compute: Callable[[], Any]) -> Any | None:
    """Part ``name``'s results: computed and saved as ``work/<name>.json`` when ``run``,
    else read from there (None when it was never run), so the parts of a run of hours can
    run at different times and on a quiet machine each."""
    path = work / f"{name}.json"
    if run:
        result = compute()
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str))
        return result
    if path.exists():
        print(f"{name}: from {path}")
        return json.loads(path.read_text())
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-models", type=int, default=400, help="models of each throughput")
    parser.add_argument("--n-reference", type=int, default=50)
    parser.add_argument("--block", type=int, default=250, help="subsets per fit_batch (svm)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved slices / runs")
    parser.add_argument("--cnn-rows", type=int, default=10_000)
    parser.add_argument("--predictor-steps", type=int, help="default: the config's")
    parser.add_argument("--damping", type=float, default=0.01, help="influence functions' λ")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch CPU threads; the processes of the second layout",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="the parts to run now; the others are read from --work when they ran before",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "runs/benchmarks/learners")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cnn = load_experiment(CNN_CONFIG).learner.factory
    torch_rows = (
        saved_part(
            args.work,
            "torch",
            "torch" in args.parts,
            lambda: [
                torch_throughput(factory, args.n_models, args.rounds, args.threads)
                for factory in (cnn, "mp_ray.learners.zoo:mlp")
            ],
        )
        or []
    )
    print(torch_markdown(torch_rows), flush=True)
    svm_rows = (
        saved_part(
            args.work,
            "svm",
            "svm" in args.parts,
            lambda: [
                row
                for name in SVM_DATASETS
                for row in run_problem(
                    make_problem(name, args.n_models, 0.5),
                    args.n_reference,
                    args.block,
                    args.rounds,
                    SVM,
                )
            ],
        )
        or []
    )
    print(throughput_markdown(svm_rows), flush=True)
    cases = []
    for learner, name, damping in (
        (None, "cnn", args.damping),
        ({"kind": "logistic", "C": 1.0}, "logistic", 0.0),
    ):
        config = pipeline_config(learner, args.cnn_rows, args.work)
        case = saved_part(
            args.work,
            f"behaviour-{name}-r{args.cnn_rows}",
            name in args.parts,
            lambda config=config, name=name, damping=damping: behaviour(
                config, name, args.predictor_steps, damping
            ),
        )
        cases += [case] if case is not None else []
    meta = {
        "n_models": args.n_models,
        "cnn_rows": args.cnn_rows,
        "rounds": args.rounds,
        "damping": args.damping,
        "parts_run": args.parts,
        **host_meta(args.threads, start),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"torch": torch_rows, "svm": svm_rows, "behaviour": cases}
    (args.out / "learners.json").write_text(
        json.dumps({"meta": meta, **results}, indent=2, default=str)
    )
    tables = [torch_markdown(torch_rows), throughput_markdown(svm_rows), behaviour_markdown(cases)]
    (args.out / "learners.md").write_text("\n\n".join(tables) + "\n")
    plot(torch_rows, svm_rows, cases, args.out / "learners.png")
    print(behaviour_markdown(cases))
    for case in cases:
        for note in case["notes"]:
            print(f"{case['learner']}: {note}")
    for r in torch_rows:
        line = f"kind: torch, {r['factory']}: {r['speedup']:.1f}× the plain loop's throughput"
        if (p := r.get("over_processes")) is not None:
            line += (
                f" in one process; over {p['processes']} processes {p['speedup']:.1f}× the"
                f" loop's over them, {p['speedup_vs_plain_loop']:.1f}× the plain loop's in one"
            )
        print(line)
    for r in svm_rows:
        print(
            f"kind: svm, {r['dataset']} {r['mp_ray_dtype']}: {r['speedup']:.1f}× LinearSVC's"
            f" throughput at tol {r['sklearn_tol']:g}"
        )
    print(f"({meta['seconds']} s)")


if __name__ == "__main__":
    main()
