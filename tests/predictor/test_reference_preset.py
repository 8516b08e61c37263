"""The reference preset: the ModelPred reference code's pooling, target scale and loss
aggregation, checked against the reference formulas computed by hand on a small batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mp_ray.config import REFERENCE_PRESET, LearnerConfig, PredictorConfig
from mp_ray.learners import make_learner
from mp_ray.predictor import (
    LossWeights,
    Predictor,
    PredictorMeta,
    SetFunction,
    TargetScaler,
    element_features,
    modelpred_loss,
)

C = 0.7


@pytest.fixture(scope="module")
def problem():
    """Five binary points scaled to ‖x‖ ≤ 1 (as the reference code scales them)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5, 2))
    X /= np.linalg.norm(X, axis=1).max()
    y = np.array([0, 1, 0, 1, 1])
    return X, y


def test_the_preset_fills_what_the_config_leaves_out():
    settings = PredictorConfig(preset="reference", lr=3e-4)
    assert settings.lr == 3e-4  # given in the config: kept
    for field, value in REFERENCE_PRESET.items():
        if field != "lr":
            assert getattr(settings, field) == value
    assert PredictorConfig.model_validate(settings.model_dump()) == settings
    assert PredictorConfig().pooling == "views" and PredictorConfig().targets == "outputs"
    with pytest.raises(ValueError, match="preset"):
        PredictorConfig(preset="paper")


def test_the_preset_reproduces_the_reference_loss_on_a_hand_computed_batch(problem):
    X, y = problem
    settings = PredictorConfig(preset="reference")
    learner = make_learner(LearnerConfig(kind="logistic", C=C, dtype="float64"), X, y, 2)
    Z = element_features(X, y, 2).double()
    torch.manual_seed(0)
    model = SetFunction(Z.shape[1], 3, width=8, pooling=settings.pooling).double()
    masks = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1], [1, 0, 1, 0, 0]], dtype=torch.float64)
    targets = torch.tensor([[0.5, -1.0, 0.2], [1.5, 0.3, -0.4], [-0.2, 0.8, 0.1]])
    weights = LossWeights.of(settings)
    assert weights == LossWeights(1.0, 1.0, 0.01, 0.01, "batch_norm")
    with torch.no_grad():
        total, terms = modelpred_loss(
            model, learner, TargetScaler.identity(3), Z, masks, targets.double(), None, weights
        )

    # The reference code, one subset at a time: its elements zero-padded to n, summed by a
    # bias-free φ, read by ρ; raw parameters θ = [w, b].
    outputs = []
    for mask in masks.bool():
        padded = torch.zeros_like(Z)
        padded[: int(mask.sum())] = Z[mask]
        outputs.append(model.rho(model.phi(padded).sum(dim=0)))
    predicted = torch.stack(outputs).detach().numpy()
    theta = targets.numpy().astype(np.float64)
    mse = np.mean((predicted - theta) ** 2)

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    grad_w, grad_b, gaps = [], [], []
    for mask, p, t in zip(masks.bool().numpy(), predicted, theta, strict=True):
        Xs, ys = X[mask], y[mask]
        residual = sigmoid(Xs @ p[:2] + p[2]) - ys
        grad_w.append(p[:2] + C * residual @ Xs)
        grad_b.append(C * residual.sum())

        def mean_cross_entropy(params, Xs=Xs, ys=ys):
            q = sigmoid(Xs @ params[:2] + params[2])
            return np.mean(-(ys * np.log(q) + (1 - ys) * np.log(1 - q)))

        gaps.append(mean_cross_entropy(t) - mean_cross_entropy(p))
    kkt = np.linalg.norm(np.array(grad_b)) + np.linalg.norm(np.array(grad_w))
    utility = np.linalg.norm(np.array(gaps))
    matrices = [w.detach().numpy() for name, w in model.named_parameters() if "weight" in name]
    l1 = sum(np.abs(w).sum() for w in matrices)
    l2 = sum(np.linalg.norm(w) for w in matrices)
    by_hand = mse + 1.0 * kkt + 1.0 * utility + 0.01 * l1 + 0.01 * l2

    assert math.isclose(float(terms["mse"]), mse, rel_tol=1e-10)
    assert math.isclose(float(terms["global"]), kkt, rel_tol=1e-10)
    assert math.isclose(float(terms["local"]), utility, rel_tol=1e-8)
    assert math.isclose(float(total), by_hand, rel_tol=1e-10)
    # mp-ray's own aggregation (means of per-subset norms) differs on the same batch.
    with torch.no_grad():
        _, own = modelpred_loss(
            model,
            learner,
            TargetScaler.identity(3),
            Z,
            masks,
            targets.double(),
            None,
            LossWeights(global_kkt=1.0, local_utility=1.0),
        )
    assert float(own["global"]) < kkt and float(own["local"]) < utility


def test_a_sum_pooled_predictor_saves_and_loads(tmp_path, problem):
    X, y = problem
    Z = element_features(X, y, 2)
    torch.manual_seed(0)
    model = SetFunction(Z.shape[1], 3, width=8, pooling="sum")
    meta = PredictorMeta(8, 3, 2, TargetScaler.identity(3), {}, "fp", "x", pooling="sum")
    masks = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]])
    Predictor(model, Z, meta).save(str(tmp_path / "ckpt"))
    loaded = Predictor.load(str(tmp_path / "ckpt"))
    assert loaded.model.pooling == "sum"
    torch.testing.assert_close(loaded.predict(masks), model(masks.float(), Z).detach())
    with pytest.raises(ValueError, match="pooling must be one of"):
        SetFunction(Z.shape[1], 3, width=8, pooling="max")
