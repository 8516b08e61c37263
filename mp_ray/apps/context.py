"""What an application command needs from a config: the data, the learner, and the subset
models — a fitted predictor when one is given, else retraining."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mp_ray.apps.models import PredictedModels, RetrainedModels, SubsetModels
from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset
from mp_ray.learners import Learner
from mp_ray.loaded import dataset_of, learner_of
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
    dataset = dataset_of(config, dataset)
    learner = learner_of(config, dataset, learner, device)
    retrained = RetrainedModels(learner)
    models: SubsetModels = retrained
    if predictor_uri:
        predictor = load_predictor_for(predictor_uri, config, dataset.fingerprint, storage_options)
        steps = config.predictor.newton_steps
        models = PredictedModels(refined(predictor, learner, steps), learner)
    return AppContext(config, dataset, learner, models, retrained)
