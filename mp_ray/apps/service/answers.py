"""The answers of the application service: everything either front end (the command line,
Ray Serve, :class:`~mp_ray.experiment.Experiment`) shows of an application's run. Each
answer of an application is a table (``to_arrow()``, ``to_pandas()``): one row per training
point (values, selection, memorisation), per target (counterfactual) or per method
(calibration, addition)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from mp_ray.apps.addition import Addition
from mp_ray.apps.calibration import CalibrationResult
from mp_ray.apps.counterfactual import Counterfactual
from mp_ray.apps.fidelity import Fidelity
from mp_ray.apps.memorization import MemorizationResult
from mp_ray.apps.selection import SelectionResult
from mp_ray.apps.valuation import ValuationResult
from mp_ray.apps.valuation.tasks import RemovalCurve
from mp_ray.tables import Tabular, points_table, records_table


class ModelAnswer(BaseModel):
    """One predicted model: its parameters, or its predictions on given rows."""

    n_points: int = Field(description="Size of the subset.")
    params: list[float] | None = Field(default=None, description="Flattened parameters (d,).")
    predictions: list[float] | None = Field(default=None, description="Predicted labels.")
    probabilities: list[list[float]] | None = Field(
        default=None, description="Class probabilities (classification), one row per input."
    )


@dataclass
class ValueAnswer(Tabular):
    """Values of every training point, whose labels are ``labels (n,)``; the fidelity check
    (None unless a predictor answered and a check was asked); noisy-label detection (None
    without flipped labels); the retrained test accuracy after removing the highest- and the
    lowest-valued points first; the store the values were saved in (None unless asked)."""

    result: ValuationResult
    labels: np.ndarray
    fidelity: Fidelity | None
    noisy_labels: dict[str, float] | None
    curves: list[RemovalCurve]
    saved_in: str | None = None

    def to_arrow(self) -> pa.Table:
        """The values' table (:meth:`ValuationResult.to_arrow`, its metadata included) with
        each point's ``label`` after its ``index``."""
        return self.result.to_arrow().add_column(1, "label", pa.array(self.labels))


@dataclass
class SelectAnswer(Tabular):
    """The selection of training points with labels ``labels (n,)``; the retrained test
    accuracy of it, of random subsets of its size (and of the top-valued points, given
    values), by name (empty unless asked for); its fidelity check or None."""

    result: SelectionResult
    labels: np.ndarray
    scores: dict[str, float]
    fidelity: Fidelity | None

    def to_arrow(self) -> pa.Table:
        """One row per training point: ``index``, ``label``, whether it was ``selected``."""
        return points_table(self.labels, selected=self.result.mask)


@dataclass
class MemorizationAnswer(Tabular):
    """Memorisation and influence scores of the training points with labels ``labels
    (n,)`` from ``subsets`` models; the fidelity check or None."""

    result: MemorizationResult
    labels: np.ndarray
    subsets: int
    fidelity: Fidelity | None

    def to_arrow(self) -> pa.Table:
        """One row per training point: ``index``, ``label``, ``memorization`` and its
        ``stderr``, and its largest influence on a test point (``max_influence``, on test
        point ``influenced``); the score, subsets, α (and the fidelity check, as JSON) in
        the schema's ``mp_ray.*`` keys."""
        result, influence = self.result, self.result.influence
        table = points_table(
            self.labels,
            memorization=result.memorization,
            stderr=result.memorization_stderr,
            max_influence=influence.max(axis=1),
            influenced=influence.argmax(axis=1),
        )
        metadata = {"score": result.score, "subsets": str(self.subsets), "alpha": str(result.alpha)}
        if self.fidelity is not None:
            metadata["fidelity"] = json.dumps(self.fidelity.to_json())
        return table.replace_schema_metadata({f"mp_ray.{k}": v for k, v in metadata.items()})


@dataclass
class CalibrateAnswer(Tabular):
    """The calibration table; the ensemble's mean class probabilities ``(m, C)`` on the
    request's rows (None without rows); the fidelity check or None."""

    result: CalibrationResult
    probabilities: np.ndarray | None
    fidelity: Fidelity | None

    def to_arrow(self) -> pa.Table:
        """One row per method (θ(D), the ensemble, temperature scaling, …): its ``ece``,
        ``nll`` and ``accuracy`` on the test split."""
        return records_table([{"method": name, **row} for name, row in self.result.rows.items()])


@dataclass
class CounterfactualAnswer(Tabular):
    """The targets' outputs before and after the removal: ``targets (T,)`` test indices
    (None for rows), their ``labels (T,)``, the ``removed (r,)`` training indices; the
    retrained margin change ``(T,)`` and the fidelity check, None without a check."""

    targets: np.ndarray | None
    labels: np.ndarray
    removed: np.ndarray
    result: Counterfactual
    retrained_change: np.ndarray | None
    fidelity: Fidelity | None

    def to_arrow(self) -> pa.Table:
        """One row per target: its test index ``target`` (null for given rows), ``label``,
        each output kind (margin, loss, prediction, probability) ``<kind>_before`` and
        ``<kind>_after`` the removal, the ``margin_change``, whether the prediction
        ``flipped``, and the ``retrained_change`` of the margin (only with a check)."""
        result = self.result
        targets = [None] * len(self.labels) if self.targets is None else self.targets
        columns: dict[str, object] = {"target": pa.array(targets, pa.int64()), "label": self.labels}
        for kind, before in result.before.items():
            columns[f"{kind}_before"] = before
            columns[f"{kind}_after"] = result.after[kind][0]
        columns["margin_change"] = result.change("margin")[0]
        columns["flipped"] = result.flipped[0]
        if self.retrained_change is not None:
            columns["retrained_change"] = self.retrained_change
        return pa.table(columns)


@dataclass
class AddAnswer(Tabular):
    """ModelPred against influence functions (and retraining) with the new points, scored
    on ``n_scored`` test points; ModelPred's model with them; ``n_added`` new points."""

    addition: Addition
    model: ModelAnswer
    n_added: int
    n_scored: int

    def to_arrow(self) -> pa.Table:
        """One row per method (ModelPred, influence functions, retraining): the test
        accuracy (or R²) before and after, its change, the loss change, the share of
        predictions changed, the relative error against retraining and the seconds."""
        summary = self.addition.summary()
        return records_table([{"method": name, **row} for name, row in summary.items()])
