"""The requests of the application service: one pydantic model per application, shared by
the command line (built from its options) and Ray Serve (a JSON body validated into it).

Every field is typed strictly (no ``"1"`` for 1) and bounded by the command line's option
ranges; a request whose fields cannot go together (a fidelity check too small for its
kind, rows and labels of different lengths) is refused when built. What depends on the
ground set (index ranges, feature counts) is checked by
:class:`~mp_ray.apps.service.service.AppService`, which refuses it with
:class:`RequestError` naming the field.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from mp_ray.apps.checks import check_budget
from mp_ray.apps.fidelity import DEFAULT_BUDGET
from mp_ray.apps.valuation import (
    AbsoluteStandardError,
    MaxSamples,
    MinSamples,
    NoTruncation,
    RelativeTruncation,
    StoppingCriterion,
    Truncation,
)
from mp_ray.defaults import MIN_STDERR_SAMPLES
from mp_ray.errors import InputError


class RequestError(InputError):
    """A request that cannot be answered; ``field`` names what is wrong with it and
    ``message`` says what (a sentence that may start with the field's name)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Picklable, so it crosses from a Serve model replica to the gateway intact.
        return (RequestError, (self.field, self.message))


def _finite_rows(rows: list[list[float]] | None) -> list[list[float]] | None:
    """Rows of one width without NaN or infinity."""
    if rows is None:
        return rows
    if len({len(row) for row in rows}) > 1:
        raise ValueError("all rows must have the same number of features")
    for r, row in enumerate(rows):
        if any(not math.isfinite(v) for v in row):
            raise ValueError(f"row {r} holds NaN or infinity")
    return rows


def _distinct(indices: list[int] | None) -> list[int] | None:
    if indices is not None and len(set(indices)) != len(indices):
        raise ValueError("holds duplicates")
    return indices


# Feature rows, already scaled like the training data, one list of p values a row.
Rows = Annotated[list[list[float]], AfterValidator(_finite_rows)]
Seed = Annotated[int, Field(ge=0, description="Root seed of the sampled subsets.")]
Check = Annotated[
    int | None,
    Field(
        ge=0,
        description="With a predictor: models retrained to check the answer against "
        f"retraining on cases of its own kind (None: {DEFAULT_BUDGET}; 0: no check).",
    ),
]


class Request(BaseModel):
    """A request: strict types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CheckedRequest(Request):
    """A request answered with a fidelity check of ``check`` retrained models."""

    seed: Seed = 0
    check: Check = None

    @property
    def budget(self) -> int:
        """Retrained models of the fidelity check (``check``, else the checks' default)."""
        return DEFAULT_BUDGET if self.check is None else self.check


class ValueRequest(CheckedRequest):
    """Value every training point (``mp-ray value``, ``POST /v1/values``)."""

    method: Literal["tmc", "beta", "banzhaf", "loo"] = Field(
        default="tmc", description="Valuation method."
    )
    metric: Literal["accuracy", "neg_loss"] = Field(
        default="neg_loss", description="Utility on the validation split."
    )
    max_samples: int = Field(
        default=500, ge=1, description="Budget: permutations (tmc, beta) or subsets (banzhaf)."
    )
    stderr_tol: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Also stop once every standard error is at most this (after "
        f"{MIN_STDERR_SAMPLES} samples).",
    )
    truncation: float | None = Field(
        default=0.01,
        ge=0,
        description="tmc: stop a permutation once its prefix is within this share of the "
        "utility range |U(D) − U(∅)| of U(D) (0 or None: no truncation).",
    )
    alpha: float = Field(default=16.0, description="beta: the Beta(α, β) weights' α.")
    beta: float = Field(default=1.0, description="beta: the Beta(α, β) weights' β.")
    retrain_below: int | None = Field(
        default=None,
        ge=0,
        description="tmc and beta from a predictor: permutation prefixes of fewer points "
        "than this are scored by retraining instead (the set function extrapolates on "
        "subsets that small, and the early prefixes carry the largest marginal "
        "contributions). None: a fifth of the points for convex learners, 0 for others.",
    )
    removal_curves: bool = Field(
        default=True,
        description="Also retrain the test-accuracy removal curves (the highest- and "
        "lowest-valued points removed first; 2 × 11 models).",
    )

    @model_validator(mode="after")
    def _checkable(self) -> ValueRequest:
        check_budget(self.method, self.budget)
        return self

    def stopping(self) -> StoppingCriterion:
        """The budget, or the budget and, after the first samples, the standard errors."""
        stopping: StoppingCriterion = MaxSamples(self.max_samples)
        if self.stderr_tol is not None:
            guarded = MinSamples(MIN_STDERR_SAMPLES) & AbsoluteStandardError(self.stderr_tol)
            stopping = stopping | guarded
        return stopping

    def truncation_policy(self) -> Truncation:
        """How a tmc permutation is truncated (other methods do not truncate)."""
        if self.method == "tmc" and self.truncation:
            return RelativeTruncation(self.truncation)
        return NoTruncation()


class SelectRequest(CheckedRequest):
    """Choose a subset of a given size on the validation split (``mp-ray select``,
    ``POST /v1/select``)."""

    size: int = Field(ge=1, description="How many training points to keep.")
    method: Literal["greedy", "relaxed"] = Field(
        default="greedy",
        description="greedy forward selection, or the predictor's continuous relaxation.",
    )
    objective: Literal["neg_loss", "accuracy"] = Field(
        default="neg_loss",
        description="greedy: what it maximises on the validation split — minus the log loss "
        "(moves with every point), or the accuracy (flat and tied: overfits).",
    )
    holdout: float = Field(
        default=0.0,
        ge=0.0,
        le=0.9,
        description="greedy: share of the validation split held out to choose how many "
        "greedy points to keep (the rest random); 0: greedy on the whole split.",
    )
    test_scores: bool = Field(
        default=True,
        description="Also retrain the selection and random subsets of its size and score "
        "them on the test split.",
    )

    @model_validator(mode="after")
    def _checkable(self) -> SelectRequest:
        check_budget("selection", self.budget)
        return self


class MemorizationRequest(CheckedRequest):
    """Memorisation of each training point and its influence on the test points
    (``mp-ray memorization``, ``POST /v1/memorization``)."""

    subsets: int | None = Field(
        default=None,
        ge=1,
        description="Sampled subsets (models); None: 20,000 from a predictor, 2,000 by retraining.",
    )
    alpha: float = Field(
        default=0.7, ge=0.0, le=1.0, description="Probability of keeping each point."
    )
    score: Literal["probability", "correct"] = Field(
        default="probability",
        description="probability: of each point's own label (keeps small effects); correct: "
        "0/1 correctness (Feldman's definition).",
    )

    @model_validator(mode="after")
    def _checkable(self) -> MemorizationRequest:
        check_budget("memorization", self.budget)
        return self


class CalibrateRequest(CheckedRequest):
    """Calibration of a subsampled ensemble against θ(D) and temperature scaling, and the
    ensemble's class probabilities on given rows (``mp-ray calibrate``,
    ``POST /v1/calibrated``)."""

    models: int = Field(default=100, ge=1, description="Ensemble size.")
    fraction: float = Field(
        default=0.8, ge=0.0, le=1.0, description="Each member's share of the training set."
    )
    inputs: Rows | None = Field(
        default=None,
        description="Feature rows to give the ensemble's mean class probabilities on.",
    )

    @model_validator(mode="after")
    def _checkable(self) -> CalibrateRequest:
        check_budget("calibration", min(self.budget, self.models))
        return self


class LabelledRows(Request):
    """Labelled feature rows (already scaled like the training data; labels as class
    ids), or none."""

    inputs: Rows | None = Field(default=None, description="Feature rows, one a point.")
    labels: list[int] | list[float] | None = Field(
        default=None, description="Label of each row: a class id, or a number (regression)."
    )

    @model_validator(mode="after")
    def _aligned(self) -> LabelledRows:
        if len(self.inputs or []) != len(self.labels or []):
            raise ValueError("`inputs` and `labels` must have the same length")
        return self


class CounterfactualRequest(LabelledRows, CheckedRequest):
    """How the predictions on targets change when training points are removed
    (``mp-ray counterfactual``, ``POST /v1/counterfactual``): targets are test-split
    indices (``targets``) or labelled rows (``inputs``, ``labels``)."""

    remove: list[int] = Field(min_length=1, description="Training indices to remove.")
    targets: list[int] | None = Field(
        default=None, description="Test-split indices of the targets."
    )

    @model_validator(mode="after")
    def _one_kind_of_target(self) -> CounterfactualRequest:
        if (self.targets is None) == (not self.inputs):
            raise ValueError("give the targets as `targets` or as `inputs` and `labels`")
        check_budget("counterfactual", self.budget)
        return self


class Subset(Request):
    """A training subset, as indices into the ground set or as a true/false mask over it."""

    indices: Annotated[list[int] | None, AfterValidator(_distinct)] = Field(
        default=None, description="Training indices in the subset."
    )
    mask: list[bool] | None = Field(default=None, description="Membership of every point.")

    @model_validator(mode="after")
    def _one_of(self) -> Subset:
        if (self.indices is None) == (self.mask is None):
            raise ValueError("give exactly one of `indices` and `mask`")
        return self


# Rows a requested model predicts on; without them, the model's parameters are answered.
PredictionRows = Annotated[
    Rows | None,
    Field(
        description="Feature rows (already scaled like the training data) to predict on; "
        "without them the parameters are returned."
    ),
]


class PredictRequest(Subset):
    """The model trained on a subset: its parameters, or its predictions on ``inputs``."""

    inputs: PredictionRows = None


class AddRequest(LabelledRows):
    """What the model becomes when new points (``inputs``, ``labels``; and/or the first
    ``from_test`` test points) are added to a subset of the training set (``mp-ray add``,
    ``POST /v1/add``): ModelPred against influence functions (and retraining), scored on
    the rest of the test split, and ModelPred's model."""

    from_test: int | None = Field(
        default=None, ge=1, description="Add the first K test points (scored on the rest)."
    )
    base: Subset | None = Field(
        default=None,
        description="The subset the points are added to; all training points without it.",
    )
    predict_on: PredictionRows = None
    check: bool = Field(default=False, description="Also retrain, and compare with it.")
    compare: bool = Field(
        default=True,
        description="Also answer by influence functions (θ(D) and H_D⁻¹ formed for the "
        "request), and compare with them.",
    )

    @model_validator(mode="after")
    def _some_points(self) -> AddRequest:
        if not self.inputs and self.from_test is None:
            raise ValueError("give new points: `inputs` and `labels`, and/or `from_test`")
        return self
