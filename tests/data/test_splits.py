"""Seeded, stratified train / validation / test splits and max_train."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import DatasetConfig
from mp_ray.data import DatasetError, load_dataset
from mp_ray.data.sources import read_raw
from mp_ray.data.splits import split_indices, stratified_order
from mp_ray.data.validation import encode

DIGITS = {"source": "sklearn", "name": "digits"}


def indices(**fields):
    config = DatasetConfig(**fields)
    return split_indices(encode(read_raw(config)), config), encode(read_raw(config)).y


def assert_proportional(rows, y, slack):
    """Each class appears in ``rows`` in proportion to its share of ``y``, ± ``slack``."""
    expected = len(rows) * np.bincount(y) / len(y)
    assert np.abs(np.bincount(y[rows], minlength=len(expected)) - expected).max() <= slack


def test_stratified_order_keeps_every_prefix_proportional():
    y = np.random.default_rng(0).choice(4, size=500, p=[0.5, 0.3, 0.15, 0.05])
    order = stratified_order(y, np.random.default_rng(1))
    np.testing.assert_array_equal(np.sort(order), np.arange(500))
    for length in range(1, 501):
        assert_proportional(order[:length], y, slack=1.0)


def test_splits_partition_the_rows_by_the_fractions():
    splits, y = indices(**DIGITS, val_fraction=0.2, test_fraction=0.1)
    everything = np.concatenate([splits.train, splits.val, splits.test])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(y)))
    assert (len(splits.val), len(splits.test)) == (round(0.2 * len(y)), round(0.1 * len(y)))
    for rows in (splits.train, splits.val, splits.test):
        assert (np.diff(rows) > 0).all()  # in the data's order
        assert_proportional(rows, y, slack=2.0)


def test_split_seed_decides_the_split():
    first, _ = indices(**DIGITS)
    np.testing.assert_array_equal(indices(**DIGITS)[0].test, first.test)
    assert not np.array_equal(indices(**DIGITS, split_seed=1)[0].test, first.test)


def test_max_train_keeps_a_nested_stratified_prefix():
    full, y = indices(**DIGITS)
    small, _ = indices(**DIGITS, max_train=200)
    larger, _ = indices(**DIGITS, max_train=400)
    assert (len(small.train), len(larger.train)) == (200, 400)
    assert set(small.train) <= set(larger.train) <= set(full.train)
    np.testing.assert_array_equal(small.test, full.test)
    np.testing.assert_array_equal(small.val, full.val)
    assert_proportional(small.train, y, slack=2.0)
    assert load_dataset(DatasetConfig(**DIGITS, max_train=200)).n_train == 200


def test_regression_splits_partition_the_rows():
    splits, y = indices(source="sklearn", name="diabetes", val_fraction=0.1, test_fraction=0.2)
    assert len(splits.val) == round(0.1 * len(y)) and len(splits.test) == round(0.2 * len(y))
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(y)


def test_a_split_too_small_for_every_class_is_named():
    with pytest.raises(
        DatasetError,
        match=r"the test split \(2 rows\) is too small to hold every one of the 4 classes: "
        r"it lacks class \d \(3 rows in all\), class \d \(3 rows in all\)",
    ):
        load_dataset(DatasetConfig(source="synthetic", n_samples=12, n_classes=4, n_features=4))
    with pytest.raises(DatasetError, match=r"the train split \(2 rows\) is too small"):
        load_dataset(DatasetConfig(source="sklearn", name="iris", max_train=2))


def test_many_missing_classes_are_counted_not_listed():
    with pytest.raises(
        DatasetError,
        match=r"the test split \(\d+ rows\) is too small to hold every one of the 30 classes: "
        r"it lacks \d+ classes, among them (class \d+ \(\d rows in all\), ){4}class \d+ \(\d rows "
        r"in all\); use more data",
    ):
        load_dataset(DatasetConfig(source="synthetic", n_samples=150, n_classes=30, n_features=5))
