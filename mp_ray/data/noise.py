"""Known label noise on the training split, for noisy-label detection experiments."""

from __future__ import annotations

import numpy as np

from mp_ray.data.raw import DatasetError

NOISE_STREAM = 0x4E015E  # keeps the flip draws apart from every other use of split_seed


def flip_labels(
    y: np.ndarray, n_classes: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels with round(fraction·n) of them changed to another class drawn uniformly, and
    the sorted indices that were changed, ``(n,)`` and ``(k,)``."""
    if n_classes < 2:
        raise DatasetError("dataset.flip_fraction needs a classification dataset")
    rng = np.random.default_rng([seed, NOISE_STREAM])
    flipped = np.sort(rng.choice(len(y), size=round(fraction * len(y)), replace=False))
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, n_classes, size=len(flipped))) % n_classes
    return noisy, flipped
