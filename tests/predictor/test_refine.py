"""Newton steps from the set function's prediction: a fixed point at each subset's own
optimum, closer to retraining than the set function alone, only for convex learners."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.config import DatasetConfig, LearnerConfig, SamplerConfig, parse_experiment
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner
from mp_ray.predictor.predictor import Predictor
from mp_ray.predictor.refine import (
    AUTO_NEWTON_STEPS,
    SET_FUNCTION_ALONE,
    NewtonRefined,
    newton_steps_for,
    with_set_function_alone,
)
from mp_ray.sampling import make_sampler
from mp_ray.scores import columnwise_correlation


@pytest.fixture(scope="module")
def wine():
    data = load_dataset(DatasetConfig(source="sklearn", name="wine"))
    return data, make_learner(LearnerConfig(kind="logistic"), data.X_train, data.y_train, 3)


class Exact:
    """A stand-in for a fitted predictor that answers with the retrained θ(S) itself."""

    def __init__(self, learner):
        self.learner = learner
        self.n_train = learner.n_train

    def predict(self, masks):
        return self.learner.fit_batch(torch.as_tensor(np.asarray(masks)))


def test_a_subsets_optimum_is_a_fixed_point_of_the_step(wine):
    data, learner = wine
    masks = make_sampler(SamplerConfig(kind="bernoulli", alpha=0.6), data.n_train, 3).masks(
        np.arange(6)
    )
    exact = learner.fit_batch(torch.as_tensor(masks))
    stepped = NewtonRefined(Exact(learner), learner, steps=2).predict(masks)
    torch.testing.assert_close(stepped, exact, rtol=0, atol=1e-5)


class Zero:
    """A stand-in for a poor predictor: θ = 0 whatever the subset."""

    def __init__(self, learner):
        self.learner = learner
        self.n_train = learner.n_train

    def predict(self, masks):
        return torch.zeros(len(masks), self.learner.n_params, dtype=self.learner.dtype)


def test_a_step_never_raises_the_subsets_objective(wine):
    """At θ = 0 a few points curve J_S more than the whole, confident data set curves J_D at
    θ(D), so H_D's full step overshoots on small subsets; the halved step lowers J_S or
    stays put."""
    data, learner = wine
    masks = make_sampler(
        SamplerConfig(kind="uniform_size", min_size=6, max_size=12), data.n_train, 5
    ).masks(np.arange(40))
    refined = NewtonRefined(Zero(learner), learner, steps=1)
    start = torch.zeros(len(masks), learner.n_params, dtype=learner.dtype)
    unguarded = refined.influence.newton_step(start, masks)
    before = learner.objective(start, masks)
    assert bool((learner.objective(unguarded, masks) > before).any())
    assert bool((learner.objective(refined.predict(masks), masks) <= before).all())


def test_steps_resolve_what_the_set_function_does_not(fitted):
    """On subsets no fit saw, the fitted predictor plus its steps is closer to retraining
    than the set function alone, in parameters and in the test points' margins."""
    learner, data = fitted.learner, fitted.dataset
    refined = fitted.models.predictor
    assert isinstance(refined, NewtonRefined) and refined.steps == AUTO_NEWTON_STEPS
    masks = make_sampler(SamplerConfig(kind="uniform_size", min_size=10), data.n_train, 99).masks(
        np.arange(80)
    )
    truth = learner.fit_batch(torch.as_tensor(masks))

    def scores(params):
        rel = ((params - truth).norm(dim=1) / truth.norm(dim=1)).mean().item()
        margins = learner.margin(params, data.X_test, data.y_test).numpy()
        actual = learner.margin(truth, data.X_test, data.y_test).numpy()
        return rel, float(np.nanmean(columnwise_correlation(margins, actual)))

    alone_rel, alone_lds = scores(refined.predictor.predict(masks).to(learner.dtype))
    step_rel, step_lds = scores(refined.predict(masks))
    assert step_rel < 0.7 * alone_rel
    assert step_lds > alone_lds + 0.05


def test_steps_by_default_only_for_convex_learners(wine):
    data, logistic = wine
    mlp = make_learner(LearnerConfig(kind="mlp", hidden=4), data.X_train, data.y_train, 3)
    assert newton_steps_for("auto", logistic) == AUTO_NEWTON_STEPS == 3
    assert newton_steps_for(3, logistic) == 3
    assert newton_steps_for("auto", mlp) == 0
    assert newton_steps_for(0, mlp) == 0
    with pytest.raises(ValueError, match="newton_steps: 2 needs a convex learner"):
        newton_steps_for(2, mlp)


def test_tables_show_the_set_function_alone_beside_the_stepped_predictor(fitted):
    predictor = fitted.models.predictor.predictor
    assert isinstance(predictor, Predictor)
    shown = with_set_function_alone("fit", predictor, fitted.learner, "auto")
    assert list(shown) == ["fit", f"fit, {SET_FUNCTION_ALONE}"]
    assert shown[f"fit, {SET_FUNCTION_ALONE}"] is predictor
    assert list(with_set_function_alone("fit", predictor, fitted.learner, 0)) == ["fit"]


def test_the_reference_preset_takes_no_step():
    config = parse_experiment(
        {
            "dataset": {"source": "sklearn", "name": "iris"},
            "learner": {"kind": "logistic"},
            "sampler": {"kind": "bernoulli"},
            "store": {"uri": "unused.zarr", "n_rows": 10},
            "predictor": {"preset": "reference"},
        }
    )
    assert config.predictor.newton_steps == 0
