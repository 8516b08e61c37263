"""One small fitted predictor shared by the application tests: breast_cancer cut to 120
training points with 20% of them mislabelled, 3,000 retrained models on subsets of
uniform size, ModelPred fitted with Ray Train on one worker."""

from __future__ import annotations

import pytest

from mp_ray.apps.context import AppContext, app_context
from mp_ray.config import ExperimentConfig, parse_experiment
from mp_ray.predictor.fit import fit_predictor
from mp_ray.retrain import run_retrain


@pytest.fixture(scope="session")
def fitted_run(ray_session, tmp_path_factory) -> tuple[ExperimentConfig, str]:
    """The experiment and its fitted predictor's checkpoint URI."""
    root = tmp_path_factory.mktemp("apps")
    config = parse_experiment(
        {
            "seed": 0,
            "dataset": {
                "source": "sklearn",
                "name": "breast_cancer",
                "max_train": 120,
                "flip_fraction": 0.2,
            },
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-6},
            "sampler": {"kind": "uniform_size", "min_size": 10},
            "store": {"uri": str(root / "bc.zarr"), "n_rows": 3000, "block_rows": 500},
            "retrain": {"num_actors": 2},
            "predictor": {"width": 64, "epochs": 60, "lr": 3e-3, "batch_size": 64},
        }
    )
    run_retrain(config)
    outcome = fit_predictor(config, "apps", str(root / "train"), num_workers=1)
    return config, outcome.predictor_uri


@pytest.fixture(scope="session")
def fitted(fitted_run) -> AppContext:
    """The applications' context over the fitted predictor (retraining beside it)."""
    return app_context(*fitted_run)
