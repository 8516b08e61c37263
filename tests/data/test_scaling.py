"""Scaling is fitted on the training split only; the fingerprint follows the arrays."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import DatasetConfig
from mp_ray.data import load_dataset
from mp_ray.data.scaling import Scaling


def load(**fields):
    return load_dataset(DatasetConfig(**fields))


@pytest.fixture(scope="module")
def raw():
    """Digits, split but unscaled (the split does not depend on the scaling)."""
    return load(source="sklearn", name="digits", scaling="none")


def test_none_keeps_the_raw_values(raw):
    assert raw.X_train.dtype == np.float32
    assert raw.X_train.max() == 16.0 and raw.X_train.min() == 0.0


def test_standard_uses_training_statistics_only(raw):
    data = load(source="sklearn", name="digits")
    train = raw.X_train.astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    constant = std == 0
    assert constant.any()  # digits has blank pixels: divided by 1, not 0
    std[constant] = 1.0
    for scaled, unscaled in ((data.X_train, raw.X_train), (data.X_test, raw.X_test)):
        np.testing.assert_allclose(scaled, (unscaled - mean) / std, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.X_train.mean(axis=0, dtype=np.float64), 0, atol=1e-6)
    np.testing.assert_allclose(data.X_train.std(axis=0, dtype=np.float64)[~constant], 1, atol=1e-6)
    assert np.abs(data.X_val.mean(axis=0)).max() > 0.05
    assert np.abs(data.X_test.mean(axis=0)).max() > 0.05
    assert np.isfinite(data.X_test).all()


def test_unit_ball_divides_by_the_largest_training_norm(raw):
    standard = load(source="sklearn", name="digits")
    ball = load(source="sklearn", name="digits", scaling="unit_ball")
    radius = np.linalg.norm(standard.X_train.astype(np.float64), axis=1).max()
    assert np.linalg.norm(ball.X_train, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(ball.X_test, standard.X_test / radius, rtol=1e-5, atol=1e-6)


def test_unknown_scaling_is_named():
    with pytest.raises(ValueError, match="unknown scaling 'minmax'"):
        Scaling.fit(np.ones((3, 2)), "minmax")


def test_fingerprint_is_stable_and_follows_data_split_and_scaling(synthetic):
    base = load(**synthetic).fingerprint
    assert load(**synthetic).fingerprint == base
    assert len(base) == 64
    for change in (
        {"label_noise": 0.2},
        {"n_samples": 301},
        {"split_seed": 1},
        {"scaling": "unit_ball"},
        {"scaling": "none"},
        {"max_train": 150},
        {"test_fraction": 0.2},
    ):
        assert load(**{**synthetic, **change}).fingerprint != base, change
