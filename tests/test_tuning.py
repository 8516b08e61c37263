"""A real 2-trial Ray Tune search over Ray Train fits of the predictor."""

from __future__ import annotations

import json

import pytest
from ray import tune

from mp_ray.config import parse_experiment
from mp_ray.predictor import Predictor
from mp_ray.retrain import run_retrain
from mp_ray.tuning import tune_predictor


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_two_trial_search_exports_the_best_predictor(ray_session, tmp_path):
    config = parse_experiment(
        {
            "seed": 2,
            "dataset": {"source": "sklearn", "name": "iris"},
            "learner": {"kind": "logistic"},
            "sampler": {"kind": "uniform_size", "min_size": 15},
            "store": {"uri": str(tmp_path / "iris.zarr"), "n_rows": 300, "block_rows": 50},
            "predictor": {"steps": 16, "eval_every": 8, "batch_size": 32},
        }
    )
    run_retrain(config)
    space = {
        "lambda_global": tune.choice([0.0, 0.01]),
        "lambda_local": 0.0,
        "lr": tune.choice([1e-3, 3e-3]),
        "width": 32,
    }
    ended: list[dict] = []
    outcome = tune_predictor(
        config,
        "search",
        str(tmp_path / "tune"),
        num_samples=2,
        search_space=space,
        on_trial=ended.append,
    )
    assert len(outcome.trials) == 2
    # Each trial is heard of in the driver as it ends, with its last result.
    assert sorted(r["best_val_rel_error"] for r in ended) == sorted(
        row["val_rel_error"] for row in outcome.trials
    )
    errors = [row["val_rel_error"] for row in outcome.trials]
    assert outcome.best_val_rel_error == min(errors)
    assert set(outcome.best_params) == {"lambda_global", "lambda_local", "lr", "width"}
    saved = json.loads((tmp_path / "tune" / "search" / "trials.json").read_text())
    assert [row["val_rel_error"] for row in saved] == sorted(errors)
    predictor = Predictor.load(outcome.predictor_uri)
    assert predictor.meta.extra["val_rel_error"] == pytest.approx(outcome.best_val_rel_error)
    assert predictor.meta.width == 32
