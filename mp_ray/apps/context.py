"""What an application command needs from a config: the data, the learner, and the subset
models — a fitted predictor when one is given, else retraining."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mp_ray.apps.models import PredictedModels, RetrainedModels, SubsetModels
from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset, load_dataset
from mp_ray.learners import Learner, make_learner
from mp_ray.predictor.predictor import load_predictor_for
from mp_ray.predictor.refine import refined


@dataclass
class AppContext:
    """The experiment's dataset and learner, and how models for subsets are obtained."""

    config: ExperimentConfig
    dataset: Dataset
    learner: Learner
    models: SubsetModels
    retrained: RetrainedModels  # ground truth, for checks such as removal curves

    @property
    def source(self) -> str:
        return "predictor" if isinstance(self.models, PredictedModels) else "retrain"


def app_context(
    config: ExperimentConfig,
    predictor_uri: str | None = None,
    storage_options: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dataset: Dataset | None = None,
    learner: Learner | None = None,
) -> AppContext:
    """Load the dataset and learner of ``config`` (or take ``dataset`` and ``learner``,
    already loaded from it: ``device`` then goes unused); use the predictor at
    ``predictor_uri`` (refused unless fitted on this dataset and learner,
    :func:`~mp_ray.predictor.predictor.load_predictor_for`) or, without one, retraining."""
    dataset = load_dataset(config.dataset) if dataset is None else dataset
    if learner is None:
        learner = make_learner(
            config.learner, dataset.X_train, dataset.y_train, dataset.n_classes, device
        )
    retrained = RetrainedModels(learner)
    models: SubsetModels = retrained
    if predictor_uri:
        predictor = load_predictor_for(predictor_uri, config, dataset.fingerprint, storage_options)
        steps = config.predictor.newton_steps
        models = PredictedModels(refined(predictor, learner, steps), learner)
    return AppContext(config, dataset, learner, models, retrained)
