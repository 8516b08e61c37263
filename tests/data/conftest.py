"""Shared data for the dataset tests: one synthetic problem, in memory and as a table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from mp_ray.config import DatasetConfig
from mp_ray.data import Dataset, load_dataset
from mp_ray.data.sources import read_raw

CLASS_NAMES = np.array(["cat", "dog", "eel"])


@pytest.fixture(scope="session")
def synthetic() -> dict[str, Any]:
    """DatasetConfig fields of a 3-class synthetic problem with 300 rows and 5 features."""
    return {"source": "synthetic", "n_samples": 300, "n_features": 5, "n_classes": 3}


@pytest.fixture(scope="session")
def raw_arrays(synthetic) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic problem's raw ``X (300, 5)`` float64 and ``y (300,)`` class ids."""
    raw = read_raw(DatasetConfig(**synthetic))
    return raw.X, raw.y


@pytest.fixture(scope="session")
def reference(synthetic) -> Dataset:
    """The synthetic problem loaded from memory: what every file copy must reproduce."""
    return load_dataset(DatasetConfig(**synthetic))


@pytest.fixture(scope="session")
def table(raw_arrays) -> pa.Table:
    """The raw arrays as a table: columns f0..f4 and string labels cat / dog / eel."""
    X, y = raw_arrays
    return pa.table({**{f"f{j}": X[:, j] for j in range(X.shape[1])}, "label": CLASS_NAMES[y]})
