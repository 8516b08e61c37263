"""Raw data as read from a source, before validation, splitting and scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mp_ray.data.dataset import Task
from mp_ray.errors import MpRayError


class DatasetError(MpRayError, ValueError):
    """The data cannot be used as given; the message names the problem."""


@dataclass(frozen=True)
class RawData:
    """Features ``X (m, p)`` and labels ``y (m,)`` exactly as read (any dtype)."""

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    task: Task
