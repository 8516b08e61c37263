"""Raw (X, y) from scikit-learn's bundled sets, a synthetic generator or a file."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import datasets as skdata

from mp_ray.config import DatasetConfig, SklearnDatasetConfig, SyntheticDatasetConfig
from mp_ray.data.dataset import Task
from mp_ray.data.files import read_file
from mp_ray.data.raw import DatasetError, RawData

_SKLEARN: dict[str, tuple[Callable[[], Any], Task]] = {
    "breast_cancer": (skdata.load_breast_cancer, "classification"),
    "digits": (skdata.load_digits, "classification"),
    "wine": (skdata.load_wine, "classification"),
    "iris": (skdata.load_iris, "classification"),
    "diabetes": (skdata.load_diabetes, "regression"),
}


def read_raw(config: DatasetConfig) -> RawData:
    """The raw data ``config`` describes, restricted to ``config.classes`` when given."""
    if config.source == "sklearn":
        raw = _sklearn(config)
    elif config.source == "synthetic":
        raw = _synthetic(config)
    else:
        raw = read_file(config)
    return raw if config.classes is None else keep_classes(raw, config.classes)


def keep_classes(raw: RawData, classes: list[int | str]) -> RawData:
    """The rows of ``raw`` whose label is one of ``classes`` (raw label values); a class
    that no row carries, or a regression data set, raises :class:`DatasetError`."""
    if raw.task == "regression":
        raise DatasetError(f"dataset.classes applies to classification; {raw.name} is regression")
    labels = raw.y.tolist()
    absent = [label for label in classes if label not in labels]
    if absent:
        found = ", ".join(str(label) for label in sorted(set(labels), key=str)[:10])
        raise DatasetError(f"dataset.classes {absent} not among the labels of {raw.name} ({found})")
    keep = np.isin(raw.y, np.asarray(classes, dtype=raw.y.dtype))
    return RawData(raw.name, raw.X[keep], raw.y[keep], raw.feature_names, raw.task)


def _sklearn(config: SklearnDatasetConfig) -> RawData:
    if config.name not in _SKLEARN:
        raise DatasetError(
            f"unknown scikit-learn data set {config.name!r}; choose one of {', '.join(_SKLEARN)}"
        )
    loader, task = _SKLEARN[config.name]
    if "task" in config.model_fields_set and config.task != task:
        raise DatasetError(
            f"dataset.task={config.task} does not match scikit-learn's {config.name}, "
            f"which is a {task} data set"
        )
    bunch = loader()
    names = tuple(str(name) for name in bunch.feature_names)
    return RawData(config.name, bunch.data, bunch.target, names, task)


def _synthetic(config: SyntheticDatasetConfig) -> RawData:
    """make_classification / make_regression seeded by ``split_seed``; half the features
    (at least enough to separate the classes) are informative, the rest noise."""
    informative = max(1, config.n_features // 2)
    common = {
        "n_samples": config.n_samples,
        "n_features": config.n_features,
        "random_state": config.split_seed,
    }
    if config.task == "regression":
        X, y = skdata.make_regression(n_informative=informative, noise=config.label_noise, **common)
    else:
        informative = max(informative, math.ceil(math.log2(config.n_classes)))
        if informative > config.n_features:
            raise DatasetError(
                f"synthetic data with {config.n_classes} classes needs at least {informative} "
                f"features, got n_features={config.n_features}"
            )
        X, y = skdata.make_classification(
            n_informative=informative,
            n_redundant=0,
            n_clusters_per_class=1,
            n_classes=config.n_classes,
            class_sep=config.class_sep,
            flip_y=config.label_noise,
            **common,
        )
    names = tuple(f"x{j}" for j in range(config.n_features))
    return RawData(f"synthetic-{config.task}", X, y, names, config.task)
