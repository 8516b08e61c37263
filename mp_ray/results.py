"""What the stages on Ray of an :class:`~mp_ray.experiment.Experiment` return, each
exportable as a table (:class:`~mp_ray.tables.Tabular`: ``to_arrow()``, ``to_pandas()``).
The applications return the application service's answers
(:mod:`mp_ray.apps.service.answers`), tables too.

One table row per:

- :class:`RetrainResult`: model in the store (row, block, seed, subset size, metrics);
- :class:`FitResult`: validation of the fit (step, validation error, …);
- :class:`TuneResult`: trial of the search (its values, steps, validation error);
- :class:`DatamodelsResult`: target (bias, chosen λ, validation error, non-zero weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from mp_ray.store import ExperimentStore, rows_table
from mp_ray.tables import Tabular, records_table

if TYPE_CHECKING:
    from ray.tune import Result, ResultGrid

    from mp_ray.datamodels.fit import Datamodels
    from mp_ray.predictor.fit import FitOutcome
    from mp_ray.retrain import RetrainReport
    from mp_ray.tuning import TuneOutcome


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
    exported (``predictor_uri``), Ray Tune's results (``grid``, ``best``) and one table row
    per trial, best first."""

    outcome: TuneOutcome

    @property
    def predictor_uri(self) -> str:
        return self.outcome.predictor_uri

    @property
    def best_params(self) -> dict[str, Any]:
        return self.outcome.best_params

    @property
    def grid(self) -> ResultGrid:
        """Ray Tune's results of the search, one ``Result`` per trial."""
        return self.outcome.grid

    @property
    def best(self) -> Result:
        """The best trial's entry of :attr:`grid`."""
        return self.outcome.best

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
