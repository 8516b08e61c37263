"""The in-memory dataset every stage shares: three splits and a content fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from mp_ray.data.scaling import Scaling

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Dataset:
    """Features and labels split into train / validation / test.

    Shapes: ``X_* (m, p) float32``; ``y_* (m,)`` int64 class ids in ``[0, n_classes)`` for
    classification, float32 for regression (``n_classes == 1``). The training split is the
    ground set: subsets and masks index its rows ``0..n-1``. ``scaling`` maps raw features
    to these (fitted on the training split); ``classes[i]`` is the raw label of class id i
    (empty for regression). ``flipped (k,)`` lists the training rows whose labels were
    deliberately changed (``DatasetConfig.flip_fraction``).
    """

    name: str
    task: Task
    n_classes: int
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    scaling: Scaling
    classes: tuple[object, ...]
    flipped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (hex) of the task, class count and every split's bytes."""
        return fingerprint_arrays(
            self.task,
            self.n_classes,
            self.X_train,
            self.y_train,
            self.X_val,
            self.y_val,
            self.X_test,
            self.y_test,
        )


def fingerprint_arrays(task: str, n_classes: int, *arrays: np.ndarray) -> str:
    """sha256 over a header and each array's dtype, shape and C-ordered bytes."""
    digest = hashlib.sha256(f"{task}:{n_classes}".encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"|{array.dtype.str}{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
