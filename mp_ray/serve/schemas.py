"""Request and response bodies of the HTTP API (v1), validated by pydantic.

Each request is the application service's own (:mod:`mp_ray.apps.service.requests`: the
same fields, defaults and ranges as the command line's options) with the bounds a public
endpoint needs on top, so malformed or oversized requests are answered 422 with the
offending field named, before any work is done. Every field has a strict type (an integer
is a JSON integer: ``"1"``, ``1.0`` and ``true`` are refused). Limits that depend on the
ground set (index range, list and mask length, feature count) are checked by
:class:`~mp_ray.apps.service.AppService` and answered the same way.

The bounds also keep every valid request far below the transport between the gateway and
the model replicas (:data:`mp_ray.serve.ingress.REPLICA_MESSAGE_BYTES`): the largest one
pickles to about 15 MB (10^6 indices and 2^20 feature values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from mp_ray.apps.service import requests
from mp_ray.apps.service.answers import ModelAnswer

MAX_POINTS = 1_000_000  # largest ground set served: entries of an index list or mask
MAX_INPUT_ROWS = 4096  # feature rows per request
MAX_INPUT_VALUES = 2**20  # feature values (rows × features) per request
MAX_BUDGET = 5000  # permutations / subsets / ensemble members / checked models per request
MIN_SUBSETS, MAX_SUBSETS = 10, 20_000  # memorisation: 20,000 is a predictor's default
MAX_SEED = 2**32 - 1


def _at_most(limit: int, least: int = 0) -> Callable[[int | None], int | None]:
    """A validator of a count or seed: None, or within ``[least, limit]``."""

    def check(value: int | None) -> int | None:
        if value is not None and not least <= value <= limit:
            raise ValueError(f"must lie in [{least}, {limit}]")
        return value

    return check


def _points(indices: list[Any] | None) -> list[Any] | None:
    """At most one entry per point of the largest ground set; integers in its range (a
    position in the ground set, or a class label: there are no more classes than points)."""
    if indices is None:
        return indices
    if len(indices) > MAX_POINTS:
        raise ValueError(f"at most {MAX_POINTS} entries")
    if any(isinstance(i, int) and not 0 <= i < MAX_POINTS for i in indices):
        raise ValueError(f"entries must lie in [0, {MAX_POINTS})")
    return indices


def _rows(rows: list[list[float]] | None) -> list[list[float]] | None:
    """At most :data:`MAX_INPUT_ROWS` rows and :data:`MAX_INPUT_VALUES` values."""
    if rows is None:
        return rows
    if len(rows) > MAX_INPUT_ROWS:
        raise ValueError(f"at most {MAX_INPUT_ROWS} rows")
    if len(rows) * max((len(row) for row in rows), default=0) > MAX_INPUT_VALUES:
        raise ValueError(f"at most {MAX_INPUT_VALUES} feature values (rows × features)")
    return rows


class _Checked(BaseModel):
    """The fidelity check of a served request. An endpoint answers from the predictor alone
    unless the request asks for retraining: a fidelity check (``check``), removal curves or
    test scores cost retrained models per request."""

    check: int | None = Field(
        default=0, ge=0, description="Models retrained to check the answer (0: none)."
    )
    _check_seed = field_validator("seed", check_fields=False)(_at_most(MAX_SEED))
    _check_check = field_validator("check")(_at_most(MAX_BUDGET))


class Subset(requests.Subset):
    _bounded = field_validator("indices", "mask")(_points)


class PredictRequest(requests.PredictRequest):
    _bounded = field_validator("indices", "mask")(_points)
    _bounded_rows = field_validator("inputs")(_rows)


class ValuesRequest(_Checked, requests.ValueRequest):
    removal_curves: bool = Field(default=False, description="Also retrain removal curves.")
    _bounded = field_validator("max_samples")(_at_most(MAX_BUDGET, 1))


class SelectRequest(_Checked, requests.SelectRequest):
    test_scores: bool = Field(
        default=False, description="Also retrain and score on the test split."
    )
    _bounded = field_validator("size")(_at_most(MAX_POINTS, 1))


class MemorizationRequest(_Checked, requests.MemorizationRequest):
    _bounded = field_validator("subsets")(_at_most(MAX_SUBSETS, MIN_SUBSETS))


class CalibratedRequest(_Checked, requests.CalibrateRequest):
    _bounded = field_validator("models")(_at_most(MAX_BUDGET, 1))
    _bounded_rows = field_validator("inputs")(_rows)


class CounterfactualRequest(_Checked, requests.CounterfactualRequest):
    _bounded = field_validator("remove", "targets", "labels")(_points)
    _bounded_rows = field_validator("inputs")(_rows)


class AddRequest(requests.AddRequest):
    compare: bool = Field(default=False, description="Also answer by influence functions.")
    base: Subset | None = Field(
        default=None,
        description="The subset the points are added to; all training points without it.",
    )
    _bounded = field_validator("labels")(_points)
    _bounded_rows = field_validator("inputs", "predict_on")(_rows)

    @model_validator(mode="after")
    def _bounded_values(self) -> AddRequest:
        values = sum(len(row) for row in [*(self.inputs or []), *(self.predict_on or [])])
        if values > MAX_INPUT_VALUES:
            raise ValueError(
                f"at most {MAX_INPUT_VALUES} feature values in `inputs` and `predict_on` together"
            )
        return self


PredictResponse = ModelAnswer  # the model for a subset, with or without new points


class ValuesResponse(BaseModel):
    method: str
    values: list[float]
    stderr: list[float] = Field(description="Standard errors; −1 where undefined (one sample).")
    models_scored: int
    cached: bool = Field(description="Served from the cache of this predictor version.")
    fidelity: dict | None = Field(
        default=None, description="The check against retraining (null without one)."
    )
    noisy_labels: dict | None = Field(
        default=None,
        description="Detection of the dataset's flipped labels by low value: flipped, f1, auc "
        "(null when none is flipped).",
    )
    removal_fractions: list[float] = Field(
        default_factory=list, description="Shares of the points removed in the removal curves."
    )
    removal_curves: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Retrained test accuracy after removing each share, the highest-valued "
        "points first (high) or the lowest (low).",
    )


class SelectResponse(BaseModel):
    indices: list[int]
    predicted_accuracy: float = Field(description="Validation accuracy the predictor expects.")
    greedy_points_kept: int | None = Field(
        default=None, description="greedy with a holdout: greedy points kept, the rest random."
    )
    test_accuracy: dict[str, float] = Field(
        default_factory=dict,
        description="Retrained test accuracy of the selection and of random subsets its size.",
    )
    fidelity: dict | None = Field(
        default=None, description="The check against retraining (null without one)."
    )


class MemorizationResponse(BaseModel):
    memorization: list[float]
    stderr: list[float]
    score: str = Field(description="The score memorisation was measured with.")
    subsets: int = Field(description="Sampled subsets (models).")
    fidelity: dict | None = Field(
        default=None, description="The check against retraining (null without one)."
    )


class CalibratedResponse(BaseModel):
    probabilities: list[list[float]] | None = Field(
        default=None, description="Ensemble class probabilities on `inputs` (null without)."
    )
    methods: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="ECE, NLL and accuracy on the test split of θ(D), temperature-scaled θ(D) "
        "and the ensemble.",
    )
    fidelity: dict | None = Field(
        default=None, description="The check against retraining (null without one)."
    )


class CounterfactualResponse(BaseModel):
    probability_before: list[float] | None = Field(
        default=None, description="Probability of each target's label (classification)."
    )
    probability_after: list[float] | None = None
    margin_change: list[float]
    prediction_flips: list[bool]
    retrained_change: list[float] | None = Field(
        default=None, description="The margin change by retraining (null without a check)."
    )
    fidelity: dict | None = Field(
        default=None, description="The check against retraining (null without one)."
    )


class Metadata(BaseModel):
    version: str = Field(description="Identifies the loaded predictor (its checkpoint URI).")
    dataset: str
    dataset_fingerprint: str
    store_uri: str
    n_train: int
    n_features: int
    n_classes: int
    n_params: int
    learner: dict
    metrics: dict
