"""From a :class:`DatasetConfig` to a :class:`Dataset`: read, validate, split, scale."""

from __future__ import annotations

import numpy as np

from mp_ray.config import DatasetConfig
from mp_ray.data.dataset import Dataset
from mp_ray.data.noise import flip_labels
from mp_ray.data.scaling import Scaling
from mp_ray.data.sources import read_raw
from mp_ray.data.splits import split_indices
from mp_ray.data.validation import encode


def load_dataset(config: DatasetConfig) -> Dataset:
    """The dataset ``config`` describes: features float32; labels int64 class ids
    (classification) or float32 (regression); scaling fitted on the training split.

    Raises :class:`~mp_ray.data.DatasetError` naming the problem when the data is unusable.
    """
    raw = read_raw(config)
    data = encode(raw)
    splits = split_indices(data, config)
    scaling = Scaling.fit(data.X[splits.train], config.scaling)
    label_dtype = np.int64 if data.task == "classification" else np.float32
    y_train = data.y[splits.train].astype(label_dtype)
    flipped = np.zeros(0, dtype=np.int64)
    if config.flip_fraction:
        y_train, flipped = flip_labels(
            y_train, data.n_classes, config.flip_fraction, config.split_seed
        )
    return Dataset(
        name=raw.name,
        task=data.task,
        n_classes=data.n_classes,
        X_train=scaling.apply(data.X[splits.train]),
        y_train=y_train,
        X_val=scaling.apply(data.X[splits.val]),
        y_val=data.y[splits.val].astype(label_dtype),
        X_test=scaling.apply(data.X[splits.test]),
        y_test=data.y[splits.test].astype(label_dtype),
        feature_names=raw.feature_names,
        flipped=flipped,
    )
