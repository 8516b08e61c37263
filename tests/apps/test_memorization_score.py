"""Memorisation scored by the probability of the own label (the default) or by 0/1
correctness, from exact retraining against scikit-learn fitted subset by subset."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mp_ray.apps.memorization import memorization, sample_masks
from mp_ray.apps.models import RetrainedModels
from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner

N, SUBSETS, ALPHA, SEED = 150, 120, 0.7, 3


@pytest.fixture(scope="module")
def setting():
    """breast_cancer cut to 150 training points, 5% of them mislabelled, with its retrained
    models and scikit-learn's fit of each sampled subset."""
    data = load_dataset(
        DatasetConfig(source="sklearn", name="breast_cancer", max_train=N, flip_fraction=0.05)
    )
    learner = make_learner(
        LearnerConfig(kind="logistic", C=1.0, tol=1e-10),
        data.X_train,
        data.y_train,
        data.n_classes,
    )
    masks = sample_masks(N, SUBSETS, ALPHA, SEED)
    X = data.X_train.astype(np.float64)
    fits = [
        LogisticRegression(C=1.0, tol=1e-10, solver="newton-cholesky").fit(X[m], data.y_train[m])
        for m in masks
    ]
    return data, RetrainedModels(learner), masks, fits


def gap(masks: np.ndarray, scores: np.ndarray, i: int, j: int) -> float:
    """mean(scores[:, j] | i ∈ S) − mean(scores[:, j] | i ∉ S), ``scores (B, m)``."""
    return scores[masks[:, i], j].mean() - scores[~masks[:, i], j].mean()


def test_probability_score_is_the_gap_in_the_own_label_probability(setting):
    data, models, masks, fits = setting
    result = memorization(models, data.X_test, data.y_test, SUBSETS, ALPHA, SEED)
    assert result.score == "probability"
    rows = np.arange(N)
    own = np.array([fit.predict_proba(data.X_train)[rows, data.y_train] for fit in fits])
    expected = [gap(masks, own, i, i) for i in range(N)]
    np.testing.assert_allclose(result.memorization, expected, atol=1e-5)
    test_own = np.array(
        [fit.predict_proba(data.X_test)[np.arange(len(data.y_test)), data.y_test] for fit in fits]
    )
    for i, j in [(0, 0), (5, 7), (149, 11)]:
        assert result.influence[i, j] == pytest.approx(gap(masks, test_own, i, j), abs=1e-5)
    # The standard error of a difference of two means, for one point by hand.
    inside, outside = own[masks[:, 0], 0], own[~masks[:, 0], 0]
    stderr = np.hypot(
        inside.std(ddof=1) / len(inside) ** 0.5, outside.std(ddof=1) / len(outside) ** 0.5
    )
    assert result.memorization_stderr[0] == pytest.approx(stderr, rel=1e-3)


def test_correct_score_is_feldmans_zero_one_definition(setting):
    data, models, masks, fits = setting
    result = memorization(models, data.X_test, data.y_test, SUBSETS, ALPHA, SEED, score="correct")
    assert result.score == "correct"
    correct = np.array([fit.predict(data.X_train) == data.y_train for fit in fits], dtype=float)
    expected = [gap(masks, correct, i, i) for i in range(N)]
    np.testing.assert_allclose(result.memorization, expected, atol=1e-12)


def test_probability_keeps_the_dynamic_range_and_finds_the_mislabelled_points(setting):
    data, models, _, _ = setting
    scores = {
        score: memorization(models, data.X_test, data.y_test, SUBSETS, ALPHA, SEED, score=score)
        for score in ("probability", "correct")
    }
    probability, correct = scores["probability"].memorization, scores["correct"].memorization
    # 0/1 correctness leaves most points at exactly 0; the probability almost none.
    assert np.mean(correct == 0) > 0.5
    assert np.mean(probability == 0) < 0.05
    # A mislabelled point is memorised: its own-label probability rises when it is trained on.
    flipped = np.zeros(N, dtype=bool)
    flipped[data.flipped] = True
    assert probability[flipped].min() > np.median(probability[~flipped])
    assert np.all(probability[flipped] > 3 * scores["probability"].memorization_stderr[flipped])


def test_unknown_scores_and_regression_learners_are_refused(setting):
    data, models, _, _ = setting
    with pytest.raises(ValueError, match="unknown memorisation score 'loss'"):
        memorization(models, data.X_test, data.y_test, 10, score="loss")  # type: ignore[arg-type]
    regression = load_dataset(DatasetConfig(source="sklearn", name="diabetes", max_train=30))
    ridge = make_learner(
        LearnerConfig(kind="ridge"), regression.X_train, regression.y_train, regression.n_classes
    )
    with pytest.raises(ValueError, match="regression learner"):
        memorization(RetrainedModels(ridge), regression.X_test, regression.y_test, 10)
