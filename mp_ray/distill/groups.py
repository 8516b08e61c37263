"""Groups of training points: per-class k-means clusters, and removals expressed in groups.

Each class's training points are clustered by k-means (scikit-learn, ``n_init=10``) on the
training features standardised to zero mean and unit variance, into
``min(groups_per_class, points of the class)`` clusters. Group ids run over the classes in
order and, inside a class, in order of each cluster's first training point, so the same
data and root seed always give the same ids. Every training point is in exactly one group.
"""

from __future__ import annotations

import numpy as np

from mp_ray.sampling import row_rng

DISTILL_STREAM = 0xD157  # keeps the distillation's draws apart from every other stream
GROUPS_ROW, INIT_ROW, HOLDOUT_ROW = 0, 1, 2  # one row of that stream per kind of draw


def standardise(X: np.ndarray) -> np.ndarray:
    """``X (n, p)`` with each column at zero mean and unit variance (constant columns: 0)."""
    X = np.asarray(X, dtype=np.float64)
    spread = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


def kmeans_labels(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster ids ``(m,)`` in ``0..k'-1`` of the rows of ``X (m, p)`` (k' ≤ k distinct
    clusters), numbered in order of each cluster's first row."""
    from sklearn.cluster import KMeans

    k = min(k, len(X))
    if k <= 1:
        return np.zeros(len(X), dtype=np.int64)
    raw = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
    _, first = np.unique(raw, return_index=True)
    order = np.argsort(np.argsort(first))  # rank of each raw id by its first row
    return order[np.unique(raw, return_inverse=True)[1]].astype(np.int64)


def partition(
    X: np.ndarray, y: np.ndarray, n_classes: int, groups_per_class: int, root_seed: int
) -> np.ndarray:
    """The group of every training point, int64 ``(n,)`` with ids ``0..G-1``; see the module
    docstring. ``X (n, p)`` features, ``y (n,)`` class ids."""
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"{len(X)} feature rows but {len(y)} labels")
    features = standardise(X)
    rng = row_rng(root_seed, DISTILL_STREAM, GROUPS_ROW)
    seeds = rng.integers(0, 2**31 - 1, size=n_classes)
    groups = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in range(n_classes):
        members = np.flatnonzero(y == c)
        if members.size == 0:
            continue
        labels = kmeans_labels(features[members], groups_per_class, int(seeds[c]))
        groups[members] = offset + labels
        offset += int(labels.max()) + 1
    return groups


def group_classes(groups: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The class of each group, int64 ``(G,)`` (groups never mix classes)."""
    classes = np.zeros(int(groups.max()) + 1, dtype=np.int64)
    classes[groups] = np.asarray(y)
    return classes


def removal_masks(groups: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Training masks ``(R, n)`` bool without the groups flagged in ``removed (R, G)``."""
    return ~np.asarray(removed, dtype=bool)[:, groups]


def single_removals(n_groups: int) -> np.ndarray:
    """One removal per group, ``(G, G)`` bool (the identity)."""
    return np.eye(n_groups, dtype=bool)


def draw_unions(classes: np.ndarray, count: int, size: int, root_seed: int) -> np.ndarray:
    """Up to ``count`` distinct unions of ``size`` groups, ``(R, G)`` bool, drawn from the root
    seed; unions that would remove every group of a class are skipped."""
    n_groups = len(classes)
    if size >= n_groups:
        raise ValueError(f"cannot remove unions of {size} groups out of {n_groups}")
    rng = row_rng(root_seed, DISTILL_STREAM, HOLDOUT_ROW)
    per_class = np.bincount(classes)
    seen: set[tuple[int, ...]] = set()
    rows = []
    for _ in range(50 * count):
        if len(rows) == count:
            break
        union = tuple(sorted(rng.choice(n_groups, size=size, replace=False).tolist()))
        if union in seen:
            continue
        seen.add(union)
        removed = np.bincount(classes[list(union)], minlength=len(per_class))
        if ((removed < per_class) | (per_class == 0)).all():
            row = np.zeros(n_groups, dtype=bool)
            row[list(union)] = True
            rows.append(row)
    return np.array(rows, dtype=bool).reshape(len(rows), n_groups)
