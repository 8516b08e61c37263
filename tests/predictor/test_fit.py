"""Fitting the predictor with Ray Train on 2 workers, resuming, and loading it without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import PredictorConfig, SamplerConfig, parse_experiment
from mp_ray.predictor import Predictor
from mp_ray.predictor.evaluation import evaluate_on_store
from mp_ray.predictor.fit import fit_predictor
from mp_ray.predictor.train_steps import step_lr
from mp_ray.retrain import run_retrain
from mp_ray.store import ExperimentStore
from mp_ray.store.rows import TEST, read_split, row_splits

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def experiment(tmp_path, steps: int):
    return parse_experiment(
        {
            "seed": 1,
            "dataset": {"source": "sklearn", "name": "wine"},
            "learner": {"kind": "logistic"},
            "sampler": {"kind": "uniform_size", "min_size": 20},
            "store": {"uri": str(tmp_path / "wine.zarr"), "n_rows": 800, "block_rows": 100},
            "retrain": {"num_actors": 2},
            "fit": {"storage_path": str(tmp_path / "train")},
            "predictor": {
                "steps": steps,
                "eval_every": 20,
                "width": 64,
                "lr": 3e-3,
                "batch_size": 32,
                "lambda_global": 0.01,
                "unlabelled_per_batch": 8,
            },
        }
    )


def test_fit_on_two_workers_resume_and_load(ray_session, tmp_path):
    config = experiment(tmp_path, steps=60)
    run_retrain(config)
    first = fit_predictor(config, name="wine")
    assert first.metrics["step"] == 60 and first.metrics["resumed_from_step"] == 0
    # Rank 0's peak resident memory (KiB) and the largest of the two workers'.
    assert first.metrics["max_peak_rss_mib"] >= first.metrics["peak_rss_mib"] > 100

    # Rerunning the same run name continues from its latest checkpoint.
    resumed = fit_predictor(experiment(tmp_path, steps=100), name="wine")
    assert resumed.metrics["resumed_from_step"] == 60 and resumed.metrics["step"] == 100
    assert resumed.metrics["best_val_rel_error"] <= first.metrics["best_val_rel_error"]

    # The checkpoint loads without Ray and predicts held-out subsets better than the mean model.
    predictor = Predictor.load(resumed.predictor_uri)
    store = ExperimentStore.open(config.store.uri)
    test = read_split(store, list(range(store.n_blocks)), TEST, 0.1, 0.1)
    assert len(test) > 40
    predicted = predictor.predict(test.masks).numpy()
    norms = np.linalg.norm(test.params, axis=1)
    ours = np.linalg.norm(predicted - test.params, axis=1) / norms
    mean_model = np.linalg.norm(predictor.meta.scaler.mean - test.params, axis=1) / norms
    assert ours.mean() < 0.9 * mean_model.mean()
    assert predictor.meta.dataset_fingerprint == store.spec.dataset_fingerprint

    # The evaluation on the store's test rows covers ModelPred and the baselines.
    table = evaluate_on_store(config, {"ModelPred": resumed.predictor_uri})
    overall = {row["method"]: row for row in table if row["subset size"] == "all"}
    assert set(overall) == {
        "ModelPred",
        "ModelPred, set function alone",
        "mean θ",
        "ridge on the mask",
        "full data θ(D)",
        "influence functions",
    }
    alone = overall["ModelPred, set function alone"]
    assert alone["rows"] == len(test)
    assert alone["rel_error"] == pytest.approx(float(ours.mean()), rel=1e-4)
    assert overall["ModelPred"]["rel_error"] < alone["rel_error"]  # the default Newton step


def test_splits_are_disjoint_and_chains_stay_together(ray_session, tmp_path):
    config = experiment(tmp_path, steps=20)
    store_config = config.store.model_copy(update={"n_rows": 2 * 124, "block_rows": 62})
    perm = config.model_copy(
        update={
            "sampler": SamplerConfig(kind="permutation"),
            "store": store_config,
        }
    )
    run_retrain(perm)
    store = ExperimentStore.open(perm.store.uri)
    rows = np.arange(store.spec.n_rows)
    splits = row_splits(store, rows, 0.3, 0.3)
    chains = rows // store.spec.n_train
    for chain in np.unique(chains):
        assert len(np.unique(splits[chains == chain])) == 1
    fractions = row_splits(store, np.arange(100_000), 0.1, 0.2)
    assert np.bincount(fractions.astype(int)) / 100_000 == pytest.approx([0.7, 0.1, 0.2], abs=0.01)


def test_learning_rate_schedule_is_a_function_of_the_step():
    cosine = PredictorConfig(lr=1e-2, steps=10)
    assert [round(step_lr(cosine, s), 6) for s in (0, 5, 10)] == [1e-2, 5e-3, 0.0]
    assert all(step_lr(cosine, s) > step_lr(cosine, s + 1) for s in range(9))
    constant = PredictorConfig(lr=1e-2, steps=10, lr_schedule="constant")
    assert {step_lr(constant, s) for s in range(10)} == {1e-2}


def test_an_epoch_budget_is_refused_naming_its_replacement():
    with pytest.raises(ValueError, match=r"predictor\.epochs was replaced by predictor\.steps"):
        PredictorConfig(epochs=10)
