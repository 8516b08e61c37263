"""The MLP learner: seeded, vectorised SGD whose rows depend only on (data, mask, seed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner


@pytest.fixture(scope="module")
def wine():
    return load_dataset(DatasetConfig(source="sklearn", name="wine"))


@pytest.fixture(scope="module")
def mlp(wine):
    config = LearnerConfig(kind="mlp", hidden=16, epochs=15, lr=0.1, batch_size=16)
    return make_learner(config, wine.X_train, wine.y_train, wine.n_classes)


@pytest.fixture(scope="module")
def masks(wine):
    masks = np.random.default_rng(0).random((8, wine.n_train)) < 0.5
    masks[0] = False
    return masks


@pytest.fixture(scope="module")
def trained(mlp, masks):
    return mlp.fit_batch(masks, np.arange(100, 108))


def test_rows_depend_only_on_mask_and_seed(mlp, masks, trained):
    again = mlp.fit_batch(masks[[5, 3]], np.array([105, 103]))
    torch.testing.assert_close(again, trained[[5, 3]], rtol=1e-6, atol=1e-8)
    other_seed = mlp.fit_batch(masks[3:4], np.array([999]))
    assert (other_seed - trained[3:4]).abs().max() > 1e-3


def test_training_reduces_the_objective_and_learns(mlp, wine, masks, trained):
    init = mlp.initial_params(np.arange(100, 108))
    before = mlp.objective(init, masks)[1:]
    after = mlp.objective(trained, masks)[1:]
    assert (after < 0.5 * before).all()
    assert mlp.score(trained[1:], wine.X_test, wine.y_test).mean() > 0.85


def test_empty_subset_keeps_its_initialisation(mlp, masks, trained):
    assert mlp.degenerate(masks).tolist() == [True] + [False] * 7
    torch.testing.assert_close(trained[0], mlp.initial_params(np.array([100]))[0])


def test_gradients_and_hvp_are_consistent(mlp, wine, masks, trained):
    params = trained[1:3]
    grad = mlp.objective_grad(params, masks[1:3])
    v = torch.randn_like(params)
    eps = 1e-6
    finite = (
        mlp.objective(params + eps * v, masks[1:3]) - mlp.objective(params - eps * v, masks[1:3])
    ) / (2 * eps)
    torch.testing.assert_close((grad * v).sum(1), finite, rtol=1e-4, atol=1e-7)
    hv = mlp.hvp(params, masks[1:3], v)
    finite_hv = (
        mlp.objective_grad(params + eps * v, masks[1:3])
        - mlp.objective_grad(params - eps * v, masks[1:3])
    ) / (2 * eps)
    torch.testing.assert_close(hv, finite_hv, rtol=1e-4, atol=1e-6)
    per_sample = mlp.per_sample_grads(params[0], wine.X_train, wine.y_train)
    weights = torch.as_tensor(masks[1], dtype=torch.float64)
    data_part = weights @ per_sample / weights.sum()
    torch.testing.assert_close(grad[0], data_part + mlp.config.weight_decay * params[0])
    assert mlp.intercept_mask().sum() == 16 + 3
