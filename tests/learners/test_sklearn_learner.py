"""``learner.kind: sklearn``: each subset fitted by the estimator itself, read in the linear
layout or by a user's extractor, and compared with the estimator fitted directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid

from mp_ray.config import LearnerConfig
from mp_ray.learners import make_learner
from mp_ray.learners.sklearn_learner import (
    EstimatorError,
    ExtractedSklearnLearner,
    LinearSklearnLearner,
)


def sklearn_learner(data, estimator: str, **fields):
    config = LearnerConfig(kind="sklearn", estimator=estimator, **fields)
    return make_learner(config, data.X_train, data.y_train, data.n_classes)


def layout(estimator) -> np.ndarray:
    """An estimator's coef_ and intercept_ as (c, p + 1), flattened."""
    coef = np.atleast_2d(estimator.coef_)
    intercept = np.broadcast_to(estimator.intercept_, (coef.shape[0],))
    return np.concatenate([coef, intercept[:, None]], axis=1).reshape(-1)


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_logistic_regression_is_the_estimator_fitted_with_the_subset_as_sample_weight(
    dataset, subsets, name
):
    data = dataset(name)
    learner = sklearn_learner(
        data, "sklearn.linear_model:LogisticRegression", params={"C": 0.5, "max_iter": 2000}
    )
    assert isinstance(learner, LinearSklearnLearner) and learner.weighted
    masks = subsets(data)
    params = learner.fit_batch(masks)
    assert params.shape == (len(masks), learner.n_outputs * (data.X_train.shape[1] + 1))
    outputs = learner.decision(params, data.X_test).numpy()
    for mask, theta, output in zip(masks, params.numpy(), outputs, strict=True):
        direct = LogisticRegression(C=0.5, max_iter=2000)
        direct.fit(data.X_train, data.y_train, sample_weight=mask.astype(float))
        np.testing.assert_array_equal(theta, layout(direct))
        # The outputs are its decision function (binary: the second class's logit).
        expected = direct.decision_function(data.X_test).reshape(output.shape)
        np.testing.assert_allclose(output, expected, rtol=1e-10, atol=1e-10)


def test_subset_rows_for_an_estimator_without_sample_weight_or_when_asked(dataset, subsets):
    data = dataset("breast_cancer")
    masks = subsets(data)
    lda = sklearn_learner(data, "sklearn.discriminant_analysis:LinearDiscriminantAnalysis")
    assert not lda.weighted  # its fit takes no sample_weight
    asked = sklearn_learner(
        data, "sklearn.linear_model:LogisticRegression", params={"C": 0.5}, sample_weight=False
    )
    assert not asked.weighted
    for learner, make in (
        (lda, LinearDiscriminantAnalysis),
        (asked, lambda: LogisticRegression(C=0.5)),
    ):
        params = learner.fit_batch(masks).numpy()
        for mask, theta in zip(masks, params, strict=True):
            direct = make().fit(data.X_train[mask], data.y_train[mask])
            np.testing.assert_array_equal(theta, layout(direct))
            predicted = learner.predict(torch.as_tensor(theta[None]), data.X_test)[0].numpy()
            np.testing.assert_array_equal(predicted, direct.predict(data.X_test))


def test_subsets_without_every_class_are_not_fitted_and_are_zero(dataset):
    data = dataset("breast_cancer")
    learner = sklearn_learner(data, "sklearn.linear_model:LogisticRegression")
    masks = np.zeros((3, data.n_train), dtype=bool)
    masks[1] = data.y_train == 1  # one class only: LogisticRegression's fit would refuse it
    masks[2] = True
    params = learner.fit_batch(masks)
    assert learner.degenerate(masks).tolist() == [True, True, False]
    assert not params[:2].any() and params[2].any()


def test_a_failing_fit_or_a_non_linear_estimator_is_an_error_naming_it(dataset):
    data = dataset("breast_cancer")
    full = np.ones((1, data.n_train), dtype=bool)
    refused = sklearn_learner(data, "sklearn.linear_model:LogisticRegression", params={"C": -1})
    with pytest.raises(EstimatorError, match="sklearn LogisticRegression failed to fit"):
        refused.fit_batch(full)
    centroids = sklearn_learner(data, "sklearn.neighbors:NearestCentroid")
    with pytest.raises(EstimatorError, match=r"no coef_ .* give learner\.extractor"):
        centroids.fit_batch(full)


def centroid_params(estimator: NearestCentroid) -> np.ndarray:
    """The class centroids, flattened ``(C·p,)``."""
    return estimator.centroids_.reshape(-1)


def centroid_decision(params: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Binary nearest-centroid scores ``(K, m, 1)``: ‖x − μ_0‖² − ‖x − μ_1‖²."""
    centroids = params.reshape(len(params), 2, -1)  # (K, 2, p)
    distances = ((X[None, :, None, :] - centroids[:, None]) ** 2).sum(-1)  # (K, m, 2)
    return (distances[..., :1] - distances[..., 1:]).astype(np.float64)


def test_an_extractor_and_a_decision_function_carry_any_estimator(dataset, subsets):
    data = dataset("breast_cancer")
    learner = sklearn_learner(
        data,
        "sklearn.neighbors:NearestCentroid",
        extractor=f"{__name__}:centroid_params",
        decision=f"{__name__}:centroid_decision",
    )
    assert isinstance(learner, ExtractedSklearnLearner)
    assert learner.n_params == 2 * data.X_train.shape[1]
    assert not learner.intercept_mask().any()
    masks = subsets(data)
    params = learner.fit_batch(masks)
    predicted = learner.predict(params, data.X_test).numpy()
    for mask, theta, labels in zip(masks, params.numpy(), predicted, strict=True):
        direct = NearestCentroid().fit(data.X_train[mask], data.y_train[mask])
        np.testing.assert_array_equal(theta, centroid_params(direct))
        np.testing.assert_array_equal(labels, direct.predict(data.X_test))


def test_an_estimator_has_no_objective_capabilities_and_is_not_taken_as_convex(dataset):
    learner = sklearn_learner(dataset("wine"), "sklearn.linear_model:LogisticRegression")
    assert not learner.convex
    for method in ("per_sample_loss", "objective", "objective_grad", "hvp", "per_sample_grads"):
        assert not learner.provides(method), method
    assert learner.output_metric() is not None  # linear: the predictor fits in output space
