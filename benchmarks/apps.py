"""Every application answered by the default predictor, checked against retraining.

For breast_cancer, digits (500 training points) and a synthetic set with 15% of its labels
flipped: retrain the store the demo retrains (Bernoulli(½) subsets, ``--store-rows`` rows;
``--sampler uniform_size``: subset sizes uniform from 5 points to all) with Ray actors,
fit ModelPred with every predictor default, then run each application three ways — from
the predictor, from datamodels where they answer the question, and by exact retraining —
and score the answers against retraining:

- **values**: TMC-Shapley (``--permutations`` permutations, neg_loss utility, the CLI's
  truncation) from the predictor (seed 2) against each of two retraining runs (seeds 0 and
  1; the mean of the two ρ); the noise ceiling is the two retraining runs against each
  other — exact runs that differ only in their permutations, neither sharing the
  predictor's. The predictor answers as ``mp-ray value`` has it: prefixes of fewer than a
  fifth of the points retrained (``--retrain-below``). The predictor also at the budget
  ``mp-ray value`` spends by default (``--predictor-permutations``, 500: seconds from a
  predictor), against the same retraining runs: what a user gets. Leave-one-out from the
  predictor against exact leave-one-out
  (ceiling 1). The fidelity check ``mp-ray value`` prints is reported beside them, so its
  warning can be judged against the full comparison.
- **selection**: retrained test accuracy of the subsets chosen by greedy selection (minus
  the validation log loss, the default) from the predictor and by retraining, by the
  predictor with the held-out rule and on the validation accuracy (the old objective),
  beside the top-value subset (predictor TMC values) and the mean of 20 random subsets of
  the same size.
- **memorisation** (own-label probability): predictor (seed 2) against retraining (seeds 0
  and 1, the mean of the two ρ), ceiling retraining against retraining, at
  ``mp-ray memorization``'s default for a predictor (20,000 models each: retraining these
  learners is seconds here) and at its default by retraining (2,000 models each).
- **counterfactuals**: for ``--targets`` test points, the removal of each target's
  strongest supporters (the 5% of training points the predictor's influence estimate
  ranks highest for it) and random removal sets of the same size: sign agreement of the
  predicted and retrained margin changes (pairs whose retrained change exceeds 1e-6) and
  their correlation; datamodels (fitted on the same store) answer the same removals.

    .venv/bin/python benchmarks/apps.py [--datasets breast_cancer digits synthetic]
        [--store-rows 4000] [--permutations 100] [--work runs/benchmarks/apps]
        [--out benchmarks/results/apps]

Writes ``apps.{json,md,png}`` to ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

from mp_ray.apps import Utility
from mp_ray.apps.checks import value_check
from mp_ray.apps.context import AppContext, app_context
from mp_ray.apps.counterfactual import counterfactual_removal
from mp_ray.apps.memorization import DEFAULT_SUBSETS, memorization
from mp_ray.apps.models import SubsetModels
from mp_ray.apps.selection import compare_selections, greedy_selection
from mp_ray.apps.service import AppService, ValueRequest
from mp_ray.apps.valuation import MaxSamples, RelativeTruncation, leave_one_out, tmc_shapley
from mp_ray.config import ExperimentConfig
from mp_ray.datamodels.apps import removal_effect
from mp_ray.datamodels.job import open_checked, run_datamodels
from mp_ray.datamodels.storage import read_datamodels
from mp_ray.predictor.fit import fit_predictor
from mp_ray.ray_session import connect
from mp_ray.retrain import run_retrain
from mp_ray.scores import paired_correlation

DATASETS = {
    "breast_cancer": {"source": "sklearn", "name": "breast_cancer"},
    "digits": {"source": "sklearn", "name": "digits", "max_train": 500},
    "synthetic": {
        "source": "synthetic",
        "n_samples": 600,
        "n_features": 10,
        "class_sep": 1.0,
        "flip_fraction": 0.15,
    },
}
SAMPLERS = {  # the store's subsets: the demo's, or every size from 5 points to n
    "bernoulli": {"kind": "bernoulli", "alpha": 0.5},
    "uniform_size": {"kind": "uniform_size", "min_size": 5},
}
TRUNCATION = RelativeTruncation(0.01)  # the CLI's default
TINY = 1e-6  # retrained margin changes below this are left out of sign agreement
PREDICTOR_SEED = 2  # the predictor's draws: independent of both retraining runs (seeds 0, 1)


def experiment(name: str, args: argparse.Namespace) -> ExperimentConfig:
    """The demo's experiment on dataset ``name``: every predictor setting at its default."""
    return ExperimentConfig.model_validate(
        {
            "seed": 0,
            "dataset": {**DATASETS[name], "val_fraction": 0.15, "test_fraction": 0.15},
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-8},
            "sampler": SAMPLERS[args.sampler],
            "store": {
                "uri": str(args.work / f"{name}-{args.sampler}-r{args.store_rows}.zarr"),
                "n_rows": args.store_rows,
                "block_rows": 500,
            },
            "retrain": {"num_actors": 2, "num_cpus": 1},
        }
    ).with_absolute_paths()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.spearmanr(a, b).statistic)


def against_both(answer: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's ρ of ``answer`` with each of two independent retraining runs, averaged:
    comparable with the ceiling (the two runs against each other), less noisy than one."""
    return (spearman(answer, first) + spearman(answer, second)) / 2


def values_part(
    context: AppContext, permutations: int, predictor_permutations: int
) -> dict[str, Any]:
    """TMC and leave-one-out from the predictor against retraining, and the ceiling."""
    data = context.dataset

    def tmc(models: SubsetModels, seed: int, budget: int = permutations) -> Any:
        utility = Utility(models, data.X_val, data.y_val, "neg_loss")
        return tmc_shapley(utility, MaxSamples(budget), seed, TRUNCATION, round_size=25)

    # What `mp-ray value` asks from a predictor: its short prefixes retrained (auto).
    answering = AppService(context).valuing_models(ValueRequest(method="tmc"))
    predicted, exact, again = (
        tmc(answering, PREDICTOR_SEED),
        tmc(context.retrained, 1),
        tmc(context.retrained, 0),
    )
    at_budget = tmc(answering, PREDICTOR_SEED, predictor_permutations)
    loo = [
        leave_one_out(Utility(models, data.X_val, data.y_val, "neg_loss")).values
        for models in (context.models, context.retrained)
    ]
    utility = Utility(answering, data.X_val, data.y_val, "neg_loss")
    check = value_check(answering, context.retrained, utility, "tmc", seed=0)
    loo_scale = float(np.dot(loo[0], loo[1]) / np.dot(loo[1], loo[1]))
    return {
        "tmc_spearman": against_both(predicted.values, exact.values, again.values),
        "tmc_spearman_predictor_budget": against_both(at_budget.values, exact.values, again.values),
        "tmc_ceiling": spearman(again.values, exact.values),
        "tmc_models": {"predictor": predicted.n_evaluations, "retraining": exact.n_evaluations},
        "truncated_after": {
            "predictor": predicted.params["mean_truncation_prefix"],
            "retraining": exact.params["mean_truncation_prefix"],
        },
        "loo_spearman": spearman(loo[0], loo[1]),
        "loo_scale": loo_scale,
        "check": check.to_json(),
        "top_values": predicted.values.tolist(),
    }


def selection_part(context: AppContext, values: np.ndarray, shares: list[float]) -> list[dict]:
    """Retrained test accuracy of the subsets chosen (greedy on minus the validation log
    loss, the default; with the held-out rule; by retraining) against random ones."""
    data = context.dataset
    test = Utility(context.retrained, data.X_test, data.y_test, "accuracy")
    rows = []
    for share in shares:
        size = max(data.n_classes + 1, round(share * data.n_train))
        chosen = {}
        for source, models in (("predictor", context.models), ("retraining", context.retrained)):
            utility = Utility(models, data.X_val, data.y_val, "accuracy")
            chosen[f"greedy, {source}"] = greedy_selection(utility, size, seed=0).mask
        predicted = Utility(context.models, data.X_val, data.y_val, "accuracy")
        chosen["greedy held-out, predictor"] = greedy_selection(
            predicted, size, seed=0, holdout=0.5
        ).mask
        chosen["greedy on accuracy, predictor"] = greedy_selection(
            predicted, size, seed=0, objective="accuracy"
        ).mask
        scores = compare_selections(test, chosen, size, values, seed=0)
        rows.append({"size": size, "share": share, "test_accuracy": scores})
    return rows


def memorization_part(context: AppContext) -> dict[str, float]:
    """Memorisation from the predictor against retraining, and the ceiling; the predictor
    also at ``mp-ray memorization``'s default for a predictor (20,000 models)."""
    data = context.dataset

    def estimate(models: SubsetModels, seed: int, subsets: int) -> np.ndarray:
        return memorization(models, data.X_test, data.y_test, subsets, 0.7, seed).memorization

    result: dict[str, float] = {}
    for budget, suffix in (
        (DEFAULT_SUBSETS["predictor"], ""),
        (DEFAULT_SUBSETS["retrain"], "_small"),
    ):
        predicted = estimate(context.models, PREDICTOR_SEED, budget)
        exact, again = (
            estimate(context.retrained, 1, budget),
            estimate(context.retrained, 0, budget),
        )
        result |= {
            f"spearman{suffix}": against_both(predicted, exact, again),
            f"ceiling{suffix}": spearman(again, exact),
            f"mean_abs_difference{suffix}": float(np.abs(predicted - exact).mean()),
        }
    return result


def counterfactual_part(
    context: AppContext, config: ExperimentConfig, targets: int
) -> dict[str, Any]:
    """Supporter and random removals: predicted (predictor, datamodels) against retrained
    margin changes of the targets."""
    data = context.dataset
    n = data.n_train
    k = max(1, round(0.05 * n))
    influence = memorization(context.models, data.X_test, data.y_test, 2000, 0.7, 0).influence
    rng = np.random.default_rng([0, 0xCF])
    chosen = np.arange(min(targets, len(data.y_test)))
    removals = [np.argsort(-influence[:, t], kind="stable")[:k] for t in chosen]
    removals += [rng.choice(n, k, replace=False) for _ in chosen]
    X, y = data.X_test[chosen], data.y_test[chosen]
    exact = counterfactual_removal(context.retrained, X, y, removals).change("margin")
    store = open_checked(config)
    datamodels, _ = read_datamodels(store)
    answers = {
        "predictor": counterfactual_removal(context.models, X, y, removals).change("margin"),
        "datamodels": np.stack([removal_effect(datamodels, r)[chosen] for r in removals]),
    }
    moving = np.abs(exact) > TINY
    rows = {}
    for method, guess in answers.items():
        pearson, rho = paired_correlation(guess.ravel(), exact.ravel())
        half = len(chosen)
        supporters = np.sign(guess[:half][moving[:half]]) == np.sign(exact[:half][moving[:half]])
        rows[method] = {
            "sign_agreement": float((np.sign(guess[moving]) == np.sign(exact[moving])).mean()),
            "sign_agreement_supporters": float(supporters.mean()),
            "pearson": pearson,
            "spearman": rho,
        }
    return {"removed": k, "targets": len(chosen), "pairs": int(moving.sum()), "rows": rows}


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    config = experiment(name, args)
    start = time.perf_counter()
    run_retrain(config)
    run_name = f"apps-{name}-{args.sampler}-r{args.store_rows}"
    outcome = fit_predictor(
        config.with_overrides({"fit.storage_path": str(args.work / "train"), "fit.num_workers": 2}),
        run_name,
    )
    run_datamodels(config)
    setup = time.perf_counter() - start
    context = app_context(config, outcome.predictor_uri)
    print(f"{name}: store, predictor and datamodels in {setup:.0f} s", flush=True)
    result: dict[str, Any] = {
        "dataset": name,
        "n_train": context.dataset.n_train,
        "flipped": len(context.dataset.flipped),
        "predictor_val_rel_error": outcome.metrics.get("best_val_rel_error"),
    }
    for part, work in (
        (
            "values",
            lambda: values_part(context, args.permutations, args.predictor_permutations),
        ),
        ("memorization", lambda: memorization_part(context)),
        ("counterfactual", lambda: counterfactual_part(context, config, args.targets)),
    ):
        start = time.perf_counter()
        result[part] = work()
        print(f"  {part} in {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    values = np.asarray(result["values"].pop("top_values"))
    result["selection"] = selection_part(context, values, args.shares)
    print(f"  selection in {time.perf_counter() - start:.0f} s", flush=True)
    return result


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Load (uptime) at start / end: {meta['load_start']} / {meta['load_end']}; "
        f"{meta['seconds']:.0f} s in all. Store: {meta['store_rows']:,} rows, "
        f"{meta['sampler']} subsets; "
        f"{meta['permutations']} TMC permutations ({meta['predictor_permutations']} from the "
        "predictor in the second TMC column).",
        "",
        "| data set | n | predictor val. error | TMC ρ (ceiling) | TMC ρ, predictor's budget "
        "| LOO ρ (scale) | check ρ "
        "| memorisation ρ (ceiling), 20,000 models | memorisation ρ (ceiling), 2,000 models "
        "| counterfactual sign agreement: predictor / datamodels |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        v, m, c = r["values"], r["memorization"], r["counterfactual"]["rows"]
        check = v["check"]["value"]
        lines.append(
            f"| {r['dataset']} | {r['n_train']} | {r['predictor_val_rel_error']:.3f} "
            f"| {v['tmc_spearman']:.3f} ({v['tmc_ceiling']:.3f}) "
            f"| {v['tmc_spearman_predictor_budget']:.3f} "
            f"| {v['loo_spearman']:.3f} ({v['loo_scale']:.2f}) "
            f"| {'–' if check is None else f'{check:.3f}'} "
            f"| {m['spearman']:.3f} ({m['ceiling']:.3f}) "
            f"| {m['spearman_small']:.3f} ({m['ceiling_small']:.3f}) "
            f"| {c['predictor']['sign_agreement']:.3f} / {c['datamodels']['sign_agreement']:.3f} |"
        )
    lines += ["", "Selection: retrained test accuracy of subsets of the same size.", ""]
    names = list(results[0]["selection"][0]["test_accuracy"])
    lines += [
        "| data set | size | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in results:
        for row in r["selection"]:
            scores = row["test_accuracy"]
            lines.append(
                f"| {r['dataset']} | {row['size']} | "
                + " | ".join(f"{scores[k]:.4f}" for k in names)
                + " |"
            )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Per data set: the predictor's agreement with retraining beside its ceiling."""
    labels = ["TMC ρ", "LOO ρ", "memorisation ρ", "counterfactual sign"]
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        v, m, c = r["values"], r["memorization"], r["counterfactual"]["rows"]
        got = [
            v["tmc_spearman"],
            v["loo_spearman"],
            m["spearman"],
            c["predictor"]["sign_agreement"],
        ]
        ceiling = [v["tmc_ceiling"], 1.0, m["ceiling"], 1.0]
        x = np.arange(len(labels))
        ax.bar(x - 0.2, got, 0.4, label="predictor vs retraining")
        ax.bar(x + 0.2, ceiling, 0.4, label="ceiling (retraining vs retraining)", alpha=0.5)
        ax.set_xticks(x, labels, rotation=20, fontsize=8)
        ax.set_ylim(min(0.0, *got), 1.05)
        ax.set_title(r["dataset"], fontsize=10)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--store-rows", type=int, default=4000)
    parser.add_argument("--sampler", choices=list(SAMPLERS), default="bernoulli")
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument(
        "--predictor-permutations",
        type=int,
        default=500,
        help="TMC permutations from the predictor in a second run (mp-ray value's default)",
    )
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.25])
    parser.add_argument("--work", type=Path, default=Path("runs/benchmarks/apps"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/apps"))
    args = parser.parse_args()
    args.work = args.work.absolute()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    start = time.perf_counter()
    connect()
    results = [run_dataset(name, args) for name in args.datasets]
    meta = {
        "load_start": " ".join(f"{x:.2f}" for x in load_start),
        "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "seconds": time.perf_counter() - start,
        "store_rows": args.store_rows,
        "sampler": args.sampler,
        "permutations": args.permutations,
        "predictor_permutations": args.predictor_permutations,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "apps.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = markdown(results, meta)
    (args.out / "apps.md").write_text(table + "\n")
    plot(results, args.out / "apps.png")
    print(table)


if __name__ == "__main__":
    main()
