"""When a Monte-Carlo valuation stops: criteria that compose.

A criterion looks at the run's :class:`SamplingState` after each round of samples
(permutations, or subsets for Data Banzhaf) and says whether the run is done::

    stopping = MaxSamples(10_000) | (MinSamples(20) & AbsoluteStandardError(0.01))

``a | b`` is met when either is, ``a & b`` when both are. The parts:

- :class:`MaxSamples` (n): n samples drawn in all (counting those of a run continued from);
- :class:`MinSamples` (n): at least n drawn — a guard to combine with ``&``;
- :class:`AbsoluteStandardError` (tol): every point's standard error ≤ tol (utility units),
  once two samples are drawn;
- :class:`MaxTime` (seconds): this call has run that long (a continued run's earlier time
  does not count).

:class:`MaxSamples`, :class:`MinSamples` and :class:`MaxTime` are budgets; a result is
``converged`` when the run stopped with its criterion met through a part that is not a
budget (:meth:`StoppingCriterion.converged`): ``MaxSamples(500) | AbsoluteStandardError(0.01)``
converges if the errors fell below 0.01 by the last round (even in the round that spent the
budget), not if only the budget ran out. A criterion's :meth:`~StoppingCriterion.completion`
in [0, 1] says how far the run is (progress bars); ``str()`` reads like
``max 500 samples | stderr ≤ 0.01``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingState:
    """A run after a round: ``samples`` drawn in all (with those of a run it continues),
    the estimate ``values (n,)``, its ``stderr (n,)`` (inf where undefined), the samples
    behind each point ``counts (n,)`` and the ``seconds`` this call has run."""

    samples: int
    values: np.ndarray
    stderr: np.ndarray
    counts: np.ndarray
    seconds: float


class StoppingCriterion(ABC):
    """Whether a run is done (``criterion(state)``), how far it is, and whether stopping now
    means convergence; combine with ``|`` and ``&``."""

    budget: bool = False  # a pure sample or time budget: meeting it is not convergence

    @abstractmethod
    def met(self, state: SamplingState) -> bool:
        """Whether the run may stop at ``state``."""

    def __call__(self, state: SamplingState) -> bool:
        return self.met(state)

    @abstractmethod
    def completion(self, state: SamplingState) -> float:
        """How far the run is towards meeting the criterion, in [0, 1] (1 once met)."""

    @abstractmethod
    def describe(self) -> str:
        """What the criterion asks, e.g. ``max 500 samples | stderr ≤ 0.01``."""

    def __str__(self) -> str:
        return self.describe()

    def converged(self, state: SamplingState) -> bool:
        """Whether the criterion is met at ``state`` through a part that is not a budget."""
        return not self.budget and self.met(state)

    @property
    def sample_limit(self) -> int | None:
        """The most samples a run under this criterion draws (it is met once that many are
        drawn, whatever else holds); None when no sample count alone meets it."""
        return None

    def __or__(self, other: StoppingCriterion) -> AnyOf:
        return AnyOf(*_parts(self, AnyOf), *_parts(other, AnyOf))

    def __and__(self, other: StoppingCriterion) -> AllOf:
        return AllOf(*_parts(self, AllOf), *_parts(other, AllOf))


def _parts(criterion: StoppingCriterion, kind: type[_Composite]) -> tuple[StoppingCriterion, ...]:
    """``criterion``'s parts when it is itself a ``kind`` composite (flattened), else it."""
    if not isinstance(criterion, StoppingCriterion):
        raise TypeError(f"only stopping criteria combine, not {type(criterion).__name__}")
    return criterion.parts if isinstance(criterion, kind) else (criterion,)


class _Composite(StoppingCriterion):
    """Criteria joined by one operator."""

    symbol = ""

    def __init__(self, *parts: StoppingCriterion) -> None:
        if len(parts) < 2:
            raise ValueError(f"{type(self).__name__} joins two or more criteria")
        self.parts = parts

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Composite)
            and type(other) is type(self)
            and other.parts == self.parts
        )

    def __hash__(self) -> int:
        return hash((type(self), self.parts))

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.parts!r}"

    def describe(self) -> str:
        return f" {self.symbol} ".join(
            f"({part})" if isinstance(part, _Composite) else str(part) for part in self.parts
        )


class AnyOf(_Composite):
    """Met when any part is (``a | b``); converged when a met part converged."""

    symbol = "|"

    def met(self, state: SamplingState) -> bool:
        return any(part.met(state) for part in self.parts)

    def completion(self, state: SamplingState) -> float:
        return max(part.completion(state) for part in self.parts)

    def converged(self, state: SamplingState) -> bool:
        return any(part.converged(state) for part in self.parts)

    @property
    def sample_limit(self) -> int | None:
        limits = [part.sample_limit for part in self.parts if part.sample_limit is not None]
        return min(limits) if limits else None


class AllOf(_Composite):
    """Met when every part is (``a & b``); converged when met and a part converged."""

    symbol = "&"

    def met(self, state: SamplingState) -> bool:
        return all(part.met(state) for part in self.parts)

    def completion(self, state: SamplingState) -> float:
        return min(part.completion(state) for part in self.parts)

    def converged(self, state: SamplingState) -> bool:
        return self.met(state) and any(part.converged(state) for part in self.parts)

    @property
    def sample_limit(self) -> int | None:
        limits = [part.sample_limit for part in self.parts]
        known = [limit for limit in limits if limit is not None]
        return max(known) if len(known) == len(limits) else None


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} needs a whole number of samples ≥ 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class MaxSamples(StoppingCriterion):
    """Met once ``n`` samples are drawn in all (a budget)."""

    n: int
    budget = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _count(self.n, "MaxSamples"))

    def met(self, state: SamplingState) -> bool:
        return state.samples >= self.n

    def completion(self, state: SamplingState) -> float:
        return min(1.0, state.samples / self.n)

    def describe(self) -> str:
        return f"max {self.n:,} samples"

    @property
    def sample_limit(self) -> int | None:
        return self.n


@dataclass(frozen=True)
class MinSamples(StoppingCriterion):
    """Met once at least ``n`` samples are drawn: a guard, as in ``MinSamples(20) & …``."""

    n: int
    budget = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _count(self.n, "MinSamples"))

    def met(self, state: SamplingState) -> bool:
        return state.samples >= self.n

    def completion(self, state: SamplingState) -> float:
        return min(1.0, state.samples / self.n)

    def describe(self) -> str:
        return f"min {self.n:,} samples"

    @property
    def sample_limit(self) -> int | None:
        return self.n


@dataclass(frozen=True)
class AbsoluteStandardError(StoppingCriterion):
    """Met once every point's standard error is ≤ ``tol`` (utility units), with at least two
    samples drawn. Completion: (tol / largest error)², the share of the samples needed that
    are drawn if errors fall as 1/√samples."""

    tol: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.tol) or self.tol <= 0:
            raise ValueError(f"AbsoluteStandardError needs a tolerance > 0, got {self.tol!r}")

    def met(self, state: SamplingState) -> bool:
        return state.samples >= 2 and bool(np.all(state.stderr <= self.tol))

    def completion(self, state: SamplingState) -> float:
        if self.met(state):
            return 1.0
        largest = float(np.max(state.stderr, initial=0.0))
        return 0.0 if state.samples < 2 or not np.isfinite(largest) else (self.tol / largest) ** 2

    def describe(self) -> str:
        return f"stderr ≤ {self.tol:g}"


@dataclass(frozen=True)
class MaxTime(StoppingCriterion):
    """Met once this call has run ``seconds`` (checked after each round: a round under way
    finishes; a budget)."""

    seconds: float
    budget = True

    def __post_init__(self) -> None:
        if not np.isfinite(self.seconds) or self.seconds <= 0:
            raise ValueError(f"MaxTime needs a positive number of seconds, got {self.seconds!r}")

    def met(self, state: SamplingState) -> bool:
        return state.seconds >= self.seconds

    def completion(self, state: SamplingState) -> float:
        return min(1.0, state.seconds / self.seconds)

    def describe(self) -> str:
        return f"max {self.seconds:g} s"
