"""Raw (X, y) from scikit-learn's bundled sets, a synthetic generator, or files.

Files are Parquet or CSV (features in every column but ``label_column``), an ``.npy``
feature matrix with its labels in ``labels_path``, or an ``.npz`` holding ``X`` and ``y``;
on a local path or any fsspec URL such as ``s3://`` (options from ``storage_options``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn import datasets as skdata

from mp_ray.config import DatasetConfig


class DatasetError(ValueError):
    """The data cannot be used as given; the message names the problem."""


@dataclass(frozen=True)
class RawData:
    """Features ``X (m, p)``, labels ``y (m,)`` as read, before splitting and scaling."""

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    task: str


_SKLEARN_LOADERS = {
    "breast_cancer": (skdata.load_breast_cancer, "classification"),
    "digits": (skdata.load_digits, "classification"),
    "wine": (skdata.load_wine, "classification"),
    "iris": (skdata.load_iris, "classification"),
    "diabetes": (skdata.load_diabetes, "regression"),
}


def read_raw(config: DatasetConfig) -> RawData:
    """The raw data ``config`` points at."""
    if config.source == "sklearn":
        return _sklearn(config)
    if config.source == "synthetic":
        return _synthetic(config)
    return _file(config)


def _sklearn(config: DatasetConfig) -> RawData:
    if config.name not in _SKLEARN_LOADERS:
        raise DatasetError(
            f"unknown scikit-learn dataset {config.name!r}; choose one of "
            f"{', '.join(_SKLEARN_LOADERS)}"
        )
    loader, task = _SKLEARN_LOADERS[config.name]
    bunch = loader()
    names = tuple(str(f) for f in getattr(bunch, "feature_names", range(bunch.data.shape[1])))
    return RawData(config.name, bunch.data, bunch.target, names, task)


def _synthetic(config: DatasetConfig) -> RawData:
    rng_seed = config.split_seed
    if config.task == "regression":
        X, y = skdata.make_regression(
            n_samples=config.n_samples,
            n_features=config.n_features,
            n_informative=max(1, config.n_features // 2),
            noise=10.0 * config.label_noise,
            random_state=rng_seed,
        )
    else:
        informative = max(2, config.n_features // 2, math.ceil(math.log2(config.n_classes)))
        if informative > config.n_features:
            raise DatasetError(
                f"synthetic data with {config.n_classes} classes needs at least {informative} "
                f"features, got n_features={config.n_features}"
            )
        X, y = skdata.make_classification(
            n_samples=config.n_samples,
            n_features=config.n_features,
            n_informative=informative,
            n_redundant=0,
            n_clusters_per_class=1,
            n_classes=config.n_classes,
            class_sep=config.class_sep,
            flip_y=config.label_noise,
            random_state=rng_seed,
        )
    names = tuple(f"x{j}" for j in range(config.n_features))
    return RawData(f"synthetic-{config.task}", X, y, names, config.task)


def _read_bytes(path: str, config: DatasetConfig) -> bytes:
    try:
        with fsspec.open(path, "rb", **config.storage_options) as handle:
            return handle.read()
    except FileNotFoundError:
        raise DatasetError(f"data file not found: {path}") from None


def _file(config: DatasetConfig) -> RawData:
    path = str(config.path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix in ("parquet", "pq"):
        return _table(pq.read_table(io.BytesIO(_read_bytes(path, config))), config, name)
    if suffix == "csv":
        return _table(pacsv.read_csv(io.BytesIO(_read_bytes(path, config))), config, name)
    if suffix == "npz":
        with np.load(io.BytesIO(_read_bytes(path, config))) as archive:
            missing = {"X", "y"} - set(archive.files)
            if missing:
                raise DatasetError(
                    f"{path} lacks array(s) {sorted(missing)}; it holds {sorted(archive.files)}"
                )
            return _arrays(archive["X"], archive["y"], config, name)
    if suffix == "npy":
        if not config.labels_path:
            raise DatasetError(f"{path} is an .npy feature file: set dataset.labels_path")
        X = np.load(io.BytesIO(_read_bytes(path, config)))
        y = np.load(io.BytesIO(_read_bytes(config.labels_path, config)))
        return _arrays(X, y, config, name)
    raise DatasetError(f"unsupported data file {path}: use .parquet, .csv, .npy or .npz")


def _table(table: pa.Table, config: DatasetConfig, name: str) -> RawData:
    if config.label_column not in table.column_names:
        raise DatasetError(
            f"label column {config.label_column!r} not in {name}; columns are "
            f"{', '.join(table.column_names)}"
        )
    features = [c for c in table.column_names if c != config.label_column]
    for column in features:
        if not (
            pa.types.is_integer(table[column].type)
            or pa.types.is_floating(table[column].type)
            or pa.types.is_boolean(table[column].type)
        ):
            raise DatasetError(
                f"feature column {column!r} of {name} is not numeric ({table[column].type})"
            )
    X = np.column_stack([pc.cast(table[c], pa.float64()).to_numpy() for c in features])
    y = table[config.label_column].to_numpy(zero_copy_only=False)
    return RawData(name, X, y, tuple(features), config.task)


def _arrays(X: np.ndarray, y: np.ndarray, config: DatasetConfig, name: str) -> RawData:
    X = np.asarray(X)
    if X.ndim != 2:
        raise DatasetError(f"features of {name} must be 2-d (rows, features), got {X.shape}")
    names = tuple(f"x{j}" for j in range(X.shape[1]))
    return RawData(name, X, np.asarray(y).reshape(-1), names, config.task)
