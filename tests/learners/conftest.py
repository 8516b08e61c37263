"""Data for the learner tests, loaded straight from scikit-learn (no mp_ray.data)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

LOADERS = {
    "breast_cancer": datasets.load_breast_cancer,
    "wine": datasets.load_wine,
    "digits": datasets.load_digits,
    "diabetes": datasets.load_diabetes,
}


@dataclass(frozen=True)
class Data:
    """A standardised 70/30 split; ``n_classes`` is 1 for regression."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_train(self) -> int:
        return len(self.y_train)


@cache
def load(name: str) -> Data:
    X, y = LOADERS[name](return_X_y=True)
    regression = name == "diabetes"
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, train_size=0.7, random_state=0, stratify=None if regression else y
    )
    scaler = StandardScaler().fit(X_train)
    n_classes = 1 if regression else len(np.unique(y))
    return Data(scaler.transform(X_train), y_train, scaler.transform(X_test), y_test, n_classes)


def random_subsets(data: Data, seed: int = 0) -> np.ndarray:
    """Masks ``(6, n)``: three Bernoulli(½) subsets and three small ones (15% of n), each
    holding at least two points of every class so that the optimum is finite."""
    rng = np.random.default_rng(seed)
    n = data.n_train
    masks = np.vstack([rng.random((3, n)) < 0.5, rng.random((3, n)) < 0.15])
    if data.n_classes > 1:
        for mask in masks:
            for c in range(data.n_classes):
                mask[rng.choice(np.flatnonzero(data.y_train == c), size=2, replace=False)] = True
    return masks


@pytest.fixture(scope="session")
def dataset() -> Callable[[str], Data]:
    """``dataset(name)``: a cached, standardised scikit-learn data set."""
    return load


@pytest.fixture(scope="session")
def subsets() -> Callable[..., np.ndarray]:
    """``subsets(data, seed=0)``: see :func:`random_subsets`."""
    return random_subsets
