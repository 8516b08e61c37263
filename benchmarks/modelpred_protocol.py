"""ModelPred on the ModelPred paper's protocol and experiments, and where its regularisers
matter.

1. **Protocol** (Zeng et al.; Iris setosa against versicolor — 67 training points, 300
   permutations —, breast_cancer and digits — 100 permutations each): L2 logistic
   regression (C = 1) retrained on every prefix of random permutations, store rows split by
   permutation 50 / 10 / 40 (train / validation / test). On the test rows, ModelPred against
   the mean θ, ridge on the mask, θ(D) and influence functions: parameter NRMSE (√MSE / range
   of the retrained θ), relative error ‖θ̂ − θ‖/‖θ‖, and the LDS on the dataset's test points
   (correct-class margins) over all test rows and within strata of nearly equal subset size
   (over all rows, subset size alone makes it high under permutation prefixes).
2. **Deletion**: remove 10%, 20%, …, 90% of D at random (10 repetitions; the reference code
   removes up to 50%, 100% leaves the empty set), ‖θ̂ − θ‖ against retraining for ModelPred
   and influence functions, mean ± std, beside the retrained change ‖θ − θ(D)‖
   (:mod:`mp_ray.evaluation.deletion`).
3. **Addition**: a random half of D plus k points of the dataset's validation split (points
   the predictor never saw), ModelPred and influence functions against retraining
   (:mod:`mp_ray.apps.addition`), mean ± std over 10 repetitions.
4. **Label efficiency** (breast_cancer, digits; Bernoulli(½) subsets): relative error and
   LDS against the number of labelled (retrained) subsets the predictor is fitted on, with
   no regulariser, the global one (KKT residual, also on unlabelled subsets) and the local
   one (training-loss match), scored on 1,000 subsets of an independent store (another
   seed) that no fit sees.
5. **Presets** (on each protocol store): mp-ray's defaults, ``predictor.preset: reference``
   (the reference code's sum pooling, raw targets and batch-norm aggregation, with the
   paper's hyperparameters) and the paper's hyperparameters in mp-ray's own form.

    .venv/bin/python benchmarks/modelpred_protocol.py [--quick] [--datasets iris ...]
        [--parts protocol label preset] [--variants none global local] [--labels 50 ...]
        [--workers 2] [--work runs/benchmarks/modelpred_protocol]
        [--out benchmarks/results/modelpred_protocol]

Writes ``modelpred_protocol.{json,md}``, ``protocol.png`` and ``label_efficiency.png`` to
``--out`` after each data set, and prints the tables and the targets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from mp_ray.apps.addition import INFLUENCE, MODELPRED, RETRAINING, add_points
from mp_ray.apps.models import PredictedModels, RetrainedModels
from mp_ray.baselines import FullDataModel, InfluenceFunction
from mp_ray.config import AUTO_GLOBAL, REFERENCE_PRESET, ExperimentConfig
from mp_ray.data import load_dataset
from mp_ray.evaluation.deletion import deletion_curve, error_curve
from mp_ray.learners import make_learner
from mp_ray.method_outputs import ParameterOutputs
from mp_ray.predictor.evaluation import evaluation_table, format_table, size_strata
from mp_ray.predictor.fit import fit_predictor
from mp_ray.predictor.predictor import Predictor
from mp_ray.predictor.refine import NewtonRefined, with_set_function_alone
from mp_ray.ray_session import connect
from mp_ray.retrain import run_retrain
from mp_ray.sampling import row_rng
from mp_ray.scores import columnwise_correlation
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import TEST, read_split
from mp_ray.store_baselines import fit_store_baselines

DATASETS: dict[str, dict[str, Any]] = {
    "iris": {
        "seed": 0,
        "dataset": {
            "source": "sklearn",
            "name": "iris",
            "classes": [0, 1],
            "val_fraction": 0.13,
            "test_fraction": 0.2,
        },
        "learner": {"kind": "logistic", "C": 1.0},
        "permutations": 300,
    },
    "breast_cancer": {
        "seed": 0,
        "dataset": {"source": "sklearn", "name": "breast_cancer"},
        "learner": {"kind": "logistic", "C": 1.0},
        "permutations": 100,
    },
    "digits": {
        "seed": 1,
        "dataset": {"source": "sklearn", "name": "digits", "max_train": 500},
        "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-6},
        "permutations": 100,
    },
}
LABEL_DATASETS = ("breast_cancer", "digits")
PROTOCOL_SPLIT = {"val_fraction": 0.1, "test_fraction": 0.4}  # 50 / 10 / 40 by permutation
LABEL_SPLIT = {"val_fraction": 0.2, "test_fraction": 0.01}  # scored on another store instead
EVAL_SEED_OFFSET = 1000  # the label study's evaluation store: an independent seed
ADDITION_STREAM = 0xADD
FULL = {
    "labels": (50, 100, 300, 1000, 3000, 10000),
    "eval_rows": 1000,
    "removals": tuple(np.round(np.arange(0.1, 0.95, 0.1), 2)),
    "repetitions": 10,
    "added": (1, 2, 5, 10, 20, 50),
}
QUICK = {
    "labels": (50, 300),
    "eval_rows": 200,
    "removals": (0.1, 0.5, 0.9),
    "repetitions": 3,
    "added": (1, 5),
    "permutations": {"iris": 60, "breast_cancer": 50, "digits": 40},
    "max_train": {"breast_cancer": 60, "digits": 100},
    "steps": 300,
}


def experiment(
    name: str,
    args: argparse.Namespace,
    sampler: dict[str, Any],
    rows: int,
    splits: dict[str, float] | None = None,
    **predictor: Any,
) -> ExperimentConfig:
    """Dataset ``name``'s experiment with ``sampler`` and ``rows`` store rows split by
    ``splits`` (default: the splits section's defaults), in its own store under ``--work``
    (named by the sampler, row count and seed)."""
    setup = DATASETS[name]
    dataset = dict(setup["dataset"])
    if args.quick and name in QUICK["max_train"]:
        dataset["max_train"] = QUICK["max_train"][name]
    seed = predictor.pop("seed", setup["seed"])
    if args.quick:
        predictor.setdefault("steps", QUICK["steps"])
    size = "-quick" if args.quick else ""  # the quick run's data sets are cut smaller
    uri = args.work / f"{name}{size}-{sampler['kind']}-{rows}-s{seed}.zarr"
    return ExperimentConfig.model_validate(
        {
            "seed": seed,
            "dataset": dataset,
            "learner": setup["learner"],
            "sampler": sampler,
            "store": {"uri": str(uri), "n_rows": rows, "block_rows": predictor.pop("block", 500)},
            "retrain": {"num_actors": 2, "num_cpus": 1},
            "splits": splits or {},
            "predictor": predictor,
        }
    ).with_absolute_paths()


def fit(config: ExperimentConfig, label: str, args: argparse.Namespace, workers: int) -> Predictor:
    """Retrain (or reuse) ``config``'s store and fit a predictor on it."""
    run_retrain(config)
    start = time.perf_counter()
    outcome = fit_predictor(
        config.with_overrides(
            {"fit.storage_path": str(args.work / "train"), "fit.num_workers": workers}
        ),
        f"{args.run_id}-{label}",
    )
    seconds = time.perf_counter() - start
    print(f"  fitted {label} in {seconds:.0f} s: {outcome.metrics.get('val_rel_error')}")
    return Predictor.load(outcome.predictor_uri)


def lds_scores(predicted: np.ndarray, actual: np.ndarray, sizes: np.ndarray) -> dict[str, float]:
    """LDS of predicted outputs ``(K, T)`` against retrained ones: over all rows, and within
    strata of nearly equal subset size ``sizes (K,)`` (row-weighted mean); none where a
    constant prediction leaves every correlation undefined."""
    strata = size_strata(sizes, np.ones(len(sizes), dtype=bool))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of no defined correlation
        overall = float(np.nanmean(columnwise_correlation(predicted, actual)))
        within = [np.nanmean(columnwise_correlation(predicted[s], actual[s])) for s in strata]
    weights = [len(s) for s, value in zip(strata, within, strict=True) if np.isfinite(value)]
    values = [value for value in within if np.isfinite(value)]
    out = {"lds": overall} if np.isfinite(overall) else {}
    if values:
        out["lds_within_size"] = float(np.average(values, weights=weights))
    return out


def protocol_config(
    name: str, args: argparse.Namespace, **predictor: Any
) -> tuple[ExperimentConfig, Any]:
    """Dataset ``name``'s permutation-prefix experiment (its store shared by every fit on
    the protocol) and its dataset."""
    permutations = QUICK["permutations"][name] if args.quick else DATASETS[name]["permutations"]
    probe = experiment(name, args, {"kind": "permutation"}, 1)
    dataset = load_dataset(probe.dataset)
    n = dataset.n_train
    config = experiment(
        name,
        args,
        {"kind": "permutation"},
        permutations * n,
        block=n,
        splits=PROTOCOL_SPLIT,
        **predictor,
    )
    return config, dataset


def scored_table(
    config: ExperimentConfig, dataset: Any, methods: dict[str, Any]
) -> tuple[list[dict[str, Any]], Any]:
    """``methods`` on the protocol's test rows: the evaluation table with the LDS (overall
    and within size) on each method's "all" row; and the learner."""
    learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    store = ExperimentStore.open(config.store.uri)
    rows = read_split(store, list(range(store.n_blocks)), TEST, **PROTOCOL_SPLIT, with_outputs=True)
    table = evaluation_table(learner, methods, rows, dataset)
    subset_sizes = rows.masks.sum(axis=1)
    for row in table:
        if row["subset size"] == "all":
            outputs = ParameterOutputs(
                methods[row["method"]], learner, dataset.X_test, dataset.y_test
            )
            row.update(lds_scores(outputs.outputs(rows.masks), rows.outputs, subset_sizes))
    return table, rows


def protocol(name: str, args: argparse.Namespace, sizes: dict[str, Any]) -> dict[str, Any]:
    """The paper's protocol on dataset ``name``: table, deletion and addition curves."""
    config, dataset = protocol_config(name, args)
    n = dataset.n_train
    print(f"{name}: protocol, n = {n}, {config.store.n_rows // n} permutations")
    predictor = fit(config, f"{name}-protocol", args, args.workers)
    learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    store = ExperimentStore.open(config.store.uri)
    mean, ridge = fit_store_baselines(store, **PROTOCOL_SPLIT)
    influence = InfluenceFunction(learner)
    modelpred = with_set_function_alone(
        "ModelPred", predictor, learner, config.predictor.newton_steps, influence
    )
    methods = {
        **modelpred,
        mean.name: mean,
        ridge.name: ridge,
        FullDataModel.name: FullDataModel(learner),
        influence.name: influence,
    }
    table, rows = scored_table(config, dataset, methods)
    print(format_table(table))
    retrain = RetrainedModels(learner)
    deletion = deletion_curve(
        {
            **{label: PredictedModels(m, learner) for label, m in modelpred.items()},
            influence.name: influence,
        },
        retrain,
        n,
        sizes["removals"],
        sizes["repetitions"],
        config.seed,
    )
    return {
        "dataset": name,
        "n_train": n,
        "n_params": store.spec.n_params,
        "store_rows": store.spec.n_rows,
        "test_rows": len(rows),
        "ridge_alpha": ridge.alpha,
        "table": table,
        "deletion": deletion,
        "addition": addition(modelpred["ModelPred"], learner, dataset, sizes, config.seed),
    }


PAPER_HYPERPARAMETERS = (
    "lr",
    "lr_schedule",
    "batch_size",
    "lambda_global",
    "lambda_local",
    "l1",
    "l2",
)
PRESETS = {
    "mp-ray defaults": {},
    "reference preset": {"preset": "reference"},
    "paper values, mp-ray form": {k: REFERENCE_PRESET[k] for k in PAPER_HYPERPARAMETERS},
}


def preset_study(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The paper's hyperparameters on the protocol's store: in the reference code's form
    (``preset: reference``) and in mp-ray's (its pooling, target coordinates and
    aggregation), beside mp-ray's defaults."""
    config, dataset = protocol_config(name, args)
    print(f"{name}: presets")
    methods = {}
    for label, settings in PRESETS.items():
        preset_config, _ = protocol_config(name, args, **settings)
        slug = label.split()[0].strip(",")
        methods[label] = fit(preset_config, f"{name}-preset-{slug}", args, args.workers)
    table, rows = scored_table(config, dataset, methods)
    print(format_table(table))
    return {"dataset": name, "test_rows": len(rows), "table": table}


def addition(
    predictor: Predictor | NewtonRefined,
    learner: Any,
    dataset: Any,
    sizes: dict[str, Any],
    seed: int,
) -> list[dict[str, Any]]:
    """A random half of D plus k random points of the validation split, per k of
    ``sizes['added']`` (capped at the split's size) and repetition; error curve by k."""
    n, m = dataset.n_train, len(dataset.y_val)
    added = sorted({min(k, m) for k in sizes["added"]})
    levels = np.repeat(added, sizes["repetitions"])
    masks = np.zeros((len(levels), n), dtype=bool)
    new_masks = np.zeros((len(levels), m), dtype=bool)
    for row, k in enumerate(levels):
        rng = row_rng(seed, ADDITION_STREAM, row)
        masks[row, rng.permutation(n)[: n // 2]] = True
        new_masks[row, rng.permutation(m)[:k]] = True
    result = add_points(
        PredictedModels(predictor, learner),
        dataset.X_val,
        dataset.y_val,
        dataset.X_test,
        dataset.y_test,
        masks,
        new_masks,
        retrain=True,
    )
    truth = result.outcomes[RETRAINING]
    predicted = {name: result.outcomes[name].after for name in (MODELPRED, INFLUENCE)}
    for name in (MODELPRED, INFLUENCE):  # each method's predicted change, from the true base
        outcome = result.outcomes[name]
        predicted[f"{name}, change"] = truth.before + (outcome.after - outcome.before)
    rows = error_curve(levels, predicted, truth.after, truth.before)
    seconds = {name: outcome.seconds / len(levels) for name, outcome in result.outcomes.items()}
    return [{**row, "seconds_per_model": seconds[row["method"].split(",")[0]]} for row in rows]


VARIANTS = {
    "none": {"lambda_global": 0.0, "lambda_local": 0.0},
    "global": {"lambda_global": "g", "unlabelled_per_batch": 16},
    "local": {"lambda_local": "l"},
}


def label_study(
    name: str, args: argparse.Namespace, sizes: dict[str, Any], study: dict[str, Any], save: Any
) -> None:
    """Relative error and LDS on an independent store against the labelled subsets, appended
    to ``study['points']`` and saved (``save()``) after each fit."""
    bernoulli = {"kind": "bernoulli", "alpha": 0.5}
    seed = DATASETS[name]["seed"] + EVAL_SEED_OFFSET
    held_out = experiment(name, args, bernoulli, sizes["eval_rows"], seed=seed)
    run_retrain(held_out)
    store = ExperimentStore.open(held_out.store.uri)
    masks, params, actual = (store.read(key) for key in ("masks", "params", "outputs"))
    dataset = load_dataset(held_out.dataset)
    learner = make_learner(held_out.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    truth = torch.as_tensor(params, dtype=learner.dtype)
    influence = InfluenceFunction(learner)
    baselines = {"influence functions": influence}
    study.update(dataset=name, eval_rows=len(masks), points=[])
    train_share = 1 - LABEL_SPLIT["val_fraction"] - LABEL_SPLIT["test_fraction"]
    for labels in args.labels or sizes["labels"]:
        rows = math.ceil(labels / train_share)
        for variant in args.variants:
            settings = VARIANTS[variant]
            strengths = {"g": args.lambda_global, "l": args.lambda_local}
            predictor_settings = {k: strengths.get(v, v) for k, v in settings.items()}
            config = experiment(name, args, bernoulli, rows, LABEL_SPLIT, **predictor_settings)
            predictor = fit(config, f"{name}-labels{labels}-{variant}", args, 1)
            shown = with_set_function_alone(
                f"ModelPred ({variant})",
                predictor,
                learner,
                config.predictor.newton_steps,
                influence,
            )
            methods = {label: PredictedModels(m, learner) for label, m in shown.items()}
            if variant == args.variants[0]:
                methods |= baselines
            for method, answer in methods.items():
                predicted = answer.predict(masks).to(learner.dtype)
                errors = (predicted - truth).norm(dim=1) / truth.norm(dim=1)
                outputs = ParameterOutputs(answer, learner, dataset.X_test, dataset.y_test)
                lds = np.nanmean(columnwise_correlation(outputs.outputs(masks), actual))
                point = {
                    "method": method,
                    "labels_asked": labels,
                    "store_rows": rows,
                    "rel_error": float(errors.mean()),
                    "lds": float(lds),
                }
                study["points"].append(point)
                print(
                    f"  {labels:>6} labels  {method:<26} rel. error "
                    f"{point['rel_error']:.4f}  LDS {point['lds']:.4f}"
                )
            save()


def target_lines(protocols: list[dict[str, Any]], labels: list[dict[str, Any]]) -> list[str]:
    """The targets and whether this run met them."""
    lines = []
    for result in protocols:
        overall = {row["method"]: row for row in result["table"] if row["subset size"] == "all"}
        if result["dataset"] == "iris":
            nrmse = overall["ModelPred"].get("nrmse", float("nan"))
            lines.append(
                f"Iris NRMSE ≤ 0.005: {nrmse:.4f} ({'met' if nrmse <= 0.005 else 'not met'})"
            )
        mp, inf = overall["ModelPred"], overall[InfluenceFunction.name]
        ahead = mp["rel_error"] < inf["rel_error"] and mp["lds"] > inf["lds"]
        lines.append(
            f"{result['dataset']} protocol: ModelPred rel. error {mp['rel_error']:.4f} vs "
            f"influence {inf['rel_error']:.4f}; LDS {mp['lds']:.3f} vs {inf['lds']:.3f}, "
            f"within size {mp.get('lds_within_size', math.nan):.3f} vs "
            f"{inf.get('lds_within_size', math.nan):.3f} ({'ahead' if ahead else 'not ahead'})"
        )
    for study in labels:
        by = {(p["method"], p["labels_asked"]): p for p in study["points"]}
        first = next(p["method"] for p in study["points"] if p["method"].startswith("ModelPred"))
        for labels_asked in sorted({p["labels_asked"] for p in study["points"]}):
            mp = by[(first, labels_asked)]
            inf = by[("influence functions", labels_asked)]
            best = min(
                (
                    p
                    for p in study["points"]
                    if p["labels_asked"] == labels_asked and p["method"].startswith("ModelPred")
                ),
                key=lambda p: p["rel_error"],
            )
            ahead = mp["rel_error"] < inf["rel_error"] and mp["lds"] > inf["lds"]
            lines.append(
                f"{study['dataset']} {labels_asked} labels: ModelPred {mp['rel_error']:.4f} / "
                f"{mp['lds']:.3f} vs influence {inf['rel_error']:.4f} / {inf['lds']:.3f} "
                f"({'ahead' if ahead else 'not ahead'}); "
                f"best variant {best['method']} {best['rel_error']:.4f}"
            )
    return lines


def overall_rows(table: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """Markdown rows of ``table``'s rows over subsets of every size."""
    return [
        f"| {row['method']} | "
        + " | ".join(f"{row[c]:.4f}" if c in row else "–" for c in columns)
        + " |"
        for row in table
        if row["subset size"] == "all"
    ]


def markdown(
    protocols: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    presets: list[dict[str, Any]],
    meta: dict[str, Any],
) -> str:
    """The tables of a run as Markdown."""
    lines = [
        f"Load (uptime) at start / end: {meta['load_start']} / {meta.get('load_end', '–')}",
        "",
    ]
    columns = ["nrmse", "rel_error", "lds", "lds_within_size", "agreement"]
    for result in protocols:
        lines += [
            f"### {result['dataset']} (n = {result['n_train']}, d = {result['n_params']}, "
            f"{result['store_rows']:,} store rows, {result['test_rows']:,} test rows)",
            "",
            "| method | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        lines += overall_rows(result["table"], columns)
        for part, level in (("deletion", "share removed"), ("addition", "points added")):
            lines += [
                "",
                f"{part}: ‖θ̂ − θ‖ mean ± std ({level}; retraining: the change ‖θ − θ_ref‖)",
                "",
            ]
            methods = list(dict.fromkeys(row["method"] for row in result[part]))
            lines += [f"| {level} | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
            for value in dict.fromkeys(row["level"] for row in result[part]):
                by = {row["method"]: row for row in result[part] if row["level"] == value}
                cells = " | ".join(
                    f"{by[m]['error_mean']:.4f} ± {by[m]['error_std']:.4f}" for m in methods
                )
                lines.append(f"| {value:g} | {cells} |")
        lines.append("")
    for study in presets:
        lines += [
            f"### presets, {study['dataset']} ({study['test_rows']:,} test rows)",
            "",
            "| predictor | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        lines += overall_rows(study["table"], columns)
        lines.append("")
    for study in labels:
        methods = list(dict.fromkeys(p["method"] for p in study["points"]))
        lines += [
            f"### label efficiency, {study['dataset']} ({study['eval_rows']} held-out subsets): "
            "rel. error / LDS",
            "",
            "| labelled subsets | " + " | ".join(methods) + " |",
            "|---|" + "---|" * len(methods),
        ]
        for labels_asked in dict.fromkeys(p["labels_asked"] for p in study["points"]):
            by = {p["method"]: p for p in study["points"] if p["labels_asked"] == labels_asked}
            cells = " | ".join(
                f"{by[m]['rel_error']:.4f} / {by[m]['lds']:.3f}" if m in by else "–"
                for m in methods
            )
            lines.append(f"| {labels_asked:,} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def plot_protocol(protocols: list[dict[str, Any]], path: Path) -> None:
    """Deletion and addition curves, one column per dataset."""
    if not protocols:
        return
    fig, axes = plt.subplots(2, len(protocols), figsize=(5 * len(protocols), 7), squeeze=False)
    for column, result in enumerate(protocols):
        for row, part in enumerate(("deletion", "addition")):
            axis = axes[row, column]
            for method in dict.fromkeys(r["method"] for r in result[part]):
                points = [r for r in result[part] if r["method"] == method]
                x = [r["level"] for r in points]
                y = np.array([r["error_mean"] for r in points])
                spread = np.array([r["error_std"] for r in points])
                axis.errorbar(x, y, yerr=spread, marker="o", capsize=3, label=method)
            axis.set_yscale("log")
            axis.set_ylabel("‖θ̂ − θ‖ (retraining: ‖θ − θ_ref‖)")
            axis.set_xlabel(
                "share of D removed" if part == "deletion" else "points added to half of D"
            )
            axis.set_title(f"{result['dataset']}: {part}")
            axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_labels(labels: list[dict[str, Any]], path: Path) -> None:
    """Relative error and LDS against labelled subsets, one column per dataset."""
    if not labels:
        return
    fig, axes = plt.subplots(2, len(labels), figsize=(5 * len(labels), 7), squeeze=False)
    for column, study in enumerate(labels):
        for method in dict.fromkeys(p["method"] for p in study["points"]):
            points = [p for p in study["points"] if p["method"] == method]
            x = [p["labels_asked"] for p in points]
            for row, metric in enumerate(("rel_error", "lds")):
                axes[row, column].plot(x, [p[metric] for p in points], marker="o", label=method)
        axes[0, column].set_title(f"{study['dataset']}: label efficiency")
        axes[0, column].set_ylabel("‖θ̂ − θ‖ / ‖θ‖")
        axes[1, column].set_ylabel("LDS")
        for axis in axes[:, column]:
            axis.set_xscale("log")
            axis.set_xlabel("labelled (retrained) subsets")
            axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["protocol", "label", "preset"],
        choices=["protocol", "label", "preset"],
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="label study: the regulariser variants to fit (influence functions beside the first)",
    )
    parser.add_argument(
        "--labels", nargs="+", type=int, help="label study: labelled subsets (default: all sizes)"
    )
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers per protocol fit")
    parser.add_argument("--lambda-global", type=float, default=AUTO_GLOBAL["lambda_global"])
    parser.add_argument("--lambda-local", type=float, default=0.1)
    parser.add_argument("--work", type=Path, default=Path("runs/benchmarks/modelpred_protocol"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/modelpred_protocol"))
    parser.add_argument("--run-id", help="prefix of the Ray Train runs (default: now)")
    args = parser.parse_args()
    args.work = args.work.absolute()
    args.run_id = args.run_id or time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    sizes = QUICK if args.quick else FULL
    torch.set_num_threads(2)
    connect()
    start = time.perf_counter()
    meta = {
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "load_start": load_average(),
        "args": vars(args) | {"work": str(args.work), "out": str(args.out)},
    }
    protocols: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    presets: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        meta.update(load_end=load_average(), seconds=round(time.perf_counter() - start, 1))
        results = {
            "meta": meta,
            "protocol": protocols,
            "label_efficiency": labels,
            "presets": presets,
        }
        (args.out / "modelpred_protocol.json").write_text(
            json.dumps(results, indent=2, default=float)
        )
        (args.out / "modelpred_protocol.md").write_text(markdown(protocols, labels, presets, meta))
        plot_protocol(protocols, args.out / "protocol.png")
        plot_labels(labels, args.out / "label_efficiency.png")

    if "protocol" in args.parts:
        for name in args.datasets:
            protocols.append(protocol(name, args, sizes))
            write()
    if "preset" in args.parts:
        for name in args.datasets:
            presets.append(preset_study(name, args))
            write()
    if "label" in args.parts:
        for name in (d for d in args.datasets if d in LABEL_DATASETS):
            labels.append({})
            label_study(name, args, sizes, labels[-1], write)
    write()
    print(markdown(protocols, labels, presets, meta))
    print("\n".join(target_lines(protocols, labels)))
    print(f"({meta['seconds']} s, load {meta['load_start']} → {meta['load_end']})")


if __name__ == "__main__":
    main()
