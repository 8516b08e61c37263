"""Known label noise on the training split."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import DatasetConfig
from mp_ray.data import DatasetError, load_dataset


def test_flipped_labels_are_recorded_and_only_training_labels_change():
    clean = load_dataset(DatasetConfig(source="sklearn", name="wine"))
    noisy = load_dataset(DatasetConfig(source="sklearn", name="wine", flip_fraction=0.2))
    changed = np.nonzero(clean.y_train != noisy.y_train)[0]
    np.testing.assert_array_equal(changed, noisy.flipped)
    assert len(noisy.flipped) == round(0.2 * clean.n_train)
    assert noisy.y_train.max() < noisy.n_classes and noisy.y_train.min() >= 0
    np.testing.assert_array_equal(clean.y_val, noisy.y_val)
    np.testing.assert_array_equal(clean.y_test, noisy.y_test)
    assert clean.fingerprint != noisy.fingerprint and len(clean.flipped) == 0
    again = load_dataset(DatasetConfig(source="sklearn", name="wine", flip_fraction=0.2))
    np.testing.assert_array_equal(again.flipped, noisy.flipped)


def test_flipping_regression_labels_is_an_error():
    with pytest.raises(DatasetError, match="flip_fraction"):
        load_dataset(DatasetConfig(source="sklearn", name="diabetes", flip_fraction=0.1))
