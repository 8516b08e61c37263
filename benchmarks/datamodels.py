"""Datamodels: the batched solver against a scikit-learn loop, and every method's LDS.

For breast_cancer (binary, n = 399) and digits (multinomial, 500 training points), a store
of L2 logistic-regression models (C = 1, tol 1e-6) on Bernoulli(α) subsets is retrained
with Ray actors (kept in ``--work`` and resumed on later runs). Then:

1. **Solver.** Datamodels for every test target, fitted by mp-ray's batched solver
   (:mod:`mp_ray.datamodels`: λ path, validation choice, refit) and by a scikit-learn loop
   over targets doing the same work — ``Lasso(warm_start=True)`` down the same λ path with
   the same early exit, validation choice and refit — once at its default (Gram computed
   per fit off, as ``LassoCV`` uses it) and once handed the shared Gram matrix (scikit-learn's
   fastest setting for m ≫ n). Equal accuracy: the validation error each reaches per target.
2. **Behaviour.** ModelPred (fitted with Ray Train on the same store), datamodels, the
   distilled datamodel and first-order influence functions scored by
   :mod:`mp_ray.evaluation` on the same held-out rows: LDS, leave-one-out correlation and
   the counterfactual test (removing each target's top supporters), with the time each
   method took to fit and to answer.

    .venv/bin/python benchmarks/datamodels.py [--rows 10000] [--alpha 0.5]
        [--work runs/benchmarks/datamodels] [--out benchmarks/results]

Writes ``datamodels.{json,md,png}`` to ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, LassoCV
from sklearn.preprocessing import StandardScaler

from mp_ray.config import ExperimentConfig, parse_experiment
from mp_ray.datamodels.fit import Datamodels, fit_datamodels
from mp_ray.datamodels.job import fit_from_store, open_checked
from mp_ray.distill import run_distill
from mp_ray.evaluation.report import behaviour_report
from mp_ray.outputs import json_ready
from mp_ray.predictor.fit import fit_predictor
from mp_ray.predictor.predictor import Predictor
from mp_ray.ray_session import connect
from mp_ray.retrain import run_retrain
from mp_ray.scores import cell
from mp_ray.store.rows import TRAIN, VAL, read_split

DATASETS = {
    "breast_cancer": {"source": "sklearn", "name": "breast_cancer"},
    "digits": {"source": "sklearn", "name": "digits", "max_train": 500},
}
PREDICTOR = {"width": 128, "steps": 7500, "batch_size": 64}


def experiment(name: str, rows: int, alpha: float, work: Path) -> ExperimentConfig:
    return parse_experiment(
        {
            "seed": 0,
            "dataset": {**DATASETS[name], "val_fraction": 0.15, "test_fraction": 0.15},
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-6},
            "sampler": {"kind": "bernoulli", "alpha": alpha},
            "store": {"uri": str(work / f"{name}-{alpha}.zarr"), "n_rows": rows, "block_rows": 500},
            "retrain": {"num_actors": 2},
            "predictor": PREDICTOR,
        }
    )


# -- 1. the solver against scikit-learn ------------------------------------------------------


def sklearn_loop(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    lambdas: np.ndarray,
    patience: int,
    shared_gram: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn doing what the batched solver does, target by target: the λ path
    ``lambdas (K, T)`` with warm starts and the same early exit, the validation choice and
    the refit. Returns the validation error at the chosen λ ``(T,)`` and weights ``(T, n)``."""
    (M_train, Y_train), (M_val, Y_val) = train, val
    scaler = StandardScaler().fit(M_train.astype(float))
    X_train, X_val = scaler.transform(M_train), scaler.transform(M_val)
    M_all = np.concatenate([M_train, M_val]).astype(float)
    scaler_all = StandardScaler().fit(M_all)
    X_all, Y_all = scaler_all.transform(M_all), np.concatenate([Y_train, Y_val])
    gram = X_train.T @ X_train if shared_gram else False
    gram_all = X_all.T @ X_all if shared_gram else False
    best_mse = np.full(Y_train.shape[1], np.inf)
    weights = np.zeros((Y_train.shape[1], M_train.shape[1]))
    for t in range(Y_train.shape[1]):
        model = Lasso(alpha=1.0, warm_start=True, precompute=gram)
        best_lam, stale = lambdas[0, t], 0
        for lam in lambdas[:, t]:
            model.set_params(alpha=lam).fit(X_train, Y_train[:, t])
            mse = float(np.mean((model.predict(X_val) - Y_val[:, t]) ** 2))
            if mse < best_mse[t]:
                best_mse[t], best_lam, stale = mse, lam, 0
            else:
                stale += 1
                if stale >= patience:
                    break
        refit = Lasso(alpha=best_lam, precompute=gram_all).fit(X_all, Y_all[:, t])
        weights[t] = refit.coef_ / scaler_all.scale_
    return best_mse, weights


def lasso_cv_loop(
    train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], lambdas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``LassoCV`` per target on the same λ path and the same split (one
    predefined train / validation fold, whole path, refit on both): the validation error at
    its chosen λ ``(T,)`` and its weights ``(T, n)``."""
    (M_train, Y_train), (M_val, Y_val) = train, val
    M_all = np.concatenate([M_train, M_val]).astype(float)
    scaler_all = StandardScaler().fit(M_all)
    Y_all = np.concatenate([Y_train, Y_val])
    # LassoCV standardises nothing itself; each fold sees the all-row standardisation.
    X_all = scaler_all.transform(M_all)
    fold = [(np.arange(len(M_train)), np.arange(len(M_train), len(M_all)))]
    mse, weights = np.zeros(Y_train.shape[1]), np.zeros((Y_train.shape[1], M_train.shape[1]))
    for t in range(Y_train.shape[1]):
        model = LassoCV(alphas=lambdas[:, t], cv=fold).fit(X_all, Y_all[:, t])
        path = np.asarray(model.mse_path_).reshape(len(model.alphas_), -1)  # (K, folds)
        mse[t] = path[list(model.alphas_).index(model.alpha_), 0]
        weights[t] = model.coef_ / scaler_all.scale_
    return mse, weights


def solver_comparison(config: ExperimentConfig) -> dict[str, Any]:
    store = open_checked(config)
    blocks = list(range(store.n_blocks))
    fractions = (config.splits.val_fraction, config.splits.test_fraction)
    train, val = (read_split(store, blocks, s, *fractions, with_outputs=True) for s in (TRAIN, VAL))
    settings = config.datamodels
    fit_datamodels(
        train.masks[:50], train.outputs[:50, :2], val.masks, val.outputs[:, :2], settings
    )
    start = time.perf_counter()
    ours: Datamodels = fit_datamodels(train.masks, train.outputs, val.masks, val.outputs, settings)
    ours_seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "rows": {"train": len(train), "val": len(val)},
        "n_train": int(train.masks.shape[1]),
        "targets": ours.n_targets,
        "mp_ray_seconds": ours_seconds,
        "mp_ray_val_mse": float(ours.val_mse.mean()),
    }
    rows = ((train.masks, train.outputs), (val.masks, val.outputs))
    peers = {
        "lasso_cv": lambda: lasso_cv_loop(*rows, ours.lambdas),
        "sklearn": lambda: sklearn_loop(*rows, ours.lambdas, settings.path_patience, False),
        "sklearn_gram": lambda: sklearn_loop(*rows, ours.lambdas, settings.path_patience, True),
    }
    for label, peer in peers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            mse, weights = peer()
            seconds = time.perf_counter() - start
        gap = np.abs(mse - ours.val_mse) / ours.val_mse
        result[label] = {
            "seconds": seconds,
            "val_mse": float(mse.mean()),
            "val_mse_rel_diff_median": float(np.median(gap)),
            "val_mse_rel_diff_max": float(gap.max()),
            "weights_rel_diff_median": float(
                np.median(
                    np.linalg.norm(weights - ours.weights, axis=1)
                    / np.maximum(np.linalg.norm(weights, axis=1), 1e-12)
                )
            ),
            "speedup": seconds / ours_seconds,
        }
    return result


# -- 2. every method's behaviour ---------------------------------------------------------------


def behaviour(config: ExperimentConfig, work: Path, name: str) -> dict[str, Any]:
    fits: dict[str, float] = {}
    start = time.perf_counter()
    summary = fit_from_store(config)
    fits["datamodels"] = time.perf_counter() - start
    export = work / f"{name}-predictor"
    if not (export / "predictor.json").exists():
        start = time.perf_counter()
        outcome = fit_predictor(
            config.with_overrides({"fit.storage_path": str(work / "train"), "fit.num_workers": 2}),
            f"dm-bench-{name}",
        )
        fits["ModelPred"] = time.perf_counter() - start
        Predictor.load(outcome.predictor_uri).save(str(export))
    extra, extra_fit = distilled_method(config)
    fits.update(extra_fit)
    start = time.perf_counter()
    report = behaviour_report(config, {"ModelPred": str(export)}, "default", extra)
    report_seconds = time.perf_counter() - start
    fits.update(report.info["setup_seconds"])
    for row in report.table:
        row["fit_seconds"] = fits.get(row["method"])
    return {
        "info": report.info,
        "table": report.table,
        "datamodels_test_lds": summary.get("test_lds"),
        "report_seconds": report_seconds,
    }


def distilled_method(config: ExperimentConfig) -> tuple[dict[str, Any], dict[str, float]]:
    """The distilled datamodel as a parameter method, and its offline time (groups,
    leave-group-out retraining, distillation and its own validation)."""
    start = time.perf_counter()
    model, _ = run_distill(config)
    seconds = time.perf_counter() - start
    return {"distilled datamodel": model}, {"distilled datamodel": seconds}


# -- output ---------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    peers = {"lasso_cv": "LassoCV", "sklearn": "Lasso loop", "sklearn_gram": "Lasso loop + Gram"}
    lines = [
        "| dataset | rows (train / val) | n | targets | mp-ray s | "
        + " | ".join(f"{title} s (speed-up) | val. MSE rel. diff" for title in peers.values())
        + " |",
        "|---|---|---|---|---|" + "---|---|" * len(peers),
    ]
    for name, res in results["solver"].items():
        cells = " | ".join(
            f"{res[key]['seconds']:.1f} (**{res[key]['speedup']:.0f}×**) | "
            f"{res[key]['val_mse_rel_diff_median']:.1e}"
            for key in peers
        )
        lines.append(
            f"| {name} | {res['rows']['train']:,} / {res['rows']['val']:,} | {res['n_train']} "
            f"| {res['targets']} | {res['mp_ray_seconds']:.2f} | {cells} |"
        )
    lines += [
        "",
        "| dataset | held-out rows | method | LDS | LOO ρ | removal r | removal ρ "
        "| fit s | answer s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results["behaviour"].items():
        for row in res["table"]:
            fit = row.get("fit_seconds")
            lines.append(
                f"| {name} | {res['info']['test_rows']} | {row['method']} "
                f"| {cell(row.get('lds'), 0)} | {cell(row.get('loo'), 0)} "
                f"| {cell(row.get('cf_pearson'), 0)} | {cell(row.get('cf_spearman'), 0)} "
                f"| {'–' if fit is None else f'{fit:.1f}'} | {row['seconds']:.2f} |"
            )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    names = list(results["behaviour"])
    methods = [row["method"] for row in results["behaviour"][names[0]]["table"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        values = [
            next(
                r["lds"]  # NaN for a constant prediction
                for r in results["behaviour"][n]["table"]
                if r["method"] == method
            )
            for n in names
        ]
        axes[0].bar(np.arange(len(names)) + k * width, values, width, label=method)
    axes[0].set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    axes[0].set_ylabel("LDS (held-out rows)")
    axes[0].legend(fontsize=8)
    solver = results["solver"]
    for k, (label, key) in enumerate(
        (("scikit-learn", "sklearn"), ("+ shared Gram", "sklearn_gram"))
    ):
        axes[1].bar(
            np.arange(len(solver)) + k * 0.4,
            [solver[n][key]["speedup"] for n in solver],
            0.4,
            label=label,
        )
    axes[1].set_xticks(np.arange(len(solver)) + 0.2, list(solver))
    axes[1].set_ylabel("mp-ray speed-up over")
    axes[1].axhline(20, color="grey", linestyle="--", linewidth=1)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="retrained models per store")
    parser.add_argument("--alpha", type=float, default=0.5, help="Bernoulli keep probability")
    parser.add_argument("--work", type=Path, default=Path("runs/benchmarks/datamodels"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    connect()
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "torch_threads": args.threads},
        "rows": args.rows,
        "alpha": args.alpha,
        "solver": {},
        "behaviour": {},
    }
    for name in DATASETS:
        config = experiment(name, args.rows, args.alpha, args.work.resolve())
        run_retrain(config)
        results["solver"][name] = solver_comparison(config)
        print(name, json.dumps(results["solver"][name], indent=1))
        results["behaviour"][name] = behaviour(config, args.work.resolve(), name)
    table = markdown(results)
    print(table)
    (args.out / "datamodels.json").write_text(
        json.dumps(json_ready(results), indent=2, default=float)
    )
    (args.out / "datamodels.md").write_text(table + "\n")
    plot(results, args.out / "datamodels.png")


if __name__ == "__main__":
    main()
