"""Convex learners against scikit-learn's optimum of the same objective, and their calculus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from learner_checks import check_closed_form_derivatives, random_params
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.linear_model import Ridge as SkRidge
from sklearn.linear_model import RidgeClassifier

from mp_ray.config import LearnerConfig
from mp_ray.learners import Learner, make_learner

CLASSIFICATION = ("breast_cancer", "wine", "digits")


def sklearn_params(model, n_out: int) -> np.ndarray:
    """scikit-learn's coef_ and intercept_ in mp-ray's layout, (c·(p+1),)."""
    coef = np.atleast_2d(model.coef_).reshape(n_out, -1)
    intercept = np.atleast_1d(model.intercept_).reshape(n_out, 1)
    return np.concatenate([coef, intercept], axis=1).reshape(-1)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_logistic_matches_sklearn_optimum(dataset, subsets, name):
    data = dataset(name)
    learner = make_learner(
        LearnerConfig(kind="logistic", C=0.5), data.X_train, data.y_train, data.n_classes
    )
    masks = subsets(data)
    params = learner.fit_batch(masks).numpy()
    for mask, theta in zip(masks, params, strict=True):
        reference = SkLogistic(C=0.5, tol=1e-10, max_iter=10000).fit(
            data.X_train[mask], data.y_train[mask]
        )
        assert relative_error(theta, sklearn_params(reference, learner.n_outputs)) <= 1e-4
    if learner.n_outputs > 1:  # multinomial intercepts sum to zero, as scikit-learn's do
        intercepts = params.reshape(len(masks), learner.n_outputs, -1)[..., -1]
        np.testing.assert_allclose(intercepts.sum(axis=1), 0, atol=1e-10)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_ridge_classifier_matches_sklearn_optimum(dataset, subsets, name):
    data = dataset(name)
    learner = make_learner(
        LearnerConfig(kind="ridge", alpha=3.0), data.X_train, data.y_train, data.n_classes
    )
    masks = subsets(data, seed=1)
    params = learner.fit_batch(masks).numpy()
    for mask, theta in zip(masks, params, strict=True):
        reference = RidgeClassifier(alpha=3.0, solver="cholesky").fit(
            data.X_train[mask], data.y_train[mask]
        )
        assert relative_error(theta, sklearn_params(reference, learner.n_outputs)) <= 1e-8


def test_ridge_regression_matches_sklearn(dataset, subsets):
    data = dataset("diabetes")
    learner = make_learner(LearnerConfig(kind="ridge", alpha=0.7), data.X_train, data.y_train, 1)
    masks = subsets(data, seed=2)
    params = learner.fit_batch(masks)
    r2 = learner.score(params, data.X_test, data.y_test)
    for mask, theta, score in zip(masks, params.numpy(), r2.tolist(), strict=True):
        reference = SkRidge(alpha=0.7, solver="cholesky").fit(
            data.X_train[mask], data.y_train[mask]
        )
        assert relative_error(theta, sklearn_params(reference, 1)) <= 1e-8
        assert score == pytest.approx(reference.score(data.X_test, data.y_test), abs=1e-10)


@pytest.mark.parametrize("kind", ["logistic", "ridge"])
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_closed_form_derivatives_match_autograd(dataset, subsets, name, kind):
    data = dataset(name)
    learner = make_learner(LearnerConfig(kind=kind), data.X_train, data.y_train, data.n_classes)
    check_closed_form_derivatives(learner, subsets(data)[:3])


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_logistic_hessian_matches_hvp(dataset, subsets, name):
    data = dataset(name)
    learner = make_learner(
        LearnerConfig(kind="logistic"), data.X_train, data.y_train, data.n_classes
    )
    masks = subsets(data)[:2]
    params, v = random_params(learner, 2), random_params(learner, 2, seed=1)
    hessian = learner.hessian(params, masks)
    torch.testing.assert_close(hessian, hessian.transpose(1, 2))
    torch.testing.assert_close(
        torch.einsum("kde,ke->kd", hessian, v), learner.hvp(params, masks, v)
    )


@pytest.mark.parametrize("kind", ["logistic", "ridge"])
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_per_sample_grads_add_up_to_the_objective_gradient(dataset, subsets, name, kind):
    data = dataset(name)
    learner = make_learner(LearnerConfig(kind=kind), data.X_train, data.y_train, data.n_classes)
    mask = subsets(data)[:1]
    params = random_params(learner, 1)
    per_sample = learner.per_sample_grads(params[0], data.X_train, data.y_train)
    assert per_sample.shape == (data.n_train, learner.n_params)
    # J_S = R(θ) + scale·Σ_{i∈S} ℓ_i; R's gradient is the objective's on the empty subset.
    scale = learner.C if kind == "logistic" else 1.0
    data_part = scale * torch.as_tensor(mask[0], dtype=torch.float64) @ per_sample
    regulariser = learner.objective_grad(params, np.zeros_like(mask))[0]
    torch.testing.assert_close(learner.objective_grad(params, mask)[0], regulariser + data_part)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_logistic_closed_form_per_sample_grads_equal_autodiff(dataset, name):
    data = dataset(name)
    learner = make_learner(
        LearnerConfig(kind="logistic"), data.X_train, data.y_train, data.n_classes
    )
    theta = random_params(learner, 1)[0]
    X, y = data.X_test, data.y_test  # not the training set the learner holds
    autodiff = Learner.per_sample_grads(learner, theta, X, y)
    torch.testing.assert_close(learner.per_sample_grads(theta, X, y), autodiff)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_logistic_tolerance_is_the_relative_parameter_error(dataset, subsets, name):
    """At a loose tol the error against the optimum stays within a small factor of tol
    (the stop uses a quasi-Newton estimate of it) and shrinks with tol."""
    data = dataset(name)
    masks = subsets(data, seed=5)[:6]
    optimum = make_learner(
        LearnerConfig(kind="logistic", tol=1e-10), data.X_train, data.y_train, data.n_classes
    ).fit_batch(masks)
    errors = {}
    for tol in (3e-2, 1e-3):
        config = LearnerConfig(kind="logistic", tol=tol)
        fitted = make_learner(config, data.X_train, data.y_train, data.n_classes).fit_batch(masks)
        error = torch.linalg.vector_norm(fitted - optimum, dim=1)
        errors[tol] = error / torch.linalg.vector_norm(optimum, dim=1)
        assert errors[tol].max() <= 2 * tol
    assert errors[1e-3].max() < errors[3e-2].max()


def test_digits_fits_need_few_full_evaluations(dataset):
    """The solver's cost in its own unit (evaluations of all n points per model), not in
    seconds: from the anchor, preconditioned by its Hessian, a float32 digits model at
    tol 0.03 took 4.2 here and 4.3 in benchmarks/retrain_throughput.py."""
    data = dataset("digits")
    masks = np.random.default_rng(0).random((64, data.n_train)) < 0.5
    config = LearnerConfig(kind="logistic", tol=0.03, dtype="float32")
    learner = make_learner(config, data.X_train, data.y_train, data.n_classes)
    evaluate, rows = learner._evaluate, []

    def counted(params: torch.Tensor, weights: torch.Tensor, order: int):
        rows.append(params.shape[0] if order == 1 else 0)
        return evaluate(params, weights, order)

    learner._evaluate = counted
    learner.fit_batch(masks[:1])  # the anchor's solve is not a per-model cost
    rows.clear()
    learner.fit_batch(masks)
    assert sum(rows) / len(masks) <= 5.0


@pytest.mark.parametrize("kind", ["logistic", "ridge"])
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_fit_is_optimal_and_independent_of_batch_mates(dataset, subsets, name, kind):
    data = dataset(name)
    learner = make_learner(LearnerConfig(kind=kind), data.X_train, data.y_train, data.n_classes)
    masks = subsets(data, seed=3)
    together = learner.fit_batch(masks)
    alone = learner.fit_batch(masks[[4, 2]])
    torch.testing.assert_close(together[[4, 2]], alone, rtol=1e-6, atol=1e-9)
    grad = learner.objective_grad(together, masks)
    start = learner.objective_grad(torch.zeros_like(together), masks)
    ratio = torch.linalg.vector_norm(grad, dim=1) / torch.linalg.vector_norm(start, dim=1)
    assert ratio.max() <= 1e-8


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_logistic_converges_on_tiny_subsets(dataset, name):
    """A few points per class: nearly separable, far from every anchor."""
    data = dataset(name)
    rng = np.random.default_rng(4)
    masks = np.zeros((3, data.n_train), dtype=bool)
    for row, per_class in enumerate((1, 2, 5)):
        for c in range(data.n_classes):
            picked = rng.choice(np.flatnonzero(data.y_train == c), per_class, replace=False)
            masks[row, picked] = True
    learner = make_learner(
        LearnerConfig(kind="logistic"), data.X_train, data.y_train, data.n_classes
    )
    params = learner.fit_batch(masks)
    grad = torch.linalg.vector_norm(learner.objective_grad(params, masks), dim=1)
    start = learner.objective_grad(torch.zeros_like(params), masks)
    assert (grad <= 1e-8 * torch.linalg.vector_norm(start, dim=1).clamp(min=1)).all()


@pytest.mark.parametrize("name", ["breast_cancer", "digits"])
def test_float32_logistic_is_close_to_float64(dataset, subsets, name):
    data = dataset(name)
    masks = subsets(data)[:3]
    exact = make_learner(
        LearnerConfig(kind="logistic"), data.X_train, data.y_train, data.n_classes
    ).fit_batch(masks)
    single = make_learner(
        LearnerConfig(kind="logistic", dtype="float32"), data.X_train, data.y_train, data.n_classes
    ).fit_batch(masks)
    assert single.dtype == torch.float32
    error = torch.linalg.vector_norm(single.double() - exact, dim=1)
    assert (error <= 1e-3 * torch.linalg.vector_norm(exact, dim=1)).all()


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_degenerate_subsets_are_finite_zeros_and_flagged(dataset, subsets, name):
    data = dataset(name)
    masks = np.zeros((3, data.n_train), dtype=bool)  # row 0: empty
    masks[1, data.y_train == 0] = True  # one class only
    masks[2, np.flatnonzero(data.y_train == 1)[:1]] = True  # a single point
    masks = np.vstack([masks, subsets(data)[:1]])
    learner = make_learner(
        LearnerConfig(kind="logistic"), data.X_train, data.y_train, data.n_classes
    )
    params = learner.fit_batch(masks)
    assert learner.degenerate(masks).tolist() == [True, True, True, False]
    assert (params[:3] == 0).all() and torch.isfinite(params).all() and (params[3] != 0).any()
    ridge = make_learner(LearnerConfig(kind="ridge"), data.X_train, data.y_train, data.n_classes)
    ridge_params = ridge.fit_batch(masks)
    assert ridge.degenerate(masks).tolist() == [True, False, False, False]
    assert torch.isfinite(ridge_params).all() and (ridge_params[0] == 0).all()
    assert (ridge_params[1:] != 0).any(dim=1).all()


@pytest.mark.parametrize("kind", ["logistic", "svm", "ridge"])
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_margin_prediction_and_accuracy_agree(dataset, subsets, name, kind):
    data = dataset(name)
    learner = make_learner(LearnerConfig(kind=kind), data.X_train, data.y_train, data.n_classes)
    params = learner.fit_batch(subsets(data)[:2])
    assert learner.decision(params, data.X_test).shape == (2, len(data.y_test), learner.n_outputs)
    margins = learner.margin(params, data.X_test, data.y_test)
    correct = learner.predict(params, data.X_test) == torch.as_tensor(data.y_test)
    # A positive correct-class margin means a correct prediction (ties aside).
    assert ((margins > 0) == correct).all()
    accuracy = learner.score(params, data.X_test, data.y_test)
    torch.testing.assert_close(accuracy, correct.double().mean(dim=1))
    assert accuracy.min() > 0.85
    losses = learner.per_sample_loss(params, data.X_test, data.y_test)
    assert losses.shape == (2, len(data.y_test)) and (losses >= 0).all()


def test_bad_inputs_are_named(dataset):
    data = dataset("wine")
    learner = make_learner(LearnerConfig(kind="logistic"), data.X_train, data.y_train, 3)
    with pytest.raises(ValueError, match=rf"masks must have shape \(B, {data.n_train}\)"):
        learner.fit_batch(np.ones((2, data.n_train + 1), dtype=bool))
    with pytest.raises(ValueError, match="classification dataset"):
        make_learner(LearnerConfig(kind="logistic"), data.X_train, data.y_train.astype(float), 1)
