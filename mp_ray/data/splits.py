"""Seeded train / validation / test splits, stratified by class for classification.

One seeded shuffle of the rows is reordered so that every stretch of it holds each class in
proportion (to within a row or two): the k-th row (0-based, in shuffled order) of a class of
size m_c gets the key (k + ½) / m_c, and rows are sorted by key, ties kept in shuffled order.
The test split is the first stretch, validation the next, training the rest; ``max_train``
keeps the first rows of the training stretch, so the training sets of growing ``max_train``
are nested and the validation and test splits do not depend on it. Each split is returned
in the data's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mp_ray.config import DatasetConfig
from mp_ray.data.raw import DatasetError
from mp_ray.data.validation import Encoded

LISTED_CLASSES = 5  # missing classes named in an error; the rest are counted


@dataclass(frozen=True)
class Splits:
    """Row indices into the encoded data, int64, each sorted: ``train``, ``val``, ``test``."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_indices(data: Encoded, config: DatasetConfig) -> Splits:
    """The splits of ``data`` by ``config``'s fractions, ``max_train`` and ``split_seed``."""
    m = len(data.y)
    rng = np.random.default_rng(config.split_seed)
    order = stratified_order(data.y, rng) if data.task == "classification" else rng.permutation(m)
    n_test = round(config.test_fraction * m)
    n_val = round(config.val_fraction * m)
    train = order[n_test + n_val :]
    if config.max_train is not None:
        train = train[: config.max_train]
    splits = Splits(
        np.sort(train), np.sort(order[n_test : n_test + n_val]), np.sort(order[:n_test])
    )
    _check(splits, data)
    return splits


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded shuffle of ``range(m)`` in which every stretch holds each class of
    ``labels (m,)`` (int ids) in proportion; int64 ``(m,)``."""
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    counts = np.bincount(shuffled)
    by_class = np.argsort(shuffled, kind="stable")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_class] = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)
    key = (rank + 0.5) / counts[shuffled]
    return order[np.argsort(key, kind="stable")]


def _check(splits: Splits, data: Encoded) -> None:
    """Every split holds rows, and every class when classifying."""
    named = [("train", splits.train), ("test", splits.test), ("validation", splits.val)]
    for name, rows in named:
        if data.task == "regression":
            if not len(rows):
                raise DatasetError(f"the {name} split of {len(data.y)} rows is empty")
            continue
        missing = np.flatnonzero(np.bincount(data.y[rows], minlength=data.n_classes) == 0)
        if len(missing):
            totals = np.bincount(data.y, minlength=data.n_classes)
            lacking = ", ".join(
                f"class {data.classes[c]!r} ({totals[c]} rows in all)"
                for c in missing[:LISTED_CLASSES]
            )
            if len(missing) > LISTED_CLASSES:
                lacking = f"{len(missing)} classes, among them {lacking}"
            raise DatasetError(
                f"the {name} split ({len(rows)} rows) is too small to hold every one of the "
                f"{data.n_classes} classes: it lacks {lacking}; use more data, larger "
                "split fractions or a larger max_train"
            )
