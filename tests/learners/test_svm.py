"""The squared-hinge linear SVM against scikit-learn's LinearSVC, and its calculus."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
import torch
from learner_checks import check_closed_form_derivatives, random_params
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import Dataset, load_dataset
from mp_ray.learners import SVM, Learner, make_learner

NAMES = ("breast_cancer", "wine")  # binary, and 3 classes one-vs-rest


@cache
def data(name: str) -> Dataset:
    """Standardised features as mp-ray loads them."""
    return load_dataset(DatasetConfig(source="sklearn", name=name))


def svm(name: str, **settings) -> SVM:
    dataset = data(name)
    config = LearnerConfig(kind="svm", **settings)
    return make_learner(config, dataset.X_train, dataset.y_train, dataset.n_classes)


def linear_svc(dataset: Dataset, mask: np.ndarray, C: float) -> np.ndarray:
    """LinearSVC's optimum on one subset in mp-ray's layout, (c·(p+1),): the primal solver
    (more points than features), to a tolerance far below the test's."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = LinearSVC(C=C, tol=1e-12, max_iter=100_000, dual=False)
        model.fit(dataset.X_train[mask].astype(np.float64), dataset.y_train[mask])
    coef = np.atleast_2d(model.coef_)
    return np.concatenate([coef, model.intercept_.reshape(-1, 1)], axis=1).reshape(-1)


@pytest.mark.parametrize("name", NAMES)
def test_svm_matches_linear_svc(subsets, name):
    dataset, C = data(name), 0.5
    learner = svm(name, C=C)
    masks = subsets(dataset)
    params = learner.fit_batch(masks)
    for mask, theta in zip(masks, params, strict=True):
        reference = torch.as_tensor(linear_svc(dataset, mask, C))
        error = torch.linalg.vector_norm(theta - reference) / torch.linalg.vector_norm(reference)
        assert error <= 1e-4
        # The same objective: LinearSVC's optimum is no lower than mp-ray's.
        objectives = learner.objective(torch.stack([theta, reference]), np.stack([mask, mask]))
        assert objectives[0] <= objectives[1] * (1 + 1e-12)
    # Predictions are LinearSVC's: the largest one-vs-rest output, or its sign.
    reference = LinearSVC(C=C, tol=1e-12, max_iter=100_000, dual=False)
    reference.fit(dataset.X_train[masks[0]], dataset.y_train[masks[0]])
    predicted = learner.predict(params[:1], dataset.X_test)[0].numpy()
    np.testing.assert_array_equal(predicted, reference.predict(dataset.X_test))


@pytest.mark.parametrize("name", NAMES)
def test_fit_is_optimal_and_independent_of_batch_mates(subsets, name):
    learner = svm(name)
    masks = subsets(data(name), seed=3)
    together = learner.fit_batch(masks)
    alone = torch.cat([learner.fit_batch(masks[[row]]) for row in (4, 2)])
    torch.testing.assert_close(together[[4, 2]], alone, rtol=1e-8, atol=1e-10)
    grad = learner.objective_grad(together, masks)
    start = learner.objective_grad(torch.zeros_like(together), masks)
    ratio = torch.linalg.vector_norm(grad, dim=1) / torch.linalg.vector_norm(start, dim=1)
    assert ratio.max() <= 1e-8


def test_nearly_separable_one_vs_rest_problems_converge():
    """digits: 10 classes, most of them separable from the rest, where L-BFGS stalls."""
    dataset = data("digits")
    masks = np.random.default_rng(0).random((3, dataset.n_train)) < 0.5
    learner = make_learner(
        LearnerConfig(kind="svm", max_iter=50), dataset.X_train, dataset.y_train, 10
    )
    params = learner.fit_batch(masks)
    grad = torch.linalg.vector_norm(learner.objective_grad(params, masks), dim=1)
    start = learner.objective_grad(torch.zeros_like(params), masks)
    assert (grad <= 1e-8 * torch.linalg.vector_norm(start, dim=1)).all()


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_derivatives_match_autograd(subsets, name):
    """The gradient and the generalized Hessian (no margin lies within eps of 1 here)."""
    learner = svm(name)
    masks = subsets(data(name))[:3]
    check_closed_form_derivatives(learner, masks)
    params, v = random_params(learner, 3), random_params(learner, 3, seed=1)
    hessian = learner.hessian(params, masks)
    torch.testing.assert_close(hessian, hessian.transpose(1, 2))
    torch.testing.assert_close(
        torch.einsum("kde,ke->kd", hessian, v), learner.hvp(params, masks, v)
    )


def test_one_vs_rest_problems_are_independent():
    """wine's Hessian is block-diagonal: class j's parameters only see problem j."""
    learner = svm("wine")
    q = learner.n_features + 1
    hessian = learner.hessian(random_params(learner, 1), np.ones((1, learner.n_train), bool))[0]
    blocks = hessian.reshape(3, q, 3, q)
    for j in range(3):
        for k in range(3):
            assert (blocks[j, :, k, :] == 0).all() == (j != k)


@pytest.mark.parametrize("name", NAMES)
def test_per_sample_grads_add_up_to_the_objective_gradient(subsets, name):
    dataset, learner = data(name), svm(name, C=0.7)
    mask = subsets(dataset)[:1]
    params = random_params(learner, 1)
    per_sample = learner.per_sample_grads(params[0], dataset.X_train, dataset.y_train)
    assert per_sample.shape == (dataset.n_train, learner.n_params)
    data_part = 0.7 * torch.as_tensor(mask[0], dtype=torch.float64) @ per_sample
    # J_S = ½‖θ‖² + C·Σ_{i∈S} ℓ_i: every parameter is penalised, the intercepts too.
    torch.testing.assert_close(learner.objective_grad(params, mask)[0], params[0] + data_part)
    X, y = dataset.X_test, dataset.y_test  # not the training set the learner holds
    autodiff = Learner.per_sample_grads(learner, params[0], X, y)
    torch.testing.assert_close(learner.per_sample_grads(params[0], X, y), autodiff)


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_subsets_are_finite_zeros_and_flagged(subsets, name):
    dataset = data(name)
    masks = np.zeros((3, dataset.n_train), dtype=bool)  # row 0: empty
    masks[1, dataset.y_train == 0] = True  # one class only
    masks[2, np.flatnonzero(dataset.y_train == 1)[:1]] = True  # a single point
    masks = np.vstack([masks, subsets(dataset)[:1]])
    learner = svm(name)
    params = learner.fit_batch(masks)
    assert learner.convex  # Newton steps refine its predictions (predictor.newton_steps)
    assert learner.degenerate(masks).tolist() == [True, True, True, False]
    assert (params[:3] == 0).all() and (params[3] != 0).any()


def test_float32_is_close_to_float64(subsets):
    masks = subsets(data("wine"))[:3]
    exact = svm("wine").fit_batch(masks)
    single = svm("wine", dtype="float32").fit_batch(masks)
    assert single.dtype == torch.float32
    error = torch.linalg.vector_norm(single.double() - exact, dim=1)
    assert (error <= 1e-3 * torch.linalg.vector_norm(exact, dim=1)).all()


def test_regression_data_is_refused():
    dataset = data("wine")
    with pytest.raises(ValueError, match="classification dataset"):
        make_learner(LearnerConfig(kind="svm"), dataset.X_train, dataset.y_train.astype(float), 1)
