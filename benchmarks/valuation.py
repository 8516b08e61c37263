"""TMC-Shapley four ways: mp-ray with the predictor, with a learned utility and with
retraining, and pyDVL.

On breast_cancer cut to ``--n-train`` training points with ``--flip`` of their labels
flipped (the noisy points to detect), L2 logistic regression (C = 1), utility = minus the
validation log-loss, the same number of permutations ``--permutations`` and the same
truncation (relative tolerance 0.01 after a burn-in of 40% of each permutation, pyDVL's
TMC default) for all four:

- **mp-ray, predictor**: ModelPred fitted once on a store of ``--store-rows`` retrained
  models (subsets of uniform size); its one-off cost (retraining the store, fitting) is
  reported separately from the valuation time;
- **mp-ray, utility learning** (Wang et al.'s data utility learning, the ModelPred paper's
  "UtilityPred"): the same DeepSets network fitted instead to the scalar utility of the
  same store's rows (:class:`~mp_ray.apps.valuation.LearnedUtility`, with the predictor's
  width, step budget, batch size, learning rate, split and seed), valued with the same
  permutations; its fit time is reported beside the predictor's;
- **mp-ray, retraining**: the batched learner trains every scored prefix, same seed and so
  the same permutations as the predictor run — the exact counterpart of the predictor run;
- **pyDVL** 0.10 ``TMCShapleyValuation`` with scikit-learn's ``LogisticRegression``
  (lbfgs, tol 1e-6) and ``joblib`` over all cores, timed around its ``fit`` alone.

Reported: the valuation's wall time and models scored, Spearman correlation with the
retraining-based values (same permutations) and with a converged reference (retraining,
``--reference-factor`` × the permutations, another seed), noisy-label detection F1 / AUC;
and the one-off costs (retraining the store, fitting the predictor and the learned utility).

pyDVL 0.10 pins numpy < 2 and numcodecs < 0.16, against mp-ray's numpy 2 and zarr 3, so it
lives in its own virtual environment (``make bench-deps`` creates ``.venv-pydvl``) and runs
as a subprocess (``peers/pydvl_tmc.py``) on the same arrays, exchanged through ``.npz``
files; the one benchmark run reports all four. ``--skip-pydvl`` leaves pyDVL out (no
``.venv-pydvl`` needed); speed-ups are then relative to retraining.

    .venv/bin/python benchmarks/valuation.py [--n-train 200] [--permutations 500]
        [--skip-pydvl] [--work runs/benchmarks/valuation] [--out benchmarks/results]

Writes ``valuation.{json,md,png}`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import sklearn
import torch

from mp_ray.apps import Utility
from mp_ray.apps.context import app_context
from mp_ray.apps.valuation import (
    LearnedUtility,
    MaxSamples,
    RelativeTruncation,
    ValuationResult,
    tmc_shapley,
)
from mp_ray.apps.valuation.tasks import noisy_label_detection, rank_correlation
from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset
from mp_ray.predictor.fit import fit_predictor
from mp_ray.ray_session import connect
from mp_ray.retrain import run_retrain
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import FIT_UNREAD

RTOL, BURN_IN = 0.01, 0.4  # pyDVL's TMC defaults, used by all four
RETRAINING, PYDVL = "mp-ray, retraining", "pyDVL TMC (scikit-learn)"
PEER = Path(__file__).parent / "peers" / "pydvl_tmc.py"


def experiment(args: argparse.Namespace) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "seed": 0,
            "dataset": {
                "source": "sklearn",
                "name": "breast_cancer",
                "max_train": args.n_train,
                "flip_fraction": args.flip,
            },
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-6},
            "sampler": {"kind": "uniform_size", "min_size": 5},
            "store": {
                "uri": str(args.work / f"bc{args.n_train}-flip{args.flip}-r{args.store_rows}.zarr"),
                "n_rows": args.store_rows,
                "block_rows": 500,
            },
            "retrain": {"num_actors": 2, "num_cpus": 1},
            "predictor": {"width": 128, "lr": 3e-3, "steps": args.steps, "batch_size": 64},
        }
    ).with_absolute_paths()


def pydvl_tmc(
    args: argparse.Namespace,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
) -> tuple[np.ndarray, float]:
    """pyDVL's TMC-Shapley values ``(n,)`` and the wall time of its fit, run by
    ``peers/pydvl_tmc.py`` in pyDVL's own environment (see the module docstring)."""
    python = Path(args.pydvl_python)
    data, out = args.work / "pydvl-in.npz", args.work / "pydvl-out.npz"
    np.savez(data, X=X, y=y, X_val=X_val, y_val=y_val)
    command = [
        str(python),
        str(PEER),
        *("--data", str(data), "--out", str(out), "--permutations", str(args.permutations)),
        *("--rtol", str(RTOL), "--burn-in", str(BURN_IN), "--jobs", str(os.cpu_count())),
    ]
    subprocess.run(command, check=True)
    result = np.load(out)
    return result["values"], float(result["seconds"])


def learned_utility(config: ExperimentConfig, dataset: Dataset) -> LearnedUtility:
    """The learned utility (minus the validation log-loss) fitted on the experiment's store
    with the predictor's width, budget, optimiser settings and seed, on the store's split."""
    settings = config.predictor
    store = ExperimentStore.open_for(config, dataset.fingerprint, FIT_UNREAD, complete=True)
    utility = LearnedUtility(
        "neg_loss",
        width=settings.width,
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        eval_every=settings.eval_every,
        patience=settings.patience,
        seed=config.seed,
    )
    return utility.fit(
        store,
        dataset,
        val_fraction=config.splits.val_fraction,
        test_fraction=config.splits.test_fraction,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = experiment(args)
    connect()
    start = time.perf_counter()
    report = run_retrain(config)
    retrain_seconds = time.perf_counter() - start
    start = time.perf_counter()
    name = f"valuation-bc{args.n_train}-flip{args.flip}-s{args.steps}-r{args.store_rows}"
    outcome = fit_predictor(
        config.with_overrides({"fit.storage_path": str(args.work / "train"), "fit.num_workers": 2}),
        name,
    )
    fit_seconds = time.perf_counter() - start
    context = app_context(config, outcome.predictor_uri)
    data = context.dataset
    budget = MaxSamples(args.permutations)
    truncation = RelativeTruncation(RTOL, BURN_IN)

    def mp_ray(
        models: Any, permutations: MaxSamples, seed: int, round_size: int
    ) -> ValuationResult:
        utility = Utility(models, data.X_val, data.y_val, "neg_loss")
        return tmc_shapley(utility, permutations, seed, truncation, round_size=round_size)

    results: dict[str, tuple[np.ndarray, float, int | None]] = {}
    predicted = mp_ray(context.models, budget, seed=0, round_size=25)
    results["mp-ray, predictor"] = (predicted.values, predicted.seconds, predicted.n_evaluations)
    start = time.perf_counter()
    learned = learned_utility(config, data)
    utility_fit_seconds = time.perf_counter() - start
    by_learned = tmc_shapley(learned, budget, 0, truncation, round_size=25)
    results["mp-ray, utility learning (DeepSets on U(S))"] = (
        by_learned.values,
        by_learned.seconds,
        by_learned.n_evaluations,
    )
    retrained = mp_ray(context.retrained, budget, seed=0, round_size=25)
    results[RETRAINING] = (retrained.values, retrained.seconds, retrained.n_evaluations)
    if not args.skip_pydvl:
        pydvl_values, pydvl_seconds = pydvl_tmc(
            args, data.X_train, data.y_train, data.X_val, data.y_val
        )
        results[PYDVL] = (pydvl_values, pydvl_seconds, None)
    baseline = RETRAINING if args.skip_pydvl else PYDVL
    reference = mp_ray(
        context.retrained,
        MaxSamples(args.reference_factor * args.permutations),
        seed=1,
        round_size=50,
    )
    rows = []
    for method, (values, seconds, evaluations) in results.items():
        detection = noisy_label_detection(values, data.flipped)
        rows.append(
            {
                "method": method,
                "seconds": seconds,
                "models_scored": evaluations,
                "speedup": results[baseline][1] / seconds,
                "spearman_vs_retraining": rank_correlation(values, retrained.values),
                "spearman_vs_reference": rank_correlation(values, reference.values),
                "noisy_f1": detection["f1"],
                "noisy_auc": detection["auc"],
            }
        )
    return {
        "n_train": data.n_train,
        "flipped": len(data.flipped),
        "permutations": args.permutations,
        "reference_permutations": args.reference_factor * args.permutations,
        "store_rows": report.n_rows,
        "retrain_store_seconds": retrain_seconds,
        "fit_seconds": fit_seconds,
        "predictor_val_rel_error": outcome.metrics.get("best_val_rel_error"),
        "utility_fit_seconds": utility_fit_seconds,
        "utility_fit": dataclasses.asdict(learned.report),
        "speedup_baseline": baseline,
        "rows": rows,
        "values": {method: values.tolist() for method, (values, _, _) in results.items()},
    }


def markdown(result: dict[str, Any]) -> str:
    fit = result["utility_fit"]
    lines = [
        f"breast_cancer, n = {result['n_train']} ({result['flipped']} labels flipped), "
        f"{result['permutations']} permutations, truncation rtol {RTOL} after {BURN_IN:.0%}; "
        f"reference: retraining with {result['reference_permutations']} permutations.",
        "",
        f"| method | seconds | models scored | speed-up vs {result['speedup_baseline']} "
        "| Spearman vs retraining "
        "(same permutations) | Spearman vs reference | noisy F1 | noisy AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        scored = f"{row['models_scored']:,}" if row["models_scored"] else "–"
        lines.append(
            f"| {row['method']} | {row['seconds']:.2f} | {scored} "
            f"| **{row['speedup']:,.0f}×** | {row['spearman_vs_retraining']:.3f} "
            f"| {row['spearman_vs_reference']:.3f} | {row['noisy_f1']:.3f} "
            f"| {row['noisy_auc']:.3f} |"
        )
    lines += [
        "",
        f"Predictor one-off cost: retraining the {result['store_rows']:,}-row store "
        f"{result['retrain_store_seconds']:.1f} s, fitting it {result['fit_seconds']:.0f} s "
        f"(validation relative parameter error {result['predictor_val_rel_error']:.3f}).",
        f"Utility learning one-off cost: the same store, fitting it "
        f"{result['utility_fit_seconds']:.0f} s ({fit['steps']:,} steps, best at "
        f"{fit['best_step']:,}; validation MSE {fit['best_val_mse']:.3f} of the training "
        f"utilities' variance).",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Each method's values against the retraining-based ones; flipped points marked."""
    values = {k: np.asarray(v) for k, v in result["values"].items()}
    reference = values[RETRAINING]
    others = [k for k in values if k != RETRAINING]
    fig, axes = plt.subplots(1, len(others), figsize=(5 * len(others), 4), squeeze=False)
    rows = {row["method"]: row for row in result["rows"]}
    for ax, method in zip(axes[0], others, strict=True):
        ax.scatter(reference, values[method], s=8)
        ax.set_xlabel("TMC-Shapley, mp-ray retraining")
        ax.set_ylabel(method)
        ax.set_title(
            f"{method}: Spearman {rows[method]['spearman_vs_retraining']:.2f}, "
            f"{rows[method]['seconds']:.1f} s",
            fontsize=9,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--flip", type=float, default=0.1, help="share of labels flipped")
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--reference-factor", type=int, default=4)
    parser.add_argument("--store-rows", type=int, default=30000)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--work", type=Path, default=Path("runs/benchmarks/valuation"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--pydvl-python", default=".venv-pydvl/bin/python")
    parser.add_argument(
        "--skip-pydvl",
        action="store_true",
        help="leave pyDVL out (no .venv-pydvl needed); speed-ups then relative to retraining",
    )
    args = parser.parse_args()
    if not args.skip_pydvl and not Path(args.pydvl_python).exists():
        raise SystemExit(
            f"{args.pydvl_python} not found: run `make bench-deps` first (or --pydvl-python, "
            "or --skip-pydvl)"
        )
    args.work = args.work.absolute()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(args)
    result["meta"] = {
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "scikit-learn": sklearn.__version__},
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "valuation.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "valuation.md").write_text(table + "\n")
    plot(result, args.out / "valuation.png")
    print(table)
    for row in result["rows"]:
        print(f"{row['method']}: {row['speedup']:,.0f}× {result['speedup_baseline']}'s speed")


if __name__ == "__main__":
    main()
