"""The calibration table names its rows for what they are and says how θ(D) was obtained."""

from __future__ import annotations

import numpy as np
import torch

from mp_ray.apps.calibration import calibrate
from mp_ray.apps.models import RetrainedModels
from mp_ray.config import DatasetConfig, LearnerConfig
from mp_ray.data import load_dataset
from mp_ray.learners import Learner, make_learner
from mp_ray.methods import Masks


class Wrapped:
    """Retraining behind another SubsetModels implementation: its source is unknown."""

    def __init__(self, learner: Learner) -> None:
        self.learner = learner

    @property
    def n_train(self) -> int:
        return self.learner.n_train

    def predict(self, masks: Masks) -> torch.Tensor:
        return RetrainedModels(self.learner).predict(masks)


def test_rows_are_the_full_data_model_its_temperature_scaling_and_the_ensemble():
    data = load_dataset(DatasetConfig(source="sklearn", name="iris", classes=[0, 1]))
    learner = make_learner(LearnerConfig(kind="logistic"), data.X_train, data.y_train, 2)
    result = calibrate(
        RetrainedModels(learner), data.X_val, data.y_val, data.X_test, data.y_test, 6, 0.5
    )
    assert result.models == "retrained"
    assert list(result.rows) == [
        "full-data model θ(D)",
        f"θ(D), temperature-scaled (T = {result.temperature:.2f})",
        "ensemble of 6 models on 50% subsets",
    ]
    assert all(len(name) <= 40 for name in result.rows)  # the width of the command's table
    unknown = calibrate(Wrapped(learner), data.X_val, data.y_val, data.X_test, data.y_test, 6, 0.5)
    assert unknown.models is None
    np.testing.assert_allclose(
        unknown.rows["full-data model θ(D)"]["nll"], result.rows["full-data model θ(D)"]["nll"]
    )
