"""MLflow tracking of a fit through Ray's integration: refused before any work where mlflow
is not installed; where it is, the fit's MLflow run holds its settings and every
validation's metrics by step, and ends FINISHED."""

from __future__ import annotations

import importlib.util
import os

import pytest
from tiny_fit import tiny_fit_experiment

from mp_ray.predictor.fit import fit_predictor
from mp_ray.retrain import run_retrain
from mp_ray.tracking import TrackingUnavailableError

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
# MLflow 3 refuses its file store unless told; set before the session's Ray starts, so its
# Train workers inherit it.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def experiment(tmp_path, **mlflow):
    return tiny_fit_experiment(
        tmp_path, "tracked", observability={"mlflow": {"enabled": True, **mlflow}}
    )


@pytest.mark.skipif(HAS_MLFLOW, reason="mlflow is installed here")
def test_tracking_without_mlflow_is_refused_naming_the_extra(tmp_path):
    with pytest.raises(TrackingUnavailableError) as caught:
        fit_predictor(experiment(tmp_path), "untracked")
    assert "pip install 'mp-ray[mlflow]'" in str(caught.value)
    assert "observability.mlflow.enabled: false" in str(caught.value)
    assert not (tmp_path / "train").exists()  # refused before any work


@pytest.mark.ray
@pytest.mark.timeout(300)
@pytest.mark.skipif(not HAS_MLFLOW, reason="needs mp-ray's mlflow extra")
def test_a_tracked_fit_logs_its_settings_and_validations(ray_session, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"file:{tmp_path / 'mlruns'}"
    config = experiment(tmp_path, tracking_uri=uri, experiment_name="tracked-fits")
    run_retrain(config)
    outcome = fit_predictor(config, "tracked")
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tracked-fits").experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert (
        run.data.params["predictor.steps"] == "40" and run.data.params["learner.kind"] == "logistic"
    )
    history = client.get_metric_history(run.info.run_id, "val_rel_error")
    assert [metric.step for metric in history] == [20, 40]
    assert history[-1].value == pytest.approx(outcome.metrics["val_rel_error"])
