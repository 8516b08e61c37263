"""Request and response bodies of the HTTP API (v1), validated by pydantic.

Every field has a strict type (an integer is a JSON integer: ``"1"``, ``1.0`` and ``true``
are refused) and bounds, so malformed or oversized requests are answered 422 with the
offending field named, before any work is done. Limits that depend on the ground set
(index range, list and mask length, feature count) are checked by
:class:`~mp_ray.serve.service.ModelPredService` and answered the same way.

The bounds also keep every valid request far below the transport between the gateway and
the model replicas (:data:`mp_ray.serve.ingress.REPLICA_MESSAGE_BYTES`): the largest one
pickles to about 15 MB (10^6 indices and 2^20 feature values).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

MAX_POINTS = 1_000_000  # largest ground set served: entries of an index list or mask
MAX_INPUT_ROWS = 4096  # feature rows per request
MAX_INPUT_VALUES = 2**20  # feature values (rows × features) per request
MAX_BUDGET = 5000  # permutations / subsets / ensemble members per request
MAX_SEED = 2**32 - 1

# A position in the ground set, or a class label (there are no more classes than points).
Index = Annotated[int, Field(ge=0, lt=MAX_POINTS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="Root seed of the sampling.")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _finite_rows(rows: list[list[float]] | None) -> list[list[float]] | None:
    if rows is None:
        return rows
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise ValueError("all rows must have the same number of features")
    if len(rows) * max(widths, default=0) > MAX_INPUT_VALUES:
        raise ValueError(f"at most {MAX_INPUT_VALUES} feature values (rows × features)")
    for r, row in enumerate(rows):
        if any(not math.isfinite(v) for v in row):
            raise ValueError(f"row {r} holds NaN or infinity")
    return rows


def _distinct(indices: list[int] | None) -> list[int] | None:
    if indices is not None and len(set(indices)) != len(indices):
        raise ValueError("holds duplicates")
    return indices


class Subset(_Body):
    """A training subset, as indices into the ground set or as a true/false mask over it."""

    indices: list[Index] | None = Field(
        default=None, max_length=MAX_POINTS, description="Training indices in the subset."
    )
    mask: list[bool] | None = Field(
        default=None, max_length=MAX_POINTS, description="Membership of every training point."
    )

    _check_indices = field_validator("indices")(_distinct)

    @model_validator(mode="after")
    def _one_of(self) -> Subset:
        if (self.indices is None) == (self.mask is None):
            raise ValueError("give exactly one of `indices` and `mask`")
        return self


# Rows a requested model predicts on; without them, the model's parameters are answered.
PredictionRows = Annotated[
    list[list[float]] | None,
    Field(
        max_length=MAX_INPUT_ROWS,
        description="Feature rows (already scaled like the training data) to predict on; "
        "without them the parameters are returned.",
    ),
    AfterValidator(_finite_rows),
]


class PredictRequest(Subset):
    """The model trained on a subset: its parameters, or its predictions on ``inputs``."""

    inputs: PredictionRows = None


class PredictResponse(BaseModel):
    n_points: int = Field(description="Size of the subset.")
    params: list[float] | None = Field(default=None, description="Flattened parameters (d,).")
    predictions: list[float] | None = Field(default=None, description="Predicted labels.")
    probabilities: list[list[float]] | None = Field(
        default=None, description="Class probabilities (classification), one row per input."
    )


class ValuesRequest(_Body):
    method: Literal["tmc", "banzhaf", "loo"] = Field(default="tmc", description="Method.")
    metric: Literal["accuracy", "neg_loss"] = Field(default="neg_loss", description="Utility.")
    budget: int = Field(
        default=200, ge=1, le=MAX_BUDGET, description="Permutations (tmc) or subsets (banzhaf)."
    )
    seed: Seed = 0


class ValuesResponse(BaseModel):
    method: str
    values: list[float]
    stderr: list[float] = Field(description="Standard errors; −1 where undefined (one sample).")
    models_scored: int
    cached: bool = Field(description="Served from the cache of this predictor version.")


class SelectRequest(_Body):
    size: int = Field(ge=1, le=MAX_POINTS, description="How many training points to select.")
    method: Literal["greedy", "relaxed"] = "greedy"
    seed: Seed = 0


class SelectResponse(BaseModel):
    indices: list[int]
    predicted_accuracy: float = Field(description="Validation accuracy the predictor expects.")


class MemorizationRequest(_Body):
    subsets: int = Field(default=1000, ge=10, le=MAX_BUDGET)
    alpha: float = Field(default=0.7, gt=0, lt=1)
    score: Literal["probability", "correct"] = Field(
        default="probability",
        description="probability: of each point's own label; correct: 0/1 correctness.",
    )
    seed: Seed = 0


class MemorizationResponse(BaseModel):
    memorization: list[float]
    stderr: list[float]
    score: str = Field(description="The score memorisation was measured with.")


class CalibratedRequest(_Body):
    inputs: list[list[float]] = Field(min_length=1, max_length=MAX_INPUT_ROWS)
    n_models: int = Field(default=100, ge=1, le=MAX_BUDGET)
    fraction: float = Field(default=0.8, gt=0, le=1)
    seed: Seed = 0

    _check_inputs = field_validator("inputs")(_finite_rows)


class CalibratedResponse(BaseModel):
    probabilities: list[list[float]] = Field(description="Ensemble class probabilities.")


class LabelledRows(_Body):
    """Labelled feature rows (already scaled like the training data; labels as class ids)."""

    inputs: list[list[float]] = Field(min_length=1, max_length=MAX_INPUT_ROWS)
    labels: list[Index] = Field(min_length=1, max_length=MAX_INPUT_ROWS)

    _check_inputs = field_validator("inputs")(_finite_rows)

    @model_validator(mode="after")
    def _aligned(self) -> LabelledRows:
        if len(self.inputs) != len(self.labels):
            raise ValueError("`inputs` and `labels` must have the same length")
        return self


class CounterfactualRequest(LabelledRows):
    remove: list[Index] = Field(
        min_length=1, max_length=MAX_POINTS, description="Training indices to drop."
    )

    _check_remove = field_validator("remove")(_distinct)


class AddRequest(LabelledRows):
    """The model trained on a subset plus new points (``inputs``, ``labels``) that are not
    in the ground set: its parameters, or its predictions on ``predict_on``."""

    base: Subset | None = Field(
        default=None,
        description="The subset the points are added to; all training points without it.",
    )
    predict_on: PredictionRows = None

    @model_validator(mode="after")
    def _bounded(self) -> AddRequest:
        values = sum(len(row) for row in [*self.inputs, *(self.predict_on or [])])
        if values > MAX_INPUT_VALUES:
            raise ValueError(
                f"at most {MAX_INPUT_VALUES} feature values in `inputs` and `predict_on` together"
            )
        return self


class CounterfactualResponse(BaseModel):
    probability_before: list[float]
    probability_after: list[float]
    margin_change: list[float]
    prediction_flips: list[bool]


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
