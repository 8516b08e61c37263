"""Retraining throughput: mp-ray's batched logistic regression against a scikit-learn loop.

Both sides fit L2-regularised logistic regression with scikit-learn's objective
(``C = 1``) on the same ``--n-models`` Bernoulli(α) subsets of a standardised 70% training
split of breast_cancer (binary, d = 31) and digits (multinomial, d = 650), in one process
with the same number of CPU threads.

Equal accuracy. A tight reference optimum is computed on the first ``--n-reference``
subsets with scikit-learn's ``newton-cg`` at tol = 1e-10 (its ``lbfgs`` at tol = 1e-10
stops on the change of the objective with parameter errors near 1e-6, too loose to grade
a tight solver). scikit-learn's ``lbfgs`` loop is timed at its default tol = 1e-4 and at a
tight tol = 1e-8. For each of those, mp-ray uses the loosest tolerance of ``TOL_LADDER``
whose median and maximum relative parameter error ‖θ − θ_ref‖ / ‖θ_ref‖ are no worse than
scikit-learn's on the reference subsets (float32 cannot match the tight level).

mp-ray's time covers building the learner (its one-off anchor solves) and ``fit_batch`` on
blocks of ``--block`` subsets (in paired runs on 2 cores, 500 took 5% less time than 250
on digits but 37% more on breast_cancer, whose (n, K) arrays then outgrow the cache).

Timing is interleaved: scikit-learn's loop is split into ``--rounds`` slices of the
subsets, and each slice is followed by one full mp-ray run on all of them. A shared 2-core
machine drifts by up to 2× over seconds, so host load then weighs on both sides alike.
Each timed mp-ray run follows an untimed warm-up fit of one block with a learner of its
own: straight after scikit-learn's single-threaded slice, the idle second core and torch's
sleeping threads made a run up to 2× slower (breast_cancer 154 against 76 ms back to back,
digits 525 against 463 ms). scikit-learn's throughput is over all slices; mp-ray's is the
median over its runs; the speed-up is their ratio, and the spread of the per-round ratios
(each mp-ray run against the slice just before it) is reported with it.

    .venv/bin/python benchmarks/retrain_throughput.py [--n-models 1000] [--alpha 0.5]
        [--out benchmarks/results]

Writes ``retrain_throughput.{json,md,png}`` to ``--out`` and prints the table. The protocol
takes any convex learner kind with a scikit-learn peer (:class:`Family`): benchmarks/learners.py
runs it for ``kind: svm`` against ``LinearSVC``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import sklearn
import torch
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from mp_ray.config import LearnerConfig
from mp_ray.learners import make_learner
from mp_ray.scores import relative_errors

C = 1.0
SKLEARN_TOLS = (1e-4, 1e-8)  # scikit-learn's default, and a tight setting
TOL_LADDER = (
    *(1e-1, 5e-2, 3e-2, 2e-2, 1e-2, 5e-3, 3e-3, 2e-3, 1e-3, 3e-4, 1e-4),
    *(3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8),
)
LOADERS = {"breast_cancer": datasets.load_breast_cancer, "digits": datasets.load_digits}


@dataclass(frozen=True)
class Family:
    """A learner kind of mp-ray and its scikit-learn peer: ``peer(tol)`` the estimator timed
    at scikit-learn's tolerance ``tol``, ``reference()`` the one of the tight optimum."""

    kind: str
    title: str
    peer: Callable[[float], Any]
    reference: Callable[[], Any]
    peer_tols: tuple[float, ...]


LOGISTIC = Family(
    "logistic",
    "Logistic regression",
    lambda tol: LogisticRegression(C=C, tol=tol, max_iter=10000),
    lambda: LogisticRegression(C=C, tol=1e-10, max_iter=10000, solver="newton-cg"),
    SKLEARN_TOLS,
)


@dataclass(frozen=True)
class Problem:
    """A standardised training split and the subsets every solver fits."""

    name: str
    X: np.ndarray
    y: np.ndarray
    masks: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1


def make_problem(name: str, n_models: int, alpha: float) -> Problem:
    X, y = LOADERS[name](return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, train_size=0.7, random_state=0, stratify=y)
    X_train = StandardScaler().fit_transform(X_train)
    masks = np.random.default_rng(0).random((n_models, len(y_train))) < alpha
    return Problem(name, X_train, y_train, masks)


def sklearn_fit(
    problem: Problem, masks: np.ndarray, make: Callable[[], Any]
) -> tuple[np.ndarray, float]:
    """Parameters (K, d) in mp-ray's layout and the wall time of a scikit-learn loop, one
    estimator ``make()`` a subset."""
    rows = []
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for mask in masks:
            model = make()
            model.fit(problem.X[mask], problem.y[mask])
            rows.append(np.concatenate([model.coef_, model.intercept_[:, None]], axis=1).ravel())
    return np.stack(rows), time.perf_counter() - start


def mp_ray_fit(
    problem: Problem, masks: np.ndarray, tol: float, dtype: str, block: int, kind: str = "logistic"
) -> tuple[np.ndarray, float]:
    """Parameters (K, d) and the wall time of one mp-ray run, building the learner included."""
    start = time.perf_counter()
    config = LearnerConfig(kind=kind, C=C, tol=tol, dtype=dtype)
    learner = make_learner(config, problem.X, problem.y, problem.n_classes)
    parts = [learner.fit_batch(masks[i : i + block]) for i in range(0, len(masks), block)]
    seconds = time.perf_counter() - start
    return torch.cat(parts).double().numpy(), seconds


def matching_tolerance(
    problem: Problem,
    reference: np.ndarray,
    target: np.ndarray,
    dtype: str,
    block: int,
    kind: str = "logistic",
) -> tuple[float, np.ndarray] | None:
    """The loosest ladder tolerance whose errors on the reference subsets have a median
    and a maximum no worse than ``target``'s, with those errors; None if none does."""
    masks = problem.masks[: len(reference)]
    for tol in TOL_LADDER:
        errors = relative_errors(mp_ray_fit(problem, masks, tol, dtype, block, kind)[0], reference)
        if np.median(errors) <= np.median(target) and errors.max() <= target.max():
            return tol, errors
    return None


@dataclass
class Timings:
    """Interleaved timings: scikit-learn per slice, mp-ray per run and dtype."""

    sklearn_params: np.ndarray
    sklearn_seconds: list[float]
    mp_ray_params: dict[str, np.ndarray]
    mp_ray_seconds: dict[str, list[float]]


def interleaved(
    problem: Problem,
    family: Family,
    sk_tol: float,
    tols: dict[str, float],
    block: int,
    pieces: list[np.ndarray],
) -> Timings:
    """scikit-learn on each slice of the subsets in ``pieces`` (index arrays), each followed
    by one mp-ray run on all subsets per dtype in ``tols``."""
    sk_parts, sk_seconds = [], []
    params: dict[str, np.ndarray] = {}
    seconds: dict[str, list[float]] = {dtype: [] for dtype in tols}
    for piece in pieces:
        part, elapsed = sklearn_fit(problem, problem.masks[piece], partial(family.peer, sk_tol))
        sk_parts.append(part)
        sk_seconds.append(elapsed)
        for dtype, tol in tols.items():
            warm_up = problem.masks[:block]
            mp_ray_fit(problem, warm_up, tol, dtype, block, family.kind)  # untimed
            params[dtype], elapsed = mp_ray_fit(
                problem, problem.masks, tol, dtype, block, family.kind
            )
            seconds[dtype].append(elapsed)
    return Timings(np.concatenate(sk_parts), sk_seconds, params, seconds)


def run_problem(
    problem: Problem, n_reference: int, block: int, rounds: int, family: Family = LOGISTIC
) -> list[dict]:
    """One result row per (scikit-learn tolerance, mp-ray dtype)."""
    reference, _ = sklearn_fit(problem, problem.masks[:n_reference], family.reference)
    rows = []
    for sk_tol in family.peer_tols:
        sk_errors = relative_errors(
            sklearn_fit(problem, problem.masks[:n_reference], partial(family.peer, sk_tol))[0],
            reference,
        )
        tols, errors = {}, {}
        for dtype in ("float64", "float32"):
            match = matching_tolerance(problem, reference, sk_errors, dtype, block, family.kind)
            if match is None:
                print(f"{problem.name}: no {dtype} tolerance matches scikit-learn at {sk_tol:g}")
                continue
            tols[dtype], errors[dtype] = match
        pieces = np.array_split(np.arange(len(problem.masks)), rounds)
        timings = interleaved(problem, family, sk_tol, tols, block, pieces)
        sk_seconds = sum(timings.sklearn_seconds)
        slice_rates = [len(p) / t for p, t in zip(pieces, timings.sklearn_seconds, strict=True)]
        for dtype, tol in tols.items():
            params, runs = timings.mp_ray_params[dtype], timings.mp_ray_seconds[dtype]
            seconds = float(np.median(runs))
            ratios = [
                len(problem.masks) / t / rate for t, rate in zip(runs, slice_rates, strict=True)
            ]
            between = relative_errors(params, timings.sklearn_params)
            rows.append(
                {
                    "dataset": problem.name,
                    "task": "binary" if problem.n_classes == 2 else "multinomial",
                    "n_train": len(problem.y),
                    "n_params": int(params.shape[1]),
                    "n_models": len(problem.masks),
                    "sklearn_tol": sk_tol,
                    "sklearn_models_per_s": len(problem.masks) / sk_seconds,
                    "sklearn_err_median": float(np.median(sk_errors)),
                    "sklearn_err_max": float(sk_errors.max()),
                    "mp_ray_dtype": dtype,
                    "mp_ray_tol": tol,
                    "mp_ray_models_per_s": len(problem.masks) / seconds,
                    "mp_ray_err_median": float(np.median(errors[dtype])),
                    "mp_ray_err_max": float(errors[dtype].max()),
                    "speedup": sk_seconds / seconds,
                    "round_speedups": [round(r, 2) for r in ratios],
                    "between_median": float(np.median(between)),
                    "between_max": float(between.max()),
                }
            )
    return rows


def markdown(results: list[dict]) -> str:
    lines = [
        "| dataset (d) | sklearn tol | sklearn models/s | mp-ray dtype (tol) | mp-ray models/s"
        " | speed-up | per round: min–max | error vs optimum, sklearn: median / max"
        " | mp-ray: median / max | mp-ray vs sklearn: median / max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['dataset']} ({r['n_params']}) | {r['sklearn_tol']:g} "
            f"| {r['sklearn_models_per_s']:,.0f} | {r['mp_ray_dtype']} ({r['mp_ray_tol']:g}) "
            f"| {r['mp_ray_models_per_s']:,.0f} | **{r['speedup']:.1f}×** "
            f"| {min(r['round_speedups']):.1f}–{max(r['round_speedups']):.1f}× "
            f"| {r['sklearn_err_median']:.1e} / {r['sklearn_err_max']:.1e} "
            f"| {r['mp_ray_err_median']:.1e} / {r['mp_ray_err_max']:.1e} "
            f"| {r['between_median']:.1e} / {r['between_max']:.1e} |"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str = LOGISTIC.title) -> None:
    """Grouped bars per (dataset, scikit-learn tol): scikit-learn and mp-ray per dtype."""
    groups = sorted({(r["dataset"], r["sklearn_tol"]) for r in results}, key=str)
    series = [("sklearn", None), ("mp-ray float64", "float64"), ("mp-ray float32", "float32")]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    for s, (label, dtype) in enumerate(series):
        heights, ratios = [], []
        for dataset, tol in groups:
            rows = [r for r in results if (r["dataset"], r["sklearn_tol"]) == (dataset, tol)]
            row = next((r for r in rows if dtype in (None, r["mp_ray_dtype"])), None)
            key = "sklearn_models_per_s" if dtype is None else "mp_ray_models_per_s"
            heights.append(row[key] if row else 0.0)
            ratios.append(row["speedup"] if row and dtype else None)
        x = np.arange(len(groups)) + (s - 1) * width
        ax.bar(x, heights, width, label=label)
        for xi, h, ratio in zip(x, heights, ratios, strict=True):
            if ratio:
                ax.annotate(f"{ratio:.0f}×", (xi, h), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(np.arange(len(groups)), [f"{d}\nsklearn tol {t:g}" for d, t in groups])
    ax.set_yscale("log")
    ax.set_ylabel("models trained per second")
    ax.set_title(f"{title} retraining at equal parameter accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def host_meta(threads: int, start: float) -> dict:
    """The host, the versions, the torch threads and the seconds since ``start``."""
    return {
        "torch_threads": threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "scikit-learn": sklearn.__version__},
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-models", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.5, help="Bernoulli subset fraction")
    parser.add_argument("--n-reference", type=int, default=50)
    parser.add_argument("--block", type=int, default=250, help="subsets per fit_batch call")
    parser.add_argument(
        "--rounds", type=int, default=10, help="interleaved scikit-learn slices / mp-ray runs"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = [
        row
        for name in LOADERS
        for row in run_problem(
            make_problem(name, args.n_models, args.alpha),
            args.n_reference,
            args.block,
            args.rounds,
        )
    ]
    meta = {
        "alpha": args.alpha,
        "C": C,
        "block": args.block,
        "rounds": args.rounds,
        **host_meta(args.threads, start),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrain_throughput.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2)
    )
    table = markdown(results)
    (args.out / "retrain_throughput.md").write_text(table + "\n")
    plot(results, args.out / "retrain_throughput.png")
    print(table)
    for r in results:
        print(
            f"{r['dataset']}, scikit-learn tol {r['sklearn_tol']:g}, mp-ray {r['mp_ray_dtype']}:"
            f" {r['speedup']:.1f}× scikit-learn's throughput"
        )
    print(f"({meta['seconds']} s)")


if __name__ == "__main__":
    main()
