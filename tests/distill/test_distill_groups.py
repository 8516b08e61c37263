"""Groups: per-class k-means, deterministic from the root seed, every point in one group."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import DatasetConfig
from mp_ray.data import load_dataset
from mp_ray.distill.groups import draw_unions, group_classes, partition, removal_masks


@pytest.fixture(scope="module")
def wine():
    return load_dataset(DatasetConfig(source="sklearn", name="wine"))


def test_groups_are_deterministic_and_cover_every_point_once(wine):
    groups = partition(wine.X_train, wine.y_train, wine.n_classes, 4, root_seed=7)
    again = partition(wine.X_train, wine.y_train, wine.n_classes, 4, root_seed=7)
    np.testing.assert_array_equal(groups, again)
    assert groups.shape == (wine.n_train,) and groups.dtype == np.int64
    n_groups = int(groups.max()) + 1
    assert n_groups == 4 * wine.n_classes
    assert (np.bincount(groups, minlength=n_groups) > 0).all()
    # Each group lies in one class, and the classes' groups come in class order.
    classes = group_classes(groups, wine.y_train)
    np.testing.assert_array_equal(classes[groups], wine.y_train)
    np.testing.assert_array_equal(classes, np.repeat(np.arange(wine.n_classes), 4))


def test_small_classes_get_fewer_groups():
    X = np.arange(14, dtype=float).reshape(7, 2)
    y = np.array([0, 0, 0, 0, 0, 1, 1])
    groups = partition(X, y, 2, groups_per_class=3, root_seed=0)
    assert sorted(set(groups[y == 0].tolist())) == [0, 1, 2]
    assert sorted(set(groups[y == 1].tolist())) == [3, 4]


def test_unions_are_distinct_and_never_empty_a_class(wine):
    groups = partition(wine.X_train, wine.y_train, wine.n_classes, 2, root_seed=0)
    classes = group_classes(groups, wine.y_train)
    unions = draw_unions(classes, count=10, size=2, root_seed=0)
    assert unions.shape == (10, 6) and (unions.sum(axis=1) == 2).all()
    assert len({tuple(row) for row in unions.tolist()}) == 10
    for row in unions:  # both groups of one class are never removed together
        assert (np.bincount(classes[row], minlength=3) < 2).all()
    np.testing.assert_array_equal(unions, draw_unions(classes, 10, 2, root_seed=0))
    masks = removal_masks(groups, unions)
    assert masks.shape == (10, wine.n_train)
    np.testing.assert_array_equal(masks[0], ~np.isin(groups, np.flatnonzero(unions[0])))
    with pytest.raises(ValueError, match="unions of 6 groups out of 6"):
        draw_unions(classes, 3, 6, root_seed=0)
