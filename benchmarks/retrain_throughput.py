"""Retraining throughput: mp-ray's batched logistic regression against a scikit-learn loop.

Both sides fit L2 logistic regression (C = 1, scikit-learn's objective) on the same 1,000
Bernoulli(α = 0.5) subsets of breast_cancer (binary) and digits (multinomial), in one
process. Accuracy is measured against a tight reference (scikit-learn with tol = 1e-10) on
the first ``--n-reference`` subsets; mp-ray's tolerance is the loosest of a ladder whose
median and maximum parameter error are no worse than scikit-learn's at its default tol.

    .venv/bin/python benchmarks/retrain_throughput.py [--n-models 1000] [--out DIR]

Writes ``retrain_throughput.{json,md,png}`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from mp_ray.config import DatasetConfig, LearnerConfig, SamplerConfig
from mp_ray.data import Dataset, load_dataset
from mp_ray.learners import make_learner
from mp_ray.sampling import make_sampler

TOL_LADDER = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5, 1e-6, 1e-8)


def sklearn_fit(data: Dataset, masks: np.ndarray, tol: float) -> tuple[np.ndarray, float]:
    """Parameters (K, d) in mp-ray's layout and the wall time of a scikit-learn loop."""
    rows = []
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for mask in masks:
            model = LogisticRegression(C=1.0, tol=tol, max_iter=10000)
            model.fit(data.X_train[mask], data.y_train[mask])
            rows.append(np.concatenate([model.coef_, model.intercept_[:, None]], axis=1).ravel())
    return np.stack(rows), time.perf_counter() - start


def mp_ray_fit(
    data: Dataset, masks: np.ndarray, tol: float, block: int, dtype: str
) -> tuple[np.ndarray, float]:
    """Parameters (K, d) and wall time of mp-ray's batched learner, ``block`` rows per batch."""
    config = LearnerConfig(kind="logistic", C=1.0, tol=tol, dtype=dtype)
    learner = make_learner(config, data.X_train, data.y_train, data.n_classes)
    start = time.perf_counter()
    parts = [learner.fit_batch(masks[i : i + block]) for i in range(0, len(masks), block)]
    return torch.cat(parts).numpy(), time.perf_counter() - start


def relative_errors(params: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.linalg.norm(params - reference, axis=1) / np.linalg.norm(reference, axis=1)


def run_dataset(name: str, n_models: int, alpha: float, n_reference: int, block: int) -> list[dict]:
    """One result row per mp-ray precision, each against the same scikit-learn loop."""
    data = load_dataset(DatasetConfig(source="sklearn", name=name))
    masks = make_sampler(SamplerConfig(kind="bernoulli", alpha=alpha), data.n_train, 0).masks(
        np.arange(n_models)
    )
    reference, _ = sklearn_fit(data, masks[:n_reference], tol=1e-10)
    sk_params, sk_seconds = sklearn_fit(data, masks, tol=1e-4)
    sk_err = relative_errors(sk_params[:n_reference], reference)
    rows = []
    for dtype in ("float32", "float64"):
        for tol in TOL_LADDER:  # loosest tolerance at least as accurate as scikit-learn
            ours_ref, _ = mp_ray_fit(data, masks[:n_reference], tol, block, dtype)
            ours_err = relative_errors(ours_ref, reference)
            if np.median(ours_err) <= np.median(sk_err) and ours_err.max() <= sk_err.max():
                break
        ours, ours_seconds = mp_ray_fit(data, masks, tol, block, dtype)
        rows.append(
            {
                "dataset": name,
                "task": "binary" if data.n_classes == 2 else f"multinomial ({data.n_classes})",
                "n_train": data.n_train,
                "n_params": int(ours.shape[1]),
                "n_models": n_models,
                "alpha": alpha,
                "sklearn_tol": 1e-4,
                "mp_ray_dtype": dtype,
                "mp_ray_tol": tol,
                "mp_ray_block": block,
                "sklearn_models_per_s": n_models / sk_seconds,
                "mp_ray_models_per_s": n_models / ours_seconds,
                "speedup": sk_seconds / ours_seconds,
                "sklearn_err_median": float(np.median(sk_err)),
                "sklearn_err_max": float(sk_err.max()),
                "mp_ray_err_median": float(np.median(ours_err)),
                "mp_ray_err_max": float(ours_err.max()),
                "agreement_median": float(np.median(relative_errors(ours, sk_params))),
            }
        )
    return rows


def markdown(results: list[dict]) -> str:
    lines = [
        "| dataset | task | n | d | models | scikit-learn models/s | mp-ray models/s (dtype)"
        " | speed-up | param. error vs optimum: sklearn median / max"
        " | mp-ray median / max (tol) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['dataset']} | {r['task']} | {r['n_train']} | {r['n_params']} | "
            f"{r['n_models']} | {r['sklearn_models_per_s']:,.0f} | {r['mp_ray_models_per_s']:,.0f}"
            f" ({r['mp_ray_dtype']})"
            f" | {r['speedup']:.1f}× | {r['sklearn_err_median']:.1e} / {r['sklearn_err_max']:.1e}"
            f" | {r['mp_ray_err_median']:.1e} / {r['mp_ray_err_max']:.1e} ({r['mp_ray_tol']:g}) |"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(results))
    ax.bar(x - 0.2, [r["sklearn_models_per_s"] for r in results], 0.4, label="scikit-learn loop")
    ax.bar(x + 0.2, [r["mp_ray_models_per_s"] for r in results], 0.4, label="mp-ray batched")
    for i, r in enumerate(results):
        ax.annotate(
            f"{r['speedup']:.1f}×", (i + 0.2, r["mp_ray_models_per_s"]), ha="center", va="bottom"
        )
    ax.set_xticks(x, [f"{r['dataset']}\n{r['mp_ray_dtype']}" for r in results])
    ax.set_yscale("log")
    ax.set_ylim(top=max(r["mp_ray_models_per_s"] for r in results) * 3)
    ax.set_ylabel("models trained per second")
    ax.set_title("Retraining throughput at equal accuracy (2 CPU threads)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-models", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--n-reference", type=int, default=50)
    parser.add_argument("--block", type=int, default=250, help="rows per fit_batch call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [
        row
        for name in ("breast_cancer", "digits")
        for row in run_dataset(name, args.n_models, args.alpha, args.n_reference, args.block)
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrain_throughput.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (args.out / "retrain_throughput.md").write_text(table + "\n")
    plot(results, args.out / "retrain_throughput.png")
    print(table)
    for r in results:
        print(
            f"{r['dataset']} ({r['mp_ray_dtype']}): mp-ray / scikit-learn throughput = "
            f"{r['speedup']:.1f}×"
        )


if __name__ == "__main__":
    main()
