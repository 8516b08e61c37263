"""The distilled datamodel against retraining, its online answers and its bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.baselines import full_data_params
from mp_ray.distill import distil, initial_synsets, synset_gradients
from mp_ray.distill.groups import removal_masks, single_removals
from mp_ray.distill.report import NO_CHANGE
from mp_ray.distill.supervision import retrain_without

HELD_OUT = "unions of 2 groups"


def test_reverse_steps_reproduce_the_supervised_retrained_models(distilled):
    model, report = distilled.model, distilled.report
    assert report.residual < 0.02
    retrained = retrain_without(model.learner, model.groups, single_removals(model.n_groups))
    error = torch.linalg.vector_norm(model.without(single_removals(model.n_groups)) - retrained)
    assert float(error / torch.linalg.vector_norm(retrained - model.theta)) < 0.02
    supervised = report.table["single groups"]
    assert not supervised["held_out"] and supervised["methods"][model.name]["pearson"] > 0.99


def test_held_out_unions_beat_no_change_and_influence_functions(distilled):
    entry = distilled.report.table[HELD_OUT]
    assert entry["held_out"] and entry["rows"] == 12
    ours, none, influence = (
        entry["methods"][name] for name in (distilled.model.name, NO_CHANGE, "influence functions")
    )
    # No change predicts the same for every removal: its correlations are undefined.
    assert np.isnan(none["pearson"]) and np.isnan(none["spearman"])
    assert none["targets_defined"] == 0 and none["change_error"] == pytest.approx(1.0)
    assert 0 < ours["targets_defined"] <= ours["targets"] == len(distilled.dataset.y_test)
    assert ours["pearson"] > 0.9 and ours["spearman"] > 0.9
    assert ours["rel_error"] < 0.5 * none["rel_error"]
    assert ours["change_error"] < 0.5
    assert ours["change_error"] < influence["change_error"]


def test_store_rows_are_scored_through_predict(distilled):
    entry = distilled.report.table["store test rows"]
    assert entry["held_out"] and entry["rows"] >= 3
    ours, none = entry["methods"][distilled.model.name], entry["methods"][NO_CHANGE]
    assert ours["pearson"] > 0 and ours["rel_error"] < none["rel_error"]


def test_predict_attribution_and_removals_agree(distilled):
    model, data = distilled.model, distilled.dataset
    removed = np.zeros((2, model.n_groups), dtype=bool)
    removed[0, [0, 3]] = True
    removed[1, 1] = True
    by_groups = model.without(removed)
    np.testing.assert_allclose(model.without([[0, 3], [1]]), by_groups)
    np.testing.assert_allclose(model.predict(removal_masks(model.groups, removed)), by_groups)
    # Half of a group removed moves half of its step; the full set is θ*.
    half = np.ones((1, data.n_train), dtype=bool)
    members = np.flatnonzero(model.groups == 2)
    half[0, members[: len(members) // 2]] = False
    fraction = (len(members) // 2) / len(members)
    np.testing.assert_allclose(model.predict(half)[0], model.theta + fraction * model.steps[2])
    full = np.ones((1, data.n_train), dtype=bool)
    np.testing.assert_allclose(model.predict(torch.as_tensor(full))[0], model.theta)

    matrix = model.attribution(data.X_test, data.y_test)
    assert matrix.shape == (model.n_groups, len(data.y_test))
    learner = model.learner
    expected = learner.margin(by_groups[1:], data.X_test, data.y_test) - learner.margin(
        model.theta[None], data.X_test, data.y_test
    )
    np.testing.assert_allclose(matrix[1], expected[0], atol=1e-10)
    losses = model.attribution(data.X_test, data.y_test, "loss")
    assert losses.shape == matrix.shape and not torch.equal(losses, matrix)


def test_bad_inputs_name_the_problem(distilled):
    model, data = distilled.model, distilled.dataset
    n, G = data.n_train, model.n_groups
    with pytest.raises(ValueError, match=rf"unknown groups \[{G}\]; groups are 0..{G - 1}"):
        model.without([[0], [G]])
    with pytest.raises(ValueError, match="unknown groups"):
        model.without([[-1]])
    with pytest.raises(ValueError, match=rf"removal flags must have shape \(R, {G}\)"):
        model.without(np.zeros((2, G + 1), dtype=bool))
    with pytest.raises(ValueError, match=rf"masks must have shape \(B, {n}\)"):
        model.predict(np.ones((2, n + 1), dtype=bool))
    with pytest.raises(ValueError, match=rf"masks must have shape \(B, {n}\)"):
        model.predict(np.ones(n, dtype=bool))
    with pytest.raises(ValueError, match="unknown objective 'accuracy'"):
        model.attribution(data.X_test, data.y_test, "accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target rows but"):
        model.attribution(data.X_test, data.y_test[:-1])
    with pytest.raises(ValueError, match="changes must have shape"):
        start = initial_synsets(model.learner, model.theta, model.groups, 1, "real", 0)
        distil(model.learner, model.theta, torch.zeros(G + 1, 31), start, 1, 0.1)


@pytest.mark.parametrize("init", ["real", "random"])
def test_choices_fixed_step_and_random_start(distilled, init):
    model = distilled.model
    learner, theta = model.learner, full_data_params(model.learner)
    changes = retrain_without(learner, model.groups, single_removals(model.n_groups)) - theta
    start = initial_synsets(learner, theta, model.groups, 2, init, root_seed=0)
    assert start.features.shape == (model.n_groups, 2, distilled.dataset.n_features)
    assert torch.allclose(start.labels.sum(dim=-1), torch.ones(()).double())
    fixed = distil(learner, theta, changes, start, 60, 0.05, learn_step=False)
    learned = distil(learner, theta, changes, start, 60, 0.05, learn_step=True)
    assert fixed.history[0] == pytest.approx(learned.history[0])
    for distillation in (fixed, learned):
        assert distillation.residual < 0.7 * distillation.history[0] ** 0.5
    # A fixed η stays where it starts: initial steps with the retrained changes' norm.
    initial = synset_gradients(learner, theta, start)
    assert fixed.eta == pytest.approx(float(changes.norm() / initial.norm()))
    assert learned.eta != pytest.approx(fixed.eta)
