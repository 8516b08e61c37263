"""The distilled datamodel against retraining, beside no change and influence functions.

For each data set (whole training split, L2 logistic regression, C = 1), a store of
``--store-rows`` Bernoulli(½) subsets is retrained in this process (45% of its rows are
test rows, never used by the distillation); then ``mp-ray distill``'s pipeline
(:func:`mp_ray.distill.run_distill`) runs once per variant of the choices the paper leaves
open: synthetic examples per group m, random instead of real-point starts, a fixed instead
of a learned step size η, and larger held-out unions. Every variant is supervised on the
single-group removals only and scored on

- held-out unions of groups (retrained, never distilled on): leave-group-out correlation of
  predicted and retrained margin changes on the test split (Pearson and Spearman, mean over
  targets; no change counts 0), parameter error ‖θ̂−θ‖/‖θ‖ and error relative to the size
  of the change;
- the store's test rows (random halves of the data), through ``predict(masks)``.

Times: the distillation (offline), the attribution matrix of all groups (online), and
first-order influence functions for the same G removals (Hessian set-up included).

    .venv/bin/python benchmarks/distill.py [--datasets breast_cancer digits]
        [--store-rows 300] [--out benchmarks/results]

Writes ``distill.{json,md}`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from mp_ray.baselines import InfluenceFunction
from mp_ray.config import ExperimentConfig, parse_experiment
from mp_ray.data import load_dataset
from mp_ray.distill import run_distill
from mp_ray.distill.groups import removal_masks, single_removals
from mp_ray.distill.report import NO_CHANGE
from mp_ray.retrain import BlockTrainer
from mp_ray.scores import cell

DEFAULT = "m=4, real start, η learned (default)"
UNIONS_OF_4 = "default, held-out unions of 4 groups"
VARIANTS: dict[str, dict[str, Any]] = {
    DEFAULT: {},
    "m=1": {"synthetic_per_group": 1},
    "m=2": {"synthetic_per_group": 2},
    "m=8": {"synthetic_per_group": 8},
    "random start": {"init": "random"},
    "η fixed": {"learn_step": False},
    UNIONS_OF_4: {"holdout_union": 4},
}
COLUMNS = ("pearson", "spearman", "rel_error", "change_error")


def experiment(name: str, root: Path, store_rows: int, **distill: Any) -> ExperimentConfig:
    return parse_experiment(
        {
            "seed": 0,
            "dataset": {"source": "sklearn", "name": name},
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-8},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": str(root / f"{name}.zarr"), "n_rows": store_rows, "block_rows": 100},
            "splits": {"val_fraction": 0.1, "test_fraction": 0.45},
            "distill": {"uri": f"memory://bench-distill-{name}", **distill},
        }
    )


def run_dataset(name: str, root: Path, store_rows: int) -> dict[str, Any]:
    """Every variant on one data set; see the module docstring."""
    base = experiment(name, root, store_rows)
    dataset = load_dataset(base.dataset)
    trainer = BlockTrainer(base, dataset)
    began = time.perf_counter()
    for block in range(trainer.store.n_blocks):
        trainer.run_block(block)
    result: dict[str, Any] = {"store_seconds": time.perf_counter() - began, "variants": {}}
    for label, overrides in VARIANTS.items():
        model, report = run_distill(experiment(name, root, store_rows, **overrides), dataset)
        result["variants"][label] = report.to_json()
        print(f"{name}: {label}: residual {report.residual:.4f}, {report.seconds}", flush=True)
    learner = model.learner
    masks = removal_masks(model.groups, single_removals(model.n_groups))
    began = time.perf_counter()
    InfluenceFunction(learner).predict(masks)
    result["influence_seconds"] = time.perf_counter() - began
    result.update(n_train=dataset.n_train, n_params=learner.n_params, store_rows=store_rows)
    return result


def _table(title: str, entries: list[tuple[str, dict[str, Any], float | None]]) -> list[str]:
    """A markdown table of (method, metrics, residual) rows."""
    lines = [
        f"**{title}**",
        "",
        "| method | residual (supervised) | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for method, values, residual in entries:
        shown = "" if residual is None else f"{residual:.3f}"
        cells = " | ".join(cell(values[c], 0) for c in COLUMNS)  # –: undefined
        lines.append(f"| {method} | {shown} | {cells} |")
    return [*lines, ""]


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """Per data set: held-out unions of 2 and 4 groups and the store's test rows (baselines
    once, the distilled datamodel per variant), then the times."""
    lines = []
    for name, result in results.items():
        variants = result["variants"]
        default = variants[DEFAULT]
        lines += [
            f"### {name} (n = {result['n_train']}, d = {result['n_params']}, "
            f"G = {default['n_groups']} groups)",
            "",
        ]
        for set_name, labels in (
            ("unions of 2 groups", [k for k in variants if k != UNIONS_OF_4]),
            ("store test rows", [k for k in variants if k != UNIONS_OF_4]),
            ("unions of 4 groups", [UNIONS_OF_4]),
        ):
            first = variants[labels[0]]["table"][set_name]
            entries = [(m, first["methods"][m], None) for m in (NO_CHANGE, "influence functions")]
            for label in labels:
                report = variants[label]
                values = report["table"][set_name]["methods"]["distilled datamodel"]
                entries.append((f"distilled, {label}", values, report["residual"]))
            lines += _table(f"{set_name} ({first['rows']} retrained, held out)", entries)
        lines += ["| variant | distillation s | attribution matrix (online) s |", "|---|---|---|"]
        for label, report in variants.items():
            seconds = report["seconds"]
            lines.append(
                f"| {label} | {seconds['distillation']:.2f} | {seconds['online attribution']:.4f} |"
            )
        lines += [
            "",
            f"retraining {default['retrained_models']} models (supervision and held-out "
            f"unions): {default['seconds']['retraining']:.2f} s; influence functions for the "
            f"{default['n_groups']} single-group removals (Hessian included): "
            f"{result['influence_seconds']:.3f} s; {result['store_rows']} store rows: "
            f"{result['store_seconds']:.1f} s",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["breast_cancer", "digits"])
    parser.add_argument("--store-rows", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mp-ray-distill-") as work:
        results = {name: run_dataset(name, Path(work), args.store_rows) for name in args.datasets}
    table = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distill.json").write_text(json.dumps(results, indent=2))
    (args.out / "distill.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
