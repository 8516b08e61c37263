"""The validation table of a distilled datamodel: methods × sets of retrained removals.

Each set holds removals (or subsets) with models actually retrained on them; each method
(a :class:`~mp_ray.methods.ParameterMethod`) predicts their parameters from ``masks (R,
n)``. Beside the methods given (the distilled datamodel and first-order influence
functions, in :func:`mp_ray.distill.job.validate`) the table always has the no-change
baseline, θ* for every subset. Every metric is described in
:mod:`mp_ray.distill.validation`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from mp_ray.distill.model import Objective, evaluate
from mp_ray.distill.validation import METRICS, score
from mp_ray.learners import Learner
from mp_ray.methods import ParameterMethod
from mp_ray.outputs import json_ready
from mp_ray.scores import cell

NO_CHANGE = "no change θ*"


@dataclass
class RemovalSet:
    """``masks (R, n)`` bool of retrained subsets and their parameters ``params (R, d)``;
    ``held_out``: never used to fit the distilled datamodel."""

    name: str
    masks: np.ndarray
    params: torch.Tensor
    held_out: bool


@dataclass
class DistillReport:
    """What ``mp-ray distill`` fitted and how it compares with retraining.

    ``table`` maps each removal set's name to ``{"rows", "held_out", "methods": {method:
    {metric: value}}}``; ``retrained_models`` counts the models retrained for supervision and
    held-out unions; ``seconds`` times each stage (``online attribution``: the reverse steps
    from the synsets and the whole attribution matrix).
    """

    dataset: str
    n_train: int
    n_groups: int
    group_sizes: list[int]
    per_group: int
    eta: float
    residual: float
    objective: str
    retrained_models: int
    table: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    uri: str = ""

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able data; undefined correlations are None (null)."""
        return json_ready(asdict(self))


def score_methods(
    learner: Learner,
    theta: torch.Tensor,
    sets: list[RemovalSet],
    methods: dict[str, ParameterMethod],
    X: np.ndarray,
    y: np.ndarray,
    objective: Objective,
) -> dict[str, dict[str, Any]]:
    """The table of the module docstring for targets ``X (T, p)``, ``y (T,)``."""
    table: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        base = evaluate(learner, theta[None], X, y, objective)

        def changes(params: torch.Tensor) -> np.ndarray:
            return (evaluate(learner, params, X, y, objective) - base).cpu().numpy()

        for removal in sets:
            actual = removal.params.to(device=learner.device, dtype=learner.dtype)
            truth = changes(actual)
            rows = {
                NO_CHANGE: score(
                    theta.expand_as(actual), np.zeros_like(truth), actual, truth, theta
                )
            }
            for name, method in methods.items():
                predicted = method.predict(removal.masks)
                predicted = predicted.to(device=learner.device, dtype=learner.dtype)
                rows[name] = score(predicted, changes(predicted), actual, truth, theta)
            table[removal.name] = {
                "rows": len(removal.masks),
                "held_out": removal.held_out,
                "methods": rows,
            }
    return table


def format_report(report: DistillReport) -> str:
    """The report as text: one block of method rows per removal set, then the timings."""
    sizes = np.asarray(report.group_sizes)
    lines = [
        f"{report.dataset}: {report.n_train} points in {report.n_groups} groups "
        f"(sizes {sizes.min()}–{sizes.max()}, median {int(np.median(sizes))}); "
        f"{report.per_group} synthetic examples per group; η = {report.eta:.4g}; relative "
        f"residual on the supervised removals {report.residual:.4f}",
        f"objective E: {report.objective} on the test split",
    ]
    header = f"{'method':<26}" + "".join(f"{m:>14}" for m in (*METRICS, "targets"))
    for name, entry in report.table.items():
        status = "held out" if entry["held_out"] else "supervised (not a validation)"
        lines += ["", f"{name}: {entry['rows']} retrained models, {status}", header]
        for method, metrics in entry["methods"].items():
            covered = f"{metrics['targets_defined']}/{metrics['targets']}"
            cells = "".join(cell(metrics[m], 14, ".4f") for m in METRICS)
            lines.append(f"{method:<26}{cells}{covered:>14}")
    lines += [
        "",
        "pearson, spearman: means over the targets where defined (targets: how many of all); "
        "– where none is",
    ]
    times = ", ".join(f"{stage} {value:.3g} s" for stage, value in report.seconds.items())
    lines += ["", f"retrained {report.retrained_models} models; {times}"]
    return "\n".join(lines)
