"""Truncation of permutations in permutation semivalues (TMC, Ghorbani & Zou, 2019), as a
policy passed to the estimators (``truncation=``).

- :class:`NoTruncation`: every prefix of every permutation is scored.
- :class:`RelativeTruncation` (rtol, burn_in_fraction): once a prefix's utility is within
  ``rtol·|U(D) − U(∅)|`` of U(D) — a share of the utility's range rather than of |U(D)|
  (an arbitrary value for a loss) — the rest of that permutation contributes 0 and is not
  scored (if U(D) = U(∅), only a prefix scoring exactly U(D) truncates); the check starts at
  prefix length ⌈burn_in_fraction·n⌉, as in pyDVL's ``RelativeTruncation(rtol,
  burn_in_fraction)`` (whose scale is |U(D)|).

A result records the policy (``truncation_rtol``, None without truncation, and
``burn_in_fraction``) and what it cut (:class:`TruncationTally`): the range
(``utility_range``), the share of permutations truncated (``truncated_share``) and the mean
prefix length at the cut, as a share of n, over the truncated permutations
(``mean_truncation_prefix``, None if none was).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


class Truncation(ABC):
    """Where a permutation may be cut: a tolerance around U(D) and the first prefix length
    checked."""

    cuts: bool = True  # whether the policy ever cuts a permutation

    @abstractmethod
    def tolerance(self, full: float, empty: float) -> float | None:
        """How close to U(D) = ``full`` a prefix's utility must come to cut the
        permutation (U(∅) = ``empty``); None: never cut."""

    @abstractmethod
    def burn_in(self, n: int) -> int:
        """The first prefix length checked, for permutations of ``n`` points."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """What a result records about the policy: ``truncation_rtol``, ``burn_in_fraction``."""


@dataclass(frozen=True)
class NoTruncation(Truncation):
    """Never cut."""

    cuts = False

    def tolerance(self, full: float, empty: float) -> float | None:
        return None

    def burn_in(self, n: int) -> int:
        return 0

    def params(self) -> dict[str, Any]:
        return {"truncation_rtol": None, "burn_in_fraction": 0.0}


@dataclass(frozen=True)
class RelativeTruncation(Truncation):
    """Cut once a prefix is within ``rtol·|U(D) − U(∅)|`` of U(D), from prefix length
    ⌈``burn_in_fraction``·n⌉ on (see the module docstring)."""

    rtol: float = 0.01
    burn_in_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.rtol) or self.rtol < 0:
            raise ValueError(f"truncation rtol must be ≥ 0, got {self.rtol}")
        if not 0 <= self.burn_in_fraction <= 1:
            raise ValueError(f"burn_in_fraction must lie in [0, 1], got {self.burn_in_fraction}")

    def tolerance(self, full: float, empty: float) -> float | None:
        return self.rtol * abs(full - empty)

    def burn_in(self, n: int) -> int:
        return math.ceil(self.burn_in_fraction * n)

    def params(self) -> dict[str, Any]:
        return {"truncation_rtol": self.rtol, "burn_in_fraction": self.burn_in_fraction}


@dataclass(frozen=True)
class TruncationTally:
    """What truncation cut over ``permutations`` permutations of ``n`` points: how many were
    cut and the sum of their prefix lengths at the cut; tallies of disjoint runs add."""

    n: int
    permutations: int = 0
    truncated: int = 0
    prefix_sum: float = 0.0

    @classmethod
    def of_cuts(cls, cuts: np.ndarray, n: int) -> TruncationTally:
        """From the prefix length of each permutation's cut ``(P,)``, n where not cut."""
        truncated = cuts < n
        return cls(n, len(cuts), int(truncated.sum()), float(cuts[truncated].sum()))

    @classmethod
    def of_params(cls, params: dict[str, Any], n: int) -> TruncationTally:
        """From a result's ``params`` (``samples``, ``truncated_share``,
        ``mean_truncation_prefix``)."""
        permutations = int(params["samples"])
        truncated = round(params["truncated_share"] * permutations)
        mean = params["mean_truncation_prefix"]
        return cls(n, permutations, truncated, 0.0 if mean is None else mean * n * truncated)

    def __add__(self, other: TruncationTally) -> TruncationTally:
        return TruncationTally(
            self.n,
            self.permutations + other.permutations,
            self.truncated + other.truncated,
            self.prefix_sum + other.prefix_sum,
        )

    def params(self, utility_range: float) -> dict[str, float | None]:
        """The result's truncation record (see the module docstring)."""
        return {
            "utility_range": utility_range,
            "truncated_share": self.truncated / self.permutations if self.permutations else 0.0,
            "mean_truncation_prefix": (
                self.prefix_sum / self.truncated / self.n if self.truncated else None
            ),
        }
