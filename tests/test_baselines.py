"""Baselines: the full-data model and first-order influence functions, against retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.baselines import FullDataModel, InfluenceFunction
from mp_ray.config import DatasetConfig, LearnerConfig, SamplerConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner
from mp_ray.predictor.evaluation import evaluation_table, format_table
from mp_ray.predictor.rows import Rows
from mp_ray.sampling import make_sampler


@pytest.fixture(scope="module", params=["breast_cancer", "wine"])
def setting(request):
    data = load_dataset(DatasetConfig(source="sklearn", name=request.param))
    learner = make_learner(
        LearnerConfig(kind="logistic"), data.X_train, data.y_train, data.n_classes
    )
    return data, learner


def test_exact_and_conjugate_gradient_influence_agree(setting):
    data, learner = setting
    masks = make_sampler(SamplerConfig(kind="bernoulli", alpha=0.7), data.n_train, 0).masks(
        np.arange(4)
    )
    exact = InfluenceFunction(learner).predict(masks)
    cg = InfluenceFunction(learner, exact_max_dim=0).predict(masks)
    torch.testing.assert_close(cg, exact, rtol=1e-6, atol=1e-6)


def test_influence_tracks_leave_one_out_retraining(setting):
    data, learner = setting
    masks = make_sampler(SamplerConfig(kind="leave_one_out"), data.n_train, 0).masks(
        np.arange(1, 41)
    )
    influence = InfluenceFunction(learner)
    actual_change = learner.fit_batch(masks) - influence.theta
    predicted_change = influence.predict(masks) - influence.theta
    cosine = torch.nn.functional.cosine_similarity(predicted_change, actual_change, dim=1)
    assert cosine.mean() > 0.95
    torch.testing.assert_close(FullDataModel(learner).predict(masks[:2])[1], influence.theta)


def test_evaluation_table_of_the_truth_and_of_the_baselines(setting):
    data, learner = setting
    masks = make_sampler(SamplerConfig(kind="uniform_size", min_size=30), data.n_train, 1).masks(
        np.arange(60)
    )
    rows = Rows(np.arange(60), masks, learner.fit_batch(masks).numpy())

    class Truth:
        def predict(self, masks):
            return torch.as_tensor(rows.params)

    methods = {"truth": Truth(), "full": FullDataModel(learner), "if": InfluenceFunction(learner)}
    table = evaluation_table(learner, methods, rows, data)
    by = {(row["method"], row["subset size"]): row for row in table}
    truth = by[("truth", "all")]
    assert truth["rows"] == 60
    assert truth["rel_error"] < 1e-6 and truth["agreement"] == 1.0 and truth["accuracy_gap"] == 0
    assert truth["loss_spearman"] == pytest.approx(1.0)
    assert sum(row["rows"] for row in table if row["method"] == "full") == 2 * 60
    # Influence functions beat the full-data model on parameters, most on large subsets.
    assert by[("if", "all")]["rel_error"] < by[("full", "all")]["rel_error"]
    assert "loss_spearman" not in by[("full", "all")]  # a constant prediction has none
    assert "influence" not in format_table(table) and "truth" in format_table(table)
