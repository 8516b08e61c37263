"""Fidelity checks: retraining checked against itself agrees; a deliberately wrong predictor
(θ(D) for every subset, or θ(D) plus noise) is caught and warned about."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.apps import RetrainedModels, Utility
from mp_ray.apps.checks import (
    calibration_check,
    counterfactual_check,
    memorization_check,
    selection_check,
    value_check,
    value_sizes,
)
from mp_ray.apps.fidelity import SCALE, contribution_changes, sample_contribution_cases
from mp_ray.apps.valuation import RelativeTruncation
from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner


class FullDataModels:
    """A wrong predictor: the full-data model θ(D) whatever the subset (plus noise)."""

    def __init__(self, retrained: RetrainedModels, noise: float = 0.0) -> None:
        self.learner = retrained.learner
        self.full = retrained.predict(np.ones((1, retrained.n_train), dtype=bool))
        self.noise = noise
        self.generator = torch.Generator().manual_seed(0)

    @property
    def n_train(self) -> int:
        return self.learner.n_train

    def predict(self, masks: np.ndarray) -> torch.Tensor:
        params = self.full.expand(len(masks), -1).clone()
        shake = torch.randn(params.shape, generator=self.generator, dtype=params.dtype)
        return params + self.noise * shake


@pytest.fixture(scope="module")
def setting():
    data = load_dataset(DatasetConfig(source="sklearn", name="breast_cancer", max_train=80))
    learner = make_learner(
        LearnerConfig(kind="logistic", C=1.0, tol=1e-6), data.X_train, data.y_train, 2
    )
    return data, RetrainedModels(learner)


@pytest.mark.parametrize("method", ["tmc", "banzhaf", "loo"])
def test_value_check_passes_retraining_and_flags_the_full_data_model(setting, method):
    data, retrained = setting
    utility = Utility(retrained, data.X_val, data.y_val, "neg_loss")
    exact = value_check(retrained, retrained, utility, method, budget=36)
    assert exact.passed and exact.value == pytest.approx(1.0)
    assert exact.details[SCALE] == pytest.approx(1.0)
    wrong = value_check(FullDataModels(retrained), retrained, utility, method, budget=36)
    assert not wrong.passed and np.isnan(wrong.value)
    assert not exact.notes and "defined on 0 of" in wrong.notes[0]
    assert "WARNING" in wrong.line() and "undefined" in wrong.line()
    noisy = value_check(FullDataModels(retrained, 0.05), retrained, utility, method, budget=36)
    assert not noisy.passed  # changes of pure noise: ρ near 0
    assert noisy.models_retrained <= 36


def test_contribution_changes_are_the_differences_of_two_retrained_models(setting):
    data, retrained = setting
    n = retrained.n_train
    bases, points = sample_contribution_cases(n, np.array([30, 50]), 3, seed=1)
    assert not bases[np.arange(2)[:, None], points].any()  # the points are outside S
    utility = Utility(retrained, data.X_val, data.y_val, "neg_loss")
    changes = contribution_changes(retrained, bases, points, utility.of_params)
    g, j = 1, 2
    joined = bases[g].copy()
    joined[points[g, j]] = True
    expected = utility(joined[None])[0] - utility(bases[g][None])[0]
    assert changes[g, j] == pytest.approx(expected)
    # Per-point outputs: the toggled point's own column.
    scores = lambda params: retrained.learner.margin(  # noqa: E731
        params, retrained.learner.X, retrained.learner.y
    ).numpy()
    own = contribution_changes(retrained, bases, points, scores)
    margins = scores(retrained.predict(np.stack([bases[g], joined])))
    assert own[g, j] == pytest.approx(margins[1, points[g, j]] - margins[0, points[g, j]])


def test_memorization_check_passes_retraining_and_flags_the_full_data_model(setting):
    _, retrained = setting
    exact = memorization_check(retrained, retrained, alpha=0.7, budget=27)
    assert exact.passed and exact.value == pytest.approx(1.0) and exact.cases == 24
    assert not memorization_check(FullDataModels(retrained), retrained, 0.7, 27).passed


def test_tmc_check_compares_where_each_side_would_truncate(setting):
    data, retrained = setting
    utility = Utility(retrained, data.X_val, data.y_val, "neg_loss")
    fidelity = value_check(
        retrained, retrained, utility, "tmc", 18, truncation=RelativeTruncation(0.05)
    )
    assert fidelity.models_retrained == 18 + 2 + 2
    note = next(note for note in fidelity.notes if note.startswith("truncation: "))
    share = note.split("% of the checked")[0].split()[-1]
    assert note.endswith(f"by the predictor, {share}% by retraining")


def test_value_sizes_follow_the_estimator():
    n = 200
    tmc = value_sizes("tmc", n, 4000, seed=0)
    beta = value_sizes("beta", n, 4000, seed=0, alpha=16.0, beta=1.0)
    banzhaf = value_sizes("banzhaf", n, 4000, seed=0)
    assert tmc.max() <= n - 8 and abs(tmc.mean() - (n - 8) / 2) < 5
    assert beta.mean() < 0.2 * n  # Beta(16, 1) weighs small subsets
    assert abs(banzhaf.mean() - (n - 1) / 2) < 1


def test_selection_counterfactual_and_calibration_checks_flag_the_full_data_model(setting):
    data, retrained = setting
    wrong = FullDataModels(retrained)
    chosen = np.zeros(retrained.n_train, dtype=bool)
    chosen[:30] = True
    exact = selection_check(retrained, retrained, data.X_val, data.y_val, chosen, "neg_loss", 12)
    assert exact.passed and exact.value == pytest.approx(1.0)
    assert not selection_check(wrong, retrained, data.X_val, data.y_val, chosen, budget=12).passed

    targets = slice(0, 5)
    removal = np.arange(10)
    fidelity, retrained_change = counterfactual_check(
        retrained, retrained, data.X_test[targets], data.y_test[targets], removal, budget=8
    )
    assert fidelity.passed and fidelity.value == 1.0 and retrained_change.shape == (5,)
    flagged, _ = counterfactual_check(
        wrong, retrained, data.X_test[targets], data.y_test[targets], removal, budget=8
    )
    assert not flagged.passed and flagged.value == 0.0  # predicts no change at all

    exact = calibration_check(retrained, retrained, data.X_test, data.y_test, 0.8, 20, budget=8)
    assert exact.passed and exact.value == pytest.approx(1.0)
    wrong_spread = calibration_check(wrong, retrained, data.X_test, data.y_test, 0.8, 20, 8)
    assert not wrong_spread.passed


def test_a_budget_too_small_for_the_check_is_refused(setting):
    data, retrained = setting
    utility = Utility(retrained, data.X_val, data.y_val, "neg_loss")
    with pytest.raises(ValueError, match="--check 5: a tmc check needs at least 9"):
        value_check(retrained, retrained, utility, "tmc", budget=5)
