"""The output-space target coordinates: exact inverse, the metric they stand for, streaming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mp_ray.config import DatasetConfig, LearnerConfig, PredictorConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner
from mp_ray.predictor import OutputScaler, TargetScaler, scaler_from_json
from mp_ray.predictor.moments import TrainingMoments
from mp_ray.predictor.scaling import METRIC_RIDGE


@pytest.fixture(scope="module")
def wine_learner():
    wine = load_dataset(DatasetConfig(source="sklearn", name="wine"))
    config = LearnerConfig(kind="logistic", C=1.0, tol=1e-6)
    return wine, make_learner(config, wine.X_train, wine.y_train, wine.n_classes)


@pytest.fixture(scope="module")
def params(wine_learner):
    wine, learner = wine_learner
    masks = np.random.default_rng(0).random((40, wine.n_train)) < 0.5
    return learner.fit_batch(masks).numpy()


def output_scaler(params: np.ndarray, factor: np.ndarray) -> OutputScaler:
    """The output coordinates of parameters ``(N, d)`` held in memory."""
    masks = np.zeros((len(params), 1), bool)
    scaler = TrainingMoments.of_rows(masks, params, factor).scaler("outputs")
    assert isinstance(scaler, OutputScaler)
    return scaler


def test_squared_error_in_output_coordinates_is_the_output_error(wine_learner, params):
    _, learner = wine_learner
    factor = OutputScaler.factor_of(learner.output_metric().numpy())
    scaler = output_scaler(params, factor)
    theta = torch.as_tensor(params[:5])
    other = torch.as_tensor(params[5:10])
    torch.testing.assert_close(scaler.inverse(scaler.transform(theta)), theta)
    # ‖z(θ) − z(θ')‖² · scale² = Σ_j mean_i (x̃_i·(θ_j − θ'_j))² + ridge · ‖θ − θ'‖².
    z_gap = ((scaler.transform(theta) - scaler.transform(other)) ** 2).sum(dim=1)
    outputs = learner.outputs(theta, learner.X_aug) - learner.outputs(other, learner.X_aug)
    output_gap = (outputs**2).mean(dim=0).sum(dim=0)
    metric = learner.output_metric().numpy()
    ridge = METRIC_RIDGE * np.trace(metric) / len(metric)
    expected = output_gap + ridge * ((theta - other) ** 2).sum(dim=1)
    torch.testing.assert_close(z_gap * scaler.scale**2, expected)
    assert torch.all(output_gap > 5 * ridge * ((theta - other) ** 2).sum(dim=1))
    # Unit mean variance over the fitting rows.
    z = scaler.transform(torch.as_tensor(params))
    assert abs(float((z**2).mean()) - 1.0) < 1e-9
    assert float(z.mean(dim=0).abs().max()) < 1e-9


def test_streaming_moments_and_json_round_trip(wine_learner, params):
    _, learner = wine_learner
    factor = OutputScaler.factor_of(learner.output_metric().numpy())
    whole = output_scaler(params, factor)
    streamed = TrainingMoments.empty(params.shape[1], 1, factor)
    for third in np.array_split(params, 3):
        part = TrainingMoments.of_rows(np.zeros((len(third), 1), bool), third, factor)
        streamed = streamed.merged(part)
    assert streamed.scaler("outputs").scale == pytest.approx(whole.scale, rel=1e-12)
    loaded = scaler_from_json(json.loads(json.dumps(whole.to_json())))
    assert isinstance(loaded, OutputScaler)
    theta = torch.as_tensor(params[:3])
    torch.testing.assert_close(loaded.transform(theta), whole.transform(theta))
    # Checkpoints written before output coordinates carry a standardisation without a kind.
    standardised = TargetScaler.fit(params)
    assert isinstance(scaler_from_json(standardised.to_json()), TargetScaler)


def test_outputs_are_the_default_and_only_linear_learners_have_a_metric(wine_learner):
    wine, _ = wine_learner
    assert PredictorConfig().targets == "outputs"
    mlp = make_learner(
        LearnerConfig(kind="mlp", hidden=4), wine.X_train, wine.y_train, wine.n_classes
    )
    assert mlp.output_metric() is None
