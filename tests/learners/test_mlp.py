"""The MLP learner: seeded, vectorised SGD whose rows depend only on (data, mask, seed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.config import LearnerConfig
from mp_ray.learners import MLP, make_learner

SEEDS = np.arange(100, 108)


@pytest.fixture(scope="module")
def wine(dataset):
    return dataset("wine")


@pytest.fixture(scope="module")
def mlp(wine) -> MLP:
    config = LearnerConfig(kind="mlp", hidden=16, epochs=15, lr=0.1, batch_size=16)
    return make_learner(config, wine.X_train, wine.y_train, wine.n_classes)


@pytest.fixture(scope="module")
def masks(wine):
    rng = np.random.default_rng(0)
    masks = rng.random((8, wine.n_train)) < 0.5
    masks[0] = False  # empty
    masks[1] = rng.random(wine.n_train) < 0.1  # much smaller than the rest: idles
    return masks


@pytest.fixture(scope="module")
def trained(mlp, masks):
    return mlp.fit_batch(masks, SEEDS)


def test_rows_depend_only_on_mask_and_seed(mlp, masks, trained):
    again = mlp.fit_batch(masks[[5, 1]], SEEDS[[5, 1]])
    torch.testing.assert_close(again, trained[[5, 1]], rtol=1e-6, atol=1e-9)
    other_seed = mlp.fit_batch(masks[3:4], np.array([999]))
    assert (other_seed - trained[3:4]).abs().max() > 1e-2


def test_each_model_passes_over_its_own_subset_epochs_times(mlp, masks):
    index, real = mlp.minibatches(masks, SEEDS)
    cfg = mlp.config
    assert index.shape == real.shape
    assert index.shape[1] == cfg.epochs * -(-masks.sum(axis=1).max() // cfg.batch_size)
    for k, mask in enumerate(masks):
        visits = np.bincount(index[k][real[k]].numpy(), minlength=mask.size)
        np.testing.assert_array_equal(visits, cfg.epochs * mask)
        steps = -(-mask.sum() // cfg.batch_size) * cfg.epochs
        assert real[k, :steps, 0].all() and not real[k, steps:].any()


def test_training_is_vectorised_across_models(mlp, masks, monkeypatch):
    calls = []
    forward = MLP._forward
    monkeypatch.setattr(MLP, "_forward", lambda self, *a: calls.append(1) or forward(self, *a))
    mlp.fit_batch(masks, SEEDS)
    steps = mlp.minibatches(masks, SEEDS)[0].shape[1]
    assert len(calls) == steps  # one batched forward per step, not one per model


def test_training_reduces_the_objective_and_learns(mlp, wine, masks, trained):
    init = mlp.initial_params(SEEDS)
    before = mlp.objective(init, masks)[2:]
    after = mlp.objective(trained, masks)[2:]
    assert (after < 0.5 * before).all()
    assert mlp.score(trained[2:], wine.X_test, wine.y_test).mean() > 0.85


def test_empty_subset_keeps_its_initialisation(mlp, masks, trained):
    assert mlp.degenerate(masks).tolist() == [True] + [False] * 7
    torch.testing.assert_close(trained[0], mlp.initial_params(SEEDS[:1])[0])
    assert (trained[1] - mlp.initial_params(SEEDS[1:2])[0]).abs().max() > 1e-3


def test_gradients_and_hvp_are_consistent(mlp, wine, masks, trained):
    params, rows = trained[2:4], masks[2:4]
    grad = mlp.objective_grad(params, rows)
    v = torch.randn(params.shape, generator=torch.Generator().manual_seed(0), dtype=params.dtype)
    eps = 1e-6
    finite = (mlp.objective(params + eps * v, rows) - mlp.objective(params - eps * v, rows)) / (
        2 * eps
    )
    torch.testing.assert_close((grad * v).sum(1), finite, rtol=1e-5, atol=1e-8)
    finite_hv = (
        mlp.objective_grad(params + eps * v, rows) - mlp.objective_grad(params - eps * v, rows)
    ) / (2 * eps)
    torch.testing.assert_close(mlp.hvp(params, rows, v), finite_hv, rtol=1e-4, atol=1e-6)
    # The objective is the mean loss over S plus (weight_decay / 2)·‖θ‖².
    per_sample = mlp.per_sample_grads(params[0], wine.X_train, wine.y_train)
    weights = torch.as_tensor(rows[0], dtype=torch.float64)
    data_part = weights @ per_sample / weights.sum()
    torch.testing.assert_close(grad[0], data_part + mlp.config.weight_decay * params[0])
    assert mlp.intercept_mask().sum() == 16 + 3


def test_regression_mlp_fits(dataset):
    data = dataset("diabetes")
    y = (data.y_train - data.y_train.mean()) / data.y_train.std()
    config = LearnerConfig(kind="mlp", hidden=8, epochs=20, lr=0.05, batch_size=32)
    learner = make_learner(config, data.X_train, y, 1)
    masks = np.random.default_rng(1).random((3, data.n_train)) < 0.7
    params = learner.fit_batch(masks, np.arange(3))
    assert learner.decision(params, data.X_test).shape == (3, len(data.y_test), 1)
    before = learner.objective(learner.initial_params(np.arange(3)), masks)
    assert (learner.objective(params, masks) < 0.7 * before).all()
