"""Every way mp-ray answers "the model trained on subset S" is one protocol
(:mod:`mp_ray.methods`): parameter methods give ``(B, d)``, output methods ``(B, T)``, and a
mask of the wrong width gets the same error from each. No Ray: every method is built on a
small binary problem (iris, classes 0 and 1) with real retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.apps.models import PredictedModels, RetrainedModels, retrain_below_for
from mp_ray.baselines import FullDataModel, InfluenceFunction
from mp_ray.config import DatamodelsConfig, DatasetConfig, LearnerConfig, SamplerConfig
from mp_ray.data import load_dataset
from mp_ray.datamodels.fit import fit_datamodels
from mp_ray.distill.model import DistilledDatamodel
from mp_ray.distill.synset import initial_synsets
from mp_ray.learners import make_learner
from mp_ray.method_outputs import ParameterOutputs
from mp_ray.methods import OutputMethod, ParameterMethod, check_masks
from mp_ray.predictor.model import SetFunction, element_features
from mp_ray.predictor.predictor import Predictor, PredictorMeta
from mp_ray.predictor.refine import NewtonRefined
from mp_ray.predictor.scaling import TargetScaler
from mp_ray.sampling import make_sampler
from mp_ray.store.rows import Rows
from mp_ray.store_baselines import fit_mask_baselines

B = 5  # subsets per call


@pytest.fixture(scope="module")
def problem():
    data = load_dataset(DatasetConfig(source="sklearn", name="iris", classes=[0, 1]))
    learner = make_learner(LearnerConfig(kind="logistic"), data.X_train, data.y_train, 2)
    sampler = make_sampler(SamplerConfig(kind="bernoulli", alpha=0.7), data.n_train, 0)
    return data, learner, sampler


@pytest.fixture(scope="module")
def methods(problem):
    """Each parameter method and each output method by name."""
    data, learner, sampler = problem
    n, d = learner.n_train, learner.n_params
    torch.manual_seed(0)
    elements = element_features(data.X_train, data.y_train, data.n_classes)
    meta = PredictorMeta(
        width=16,
        n_params=d,
        n_classes=data.n_classes,
        scaler=TargetScaler.identity(d),
        learner=learner.config.model_dump(),
        dataset_fingerprint=data.fingerprint,
        store_uri="memory://none",
    )
    predictor = Predictor(SetFunction(elements.shape[1], d, 16), elements, meta)
    retrained = RetrainedModels(learner)
    train_masks, val_masks = sampler.masks(np.arange(40)), sampler.masks(np.arange(40, 60))
    train_params, val_params = retrained.predict(train_masks), retrained.predict(val_masks)
    mean, ridge = fit_mask_baselines(
        [Rows(np.arange(40), train_masks, train_params.numpy())],
        [Rows(np.arange(20), val_masks, val_params.numpy())],
        n,
        d,
    )
    theta = FullDataModel(learner).theta
    groups = 2 * np.asarray(data.y_train) + np.arange(n) % 2  # four groups of one class each
    synsets = initial_synsets(learner, theta, groups, 2, "random", 0)
    outputs = ParameterOutputs(retrained, learner, data.X_test, data.y_test)
    datamodels = fit_datamodels(
        train_masks,
        outputs.outputs(train_masks),
        val_masks,
        outputs.outputs(val_masks),
        DatamodelsConfig(),
    )
    parameters = {
        "retraining": retrained,
        "set function": predictor,
        "Newton steps": NewtonRefined(predictor, learner, 1),
        "predicted models": PredictedModels(predictor, learner),
        "full data": FullDataModel(learner),
        "influence functions": InfluenceFunction(learner),
        "mean θ": mean,
        "ridge on the mask": ridge,
        "distilled datamodel": DistilledDatamodel(learner, theta, groups, synsets, 0.1),
    }
    return parameters, {"datamodels": datamodels, "retrained outputs": outputs}


PARAMETER_METHODS = [
    "retraining",
    "set function",
    "Newton steps",
    "predicted models",
    "full data",
    "influence functions",
    "mean θ",
    "ridge on the mask",
    "distilled datamodel",
]
OUTPUT_METHODS = ["datamodels", "retrained outputs"]


def wrong_width_error(n: int) -> str:
    return f"masks must have shape (B, {n}), got (2, {n + 1})"


@pytest.mark.parametrize("name", PARAMETER_METHODS)
def test_each_parameter_method_answers_b_subsets_and_refuses_a_wrong_width(problem, methods, name):
    _, learner, sampler = problem
    method = methods[0][name]
    assert isinstance(method, ParameterMethod)
    assert method.n_train == learner.n_train
    params = method.predict(sampler.masks(np.arange(100, 100 + B)))
    assert params.shape == (B, learner.n_params)
    n = learner.n_train
    with pytest.raises(ValueError) as refused:
        method.predict(np.ones((2, n + 1), dtype=bool))
    assert str(refused.value) == wrong_width_error(n)


@pytest.mark.parametrize("name", OUTPUT_METHODS)
def test_each_output_method_answers_b_subsets_and_refuses_a_wrong_width(problem, methods, name):
    data, learner, sampler = problem
    method = methods[1][name]
    assert isinstance(method, OutputMethod)
    outputs = method.outputs(sampler.masks(np.arange(100, 100 + B)))
    assert isinstance(outputs, np.ndarray)
    assert outputs.shape == (B, len(data.y_test)) and outputs.dtype == np.float64
    n = learner.n_train
    with pytest.raises(ValueError) as refused:
        method.outputs(np.ones((2, n + 1), dtype=bool))
    assert str(refused.value) == wrong_width_error(n)


def test_check_masks_gives_bool_and_names_both_shapes():
    read_only = np.array([[1, 0, 1], [0, 1, 1]])
    read_only.flags.writeable = False
    checked = check_masks(read_only, 3)
    assert checked.dtype == torch.bool and checked.shape == (2, 3)
    assert checked.tolist() == [[True, False, True], [False, True, True]]
    assert check_masks(torch.ones(1, 3), 3).dtype == torch.bool
    with pytest.raises(ValueError, match=r"^new_masks must have shape \(B, 4\), got \(3,\)$"):
        check_masks(np.ones(3, dtype=bool), 4, "new_masks")


def test_small_subsets_are_retrained_below_the_threshold(problem, methods):
    """``retrain_below``: subsets of fewer points are retrained exactly, the others
    predicted; auto is a fifth of the points for a convex learner."""
    _, learner, _ = problem
    predictor = methods[0]["set function"]
    n = learner.n_train
    masks = np.zeros((4, n), dtype=bool)
    for row, size in enumerate([4, 9, 10, n - 1]):
        masks[row, np.arange(size) * (n // size)] = True
    masks[:, :2] = True  # both classes in every subset (iris 0/1 is sorted by class)
    masks[:, -2:] = True
    sizes = masks.sum(axis=1)
    threshold = int(sizes[2])
    hybrid = PredictedModels(predictor, learner, retrain_below=threshold).predict(masks)
    exact = RetrainedModels(learner).predict(masks)
    plain = PredictedModels(predictor, learner).predict(masks)
    small = sizes < threshold
    assert small.tolist() == [True, True, False, False]
    torch.testing.assert_close(hybrid[small], exact[small])
    torch.testing.assert_close(hybrid[~small], plain[~small])
    assert not torch.allclose(plain[small], exact[small])
    assert retrain_below_for("auto", learner) == -(-n // 5)
    assert retrain_below_for(7, learner) == 7
