"""Feature scaling fitted on the training split and applied to every split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scaling:
    """The affine map x ↦ (x − offset) / divisor, with ``offset, divisor (p,)`` float64."""

    offset: np.ndarray
    divisor: np.ndarray

    @classmethod
    def fit(cls, X_train: np.ndarray, kind: str) -> Scaling:
        """Fit on ``X_train (n, p)``. ``standard``: training mean and standard deviation
        (constant columns divided by 1); ``unit_ball``: standard, then divided by the largest
        training row norm; ``none``: the identity."""
        p = X_train.shape[1]
        if kind == "none":
            return cls(np.zeros(p), np.ones(p))
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        std[std == 0] = 1.0
        if kind == "standard":
            return cls(mean, std)
        if kind == "unit_ball":
            radius = float(np.linalg.norm((X_train - mean) / std, axis=1).max())
            return cls(mean, std * (radius or 1.0))
        raise ValueError(f"unknown scaling {kind!r}; use standard, unit_ball or none")

    def apply(self, X: np.ndarray) -> np.ndarray:
        """``X (m, p)`` scaled, float32 ``(m, p)``."""
        return ((X - self.offset) / self.divisor).astype(np.float32)
