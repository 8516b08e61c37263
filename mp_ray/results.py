"""What the stages of an :class:`~mp_ray.experiment.Experiment` return, each exportable as
a table: ``to_arrow()`` gives a :class:`pyarrow.Table`, ``to_pandas()`` a
:class:`pandas.DataFrame` of the same columns.

One table row per:

- :class:`RetrainResult`: model in the store (row, block, seed, subset size, metrics);
- :class:`FitResult`: validation of the fit (step, validation error, …);
- :class:`TuneResult`: trial of the search (its values, steps, validation error);
- :class:`DatamodelsResult`: target (bias, chosen λ, validation error, non-zero weights);
- :class:`Values`: training point (value, standard error, count, moments);
- :class:`Memorization`: training point (label, memorisation, largest influence);
- :class:`Selection`: training point (label, whether it was selected).
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mp_ray.apps.valuation.result import ValuationResult
from mp_ray.store import ExperimentStore, rows_table

if TYPE_CHECKING:
    import pandas as pd

    from mp_ray.apps.memorization import MemorizationResult
    from mp_ray.apps.selection import SelectionResult
    from mp_ray.datamodels.fit import Datamodels
    from mp_ray.predictor.fit import FitOutcome
    from mp_ray.retrain import RetrainReport
    from mp_ray.tuning import TuneOutcome


class Tabular(ABC):
    """A result with a table view."""

    @abstractmethod
    def to_arrow(self) -> pa.Table:
        """The result as an Arrow table."""

    def to_pandas(self) -> pd.DataFrame:
        """The result as a pandas DataFrame (the columns of :meth:`to_arrow`)."""
        return self.to_arrow().to_pandas()


def records_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """One row per record; the columns are every key in order of first appearance, null
    where a record lacks the key."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    return pa.table({key: [record.get(key) for record in records] for key in columns})


@dataclass
class RetrainResult(Tabular):
    """A retraining run's ``report`` and the ``store`` it filled; the table holds every
    model of the store, trained by this run or an earlier one."""

    report: RetrainReport
    store: ExperimentStore

    def to_arrow(self) -> pa.Table:
        return rows_table(self.store)


@dataclass
class FitResult(Tabular):
    """A predictor fit: where the predictor is (``outcome.predictor_uri``), its last
    metrics, and ``history``, the metrics of each validation this fit reported (none when
    it resumed a run that had already finished)."""

    outcome: FitOutcome
    history: list[dict[str, Any]]

    @property
    def predictor_uri(self) -> str:
        return self.outcome.predictor_uri

    @property
    def metrics(self) -> dict[str, Any]:
        return self.outcome.metrics

    def to_arrow(self) -> pa.Table:
        return records_table(self.history)


@dataclass
class TuneResult(Tabular):
    """A hyperparameter search: the best trial's values and error, where its predictor was
    exported (``predictor_uri``) and one table row per trial, best first."""

    outcome: TuneOutcome

    @property
    def predictor_uri(self) -> str:
        return self.outcome.predictor_uri

    @property
    def best_params(self) -> dict[str, Any]:
        return self.outcome.best_params

    def to_arrow(self) -> pa.Table:
        return records_table(self.outcome.trials)


@dataclass
class DatamodelsResult(Tabular):
    """Datamodels fitted on the store: their ``summary`` (rows used, time, test LDS, …)
    and the ``datamodels`` themselves (weights ``(T, n)``, bias ``(T,)``, …)."""

    summary: dict[str, Any]
    datamodels: Datamodels

    def to_arrow(self) -> pa.Table:
        """One row per target t: ``bias``, the chosen ``lam``, ``val_mse`` at it and the
        number of ``nonzero`` weights."""
        models = self.datamodels
        return pa.table(
            {
                "target": np.arange(models.n_targets),
                "bias": models.bias,
                "lam": models.lam,
                "val_mse": models.val_mse,
                "nonzero": (models.weights != 0).sum(axis=1),
            }
        )


class Values(ValuationResult, Tabular):
    """A :class:`~mp_ray.apps.valuation.ValuationResult` with a table view: the table its
    :meth:`~mp_ray.apps.valuation.ValuationResult.to_parquet` writes (index, value, stderr,
    count and the per-stream moments), its metadata included."""

    @classmethod
    def of(cls, result: ValuationResult) -> Values:
        return cls(**{field.name: getattr(result, field.name) for field in fields(result)})

    def to_arrow(self) -> pa.Table:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "values.parquet")
            self.to_parquet(path)
            return pq.read_table(path)


@dataclass
class Memorization(Tabular):
    """Memorisation scores (``result``) of the training points with labels ``labels (n,)``."""

    result: MemorizationResult
    labels: np.ndarray

    def to_arrow(self) -> pa.Table:
        """One row per training point: its ``label``, ``memorization`` and its ``stderr``,
        and its largest influence on a test point (``max_influence``, on ``influenced``)."""
        influence = self.result.influence
        return pa.table(
            {
                "index": np.arange(len(self.labels)),
                "label": self.labels,
                "memorization": self.result.memorization,
                "stderr": self.result.memorization_stderr,
                "max_influence": influence.max(axis=1),
                "influenced": influence.argmax(axis=1),
            }
        )


@dataclass
class Selection(Tabular):
    """A subset chosen on the validation split (``result``: its ``mask (n,)``, ``indices``,
    the utility it reached) of the training points with labels ``labels (n,)``."""

    result: SelectionResult
    labels: np.ndarray

    @property
    def indices(self) -> np.ndarray:
        return self.result.indices

    def to_arrow(self) -> pa.Table:
        """One row per training point: its ``label`` and whether it was ``selected``."""
        return pa.table(
            {
                "index": np.arange(len(self.labels)),
                "label": self.labels,
                "selected": self.result.mask,
            }
        )
