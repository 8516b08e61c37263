"""From raw (X, y) to a :class:`Dataset`: validate, encode labels, split, scale.

Splits are stratified for classification and seeded by ``split_seed``; ``max_train`` then
keeps a seeded, stratified sample of the training split. Scaling statistics come from the
training split only and are applied to every split.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from mp_ray.config import DatasetConfig
from mp_ray.data.dataset import Dataset
from mp_ray.data.sources import DatasetError, RawData, read_raw


def load_dataset(config: DatasetConfig) -> Dataset:
    """Read, validate, split and scale the dataset ``config`` describes."""
    return prepare(read_raw(config), config)


def prepare(raw: RawData, config: DatasetConfig) -> Dataset:
    X, y, n_classes = _validated(raw)
    stratify = y if raw.task == "classification" else None
    held_out = config.val_fraction + config.test_fraction
    try:
        X_train, X_rest, y_train, y_rest = train_test_split(
            X, y, test_size=held_out, stratify=stratify, random_state=config.split_seed
        )
        rest_stratify = y_rest if stratify is not None else None
        if config.val_fraction > 0:
            X_val, X_test, y_val, y_test = train_test_split(
                X_rest,
                y_rest,
                test_size=config.test_fraction / held_out,
                stratify=rest_stratify,
                random_state=config.split_seed,
            )
        else:
            X_val, y_val, X_test, y_test = X_rest[:0], y_rest[:0], X_rest, y_rest
        if config.max_train is not None and config.max_train < len(y_train):
            X_train, _, y_train, _ = train_test_split(
                X_train,
                y_train,
                train_size=config.max_train,
                stratify=y_train if stratify is not None else None,
                random_state=config.split_seed,
            )
    except ValueError as err:
        raise DatasetError(
            f"cannot split {raw.name} ({len(y)} rows, {n_classes} classes) into "
            f"train/val/test = {1 - held_out:.2f}/{config.val_fraction}/{config.test_fraction}"
            f" with every class in each split: {err}"
        ) from None
    splits = _scaled([X_train, X_val, X_test], config.scaling)
    label_dtype = np.int64 if raw.task == "classification" else np.float32
    return Dataset(
        name=raw.name,
        task=raw.task,  # type: ignore[arg-type]
        n_classes=n_classes,
        X_train=splits[0],
        y_train=y_train.astype(label_dtype),
        X_val=splits[1],
        y_val=y_val.astype(label_dtype),
        X_test=splits[2],
        y_test=y_test.astype(label_dtype),
        feature_names=raw.feature_names,
    )


def _validated(raw: RawData) -> tuple[np.ndarray, np.ndarray, int]:
    """Float64 features, encoded labels (class ids 0..c-1, or floats) and the class count."""
    try:
        X = np.asarray(raw.X, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"features of {raw.name} are not numeric") from None
    if X.ndim != 2:
        raise DatasetError(f"features of {raw.name} must be 2-d, got shape {X.shape}")
    if len(raw.y) != X.shape[0]:
        raise DatasetError(f"{raw.name}: {X.shape[0]} feature rows but {len(raw.y)} labels")
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise DatasetError(
            f"features of {raw.name} hold NaN or infinite values (first at row {bad[0]}, "
            f"column {raw.feature_names[bad[1]]!r})"
        )
    if raw.task == "regression":
        y = np.asarray(raw.y, dtype=np.float64)
        if not np.isfinite(y).all():
            raise DatasetError(f"regression targets of {raw.name} hold NaN or infinite values")
        return X, y, 1
    classes, y = np.unique(np.asarray(raw.y), return_inverse=True)
    if len(classes) < 2:
        raise DatasetError(f"{raw.name} has {len(classes)} class(es); classification needs 2+")
    return X, y.astype(np.int64), len(classes)


def _scaled(splits: list[np.ndarray], scaling: str) -> list[np.ndarray]:
    """Apply the training split's scaling to every split; returns float32 arrays."""
    train = splits[0]
    if scaling == "none":
        return [s.astype(np.float32) for s in splits]
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    scaled = [(s - mean) / std for s in splits]
    if scaling == "unit_ball":
        radius = float(np.linalg.norm(scaled[0], axis=1).max()) or 1.0
        scaled = [s / radius for s in scaled]
    return [s.astype(np.float32) for s in scaled]
