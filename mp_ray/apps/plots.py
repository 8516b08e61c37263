"""PNG figures the application commands write: removal curves, value distributions,
reliability diagrams. Each function takes plain arrays and a path, and returns the path."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mp_ray.apps.valuation.tasks import RemovalCurve
from mp_ray.outputs import atomic_output


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically) and close it."""
    fig.tight_layout()
    with atomic_output(path) as partial:
        fig.savefig(partial, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def removal_curves(
    curves: Mapping[str, list[RemovalCurve]], path: str | Path, ylabel: str = "test utility"
) -> Path:
    """Utility against the share of points removed, one line per (method, order)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, method_curves in curves.items():
        for curve in method_curves:
            style = "-" if curve.order == "high" else "--"
            label = f"{method}: {curve.order}-value first"
            ax.plot(100 * curve.fractions, curve.utilities, style, marker="o", ms=3, label=label)
    ax.set_xlabel("training points removed (%)")
    ax.set_ylabel(ylabel)
    ax.set_title("Point removal, retrained")
    ax.legend(fontsize=7)
    return _save(fig, path)


def value_distribution(
    values: np.ndarray,
    path: str | Path,
    flipped: np.ndarray | None = None,
    title: str = "",
    xlabel: str = "value",
) -> Path:
    """Histogram of per-point scores (data values, memorisation); points with known flipped
    labels drawn separately."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(values, bins=40)
    if flipped is not None and len(flipped):
        noisy = np.zeros(len(values), dtype=bool)
        noisy[flipped] = True
        ax.hist(values[~noisy], bins=bins, alpha=0.7, label="clean labels")
        ax.hist(values[noisy], bins=bins, alpha=0.7, label="flipped labels")
        ax.legend(fontsize=8)
    else:
        ax.hist(values, bins=bins)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training points")
    ax.set_title(title or "Data values")
    return _save(fig, path)


def reliability_diagram(
    diagrams: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path
) -> Path:
    """Accuracy against confidence per bin for each method: ``(confidence, accuracy, count)``
    arrays ``(bins,)``, empty bins given NaN."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="perfect calibration")
    for name, (confidence, accuracy, count) in diagrams.items():
        keep = count > 0
        ax.plot(confidence[keep], accuracy[keep], marker="o", ms=3, label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")
    ax.legend(fontsize=7)
    return _save(fig, path)
