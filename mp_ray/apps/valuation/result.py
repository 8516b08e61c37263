"""Data values with their uncertainty, saved to Parquet or to the experiment's Zarr store.

A :class:`ValuationResult` holds one value per training point, the standard error of its
Monte-Carlo estimate (0 for exact methods such as leave-one-out), how many samples
contributed to it, and how the run went (method, parameters, utility evaluations, whether
it converged, wall time). A Monte-Carlo result also keeps its per-point running moments
(:class:`~mp_ray.apps.valuation.moments.Moments`), saved with it, so that a later run can
continue it (the estimators' ``continue_from=``) and two independent runs merge exactly
(:meth:`ValuationResult.merge`, ``a + b``). Results saved before mp-ray kept the moments
have none: they can be read but neither continued nor merged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mp_ray.apps.valuation.moments import ARRAYS as MOMENT_ARRAYS
from mp_ray.apps.valuation.moments import Moments
from mp_ray.apps.valuation.truncation import TruncationTally
from mp_ray.outputs import atomic_output
from mp_ray.store import (
    ArtifactIncompleteError,
    ArtifactNotFoundError,
    ExperimentStore,
    StoreMismatchError,
)
from mp_ray.tables import Tabular

# Params that record how a run went rather than what it estimated: results merge, and a run
# continues another, only where every other param agrees (``utility_range`` up to rounding).
_OUTCOME_PARAMS = frozenset(
    {
        "seed",
        "seeds",
        "samples",
        "stopping",
        "utility_range",
        "truncated_share",
        "mean_truncation_prefix",
        "fidelity",
    }
)


def _setting_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The params, other than outcomes, in which two records differ, as ``key: a vs b``."""
    differ = [
        f"{key}: {ours.get(key)!r} vs {theirs.get(key)!r}"
        for key in sorted((set(ours) | set(theirs)) - _OUTCOME_PARAMS)
        if ours.get(key) != theirs.get(key)
    ]
    ranges = ours.get("utility_range"), theirs.get("utility_range")
    if None not in ranges and not math.isclose(*ranges, rel_tol=1e-9, abs_tol=1e-12):
        differ.append(f"utility_range |U(D) − U(∅)|: {ranges[0]!r} vs {ranges[1]!r}")
    return differ


@dataclass
class ValuationResult(Tabular):
    """Values ``(n,)`` float64, their standard errors ``(n,)`` and sample counts ``(n,)``;
    for a Monte-Carlo run, the running ``moments`` ``(S, n)`` they come from (None for exact
    methods and for results saved before they were kept).

    ``converged``: exact methods (leave-one-out) are; a Monte-Carlo run is when it stopped
    with its stopping criterion met through a part that is not a pure sample or time budget
    (:meth:`~mp_ray.apps.valuation.stopping.StoppingCriterion.converged`, e.g. every
    standard error ≤ the tolerance), not when only ``MaxSamples``/``MaxTime`` ended it; a
    merged result is when both parts were."""

    method: str
    values: np.ndarray
    stderr: np.ndarray
    counts: np.ndarray
    n_evaluations: int
    converged: bool
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    moments: Moments | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        self.stderr = np.asarray(self.stderr, dtype=np.float64)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if not self.values.shape == self.stderr.shape == self.counts.shape:
            raise ValueError("values, stderr and counts must have the same shape (n,)")
        if self.moments is not None and self.moments.n != len(self.values):
            raise ValueError(f"moments of {self.moments.n} points for {len(self)} values")

    @classmethod
    def from_moments(
        cls,
        method: str,
        moments: Moments,
        n_evaluations: int,
        converged: bool,
        seconds: float,
        params: dict[str, Any],
    ) -> ValuationResult:
        """A Monte-Carlo result: values, standard errors and counts from its ``moments``."""
        return cls(
            method=method,
            values=moments.values(),
            stderr=moments.stderr(),
            counts=moments.counts(),
            n_evaluations=n_evaluations,
            converged=converged,
            seconds=seconds,
            params=params,
            moments=moments,
        )

    def __len__(self) -> int:
        return len(self.values)

    def ranking(self) -> np.ndarray:
        """Training indices from the most to the least valuable, ``(n,)``."""
        return np.argsort(-self.values, kind="stable")

    # -- continuing and merging ----------------------------------------------------------

    def _pooled_moments(self, what: str) -> Moments:
        """The moments, or a ValueError saying why this result cannot be ``what``."""
        if self.moments is None:
            reason = (
                "is exact: there is nothing to pool"
                if self.method == "leave_one_out"
                else f"lacks the per-point moments ({', '.join(MOMENT_ARRAYS)}): it was "
                "saved before mp-ray kept them; compute it again"
            )
            raise ValueError(f"this {self.method} result cannot be {what}: it {reason}")
        return self.moments

    def seeds(self) -> list[int]:
        """The seeds of the sample streams behind the result (several once merged)."""
        return list(self.params["seeds"]) if "seeds" in self.params else [self.params["seed"]]

    def continued_moments(self, method: str, seed: int, setting: dict[str, Any], n: int) -> Moments:
        """A copy of the moments a run of ``method`` over ``n`` points, drawing from
        ``seed``, with params ``setting`` (metric, truncation…, ``utility_range``) continues
        from; a ValueError naming what differs where this result is not such a run's."""
        moments = self._pooled_moments("continued")
        if self.method != method:
            raise ValueError(f"continue_from is a {self.method} result, not a {method} one")
        if len(self) != n:
            raise ValueError(f"continue_from values {len(self)} points, this utility {n}")
        if "seeds" in self.params:
            raise ValueError(
                f"continue_from merges the streams of seeds {self.params['seeds']}: only a "
                "run from one seed can be continued"
            )
        if self.params.get("seed") != seed:
            raise ValueError(
                f"continue_from drew from seed {self.params.get('seed')}, not {seed}: pass "
                f"seed={self.params.get('seed')} to continue its stream"
            )
        ours = {key: value for key, value in self.params.items() if key in setting}
        differ = _setting_differences(ours, setting)
        if differ:
            raise ValueError(f"continue_from was computed otherwise: {'; '.join(differ)}")
        return moments.copy()

    def merge(self, other: ValuationResult) -> ValuationResult:
        """The pooled estimate of two independent runs (different seeds) of the same method,
        utility and settings on the same points: counts, means and variances combined
        exactly (Chan et al.), evaluations and seconds summed, truncation records pooled,
        the seeds listed in ``params["seeds"]``. ``a + b`` is ``a.merge(b)``."""
        if self.method != other.method:
            raise ValueError(f"cannot merge a {self.method} result with a {other.method} one")
        if len(self) != len(other):
            raise ValueError(f"cannot merge values of {len(self)} and {len(other)} points")
        moments = self._pooled_moments("merged").merged(other._pooled_moments("merged"))
        seeds = self.seeds() + other.seeds()
        if len(set(seeds)) < len(seeds):
            raise ValueError(
                f"cannot merge runs that drew from the same seed ({sorted(seeds)}): their "
                "samples overlap; continue one run with continue_from= instead"
            )
        differ = _setting_differences(self.params, other.params)
        if differ:
            raise ValueError(f"cannot merge results computed otherwise: {'; '.join(differ)}")
        params = {key: v for key, v in self.params.items() if key not in _OUTCOME_PARAMS}
        params.update(seeds=sorted(seeds), samples=self.params["samples"] + other.params["samples"])
        if "truncated_share" in self.params:
            n = len(self)
            tally = TruncationTally.of_params(self.params, n) + TruncationTally.of_params(
                other.params, n
            )
            params.update(tally.params(self.params["utility_range"]))
        return ValuationResult.from_moments(
            self.method,
            moments,
            self.n_evaluations + other.n_evaluations,
            self.converged and other.converged,
            self.seconds + other.seconds,
            params,
        )

    def __add__(self, other: ValuationResult) -> ValuationResult:
        return self.merge(other)

    def _meta(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_evaluations": self.n_evaluations,
            "converged": self.converged,
            "seconds": self.seconds,
            "params": self.params,
        }

    # -- tables and Parquet ------------------------------------------------------------------

    def to_arrow(self) -> pa.Table:
        """One row per training point (index, value, stderr, count, and with moments
        ``moment_count_<s>``, ``moment_mean_<s>``, ``moment_m2_<s>`` per stream s); the run's
        metadata (method, evaluations, params, …) as JSON in the schema's
        ``mp_ray.valuation`` key."""
        columns: dict[str, np.ndarray] = {
            "index": np.arange(len(self)),
            "value": self.values,
            "stderr": self.stderr,
            "count": self.counts,
        }
        if self.moments is not None:
            for name, array in self.moments.arrays().items():
                columns.update({f"{name}_{s}": row for s, row in enumerate(array)})
        table = pa.table(columns)
        return table.replace_schema_metadata({"mp_ray.valuation": json.dumps(self._meta())})

    def to_parquet(self, path: str) -> None:
        """Write :meth:`to_arrow` to a Parquet file (whole or not at all);
        :meth:`from_parquet` reads it back."""
        with atomic_output(path) as partial:
            pq.write_table(self.to_arrow(), partial)

    @classmethod
    def from_parquet(cls, path: str) -> ValuationResult:
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(b"mp_ray.valuation")
        if raw is None:
            raise ValueError(f"{path} is not an mp-ray valuation result (no metadata)")
        columns = table.to_pydict()
        streams = sum(1 for name in columns if name.startswith(f"{MOMENT_ARRAYS[0]}_"))
        moments = (
            Moments(*([columns[f"{name}_{s}"] for s in range(streams)] for name in MOMENT_ARRAYS))
            if streams
            else None
        )
        return cls(
            values=columns["value"],
            stderr=columns["stderr"],
            counts=columns["count"],
            moments=moments,
            **json.loads(raw),
        )

    # -- the experiment's store ------------------------------------------------------------

    def to_store(self, store: ExperimentStore, name: str) -> None:
        """Write under ``valuation/<name>`` of the store (opened writable), with the moments
        when the result has them, replacing an earlier result of that name; the store must be
        built on the same dataset. The metadata is written last: a group without it is an
        interrupted write."""
        fingerprint = self.params.get("dataset_fingerprint")
        if fingerprint and fingerprint != store.spec.dataset_fingerprint:
            raise StoreMismatchError(
                f"these values were computed on another dataset than store {store.uri}'s"
            )
        if len(self) != store.spec.n_train:
            raise ValueError(
                f"{len(self)} values do not match the store's {store.spec.n_train} points"
            )
        arrays = {"values": self.values, "stderr": self.stderr, "counts": self.counts}
        if self.moments is not None:
            arrays.update(self.moments.arrays())
        store.artifacts.write("valuation", name, arrays, self._meta())

    @classmethod
    def from_store(cls, store: ExperimentStore, name: str) -> ValuationResult:
        """The result under ``valuation/<name>``; KeyError when it is absent or was not
        completely written."""
        try:
            arrays, meta = store.artifacts.read("valuation", name)
        except ArtifactIncompleteError:
            raise KeyError(
                f"valuation result {name!r} in {store.uri} was not completely written: run "
                "`mp-ray value` again"
            ) from None
        except ArtifactNotFoundError:
            raise KeyError(f"store {store.uri} has no valuation result named {name!r}") from None
        saved = [arrays.pop(name) for name in MOMENT_ARRAYS if name in arrays]
        return cls(**arrays, **meta, moments=Moments(*saved) if saved else None)
