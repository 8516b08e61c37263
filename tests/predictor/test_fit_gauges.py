"""A fit's validation metrics as gauges on the local Ray's Prometheus endpoint, set by the
rank-0 Ray Train worker and tagged with the experiment and the run."""

from __future__ import annotations

import pytest
from prometheus import metrics_port, wait_for
from tiny_fit import tiny_fit_experiment

from mp_ray.predictor.fit import fit_predictor
from mp_ray.retrain import run_retrain

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_the_last_validation_is_on_the_endpoint(ray_session, tmp_path):
    config = tiny_fit_experiment(tmp_path, "gauged")
    run_retrain(config)
    outcome = fit_predictor(config, "gauged")
    port = metrics_port()

    def of_run(found):
        return [value for labels, value in found if labels.get("run") == "gauged"]

    last = float(outcome.metrics["step"])
    step = wait_for(port, "ray_mp_ray_fit_step", lambda found: of_run(found) == [last])
    (labels,) = [labels for labels, _ in step if labels.get("run") == "gauged"]
    assert labels["experiment"] == "gauged"  # the store's name
    error = of_run(wait_for(port, "ray_mp_ray_fit_val_rel_error", lambda f: bool(of_run(f))))
    assert error == [pytest.approx(outcome.metrics["val_rel_error"])]
