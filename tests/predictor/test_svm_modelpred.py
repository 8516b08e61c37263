"""ModelPred on the linear SVM as on logistic regression: retrained SVMs in a store, the
predictor fitted with the global regulariser on the SVM's KKT residual (its objective
gradient on unlabelled subsets), and the default Newton steps on its objective, scored
against retraining on the store's test rows, which the fit never saw."""

from __future__ import annotations

import pytest

from mp_ray.config import parse_experiment
from mp_ray.predictor.evaluation import evaluate_on_store
from mp_ray.predictor.fit import fit_predictor
from mp_ray.retrain import run_retrain

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_modelpred_on_svms_beats_its_set_function_alone_and_the_baselines(ray_session, tmp_path):
    config = parse_experiment(
        {
            "seed": 2,
            "dataset": {"source": "sklearn", "name": "wine"},
            "learner": {"kind": "svm", "C": 0.5},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": str(tmp_path / "svm.zarr"), "n_rows": 600, "block_rows": 100},
            "retrain": {"num_actors": 2},
            "fit": {"storage_path": str(tmp_path / "train")},
            "predictor": {
                "steps": 200,
                "eval_every": 100,
                "width": 32,
                "lr": 3e-3,
                "batch_size": 32,
                "lambda_global": 0.01,
                "unlabelled_per_batch": 8,
            },
        }
    )
    run_retrain(config)
    result = fit_predictor(config, name="svm")
    assert result.metrics["step"] == 200
    table = evaluate_on_store(config, {"ModelPred": result.predictor_uri})
    overall = {row["method"]: row["rel_error"] for row in table if row["subset size"] == "all"}
    # The Newton steps on the SVM's objective refine the set function's predictions.
    assert overall["ModelPred"] < 0.7 * overall["ModelPred, set function alone"]
    for baseline in ("mean θ", "ridge on the mask", "full data θ(D)", "influence functions"):
        assert overall["ModelPred"] < overall[baseline], baseline
