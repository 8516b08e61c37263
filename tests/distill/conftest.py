"""A small experiment for the distilled datamodel: breast_cancer cut to 150 training points,
a Bernoulli(½) store of 60 rows trained without Ray, and the distilled datamodel saved in
the store's ``distill`` group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from in_process_store import train_in_process

from mp_ray.config import ExperimentConfig, parse_experiment
from mp_ray.data import Dataset, load_dataset
from mp_ray.distill import DistilledDatamodel, DistillReport, run_distill


def experiment(root: Path, **distill: Any) -> ExperimentConfig:
    """The test experiment with its store under ``root`` and ``distill`` overrides."""
    return parse_experiment(
        {
            "seed": 3,
            "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 150},
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-8},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": str(root / "bc.zarr"), "n_rows": 60, "block_rows": 30},
            "splits": {"test_fraction": 0.4},
            "distill": {
                "groups_per_class": 3,
                "synthetic_per_group": 2,
                "iterations": 200,
                "holdout_removals": 12,
                **distill,
            },
        }
    )


def build_store(config: ExperimentConfig, dataset: Dataset) -> None:
    """Train every block of the experiment's store in this process."""
    train_in_process(config, dataset)


@pytest.fixture
def make_experiment() -> Callable[..., ExperimentConfig]:
    """:func:`experiment`, for tests that need their own variant."""
    return experiment


@pytest.fixture
def make_store() -> Callable[[ExperimentConfig, Dataset], None]:
    """:func:`build_store`, for tests that need a store of their own."""
    return build_store


@dataclass
class Distilled:
    config: ExperimentConfig
    dataset: Dataset
    model: DistilledDatamodel
    report: DistillReport


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Distilled:
    """The test experiment's store, and its distilled datamodel fitted and saved in it."""
    config = experiment(tmp_path_factory.mktemp("distill"))
    dataset = load_dataset(config.dataset)
    build_store(config, dataset)
    model, report = run_distill(config, dataset)
    return Distilled(config, dataset, model, report)
