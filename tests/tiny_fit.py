"""A tiny experiment to retrain and fit in seconds: wine, 300 rows, a 40-step predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mp_ray.config import ExperimentConfig, parse_experiment


def tiny_fit_experiment(folder: Path, store: str, **sections: Any) -> ExperimentConfig:
    """The experiment with its store ``<folder>/<store>.zarr`` and runs under
    ``<folder>/train``; ``sections`` are added (``observability={...}``)."""
    return parse_experiment(
        {
            "seed": 1,
            "dataset": {"source": "sklearn", "name": "wine"},
            "learner": {"kind": "logistic", "C": 1.0},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": str(folder / f"{store}.zarr"), "n_rows": 300, "block_rows": 50},
            "retrain": {"num_actors": 2},
            "predictor": {"width": 16, "steps": 40, "eval_every": 20, "batch_size": 32},
            "fit": {"num_workers": 2, "storage_path": str(folder / "train")},
            **sections,
        }
    )
