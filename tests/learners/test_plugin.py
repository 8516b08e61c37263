"""The plug-in protocol (``learner.kind: custom``): loading a class by import path, its typed
options, its optional capabilities, and the stages refusing what a plug-in lacks up front."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import BaseModel, Field

from mp_ray.baselines import InfluenceFunction, influence_baseline
from mp_ray.config import AUTO_GLOBAL, ConfigError, PredictorConfig, parse_experiment
from mp_ray.data import load_dataset
from mp_ray.learners import Learner, LearnerCapabilityError, make_learner
from mp_ray.learners.capabilities import INFLUENCE_FUNCTIONS, require
from mp_ray.predictor.fit import fit_settings
from mp_ray.predictor.refine import newton_steps_for
from mp_ray.retrain import BlockTrainer
from mp_ray.retrain.block import CLASSIFICATION_METRICS
from mp_ray.store.identity import config_identity, differences

BASE = {
    "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 120},
    "sampler": {"kind": "bernoulli", "alpha": 0.5},
    "store": {"uri": "runs/plugin.zarr", "n_rows": 40, "block_rows": 20},
}


class MeansOptions(BaseModel):
    shift: float = Field(default=0.0, ge=0, description="Added to every intercept.")


class ClassMeans(Learner):
    """A linear score per output: weights the class-1 minus class-0 mean, intercept shift;
    the four required methods only (binary classification)."""

    Options = MeansOptions

    @property
    def n_params(self) -> int:
        return self.X.shape[1] + 1

    def _fit(self, weights: torch.Tensor, seeds) -> torch.Tensor:
        positive = weights * (self.y == 1)
        negative = weights * (self.y == 0)
        mean = lambda w: (w @ self.X) / w.sum(1, keepdim=True).clamp(min=1)  # noqa: E731
        shift = torch.full((len(weights), 1), self.options.shift, dtype=self.dtype)
        return torch.cat([mean(positive) - mean(negative), shift], dim=1)

    def decision(self, params: torch.Tensor, X) -> torch.Tensor:
        return (self.as_tensor(X) @ params[:, :-1].T + params[:, -1]).T[..., None]

    def intercept_mask(self) -> torch.Tensor:
        return torch.arange(self.n_params) == self.n_params - 1


class SquaredClassMeans(ClassMeans):
    """The same with a differentiable squared-error objective: autograd gives the rest."""

    def per_sample_loss(self, params: torch.Tensor, X, y) -> torch.Tensor:
        target = 2 * self.as_tensor(y) - 1
        return (self.decision(params, X)[..., 0] - target) ** 2

    def objective(self, params: torch.Tensor, masks) -> torch.Tensor:
        return self.weighted_loss(params, self.masks_tensor(masks)) + (params**2).sum(1)


class NotALearner:
    pass


def experiment(target: str = "ClassMeans", **learner):
    learner = {"kind": "custom", "target": f"{__name__}:{target}", **learner}
    return parse_experiment({**BASE, "learner": learner})


@pytest.mark.parametrize(
    ("learner", "message"),
    [
        ({"target": "nomodule:X"}, "learner.target: cannot import 'nomodule:X': No module named"),
        ({"target": "nocolon"}, "learner.target: 'nocolon' is not an import path module:name"),
        ({"target": f"{__name__}:Missing"}, f"learner.target: cannot import '{__name__}:Missing'"),
        ({"target": f"{__name__}:NotALearner"}, "is not a subclass of mp_ray.learners.Learner"),
        ({"target": "mp_ray.learners:Learner"}, "does not implement _fit, decision"),
        (
            {"target": f"{__name__}:ClassMeans", "options": {"shift": -1}},
            "learner.options: shift: Input should be greater than or equal to 0",
        ),
        (
            {"target": f"{__name__}:ClassMeans", "options": {"shfit": 1}},
            "learner.options: shfit: not an option of ClassMeans",
        ),
        (
            {"target": "mp_ray.learners:Ridge", "options": {"alpha": 1}},
            "learner.options: Ridge declares no Options model, so it takes no options; got alpha",
        ),
    ],
)
def test_a_bad_target_or_options_is_a_config_error_naming_the_field(learner, message):
    with pytest.raises(ConfigError) as error:
        parse_experiment({**BASE, "learner": {"kind": "custom", **learner}})
    assert message in str(error.value)


def test_options_are_typed_filled_in_and_part_of_the_store_identity():
    config = experiment(options={"shift": 2})
    assert config.learner.options == {"shift": 2.0}
    assert experiment().learner.options == {"shift": 0.0}  # the defaults, recorded
    data = load_dataset(config.dataset)
    learner = make_learner(config.learner, data.X_train, data.y_train, data.n_classes)
    assert isinstance(learner, ClassMeans) and learner.name == "ClassMeans"
    assert learner.options == MeansOptions(shift=2.0)
    recorded = config_identity(experiment(), data.fingerprint)
    assert recorded["learner.target"] == f"{__name__}:ClassMeans"
    diffs = differences(recorded, config_identity(config, data.fingerprint), "store")
    assert diffs == ["learner.options: store {'shift': 0.0}, config {'shift': 2.0}"]


def test_capabilities_come_from_what_a_class_implements():
    for method in ("per_sample_loss", "objective", "objective_grad", "hvp", "per_sample_grads"):
        assert not ClassMeans.provides(method)
        assert SquaredClassMeans.provides(method)  # autograd derives the rest
    assert ClassMeans.provides("decision")  # required methods are always there
    config = experiment()
    data = load_dataset(config.dataset)
    learner = make_learner(config.learner, data.X_train, data.y_train, data.n_classes)
    masks = np.ones((2, data.n_train), dtype=bool)
    with pytest.raises(LearnerCapabilityError, match="ClassMeans does not implement objective"):
        learner.objective_grad(learner.fit_batch(masks), masks)
    with pytest.raises(LearnerCapabilityError) as error:
        require(learner, *INFLUENCE_FUNCTIONS, "decision", stage="influence functions")
    assert str(error.value).startswith(
        "influence functions needs objective_grad, hvp of the learner; learner ClassMeans does "
        "not implement them"
    )


def test_a_fit_resolves_and_refuses_settings_by_what_the_learner_provides():
    config = experiment()
    data = load_dataset(config.dataset)
    plain = make_learner(config.learner, data.X_train, data.y_train, data.n_classes)
    few = AUTO_GLOBAL["labels_below"] - 1
    settings = fit_settings(PredictorConfig(), plain, few, plain.n_params)
    assert settings.lambda_global == 0 and settings.unlabelled_per_batch == 0
    assert newton_steps_for(settings.newton_steps, plain) == 0
    refusals = {
        "lambda_global": (
            "predictor.lambda_global: 0.5 (the global regulariser) needs objective_grad"
        ),
        "lambda_local": "predictor.lambda_local: 0.5 (the local regulariser) needs per_sample_loss",
        "newton_steps": "predictor.newton_steps: 3 needs objective, objective_grad, hvp",
    }
    for field, message in refusals.items():
        value = 3 if field == "newton_steps" else 0.5
        with pytest.raises(
            LearnerCapabilityError, match=message.replace("(", r"\(").replace(")", r"\)")
        ):
            fit_settings(PredictorConfig(**{field: value}), plain, few, plain.n_params)
    able = make_learner(
        experiment("SquaredClassMeans").learner, data.X_train, data.y_train, data.n_classes
    )
    settings = fit_settings(PredictorConfig(lambda_local=0.5), able, few, able.n_params)
    assert settings.lambda_global == AUTO_GLOBAL["lambda_global"]
    with pytest.raises(ValueError, match="needs a convex learner"):  # it has them, not convexity
        fit_settings(PredictorConfig(newton_steps=3), able, few, able.n_params)


def test_influence_functions_are_left_out_with_a_note_for_a_learner_without_them():
    config = experiment()
    data = load_dataset(config.dataset)
    plain = make_learner(config.learner, data.X_train, data.y_train, data.n_classes)
    assert influence_baseline(plain) == (
        None,
        "influence functions left out: learner ClassMeans does not implement objective_grad, hvp",
    )
    able = make_learner(
        experiment("SquaredClassMeans").learner, data.X_train, data.y_train, data.n_classes
    )
    influence, note = influence_baseline(able)
    assert isinstance(influence, InfluenceFunction) and note is None


def test_a_store_holds_only_the_metrics_a_learner_can_give(tmp_path):
    config = experiment().with_overrides({"store.uri": str(tmp_path / "plugin.zarr")})
    data = load_dataset(config.dataset)
    trainer = BlockTrainer(config, data)
    names = ("subset_size", "degenerate", "val_accuracy", "test_accuracy")
    assert trainer.spec.metric_names == names
    values = trainer.train_rows(np.arange(4))
    metrics = dict(zip(names, values["metrics"].T, strict=True))
    assert (metrics["test_accuracy"] > 0.8).all() and (metrics["degenerate"] == 0).all()
    assert np.isfinite(values["outputs"]).all()
    assert math.isclose(float(values["params"][0, -1]), 0.0)
    able = experiment("SquaredClassMeans").with_overrides(
        {"store.uri": str(tmp_path / "able.zarr")}
    )
    trainer = BlockTrainer(able, data)
    assert trainer.spec.metric_names == CLASSIFICATION_METRICS
    # The objective and the mean training loss through the base class's one-by-one default.
    values = trainer.train_rows(np.arange(4))
    metrics = dict(zip(CLASSIFICATION_METRICS, values["metrics"].T, strict=True))
    params, masks = torch.as_tensor(values["params"]), values["masks"]
    expected = trainer.learner.mean_subset_loss(params, masks).numpy()
    np.testing.assert_allclose(metrics["train_loss"], expected, rtol=1e-6)
    expected = trainer.learner.objective(params, masks).numpy()
    np.testing.assert_allclose(metrics["objective"], expected, rtol=1e-6)
    assert (metrics["train_loss"] > 0).all()
