"""The answers of the application service: everything either front end (the command line,
Ray Serve) shows of an application's run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from mp_ray.apps.addition import Addition
from mp_ray.apps.calibration import CalibrationResult
from mp_ray.apps.counterfactual import Counterfactual
from mp_ray.apps.fidelity import Fidelity
from mp_ray.apps.memorization import MemorizationResult
from mp_ray.apps.selection import SelectionResult
from mp_ray.apps.valuation import ValuationResult
from mp_ray.apps.valuation.tasks import RemovalCurve


class ModelAnswer(BaseModel):
    """One predicted model: its parameters, or its predictions on given rows."""

    n_points: int = Field(description="Size of the subset.")
    params: list[float] | None = Field(default=None, description="Flattened parameters (d,).")
    predictions: list[float] | None = Field(default=None, description="Predicted labels.")
    probabilities: list[list[float]] | None = Field(
        default=None, description="Class probabilities (classification), one row per input."
    )


@dataclass
class ValueAnswer:
    """Values of every training point; the fidelity check (None unless a predictor answered
    and a check was asked); noisy-label detection (None without flipped labels); the
    retrained test accuracy after removing the highest- and the lowest-valued points first;
    the store the values were saved in (None unless asked)."""

    result: ValuationResult
    fidelity: Fidelity | None
    noisy_labels: dict[str, float] | None
    curves: list[RemovalCurve]
    saved_in: str | None = None


@dataclass
class SelectAnswer:
    """The selection; the retrained test accuracy of it, of random subsets of its size (and
    of the top-valued points, given values), by name (empty unless asked for); its
    fidelity check or None."""

    result: SelectionResult
    scores: dict[str, float]
    fidelity: Fidelity | None


@dataclass
class MemorizationAnswer:
    """Memorisation and influence scores from ``subsets`` models; the fidelity check or
    None."""

    result: MemorizationResult
    subsets: int
    fidelity: Fidelity | None


@dataclass
class CalibrateAnswer:
    """The calibration table; the ensemble's mean class probabilities ``(m, C)`` on the
    request's rows (None without rows); the fidelity check or None."""

    result: CalibrationResult
    probabilities: np.ndarray | None
    fidelity: Fidelity | None


@dataclass
class CounterfactualAnswer:
    """The targets' outputs before and after the removal: ``targets (T,)`` test indices
    (None for rows), their ``labels (T,)``, the ``removed (r,)`` training indices; the
    retrained margin change ``(T,)`` and the fidelity check, None without a check."""

    targets: np.ndarray | None
    labels: np.ndarray
    removed: np.ndarray
    result: Counterfactual
    retrained_change: np.ndarray | None
    fidelity: Fidelity | None


@dataclass
class AddAnswer:
    """ModelPred against influence functions (and retraining) with the new points, scored
    on ``n_scored`` test points; ModelPred's model with them; ``n_added`` new points."""

    addition: Addition
    model: ModelAnswer
    n_added: int
    n_scored: int
