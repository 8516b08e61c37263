"""One table that scores every method on the same ground truth.

Ground truth comes from retraining (:class:`Truth`): the recorded outputs of the store's
held-out rows for the LDS, and models retrained without chosen points for the removal
tests. Each method is an :class:`~mp_ray.methods.OutputMethod`; the held-out rows are read
once, a part at a time, and every method predicts each part (:func:`predict_held_out`), so
their masks are never held together. A method's row of the table gives the LDS, the
leave-one-out correlation, the counterfactual test (removing each target's top supporters:
predicted vs actual change of that target's output) and the seconds it took to answer all
of them. A correlation that is undefined (a
method whose predictions do not vary) is NaN in its row, printed "–" (null in JSON); the LDS
and the leave-one-out correlation are means over the targets whose correlation is defined,
and the row counts them (``lds_defined``, ``loo_defined`` of ``targets``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mp_ray.methods import OutputMethod
from mp_ray.scores import (
    Score,
    cell,
    columnwise_correlation,
    output_changes,
    paired_correlation,
    removal_correlation,
)


@dataclass
class Removals:
    """Removals from the full training set, ``masks (R, n)``, and the retrained output
    changes ``(R, T)``; ``targets (R,)`` pairs each removal with one target (the
    counterfactual test) or is None (every target counts: leave-one-out)."""

    masks: np.ndarray
    changes: np.ndarray
    targets: np.ndarray | None = None


@dataclass
class Truth:
    """The retrained outputs ``(K, T)`` of the held-out rows, and removals."""

    outputs: np.ndarray
    leave_one_out: Removals | None = None
    counterfactual: Removals | None = None


@dataclass
class Predicted:
    """A method's outputs ``(K, T)`` on the held-out rows and the seconds they took."""

    outputs: np.ndarray
    seconds: float = 0.0


def predict_held_out(
    methods: Mapping[str, OutputMethod], parts: Iterable[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, dict[str, Predicted]]:
    """Held-out rows given a part at a time, ``masks (k, n)`` with their retrained outputs
    ``(k, T)``: those outputs ``(K, T)`` and what each method predicts on the masks, in the
    order of the parts. Each part's masks are let go once every method has predicted them."""
    actual: list[np.ndarray] = []
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for masks, retrained in parts:
        if len(masks) == 0:
            continue
        actual.append(retrained)
        for name, method in methods.items():
            start = time.perf_counter()
            outputs[name].append(method.outputs(masks))
            seconds[name] += time.perf_counter() - start
    if not actual:
        return np.zeros((0, 0)), {name: Predicted(np.zeros((0, 0))) for name in methods}
    predicted = {name: Predicted(np.concatenate(outputs[name]), seconds[name]) for name in methods}
    return np.concatenate(actual), predicted


def score_method(method: OutputMethod, held_out: Predicted, truth: Truth) -> dict[str, Any]:
    """One row of the table: LDS of the ``held_out`` outputs predicted, leave-one-out
    correlation and counterfactual test of ``method``; ``seconds`` adds the time the
    removals took to the held-out outputs' own."""
    if len(truth.outputs) < 3:
        raise ValueError("the LDS needs at least 3 held-out subsets")
    start = time.perf_counter()
    score = Score.of(columnwise_correlation(held_out.outputs, truth.outputs))
    row: dict[str, Any] = {
        "targets": truth.outputs.shape[1],
        "lds": score.mean,
        "lds_defined": score.defined,
    }
    if truth.leave_one_out is not None:
        removals = truth.leave_one_out
        score = removal_correlation(output_changes(method, removals.masks), removals.changes)
        row["loo"], row["loo_defined"] = score.mean, score.defined
    if truth.counterfactual is not None:
        removals = truth.counterfactual
        rows = np.arange(len(removals.masks))
        predicted = output_changes(method, removals.masks)[rows, removals.targets]
        actual = removals.changes[rows, removals.targets]
        row["cf_pearson"], row["cf_spearman"] = paired_correlation(predicted, actual)
    row["seconds"] = held_out.seconds + time.perf_counter() - start
    return row


def behaviour_table(
    methods: dict[str, OutputMethod], predicted: Mapping[str, Predicted], truth: Truth
) -> list[dict[str, Any]]:
    """A row per method (name → output method), in the given order; ``predicted``: each
    method's held-out outputs (:func:`predict_held_out`)."""
    return [
        {"method": name, **score_method(method, predicted[name], truth)}
        for name, method in methods.items()
    ]


COLUMNS = {
    "lds": "LDS",
    "loo": "LOO ρ",
    "cf_pearson": "removal r",
    "cf_spearman": "removal ρ",
    "seconds": "seconds",
}


MEANS = {"lds": "LDS", "loo": "LOO ρ"}  # means over targets


def _coverage(table: list[dict[str, Any]], key: str) -> str | None:
    """Over how many targets each method's mean ``key`` is taken: one line, or None where
    no row has it."""
    counts = {row["method"]: row[f"{key}_defined"] for row in table if f"{key}_defined" in row}
    if not counts:
        return None
    total = table[0]["targets"]
    short = {method: count for method, count in counts.items() if count < total}
    title = f"{MEANS[key]}: mean over the targets with a defined correlation"
    if not short:
        return f"{title}: all {total} for every method"
    listed = ", ".join(f"{method} {count}" for method, count in short.items())
    others = "; all for the others" if len(short) < len(counts) else ""
    return f"{title}, of {total}: {listed}{others}"


def format_behaviour_table(table: list[dict[str, Any]]) -> str:
    """A fixed-width text rendering of :func:`behaviour_table` ("–": undefined, or not
    measured), and over how many targets each mean is taken."""
    width = max([24, *(len(row["method"]) + 2 for row in table)])
    lines = [f"{'method':<{width}}" + "".join(f"{title:>12}" for title in COLUMNS.values())]
    for row in table:
        cells = "".join(cell(row.get(key), 12) for key in COLUMNS)
        lines.append(f"{row['method']:<{width}}{cells}")
    lines += [line for key in MEANS if (line := _coverage(table, key)) is not None]
    return "\n".join(lines)
