"""From a :class:`DatasetConfig` to a :class:`Dataset`: read, validate, split, scale; and
new points from a file, prepared like the dataset's own."""

from __future__ import annotations

import numpy as np

from mp_ray.config import DatasetConfig, FileDatasetConfig
from mp_ray.data.dataset import Dataset
from mp_ray.data.files import read_file
from mp_ray.data.noise import flip_labels
from mp_ray.data.raw import DatasetError
from mp_ray.data.scaling import Scaling
from mp_ray.data.sources import read_raw
from mp_ray.data.splits import split_indices
from mp_ray.data.validation import encode, encode_like


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
        scaling=scaling,
        classes=data.classes,
        flipped=flipped,
    )


def read_points(
    dataset: Dataset, config: DatasetConfig, path: str, labels_path: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Points outside ``dataset`` from a file laid out like a dataset file (read as
    ``config``'s files are: Parquet / CSV with the dataset's feature columns, by name in any
    order, and its label column; ``.npz`` or ``.npy`` with ``labels_path``, the features in
    the dataset's order), in the dataset's raw units and labels.

    Returns ``X (m, p) float32`` scaled as the dataset's splits are and ``y (m,)`` encoded
    as its labels; a file with another feature count, other feature columns or an unknown
    label raises :class:`DatasetError` naming the file.
    """
    shared = config.model_dump(include=set(FileDatasetConfig.model_fields))
    raw = read_file(
        FileDatasetConfig(**{**shared, "source": "file", "path": path, "labels_path": labels_path})
    )
    names, p = raw.feature_names, dataset.n_features
    if len(names) != p:
        raise DatasetError(f"{path} has {len(names)} feature columns; {dataset.name} has {p}")
    X, y = encode_like(raw, dataset.classes)
    if set(names) == set(dataset.feature_names):
        X = X[:, [names.index(name) for name in dataset.feature_names]]
    elif path.lower().endswith((".parquet", ".csv")):
        missing = [name for name in dataset.feature_names if name not in names]
        raise DatasetError(
            f"{path} lacks feature column(s) of {dataset.name}: {', '.join(missing[:5])}"
        )
    return dataset.scaling.apply(X), y.astype(dataset.y_train.dtype)
