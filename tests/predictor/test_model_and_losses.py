"""The ModelPred set function and its loss terms, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner
from mp_ray.predictor import (
    LossWeights,
    Predictor,
    PredictorMeta,
    SetFunction,
    TargetScaler,
    element_features,
    kkt_residual,
    modelpred_loss,
)


@pytest.fixture(scope="module")
def wine():
    return load_dataset(DatasetConfig(source="sklearn", name="wine"))


@pytest.fixture(scope="module")
def learner(wine):
    config = LearnerConfig(kind="logistic", C=1.0, dtype="float32", tol=1e-6)
    return make_learner(config, wine.X_train, wine.y_train, wine.n_classes)


@pytest.fixture(scope="module")
def masks(wine):
    return torch.as_tensor(np.random.default_rng(0).random((6, wine.n_train)) < 0.5)


@pytest.fixture(scope="module")
def model(wine, learner):
    torch.manual_seed(0)
    return SetFunction(wine.n_features + wine.n_classes, learner.n_params, width=32)


def test_elements_and_shapes(wine, model, masks, learner):
    Z = element_features(wine.X_train, wine.y_train, wine.n_classes)
    assert Z.shape == (wine.n_train, wine.n_features + 3)
    torch.testing.assert_close(Z[:, -3:].sum(dim=1), torch.ones(wine.n_train))
    assert model(masks, Z).shape == (6, learner.n_params)
    # φ is bias-free, so a zero element contributes nothing to the pooled sum.
    assert model.embed(torch.zeros(1, Z.shape[1])).abs().max() == 0


def test_permutation_invariance_and_masked_sum_equals_per_set_path(wine, model, masks):
    Z = element_features(wine.X_train, wine.y_train, wine.n_classes)
    batched = model(masks, Z)
    order = torch.randperm(wine.n_train, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(masks[:, order], Z[order]), batched, rtol=1e-5, atol=1e-5)
    for k, mask in enumerate(masks):
        members = Z[mask]
        total = model.embed(members).sum(dim=0)
        pooled = torch.cat(
            [
                total / wine.n_train,
                total / len(members),
                torch.tensor([len(members) / wine.n_train]),
            ]
        )
        torch.testing.assert_close(
            model.from_pooled(pooled[None])[0], batched[k], rtol=1e-5, atol=1e-5
        )


def test_kkt_residual_vanishes_at_the_learners_optimum(learner, masks):
    optimum = learner.fit_batch(masks)
    assert kkt_residual(learner, optimum, masks).max() < 1e-3
    assert kkt_residual(learner, torch.zeros_like(optimum), masks).min() > 1.0


def test_each_loss_term_equals_a_direct_computation(wine, learner, model, masks):
    Z = element_features(wine.X_train, wine.y_train, wine.n_classes)
    targets = learner.fit_batch(masks)
    scaler = TargetScaler.fit(targets.numpy())
    unlabelled = masks[:2].flip(dims=[1])
    weights = LossWeights(global_kkt=0.3, local_utility=2.0, l1=0.01, l2=0.02)
    total, terms = modelpred_loss(model, learner, scaler, Z, masks, targets, unlabelled, weights)

    predicted = scaler.inverse(model(masks, Z))
    mse = ((model(masks, Z) - scaler.transform(targets)) ** 2).mean()
    torch.testing.assert_close(terms["mse"], mse)

    X, y = torch.as_tensor(wine.X_train), torch.as_tensor(wine.y_train)
    C = learner.config.C
    residuals = []
    all_masks = torch.cat([masks, unlabelled])
    all_params = torch.cat([predicted, scaler.inverse(model(unlabelled, Z))])
    for mask, theta in zip(all_masks, all_params, strict=True):  # the formula, one subset at a time
        coef = theta.reshape(3, -1)
        W, b = coef[:, :-1], coef[:, -1]
        p = torch.softmax(X[mask] @ W.T + b, dim=1) - torch.nn.functional.one_hot(y[mask], 3)
        grad_W = W + C * p.T @ X[mask]
        grad_b = C * p.sum(dim=0)
        residuals.append(grad_W.norm() + grad_b.norm())
    torch.testing.assert_close(terms["global"], torch.stack(residuals).mean(), rtol=1e-4, atol=1e-4)

    def mean_loss(theta, mask):
        coef = theta.reshape(3, -1)
        logits = X[mask] @ coef[:, :-1].T + coef[:, -1]
        return torch.nn.functional.cross_entropy(logits, y[mask])

    gaps = [
        (mean_loss(p, m) - mean_loss(t, m)).abs()
        for p, t, m in zip(predicted, targets, masks, strict=True)
    ]
    torch.testing.assert_close(terms["local"], torch.stack(gaps).mean(), rtol=1e-4, atol=1e-5)

    matrices = [p for p in model.parameters() if p.ndim == 2]
    torch.testing.assert_close(terms["l1"], sum(w.abs().sum() for w in matrices))
    torch.testing.assert_close(terms["l2"], sum(torch.linalg.matrix_norm(w) for w in matrices))
    expected = (
        mse + 0.3 * terms["global"] + 2.0 * terms["local"] + 0.01 * terms["l1"] + 0.02 * terms["l2"]
    )
    torch.testing.assert_close(total, expected)
    # Strength 0 leaves a term out entirely.
    _, only_mse = modelpred_loss(model, learner, scaler, Z, masks, targets, None, LossWeights())
    assert set(only_mse) == {"mse"}


def test_predictor_round_trip_and_added_points(tmp_path, wine, model, masks, learner):
    Z = element_features(wine.X_train, wine.y_train, wine.n_classes)
    scaler = TargetScaler.fit(learner.fit_batch(masks).numpy())
    meta = PredictorMeta(
        width=32,
        n_params=learner.n_params,
        n_classes=3,
        scaler=scaler,
        learner=learner.config.model_dump(),
        dataset_fingerprint=wine.fingerprint,
        store_uri="memory://none",
    )
    predictor = Predictor(model, Z, meta)
    predicted = predictor.predict(masks)
    torch.testing.assert_close(predicted, scaler.inverse(model(masks.float(), Z)).detach())
    predictor.save(str(tmp_path / "ckpt"))
    loaded = Predictor.load(str(tmp_path / "ckpt"))
    torch.testing.assert_close(loaded.predict(masks), predicted)
    assert loaded.meta.dataset_fingerprint == wine.fingerprint
    # Adding no new point changes nothing; adding the held-out points moves the prediction.
    X_new, y_new = wine.X_val[:5], wine.y_val[:5]
    none = np.zeros((len(masks), 5), dtype=bool)
    torch.testing.assert_close(loaded.predict_with_points(masks, X_new, y_new, none), predicted)
    moved = loaded.predict_with_points(masks, X_new, y_new, ~none)
    assert (moved - predicted).abs().max() > 1e-6
    with pytest.raises(ValueError, match=rf"masks must have shape \(B, {wine.n_train}\)"):
        loaded.predict(np.ones((2, 5), dtype=bool))
    with pytest.raises(FileNotFoundError, match="no mp-ray predictor checkpoint"):
        Predictor.load(str(tmp_path / "missing"))


@pytest.mark.s3
def test_predictor_checkpoint_on_s3(s3_server, s3_bucket, wine, model, masks, learner):
    Z = element_features(wine.X_train, wine.y_train, wine.n_classes)
    scaler = TargetScaler.fit(learner.fit_batch(masks).numpy())
    meta = PredictorMeta(32, learner.n_params, 3, scaler, {}, wine.fingerprint, "x")
    predictor = Predictor(model, Z, meta)
    uri = f"s3://{s3_bucket}/ckpt"
    predictor.save(uri, s3_server)
    torch.testing.assert_close(
        Predictor.load(uri, s3_server).predict(masks), predictor.predict(masks)
    )


def test_centred_pooling_is_permutation_invariant_and_the_uncentred_form_shifted(wine, masks):
    Z = element_features(wine.X_train, wine.y_train, wine.n_classes)
    center = torch.as_tensor(np.random.default_rng(2).random(wine.n_train), dtype=torch.float32)
    torch.manual_seed(0)
    centred = SetFunction(Z.shape[1], 10, width=16, center=center)
    plain = SetFunction(Z.shape[1], 10, width=16)
    plain.load_state_dict({k: v for k, v in centred.state_dict().items() if k != "center"})
    Phi = centred.embed(Z)
    soft = torch.cat([masks.float(), torch.rand(2, wine.n_train)])  # {0, 1} and soft rows
    # v(m) − v(m̄): the uncentred views shifted by those of the mean training mask.
    shift = plain.pooled(center[None], Phi, wine.n_train)
    torch.testing.assert_close(
        centred.pooled(soft, Phi, wine.n_train), plain.pooled(soft, Phi, wine.n_train) - shift
    )
    # Permuting the points, their masks and m̄ together changes no prediction.
    order = torch.randperm(wine.n_train, generator=torch.Generator().manual_seed(1))
    permuted = SetFunction(Z.shape[1], 10, width=16, center=center[order])
    permuted.load_state_dict({**centred.state_dict(), "center": center[order]})
    torch.testing.assert_close(
        permuted(soft[:, order], Z[order]), centred(soft, Z), rtol=1e-5, atol=1e-5
    )


def test_centred_predictor_round_trip_soft_and_added_points(tmp_path, wine, masks, learner):
    Z = element_features(wine.X_train, wine.y_train, wine.n_classes)
    center = masks.float().mean(dim=0)
    torch.manual_seed(0)
    model = SetFunction(Z.shape[1], learner.n_params, width=16, center=center)
    meta = PredictorMeta(
        width=16,
        n_params=learner.n_params,
        n_classes=3,
        scaler=TargetScaler.fit(learner.fit_batch(masks).numpy()),
        learner=learner.config.model_dump(),
        dataset_fingerprint=wine.fingerprint,
        store_uri="memory://none",
    )
    Predictor(model, Z, meta).save(str(tmp_path / "ckpt"))
    loaded = Predictor.load(str(tmp_path / "ckpt"))
    torch.testing.assert_close(loaded.model.center, center)
    predicted = loaded.predict(masks)
    torch.testing.assert_close(predicted, meta.scaler.inverse(model(masks.float(), Z)).detach())
    torch.testing.assert_close(loaded.predict_soft(masks.float()).detach(), predicted)
    # A new point is in no training subset (m̄ = 0 there): it adds its whole φ to the sum,
    # which equals a ground set extended by that point with m̄ = 0 for it.
    X_new, y_new = wine.X_val[:2], wine.y_val[:2]
    new_masks = np.ones((len(masks), 2), dtype=bool)
    added = loaded.predict_with_points(masks, X_new, y_new, new_masks)
    Z_all = torch.cat([Z, element_features(X_new, y_new, wine.n_classes)])
    extended = SetFunction(Z.shape[1], learner.n_params, width=16, center=center)
    extended.load_state_dict(model.state_dict())
    all_masks = torch.cat([masks.float(), torch.ones(len(masks), 2)], dim=1)
    views = extended.pooled(all_masks, extended.embed(Z_all), wine.n_train)
    torch.testing.assert_close(added, meta.scaler.inverse(extended.from_pooled(views)).detach())


def test_a_checkpoint_without_centring_loads_and_predicts_as_before(tmp_path, wine, masks, model):
    Z = element_features(wine.X_train, wine.y_train, wine.n_classes)
    assert model.center is None and "center" not in model.state_dict()
    meta = PredictorMeta(
        width=32,
        n_params=model.n_params,
        n_classes=3,
        scaler=TargetScaler(np.zeros(model.n_params), np.ones(model.n_params)),
        learner={},
        dataset_fingerprint=wine.fingerprint,
        store_uri="memory://none",
    )
    Predictor(model, Z, meta).save(str(tmp_path / "old"))
    loaded = Predictor.load(str(tmp_path / "old"))
    assert loaded.model.center is None
    with torch.no_grad():
        total = masks.float() @ model.embed(Z)
        size = masks.float().sum(dim=1, keepdim=True)
        views = torch.cat([total / wine.n_train, total / size, size / wine.n_train], dim=1)
        torch.testing.assert_close(loaded.predict(masks), model.from_pooled(views))
