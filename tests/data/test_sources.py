"""scikit-learn's bundled sets and the synthetic generator."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import DatasetConfig, SklearnDatasetConfig
from mp_ray.data import DatasetError, load_dataset
from mp_ray.data.sources import read_raw


def load(**fields):
    return load_dataset(DatasetConfig(**fields))


@pytest.mark.parametrize(
    ("name", "rows", "features", "classes"),
    [
        ("breast_cancer", 569, 30, 2),
        ("digits", 1797, 64, 10),
        ("wine", 178, 13, 3),
        ("iris", 150, 4, 3),
        ("diabetes", 442, 10, 1),
    ],
)
def test_sklearn_sets_have_their_shapes_and_classes(name, rows, features, classes):
    data = load(source="sklearn", name=name)
    assert data.name == name
    assert data.n_train + len(data.y_val) + len(data.y_test) == rows
    assert data.n_features == features == len(data.feature_names)
    assert data.n_classes == classes
    assert data.task == ("regression" if classes == 1 else "classification")
    for X in (data.X_train, data.X_val, data.X_test):
        assert X.dtype == np.float32 and X.shape[1] == features
    label_dtype = np.float32 if classes == 1 else np.int64
    for y in (data.y_train, data.y_val, data.y_test):
        assert y.dtype == label_dtype
        if classes > 1:
            assert set(np.unique(y)) == set(range(classes))


def test_unknown_sklearn_name_is_named():
    config = SklearnDatasetConfig.model_construct(source="sklearn", name="mnist")
    with pytest.raises(DatasetError, match=r"unknown scikit-learn data set 'mnist'; choose one"):
        load_dataset(config)


def test_sklearn_task_must_match_the_data_set():
    with pytest.raises(DatasetError, match="diabetes, which is a regression data set"):
        load(source="sklearn", name="diabetes", task="classification")


def test_synthetic_classification(synthetic):
    data = load(**synthetic, label_noise=0.1)
    assert (data.n_classes, data.n_features, data.task) == (3, 5, "classification")
    assert data.n_train + len(data.y_val) + len(data.y_test) == 300
    assert data.feature_names == ("x0", "x1", "x2", "x3", "x4")
    assert load(**synthetic, label_noise=0.1).fingerprint == data.fingerprint
    assert load(**synthetic).fingerprint != data.fingerprint  # noise flips labels
    assert load(**synthetic, split_seed=1).fingerprint != data.fingerprint


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_synthetic_regression_noise_is_the_residual_std(noise):
    config = DatasetConfig(
        source="synthetic", task="regression", n_samples=400, n_features=4, label_noise=noise
    )
    data = load_dataset(config)
    assert data.n_classes == 1 and data.y_train.dtype == np.float32
    raw = read_raw(config)
    design = np.column_stack([raw.X, np.ones(len(raw.y))])
    residual = raw.y - design @ np.linalg.lstsq(design, raw.y, rcond=None)[0]
    assert residual.std() == pytest.approx(noise, abs=0.1)


def test_synthetic_needs_features_for_its_classes():
    with pytest.raises(DatasetError, match="needs at least 3 features, got n_features=2"):
        load(source="synthetic", n_features=2, n_classes=5)
