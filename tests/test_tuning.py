"""Real 2-trial Ray Tune searches over Ray Train fits of the predictor."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml
from file_opens import FileOpens
from ray import tune

from mp_ray.config import RESOLVED_CONFIG, ConfigError, load_experiment, parse_experiment
from mp_ray.data import load_dataset
from mp_ray.learners import LearnerCapabilityError
from mp_ray.predictor import Predictor
from mp_ray.ray_resources import ResourcesError
from mp_ray.retrain import run_retrain
from mp_ray.tuning import searchable, tune_predictor


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
            "tune": {
                "storage_path": str(tmp_path / "tune"),
                "num_samples": 2,
                "search_space": {
                    "lambda_global": {"type": "choice", "values": [0.0, 0.01]},
                    "lambda_local": {"type": "choice", "values": [0.0]},
                    "lr": {"type": "choice", "values": [1e-3, 3e-3]},
                    "width": {"type": "choice", "values": [32]},
                },
            },
        }
    )
    run_retrain(config)
    ended: list[dict] = []
    outcome = tune_predictor(config, "search", on_trial=ended.append)
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
    # The search's config and, beside the best predictor, its fit's.
    searched = yaml.safe_load((tmp_path / "tune" / "search" / RESOLVED_CONFIG).read_text())
    assert searched["tune"]["num_samples"] == 2
    assert searched["tune"]["max_concurrent_trials"] is None  # no limit: trials wait for room
    best = load_experiment(tmp_path / "tune" / "search" / "best" / RESOLVED_CONFIG)
    assert best.predictor.model_dump(include=set(outcome.best_params)) == outcome.best_params
    assert best.fit.num_workers == 1 and best.fit.storage_path.endswith("search-trials")
    assert best.fit.use_gpu is False
    # Ray Tune's own results: one entry per trial, the best trial's among them.
    assert isinstance(outcome.grid, tune.ResultGrid) and len(outcome.grid) == 2
    assert outcome.best.path in [result.path for result in outcome.grid]
    assert outcome.best.metrics["best_val_rel_error"] == outcome.best_val_rel_error
    assert {k: outcome.best.config[k] for k in outcome.best_params} == outcome.best_params
    # ... and as a Parquet table of the trials' configs and last metrics.
    table = pq.read_table(tmp_path / "tune" / "search" / "trials.parquet").to_pylist()
    assert sorted(row["best_val_rel_error"] for row in table) == sorted(errors)
    assert {row["config/lr"] for row in table} <= {1e-3, 3e-3}
    assert {row["trial_id"] for row in table} == {r.metrics["trial_id"] for r in outcome.grid}


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_gpu_trials_on_a_cluster_without_gpus_are_refused(ray_session, tmp_path):
    """Each trial's Train workers get a GPU with tune.use_gpu, or fit.use_gpu when it is
    unset; the search names the missing GPU before it starts a trial (or reads the store)."""
    base = {
        "dataset": {"source": "sklearn", "name": "iris"},
        "learner": {"kind": "logistic"},
        "sampler": {"kind": "uniform_size", "min_size": 15},
        "store": {"uri": str(tmp_path / "none.zarr"), "n_rows": 100, "block_rows": 50},
        "tune": {"storage_path": str(tmp_path / "tune")},
    }
    for sections in ({"tune": {**base["tune"], "use_gpu": True}}, {"fit": {"use_gpu": True}}):
        with pytest.raises(ResourcesError, match=r"GPU=1 \(cluster has 0\).*tune\.use_gpu"):
            tune_predictor(parse_experiment({**base, **sections}), "gpu")
    assert not (tmp_path / "tune").exists()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_trials_share_one_pass_for_the_training_moments(ray_session, tmp_path):
    store = tmp_path / "iris.zarr"
    config = parse_experiment(
        {
            "seed": 3,
            "dataset": {"source": "sklearn", "name": "iris"},
            "learner": {"kind": "logistic"},
            "sampler": {"kind": "uniform_size", "min_size": 15},
            "store": {"uri": str(store), "n_rows": 150, "block_rows": 50},
            "retrain": {"num_actors": 1},
            # One step of a minibatch larger than the training split: one pass, one validation.
            "predictor": {"steps": 1, "eval_every": 1, "batch_size": 1024, "width": 16},
            "tune": {
                "storage_path": str(tmp_path / "tune"),
                "num_samples": 2,
                "max_concurrent_trials": 1,  # one reader at a time (file_opens.py)
                "search_space": {"lr": {"type": "choice", "values": [1e-3, 3e-3]}},
            },
        }
    )
    run_retrain(config)
    chunks = [str(store / "params" / "c" / str(block)) for block in range(3)]
    with FileOpens(chunks) as opens:
        outcome = tune_predictor(config, "search")
    assert len(outcome.trials) == 2
    # Each block's parameters are read once for the moments, in the search's driver, then by
    # each trial's worker once to train and once to validate: no trial reads them for its
    # own moments (that would be 7 reads).
    assert dict(opens.counts) == {chunk: 1 + 2 * 2 for chunk in chunks}
    # One trial at a time: each began (its last report's time less its running time) after
    # the one before had reported its last (timestamps in whole seconds).
    spans = sorted(
        (r.metrics["timestamp"] - r.metrics["time_total_s"], r.metrics["timestamp"])
        for r in outcome.grid
    )
    assert spans[1][0] >= spans[0][1] - 1, spans


def sklearn_search(tmp_path, search_space: dict | None) -> dict:
    """A search over a ``kind: sklearn`` learner: it lacks ``objective_grad`` and
    ``per_sample_loss``, the regularisers' methods."""
    tune_section = {"storage_path": str(tmp_path / "tune")}
    if search_space is not None:
        tune_section["search_space"] = search_space
    return {
        "dataset": {"source": "sklearn", "name": "iris"},
        "learner": {
            "kind": "sklearn",
            "estimator": "sklearn.linear_model:LogisticRegression",
        },
        "sampler": {"kind": "bernoulli"},
        "store": {"uri": str(tmp_path / "iris.zarr"), "n_rows": 300, "block_rows": 50},
        "tune": tune_section,
    }


def test_default_search_leaves_out_what_the_learner_cannot_serve(tmp_path):
    config = parse_experiment(sklearn_search(tmp_path, None))
    dataset = load_dataset(config.dataset)
    searched = searchable(config, dataset, labelled_rows=240, n_params=15)
    assert set(searched.tune.search_space) == {"lr", "width"}
    logistic = config.with_overrides({"learner": {"kind": "logistic"}})
    assert searchable(logistic, dataset, 240, 15).tune.search_space == config.tune.search_space
    space = {"lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}}
    given = parse_experiment(sklearn_search(tmp_path, space))
    assert searchable(given, dataset, 240, 15).tune.search_space == given.tune.search_space


def test_a_given_search_the_learner_cannot_serve_is_refused_naming_it(tmp_path):
    space = {"lambda_global": {"type": "choice", "values": [0.0, 0.01]}}
    config = parse_experiment(sklearn_search(tmp_path, space))
    with pytest.raises(LearnerCapabilityError) as refused:
        searchable(config, load_dataset(config.dataset), labelled_rows=240, n_params=15)
    message = str(refused.value)
    assert "tune.search_space.lambda_global = 0.01" in message and "objective_grad" in message


def test_a_given_search_of_newton_steps_for_a_network_is_a_config_error(tmp_path):
    data = sklearn_search(tmp_path, {"newton_steps": {"type": "choice", "values": [0, 2]}})
    data["learner"] = {"kind": "torch", "factory": "mp_ray.learners.zoo:mlp"}
    config = parse_experiment(data)
    with pytest.raises(ConfigError, match=r"tune.search_space.newton_steps = 2: .*convex"):
        searchable(config, load_dataset(config.dataset), labelled_rows=240, n_params=99)
