"""Training-point and target indices given by users (command options, requests): parsed and
checked once, so every entry point refuses the same bad input with the same message."""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np

from mp_ray.errors import InputError


def checked_points(indices: Iterable[int] | np.ndarray, n: int, what: str = "points") -> np.ndarray:
    """``indices`` as int64 ``(r,)`` after checking each is an integer in ``[0, n)`` and none
    repeats; an :class:`InputError` names ``what`` and the offending values otherwise."""
    if isinstance(indices, np.ndarray):
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise InputError(f"{what} must be a 1-d list of integer indices")
        values = indices.tolist()
    else:
        values = list(indices)
        wrong = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
        if wrong:
            raise InputError(f"{what} must be integer indices, got {wrong[0]!r}")
    outside = [int(v) for v in values if not 0 <= v < n]
    if outside:
        raise InputError(f"{what} out of range 0…{n - 1}: {outside[:10]}")
    checked = np.asarray(values, dtype=np.int64)
    unique, counts = np.unique(checked, return_counts=True)
    if unique.size != checked.size:
        raise InputError(f"{what}: index {int(unique[counts > 1][0])} is given more than once")
    return checked


def parse_index_list(text: str, what: str) -> list[int]:
    """Comma-separated integers (``"1,2, 3"``) as a list; an :class:`InputError` names
    ``what`` and the first part that is not an integer, or an empty list."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise InputError(f"{what} names no index")
    try:
        return [int(part) for part in parts]
    except ValueError:
        bad = next(part for part in parts if not part.lstrip("-").isdigit())
        raise InputError(f"{what}: {bad!r} is not an integer index") from None
