"""Convex learners against scikit-learn's optimum of the same objective, and their calculus."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.linear_model import Ridge as SkRidge
from sklearn.linear_model import RidgeClassifier

from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner

DATASETS = ("breast_cancer", "wine", "digits")


@pytest.fixture(scope="module", params=DATASETS)
def dataset(request):
    return load_dataset(DatasetConfig(source="sklearn", name=request.param))


def subsets(n: int, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Bernoulli(0.5) masks and small subsets (15% of n) that still hold every class."""
    rng = np.random.default_rng(seed)
    masks = np.vstack([rng.random((3, n)) < 0.5, rng.random((3, n)) < 0.15])
    classes = np.unique(y)
    for mask in masks:
        for c in classes:  # keep every class present so the optimum is finite
            mask[rng.choice(np.flatnonzero(y == c), size=2, replace=False)] = True
    return masks


def sklearn_params(model, n_out: int) -> np.ndarray:
    coef = np.atleast_2d(model.coef_).reshape(n_out, -1)
    intercept = np.atleast_1d(model.intercept_).reshape(n_out, 1)
    return np.concatenate([coef, intercept], axis=1).reshape(-1)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_logistic_matches_sklearn_optimum(dataset):
    learner = make_learner(
        LearnerConfig(kind="logistic", C=0.5), dataset.X_train, dataset.y_train, dataset.n_classes
    )
    masks = subsets(dataset.n_train, dataset.y_train)
    params = learner.fit_batch(masks).numpy()
    for mask, theta in zip(masks, params, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = SkLogistic(C=0.5, tol=1e-12, max_iter=20000).fit(
                dataset.X_train[mask].astype(np.float64), dataset.y_train[mask]
            )
        assert relative_error(theta, sklearn_params(reference, learner.n_outputs)) <= 1e-4


def test_ridge_matches_sklearn_optimum(dataset):
    learner = make_learner(
        LearnerConfig(kind="ridge", alpha=3.0), dataset.X_train, dataset.y_train, dataset.n_classes
    )
    masks = subsets(dataset.n_train, dataset.y_train, seed=1)
    params = learner.fit_batch(masks).numpy()
    for mask, theta in zip(masks, params, strict=True):
        reference = RidgeClassifier(alpha=3.0, solver="cholesky").fit(
            dataset.X_train[mask].astype(np.float64), dataset.y_train[mask]
        )
        assert relative_error(theta, sklearn_params(reference, learner.n_outputs)) <= 1e-4


def test_ridge_regression_matches_sklearn():
    data = load_dataset(DatasetConfig(source="sklearn", name="diabetes"))
    learner = make_learner(LearnerConfig(kind="ridge", alpha=0.7), data.X_train, data.y_train, 1)
    masks = subsets(data.n_train, np.zeros(data.n_train), seed=2)
    params = learner.fit_batch(masks)
    r2 = learner.score(params, data.X_test, data.y_test)
    for mask, theta, score in zip(masks, params.numpy(), r2.tolist(), strict=True):
        reference = SkRidge(alpha=0.7, solver="cholesky").fit(
            data.X_train[mask].astype(np.float64), data.y_train[mask].astype(np.float64)
        )
        assert relative_error(theta, sklearn_params(reference, 1)) <= 1e-4
        assert score == pytest.approx(reference.score(data.X_test, data.y_test), abs=1e-6)


@pytest.mark.parametrize("kind", ["logistic", "ridge"])
def test_gradient_hvp_and_per_sample_grads_are_consistent(dataset, kind):
    learner = make_learner(
        LearnerConfig(kind=kind), dataset.X_train, dataset.y_train, dataset.n_classes
    )
    masks = subsets(dataset.n_train, dataset.y_train)[:3]
    params = torch.randn(3, learner.n_params, dtype=torch.float64) * 0.1
    # The closed-form gradient equals autograd of the objective.
    theta = params.clone().requires_grad_(True)
    autograd = torch.autograd.grad(learner.objective(theta, masks).sum(), theta)[0]
    torch.testing.assert_close(learner.objective_grad(params, masks), autograd)
    # Hessian-vector products equal finite differences of the gradient.
    v = torch.randn_like(params)
    eps = 1e-6
    finite = (
        learner.objective_grad(params + eps * v, masks)
        - learner.objective_grad(params - eps * v, masks)
    ) / (2 * eps)
    torch.testing.assert_close(learner.hvp(params, masks, v), finite, rtol=1e-5, atol=1e-5)
    # Σ_{i∈S} per-sample gradients, scaled as in the objective, plus the regulariser's.
    per_sample = learner.per_sample_grads(params[0], dataset.X_train, dataset.y_train)
    assert per_sample.shape == (dataset.n_train, learner.n_params)
    data_part = torch.as_tensor(masks[0], dtype=torch.float64) @ per_sample
    regulariser = learner.objective_grad(params[:1], np.zeros_like(masks[:1]))[0]
    scale = learner.C if kind == "logistic" else 1.0
    torch.testing.assert_close(
        learner.objective_grad(params[:1], masks[:1])[0], regulariser + scale * data_part
    )


@pytest.mark.parametrize("kind", ["logistic", "ridge"])
def test_fit_is_optimal_and_independent_of_batch_mates(dataset, kind):
    learner = make_learner(
        LearnerConfig(kind=kind), dataset.X_train, dataset.y_train, dataset.n_classes
    )
    masks = subsets(dataset.n_train, dataset.y_train, seed=3)
    together = learner.fit_batch(masks)
    alone = learner.fit_batch(masks[2:3])
    torch.testing.assert_close(together[2:3], alone, rtol=1e-6, atol=1e-7)
    grad = learner.objective_grad(together, masks)
    start = learner.objective_grad(torch.zeros_like(together), masks)
    ratio = torch.linalg.vector_norm(grad, dim=1) / torch.linalg.vector_norm(start, dim=1)
    assert ratio.max() < 1e-7


def test_degenerate_subsets_are_zero_and_flagged(dataset):
    learner = make_learner(
        LearnerConfig(kind="logistic"), dataset.X_train, dataset.y_train, dataset.n_classes
    )
    masks = np.zeros((3, dataset.n_train), dtype=bool)
    masks[1, dataset.y_train == 0] = True  # one class only
    masks[2, np.flatnonzero(dataset.y_train == 1)[:1]] = True  # a single point
    masks = np.vstack([masks, subsets(dataset.n_train, dataset.y_train)[:1]])
    params = learner.fit_batch(masks)
    assert torch.isfinite(params).all()
    assert learner.degenerate(masks).tolist() == [True, True, True, False]
    assert (params[:3] == 0).all() and (params[3] != 0).any()
    ridge = make_learner(
        LearnerConfig(kind="ridge"), dataset.X_train, dataset.y_train, dataset.n_classes
    )
    ridge_params = ridge.fit_batch(masks)
    assert ridge.degenerate(masks).tolist() == [True, False, False, False]
    assert torch.isfinite(ridge_params).all() and (ridge_params[0] == 0).all()


def test_margin_prediction_and_accuracy_agree(dataset):
    learner = make_learner(
        LearnerConfig(kind="logistic"), dataset.X_train, dataset.y_train, dataset.n_classes
    )
    params = learner.fit_batch(subsets(dataset.n_train, dataset.y_train)[:2])
    margins = learner.margin(params, dataset.X_test, dataset.y_test)
    correct = learner.predict(params, dataset.X_test) == torch.as_tensor(dataset.y_test)
    # A positive correct-class margin means a correct prediction (ties aside).
    assert ((margins > 0) == correct).float().mean() == 1.0
    torch.testing.assert_close(
        learner.score(params, dataset.X_test, dataset.y_test), correct.double().mean(dim=1)
    )
    assert learner.score(params, dataset.X_test, dataset.y_test).min() > 0.85


def test_bad_mask_shape_is_named(dataset):
    learner = make_learner(
        LearnerConfig(kind="logistic"), dataset.X_train, dataset.y_train, dataset.n_classes
    )
    with pytest.raises(ValueError, match=rf"masks must have shape \(K, {dataset.n_train}\)"):
        learner.fit_batch(np.ones((2, dataset.n_train + 1), dtype=bool))
