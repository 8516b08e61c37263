"""Checks on features and labels before splitting: each problem named in the message."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import DatasetConfig
from mp_ray.data import DatasetError, load_dataset


def from_npz(tmp_path, X, y, **fields):
    np.savez(tmp_path / "d.npz", X=X, y=y)
    return load_dataset(DatasetConfig(source="file", path=str(tmp_path / "d.npz"), **fields))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_located(tmp_path, raw_arrays, bad):
    X, y = raw_arrays
    X = X.copy()
    X[4, 2] = bad
    with pytest.raises(
        DatasetError, match=r"NaN\) or infinite values, first at row 4, column 'x2'"
    ):
        from_npz(tmp_path, X, y)


def test_non_numeric_features(tmp_path, raw_arrays):
    X, y = raw_arrays
    with pytest.raises(DatasetError, match=r"features of d\.npz are not numeric \(dtype <U"):
        from_npz(tmp_path, X.astype(str), y)


def test_length_mismatch(tmp_path, raw_arrays):
    X, y = raw_arrays
    with pytest.raises(DatasetError, match=r"d\.npz: 300 feature rows but 297 labels"):
        from_npz(tmp_path, X, y[:-3])


def test_fewer_than_two_classes(tmp_path, raw_arrays):
    X, y = raw_arrays
    with pytest.raises(
        DatasetError, match=r"d\.npz has 1 class\(es\); classification needs at least 2"
    ):
        from_npz(tmp_path, X, np.full_like(y, 7))


def test_labels_are_mapped_to_sorted_ids(tmp_path, raw_arrays):
    X, y = raw_arrays
    shifted = from_npz(tmp_path, X, np.array([10, 20, 30])[y])
    plain = from_npz(tmp_path, X, y)
    np.testing.assert_array_equal(shifted.y_train, plain.y_train)
    assert shifted.y_train.dtype == np.int64


def test_bad_labels(tmp_path, raw_arrays):
    X, y = raw_arrays
    labels = y.astype(float)
    labels[3] = np.nan
    with pytest.raises(DatasetError, match=r"labels of d\.npz hold NaN or infinite values"):
        from_npz(tmp_path, X, labels)
    with pytest.raises(DatasetError, match=r"regression targets of d\.npz hold NaN"):
        from_npz(tmp_path, X, labels, task="regression")
    with pytest.raises(DatasetError, match=r"regression targets of d\.npz are not numeric"):
        from_npz(tmp_path, X, y.astype(str), task="regression")


def test_continuous_labels_under_classification_suggest_regression(tmp_path, raw_arrays):
    X, y = raw_arrays
    continuous = X[:, 0] * 3.7 + 0.1
    with pytest.raises(
        DatasetError,
        match=r"labels of d\.npz look continuous \(300 distinct numbers in 300 rows\); for "
        r"real-valued targets set dataset\.task: regression",
    ):
        from_npz(tmp_path, X, continuous)
    assert from_npz(tmp_path, X, continuous, task="regression").task == "regression"
    # Whole numbers with few rows each (diabetes' target) look continuous too.
    with pytest.raises(DatasetError, match=r"look continuous \(100 distinct numbers"):
        from_npz(tmp_path, X, np.arange(300) % 100 + 25.0)
    # A few fractional levels, and many whole-number classes with rows enough, are classes.
    assert from_npz(tmp_path, X, y * 0.5).n_classes == 3
    assert from_npz(tmp_path, X, np.tile(np.arange(25.0), 12)).n_classes == 25
