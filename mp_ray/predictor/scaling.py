"""Per-coordinate standardisation of parameter vectors, fitted by streaming over rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TargetScaler:
    """z = (θ − mean) / std per coordinate; coordinates that never vary keep std = 1."""

    mean: np.ndarray  # (d,) float64
    std: np.ndarray  # (d,) float64

    @classmethod
    def from_moments(cls, count: int, total: np.ndarray, total_sq: np.ndarray) -> TargetScaler:
        """From the row count, Σθ and Σθ² over the fitting rows (each ``(d,)``)."""
        if count <= 0:
            raise ValueError("cannot standardise parameters from zero rows")
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0)
        std = np.sqrt(var)
        std[std < 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
        return cls(mean.astype(np.float64), std.astype(np.float64))

    @classmethod
    def fit(cls, params: np.ndarray) -> TargetScaler:
        """From an in-memory block of parameter vectors ``(N, d)``."""
        params = np.asarray(params, dtype=np.float64)
        return cls.from_moments(len(params), params.sum(axis=0), (params**2).sum(axis=0))

    def transform(self, params: torch.Tensor) -> torch.Tensor:
        """Standardise ``(B, d)``."""
        mean, std = self._tensors(params)
        return (params - mean) / std

    def inverse(self, standardised: torch.Tensor) -> torch.Tensor:
        """Back to parameter units, ``(B, d)``."""
        mean, std = self._tensors(standardised)
        return standardised * std + mean

    def _tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = {"dtype": like.dtype, "device": like.device}
        return torch.as_tensor(self.mean, **kwargs), torch.as_tensor(self.std, **kwargs)

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, list[float]]) -> TargetScaler:
        return cls(np.asarray(data["mean"]), np.asarray(data["std"]))
