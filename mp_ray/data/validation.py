"""Check raw data and encode it: float64 features, class ids or real-valued targets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mp_ray.data.dataset import Task
from mp_ray.data.raw import DatasetError, RawData

# Numeric labels with more distinct values than MANY_CLASSES, some of them fractional or
# fewer than FEW_ROWS_PER_CLASS rows per value, are taken for a real-valued target.
MANY_CLASSES = 20
FEW_ROWS_PER_CLASS = 4


@dataclass(frozen=True)
class Encoded:
    """Finite float64 features ``X (m, p)``; labels ``y (m,)``: int64 class ids in
    ``[0, n_classes)`` (``classes[i]`` is the original label of id i), or float64 targets
    for regression (``n_classes == 1``, ``classes`` empty)."""

    task: Task
    X: np.ndarray
    y: np.ndarray
    n_classes: int
    classes: tuple[object, ...]


def encode(raw: RawData) -> Encoded:
    """Validate ``raw`` and encode its labels; errors name the problem."""
    X, y = _rows(raw)
    if raw.task == "regression":
        return Encoded(raw.task, X, _targets(y, raw.name), 1, ())
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DatasetError(f"labels of {raw.name} hold NaN or infinite values")
    classes, ids = np.unique(y, return_inverse=True)
    if _looks_continuous(classes, len(y)):
        raise DatasetError(
            f"labels of {raw.name} look continuous ({len(classes)} distinct numbers in "
            f"{len(y)} rows); for real-valued targets set dataset.task: regression"
        )
    if len(classes) < 2:
        raise DatasetError(
            f"{raw.name} has {len(classes)} class(es); classification needs at least 2"
        )
    return Encoded(raw.task, X, ids.astype(np.int64), len(classes), tuple(classes.tolist()))


def encode_like(raw: RawData, classes: tuple[object, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Validate new points ``raw`` and encode them as a dataset whose class ids stand for
    ``classes`` (empty: regression): float64 features ``(m, p)`` and int64 class ids (or
    float64 targets) ``(m,)``; a label outside ``classes`` is refused."""
    X, y = _rows(raw)
    if not classes:
        return X, _targets(y, raw.name)
    ids = {label: i for i, label in enumerate(classes)}
    unknown = sorted({str(label) for label in y.tolist() if label not in ids})
    if unknown:
        raise DatasetError(
            f"labels of {raw.name} outside the dataset's classes "
            f"({', '.join(map(str, classes))}): {', '.join(unknown[:5])}"
        )
    return X, np.array([ids[label] for label in y.tolist()], dtype=np.int64)


def _rows(raw: RawData) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 features ``(m, p)`` and the raw labels ``(m,)`` beside them."""
    X = _features(raw)
    y = np.asarray(raw.y).reshape(-1)
    if len(y) != X.shape[0]:
        raise DatasetError(f"{raw.name}: {X.shape[0]} feature rows but {len(y)} labels")
    return X, y


def _looks_continuous(classes: np.ndarray, n_rows: int) -> bool:
    """Whether the distinct labels ``classes`` of ``n_rows`` rows look like a real-valued
    target (see ``MANY_CLASSES``)."""
    if classes.dtype.kind not in "iuf" or len(classes) <= MANY_CLASSES:
        return False
    fractional = not np.array_equal(classes, np.round(classes))
    return fractional or n_rows < FEW_ROWS_PER_CLASS * len(classes)


def _features(raw: RawData) -> np.ndarray:
    X = np.asarray(raw.X)
    if X.dtype.kind not in "biuf":
        raise DatasetError(f"features of {raw.name} are not numeric (dtype {X.dtype})")
    X = X.astype(np.float64)
    finite = np.isfinite(X)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise DatasetError(
            f"features of {raw.name} hold missing (NaN) or infinite values, first at row {row}, "
            f"column {raw.feature_names[column]!r}"
        )
    return X


def _targets(y: np.ndarray, name: str) -> np.ndarray:
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"regression targets of {name} are not numeric (dtype {y.dtype})")
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        raise DatasetError(f"regression targets of {name} hold NaN or infinite values")
    return y
