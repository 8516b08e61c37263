"""Deletion curves: removal subsets and errors against retraining, with a real learner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.apps.models import RetrainedModels
from mp_ray.baselines import FullDataModel, InfluenceFunction
from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import load_dataset
from mp_ray.evaluation.deletion import RETRAINING, deletion_curve, error_curve, removal_subsets
from mp_ray.learners import make_learner


@pytest.fixture(scope="module")
def learner():
    data = load_dataset(DatasetConfig(source="sklearn", name="iris", classes=[0, 1]))
    return make_learner(LearnerConfig(kind="logistic"), data.X_train, data.y_train, 2)


def test_removal_subsets_remove_the_share_asked_and_are_reproducible():
    masks, levels = removal_subsets(40, [0.0, 0.25, 1.0], repetitions=3, seed=5)
    assert masks.shape == (9, 40) and levels.tolist() == [0.0] * 3 + [0.25] * 3 + [1.0] * 3
    assert (40 - masks.sum(axis=1)).tolist() == [0] * 3 + [10] * 3 + [40] * 3
    assert len({masks[k].tobytes() for k in (3, 4, 5)}) == 3  # repetitions differ
    again, _ = removal_subsets(40, [0.0, 0.25, 1.0], repetitions=3, seed=5)
    np.testing.assert_array_equal(masks, again)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        removal_subsets(40, [1.5], repetitions=3, seed=5)


def test_error_curve_summarises_by_level_with_retraining_as_the_change():
    actual = torch.tensor([[3.0, 4.0], [0.0, 5.0], [1.0, 0.0]])
    predicted = {"zero": torch.zeros(3, 2)}
    rows = error_curve(np.array([0.5, 0.5, 0.9]), predicted, actual, torch.zeros(1, 2))
    by = {(row["method"], row["level"]): row for row in rows}
    assert [row["level"] for row in rows] == [0.5, 0.5, 0.9, 0.9]
    assert by["zero", 0.5]["error_mean"] == pytest.approx(5.0)
    assert by["zero", 0.5]["error_std"] == pytest.approx(0.0)
    assert by["zero", 0.9]["rel_error_mean"] == pytest.approx(1.0)
    assert by[RETRAINING, 0.5]["error_mean"] == pytest.approx(5.0)  # ‖θ − 0‖


def test_deletion_curve_ranks_retraining_influence_and_the_full_model(learner):
    retrain = RetrainedModels(learner)
    methods = {
        "full data": FullDataModel(learner),
        "influence": InfluenceFunction(learner),
        "retrained again": retrain,
    }
    rows = deletion_curve(methods, retrain, learner.n_train, [0.1, 0.5], repetitions=4, seed=1)
    by = {(row["method"], row["level"]): row for row in rows}
    for share in (0.1, 0.5):
        assert by["retrained again", share]["error_mean"] < 1e-5
        change = by[RETRAINING, share]["error_mean"]
        assert by["full data", share]["error_mean"] == pytest.approx(change, rel=1e-4)
        assert by["influence", share]["error_mean"] < change
        assert all(by[name, share]["repetitions"] == 4 for name in ("influence", RETRAINING))
    assert by[RETRAINING, 0.5]["error_mean"] > by[RETRAINING, 0.1]["error_mean"]
    assert all(row["seconds_per_model"] > 0 for row in rows)
