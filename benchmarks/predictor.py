"""ModelPred against retraining, the full-data model and influence functions.

For breast_cancer (binary logistic regression, d = 31) and digits (multinomial, d = 650;
500 training points), one run:

1. retrains ``--n-rows`` models on subsets of uniformly random size with Ray actors into a
   Zarr store (reused, and resumed, when the benchmark runs again);
2. fits the ModelPred predictor with Ray Train (``--workers`` data-parallel workers), and
   once more without each regulariser that is switched on (the ablations);
3. evaluates every method on the store's held-out test rows (never fitted on): relative
   parameter error, test-prediction agreement with the retrained model, test-accuracy gap
   and test-loss correlations, by subset size (:mod:`mp_ray.predictor.evaluation`);
4. times predicting ``--n-predict`` models for fresh subsets against retraining them with
   mp-ray's batched learner at the store's tolerance (all of them) and with a
   scikit-learn ``LogisticRegression`` loop (timed on ``--n-sklearn`` of them and scaled)
   at its default tol 1e-4 and at tol 1e-8, the setting whose parameter accuracy matches
   the store's (see ``retrain_throughput.py``).

    .venv/bin/python benchmarks/predictor.py [--datasets breast_cancer digits]
        [--n-rows N] [--steps N] [--workers 2] [--work runs/benchmarks/predictor]
        [--out benchmarks/results] [--run-id ID]

Writes ``predictor.{json,md,png}`` to ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import ray
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from mp_ray.baselines import FullDataModel, InfluenceFunction
from mp_ray.config import ExperimentConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner
from mp_ray.outputs import json_ready
from mp_ray.predictor.evaluation import evaluation_table, format_table
from mp_ray.predictor.fit import fit_predictor
from mp_ray.predictor.predictor import Predictor
from mp_ray.predictor.refine import SET_FUNCTION_ALONE, with_set_function_alone
from mp_ray.ray_session import connect
from mp_ray.retrain import run_retrain
from mp_ray.sampling import make_sampler
from mp_ray.scores import cell
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import TEST, read_split

# Per dataset: the data, the smallest subset size, and the predictor's settings (chosen on
# the validation rows; the test rows below are never fitted or searched on).
SETUPS: dict[str, dict[str, Any]] = {
    "breast_cancer": {
        "seed": 0,
        "dataset": {"source": "sklearn", "name": "breast_cancer"},
        "min_size": 10,
        "n_rows": 6000,
        "predictor": {"width": 128, "lr": 3e-3, "steps": 11250, "batch_size": 64},
    },
    "digits": {
        "seed": 1,
        "dataset": {"source": "sklearn", "name": "digits", "max_train": 500},
        "min_size": 50,
        "n_rows": 20000,
        "predictor": {"width": 256, "lr": 2e-3, "steps": 15000, "batch_size": 64},
    },
}
REGULARISERS = {"lambda_global": 0.01, "lambda_local": 0.01, "unlabelled_per_batch": 16}
PREDICT_ROW_OFFSET = 10**9  # sampler rows for the timing subsets, far from the store's


def experiment(name: str, n_rows: int | None, steps: int | None, work: Path) -> ExperimentConfig:
    """The benchmark's experiment for dataset ``name`` (``n_rows`` and ``steps`` override
    its store size and predictor step budget)."""
    setup = SETUPS[name]
    predictor = {**setup["predictor"], **REGULARISERS}
    if steps:
        predictor["steps"] = steps
    return ExperimentConfig.model_validate(
        {
            "seed": setup["seed"],
            "dataset": setup["dataset"],
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-6},
            "sampler": {"kind": "uniform_size", "min_size": setup["min_size"]},
            "store": {
                "uri": str(work / f"{name}.zarr"),
                "n_rows": n_rows or setup["n_rows"],
                "block_rows": 500,
            },
            "retrain": {"num_actors": 2, "num_cpus": 1},
            "predictor": predictor,
        }
    )


def variants(config: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """ModelPred as configured and once without each regulariser that is on."""
    out = {"ModelPred": config}
    settings = config.predictor
    if settings.lambda_global:
        update = {"lambda_global": 0.0, "unlabelled_per_batch": 0}
        out["ModelPred − global"] = config.model_copy(
            update={"predictor": settings.model_copy(update=update)}
        )
    if settings.lambda_local:
        out["ModelPred − local"] = config.model_copy(
            update={"predictor": settings.model_copy(update={"lambda_local": 0.0})}
        )
    return out


def median_seconds(run: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


SKLEARN_TOLS = (1e-4, 1e-8)  # scikit-learn's default; the store's accuracy


def sklearn_seconds(
    config: ExperimentConfig, X: np.ndarray, y: np.ndarray, masks: np.ndarray, tol: float
) -> float:
    """Wall time of a scikit-learn ``LogisticRegression`` loop over ``masks``."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for mask in masks:
            model = LogisticRegression(C=config.learner.C, tol=tol, max_iter=10000)
            model.fit(X[mask], y[mask])
    return time.perf_counter() - start


def timing(
    config: ExperimentConfig,
    predictors: dict[str, Any],
    n_predict: int,
    n_sklearn: int,
    block: int,
) -> dict[str, float]:
    """Seconds per model: predicting (ModelPred as the applications use it, and its set
    function alone when it takes Newton steps), retraining with mp-ray and with
    scikit-learn; speed-ups are of the first."""
    dataset = load_dataset(config.dataset)
    sampler = make_sampler(config.sampler, dataset.n_train, config.seed)
    masks = sampler.masks(np.arange(PREDICT_ROW_OFFSET, PREDICT_ROW_OFFSET + n_predict))

    def predicting(predictor: Any) -> float:
        predictor.predict(masks[:block])  # warm-up
        return median_seconds(lambda: predictor.predict(masks), repeats=7)

    predict = predicting(predictors["ModelPred"])
    alone = predictors.get(f"ModelPred, {SET_FUNCTION_ALONE}")

    def retrain() -> None:
        learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
        for start in range(0, n_predict, block):
            learner.fit_batch(masks[start : start + block])

    batched = median_seconds(retrain, repeats=1)
    out = {
        "n_predict": n_predict,
        "predict_s_per_model": predict / n_predict,
        "mp_ray_retrain_s_per_model": batched / n_predict,
        "speedup_vs_mp_ray_retrain": batched / predict,
    }
    if alone is not None:
        out["predict_alone_s_per_model"] = predicting(alone) / n_predict
    for tol in SKLEARN_TOLS:
        loop = sklearn_seconds(config, dataset.X_train, dataset.y_train, masks[:n_sklearn], tol)
        out[f"sklearn_tol{tol:g}_s_per_model"] = loop / n_sklearn
        out[f"speedup_vs_sklearn_tol{tol:g}"] = (loop / n_sklearn) / (predict / n_predict)
    return out


def run_dataset(
    name: str, args: argparse.Namespace, run_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Retrain (or reuse) the store, fit the variants, evaluate; the result and ModelPred as
    the applications use it (with its Newton steps) and its set function alone."""
    config = experiment(name, args.n_rows, args.steps, args.work).with_absolute_paths()
    report = run_retrain(config)
    print(f"{name}: store {report.store_uri} ({report.rows_trained} rows trained now)")
    predictors, fit_seconds = {}, {}
    for label, variant in variants(config).items():
        start = time.perf_counter()
        slug = label.replace(" − ", "-no-").lower()
        outcome = fit_predictor(
            variant.with_overrides(
                {"fit.storage_path": str(args.work / "train"), "fit.num_workers": args.workers}
            ),
            f"{run_id}-{name}-{slug}",
        )
        fit_seconds[label] = time.perf_counter() - start
        predictors[label] = Predictor.load(outcome.predictor_uri)
        print(f"{name}: fitted {label} in {fit_seconds[label]:.0f} s ({outcome.metrics})")
    dataset = load_dataset(config.dataset)
    learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    store = ExperimentStore.open(config.store.uri)
    splits = config.splits
    rows = read_split(
        store, list(range(store.n_blocks)), TEST, splits.val_fraction, splits.test_fraction
    )
    influence = InfluenceFunction(learner)
    shown = {
        label: method
        for name, predictor in predictors.items()
        for label, method in with_set_function_alone(
            name, predictor, learner, config.predictor.newton_steps, influence
        ).items()
    }
    methods = {
        **shown,
        FullDataModel.name: FullDataModel(learner),
        InfluenceFunction.name: influence,
    }
    table = evaluation_table(learner, methods, rows, dataset)
    print(format_table(table))
    return {
        "dataset": name,
        "n_train": dataset.n_train,
        "n_params": store.spec.n_params,
        "n_rows": store.spec.n_rows,
        "test_rows": len(rows),
        "config": config.model_dump(mode="json"),
        "fit_seconds": fit_seconds,
        "table": table,
    }, {key: shown[key] for key in shown if key.startswith("ModelPred") and "−" not in key}


def markdown(results: list[dict[str, Any]]) -> str:
    columns = ["rel_error", "agreement", "accuracy_gap", "loss_spearman"]
    lines = []
    for result in results:
        lines += [
            f"### {result['dataset']} (n = {result['n_train']}, d = {result['n_params']}, "
            f"{result['n_rows']:,} store rows, {result['test_rows']} test rows)",
            "",
            "| method | subset size | rows | " + " | ".join(columns) + " |",
            "|---|---|---|" + "---|" * len(columns),
        ]
        for row in result["table"]:
            cells = " | ".join(cell(row.get(c), 0, ".4f") for c in columns)
            lines.append(f"| {row['method']} | {row['subset size']} | {row['rows']} | {cells} |")
        t = result["timing"]
        lines += [
            "",
            f"Per model, over {t['n_predict']:,} fresh subsets: predict "
            f"{t['predict_s_per_model'] * 1e6:.1f} µs"
            + (
                f" (set function alone {t['predict_alone_s_per_model'] * 1e6:.1f} µs)"
                if "predict_alone_s_per_model" in t
                else ""
            )
            + f"; retrain with mp-ray's batched learner "
            f"{t['mp_ray_retrain_s_per_model'] * 1e6:.0f} µs "
            f"(**{t['speedup_vs_mp_ray_retrain']:,.0f}×**); with a scikit-learn loop at tol "
            f"1e-8 (the store's accuracy) {t['sklearn_tol1e-08_s_per_model'] * 1e3:.1f} ms "
            f"(**{t['speedup_vs_sklearn_tol1e-08']:,.0f}×**), at its default tol 1e-4 "
            f"{t['sklearn_tol0.0001_s_per_model'] * 1e3:.1f} ms "
            f"(**{t['speedup_vs_sklearn_tol0.0001']:,.0f}×**).",
            "",
        ]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Relative parameter error and agreement by subset size, one column per dataset."""
    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 7), squeeze=False)
    for column, result in enumerate(results):
        groups = [r for r in result["table"] if r["subset size"] != "all"]
        sizes = list(dict.fromkeys(r["subset size"] for r in groups))
        for method in dict.fromkeys(r["method"] for r in groups):
            by_size = {r["subset size"]: r for r in groups if r["method"] == method}
            for row, metric in enumerate(("rel_error", "agreement")):
                values = [by_size[s][metric] if s in by_size else np.nan for s in sizes]
                axes[row, column].plot(sizes, values, marker="o", label=method)
        axes[0, column].set_title(f"{result['dataset']} (d = {result['n_params']})")
        axes[0, column].set_ylabel("‖θ̂ − θ‖ / ‖θ‖")
        axes[0, column].set_yscale("log")
        axes[1, column].set_ylabel("test-prediction agreement")
        axes[1, column].set_xlabel("subset size (share of n)")
        axes[0, column].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--n-rows", type=int, help="store rows (default: per dataset)")
    parser.add_argument("--steps", type=int, help="predictor steps (default: per dataset)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers per fit")
    parser.add_argument("--n-predict", type=int, default=10_000)
    parser.add_argument("--n-sklearn", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (driver)")
    parser.add_argument("--work", type=Path, default=Path("runs/benchmarks/predictor"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--run-id",
        help="name prefix of the Ray Train runs; an earlier run's id resumes its fits (finished "
        "ones return at once), so evaluation and timing can be repeated (default: now)",
    )
    args = parser.parse_args()
    args.work = args.work.absolute()
    torch.set_num_threads(args.threads)
    connect()
    start = time.perf_counter()
    run_id = args.run_id or time.strftime("%Y%m%d-%H%M%S")
    fitted = [run_dataset(name, args, run_id) for name in args.datasets]
    # Timing runs with Ray shut down, so no background service shares the cores.
    ray.shutdown()
    results = []
    for result, predictors in fitted:
        config = experiment(result["dataset"], args.n_rows, args.steps, args.work)
        times = timing(config, predictors, args.n_predict, args.n_sklearn, config.store.block_rows)
        print(
            f"{result['dataset']}: predicting {args.n_predict:,} models is "
            f"{times['speedup_vs_mp_ray_retrain']:,.0f}× faster than mp-ray's batched "
            f"retraining, {times['speedup_vs_sklearn_tol1e-08']:,.0f}× (tol 1e-8) and "
            f"{times['speedup_vs_sklearn_tol0.0001']:,.0f}× (tol 1e-4) than a scikit-learn loop"
        )
        results.append({**result, "timing": times})
    meta = {
        "torch_threads": args.threads,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "scikit-learn": sklearn.__version__},
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "predictor.json").write_text(
        json.dumps(json_ready({"meta": meta, "results": results}), indent=2)
    )
    (args.out / "predictor.md").write_text(markdown(results))
    plot(results, args.out / "predictor.png")
    print(markdown(results))
    print(f"({meta['seconds']} s)")


if __name__ == "__main__":
    main()
