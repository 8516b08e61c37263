"""Per-point running moments of Monte-Carlo samples, the state a valuation run continues
from and results merge by.

A Monte-Carlo estimate of point i averages one or two streams of samples:

- one stream (permutation semivalues: TMC-, Beta-Shapley): the point's weighted marginal
  contributions; the value is their mean;
- two streams (Data Banzhaf by MSR): the utilities of the sampled subsets with (stream 0)
  and without (stream 1) the point; the value is the difference of the two means.

Each stream s keeps, per point, the count c, the mean and M2 = Σ (x − mean)² of its samples
(arrays ``(S, n)``). Batches and whole runs combine exactly by Chan et al.'s update, so a
result pooled from parts equals, up to rounding, the one computed from all samples at once.
The standard error of point i is √(Σ_s M2_s / (c_s − 1) / c_s), infinite until every stream
holds two samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARRAYS = ("moment_count", "moment_mean", "moment_m2")  # how results save them


def _combined(
    count_a: np.ndarray,
    mean_a: np.ndarray,
    m2_a: np.ndarray,
    count_b: np.ndarray,
    mean_b: np.ndarray,
    m2_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and M2 of two disjoint sets of samples from theirs (Chan et al.), all of
    one shape; a side with no samples leaves the other unchanged."""
    total = count_a + count_b
    share = np.divide(count_b, total, out=np.zeros(total.shape), where=total > 0)
    delta = mean_b - mean_a
    return total, mean_a + delta * share, m2_a + m2_b + delta**2 * count_a * share


@dataclass
class Moments:
    """Per-stream, per-point ``count`` (int64), ``mean`` and ``m2`` (float64), each
    ``(S, n)`` with S = 1 or 2 streams (see the module docstring)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    def __post_init__(self) -> None:
        self.count = np.asarray(self.count, dtype=np.int64)
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.m2 = np.asarray(self.m2, dtype=np.float64)
        if not (self.count.shape == self.mean.shape == self.m2.shape and self.count.ndim == 2):
            raise ValueError("moment count, mean and m2 must share one shape (streams, n)")
        if self.count.shape[0] not in (1, 2):
            raise ValueError(f"moments hold 1 or 2 streams, got {self.count.shape[0]}")

    @classmethod
    def empty(cls, streams: int, n: int) -> Moments:
        """No samples yet in ``streams`` streams of ``n`` points."""
        return cls(np.zeros((streams, n)), np.zeros((streams, n)), np.zeros((streams, n)))

    @property
    def n(self) -> int:
        return self.count.shape[1]

    def add(self, samples: np.ndarray, stream: int = 0, where: np.ndarray | None = None) -> None:
        """Add ``samples (B, n)`` to ``stream``: all of them, or only the entries where the
        bool mask ``where (B, n)`` holds."""
        present = np.ones(samples.shape, dtype=bool) if where is None else where
        count = present.sum(axis=0)
        total = np.where(present, samples, 0.0).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros(self.n), where=count > 0)
        m2 = np.where(present, (samples - mean) ** 2, 0.0).sum(axis=0)
        self.count[stream], self.mean[stream], self.m2[stream] = _combined(
            self.count[stream], self.mean[stream], self.m2[stream], count, mean, m2
        )

    def merged(self, other: Moments) -> Moments:
        """The moments of this run's samples and ``other``'s together (disjoint samples)."""
        if self.count.shape != other.count.shape:
            raise ValueError(
                f"moments of shape {self.count.shape} and {other.count.shape} do not pool"
            )
        return Moments(
            *_combined(self.count, self.mean, self.m2, other.count, other.mean, other.m2)
        )

    def copy(self) -> Moments:
        return Moments(self.count.copy(), self.mean.copy(), self.m2.copy())

    def values(self) -> np.ndarray:
        """The estimate of every point ``(n,)``: the mean, or with two streams the
        difference of their means."""
        return self.mean[0] - self.mean[1:].sum(axis=0)

    def stderr(self) -> np.ndarray:
        """The estimate's standard error ``(n,)``; inf until every stream has two samples."""
        counts = np.maximum(self.count, 1)
        spread = (self.m2 / np.maximum(self.count - 1, 1) / counts).sum(axis=0)
        return np.where((self.count > 1).all(axis=0), np.sqrt(spread), np.inf)

    def counts(self) -> np.ndarray:
        """Samples behind every point's estimate ``(n,)``, over all streams."""
        return self.count.sum(axis=0)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays results save, by name (:data:`ARRAYS`)."""
        return dict(zip(ARRAYS, (self.count, self.mean, self.m2), strict=True))
