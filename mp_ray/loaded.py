"""The dataset and learner of an experiment config: loaded here, or the ones a caller
already holds (an :class:`~mp_ray.experiment.Experiment` loads them once for every stage).
"""

from __future__ import annotations

import torch

from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset, load_dataset
from mp_ray.learners import Learner, make_learner


def dataset_of(config: ExperimentConfig, dataset: Dataset | None = None) -> Dataset:
    """``dataset`` when given (already loaded from ``config.dataset``), else loaded now."""
    return load_dataset(config.dataset) if dataset is None else dataset


def learner_of(
    config: ExperimentConfig,
    dataset: Dataset,
    learner: Learner | None = None,
    device: torch.device | str = "cpu",
) -> Learner:
    """``learner`` when given (already made from ``config.learner`` on ``dataset``), else
    the config's learner on the training split of ``dataset``, on ``device``."""
    if learner is not None:
        return learner
    return make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes, device)
