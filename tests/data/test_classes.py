"""dataset.classes: keeping only some classes of a data set before it is split."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from mp_ray.config import DatasetConfig
from mp_ray.data import DatasetError, load_dataset
from mp_ray.data.sources import read_raw


def test_iris_setosa_against_versicolor_keeps_their_rows_only():
    config = DatasetConfig(
        source="sklearn", name="iris", classes=[0, 1], val_fraction=0.13, test_fraction=0.2
    )
    raw = read_raw(config)
    assert len(raw.y) == 100 and set(raw.y.tolist()) == {0, 1}
    data = load_dataset(config)
    assert (data.n_train, len(data.y_val), len(data.y_test)) == (67, 13, 20)
    assert data.n_classes == 2 and data.classes == (0, 1)


def test_string_labels_are_matched_by_value(tmp_path):
    path = tmp_path / "pets.csv"
    rows = ["x,label"] + [f"{i},{name}" for i, name in enumerate(["cat", "dog", "eel"] * 20)]
    path.write_text("\n".join(rows))
    data = load_dataset(DatasetConfig(source="file", path=str(path), classes=["eel", "cat"]))
    assert data.classes == ("cat", "eel")
    assert data.n_train + len(data.y_val) + len(data.y_test) == 40


def test_a_class_no_row_carries_is_named():
    with pytest.raises(DatasetError, match=r"\[7\] not among the labels of iris"):
        read_raw(DatasetConfig(source="sklearn", name="iris", classes=[0, 7]))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "sklearn", "name": "iris", "classes": [1, 1]}, "at least 2 distinct"),
        ({"source": "synthetic", "task": "regression", "classes": [0, 1]}, "classification"),
    ],
)
def test_malformed_class_lists_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        DatasetConfig(**fields)


def test_regression_data_sets_refuse_classes():
    with pytest.raises(DatasetError, match="diabetes is regression"):
        read_raw(DatasetConfig(source="sklearn", name="diabetes", classes=[0, 1]))


def test_without_classes_every_row_stays():
    raw = read_raw(DatasetConfig(source="sklearn", name="iris"))
    assert np.bincount(raw.y).tolist() == [50, 50, 50]
