"""Experiment configuration: pydantic models for every stage, loaded from YAML.

Every model forbids unknown fields, so a typo such as ``num_actor: 2`` is an error that names
the field instead of a silently ignored setting. The dataset, the learner and the sampler have
one model per kind (``dataset.source``, ``learner.kind``, ``sampler.kind``) with only the
fields that kind reads, so a field of another kind is an error too (``learner.hidden: not a
field of learner kind 'ridge'``); ``LearnerConfig(kind="ridge", alpha=2.0)`` returns the model
of its kind, here a :class:`RidgeLearnerConfig`. One YAML file describes one experiment::

    seed: 0
    dataset: {source: sklearn, name: breast_cancer}
    learner: {kind: logistic, C: 1.0}
    sampler: {kind: bernoulli, alpha: 0.5}
    store: {uri: runs/quickstart.zarr, n_rows: 2000, block_rows: 250}
    retrain: {num_actors: 2, num_cpus: 1}
    fit: {num_workers: 2}
    tune: {num_samples: 8, search_space: {lr: {type: log_uniform, low: 1.0e-3, high: 2.0e-2}}}
    serve: {port: 8000, max_batch_size: 64}

Load it with :func:`load_experiment`. The ``fit``, ``tune`` and ``serve`` sections hold what
those commands run with (their flags override them, see :meth:`ExperimentConfig.with_overrides`
and ``mp_ray.cli_support.load_config``); every run writes the config it ran with beside its
outputs (:func:`write_resolved_config`).
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Mapping
from functools import reduce
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from mp_ray.errors import MpRayError


class ConfigError(MpRayError, ValueError):
    """A configuration file or value is malformed; the message names the field."""


# The file a run writes beside its outputs: the whole config it ran with (see
# :func:`write_resolved_config`); ``mp-ray <command> -c`` on it runs the same again.
RESOLVED_CONFIG = "resolved_config.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SKLEARN_DATASETS = ("breast_cancer", "digits", "wine", "iris", "diabetes")


class _Tagged:
    """A config section with one model per kind, told apart by the field ``tag``.

    Calling the class (``LearnerConfig(kind="ridge", alpha=2.0)``) or its ``model_validate``
    returns the model of the given kind; as a field's annotation it is the discriminated union
    of the models, so a field of another kind is an error. The models' common base declares
    the tag first, so that dumps lead with it; each model narrows it to its own kind.
    """

    tag: ClassVar[str]
    models: ClassVar[tuple[type[BaseModel], ...]]
    kinds: ClassVar[dict[str, type[BaseModel]]]
    _union: ClassVar[Any]
    _adapter: ClassVar[TypeAdapter[Any]]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.kinds = {get_args(m.model_fields[cls.tag].annotation)[0]: m for m in cls.models}
        cls._union = Annotated[reduce(operator.or_, cls.models), Field(discriminator=cls.tag)]
        cls._adapter = TypeAdapter(cls._union)

    def __new__(cls, **fields: Any) -> BaseModel:
        return cls.model_validate(fields)

    @classmethod
    def model_validate(cls, data: Any) -> BaseModel:
        """The model of the kind ``data`` names, validated (pydantic's ValidationError)."""
        return cls._adapter.validate_python(data)

    @classmethod
    def from_record(cls, recorded: Mapping[str, Any]) -> BaseModel:
        """The model of a recorded dump, without the fields its kind lacks: stores written
        before each kind had its own model recorded every kind's fields."""
        model = cls.kinds.get(recorded.get(cls.tag))
        own = model.model_fields if model else recorded
        return cls.model_validate({key: value for key, value in recorded.items() if key in own})

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return handler(cls._union)


class _Dataset(_Strict):
    """The fields every dataset source shares: labels, the split, scaling and file access."""

    source: str = Field(
        description="sklearn: a bundled scikit-learn data set; synthetic: a generated "
        "classification or regression problem; file: Parquet, CSV or NPY on a path or s3://."
    )
    label_column: str = Field(
        default="label", description="For Parquet/CSV files: the column holding the labels."
    )
    task: Literal["classification", "regression"] = Field(
        default="classification",
        description="For source=synthetic or file: whether labels are classes or real values "
        "(source=sklearn: checked against the data set's own when given).",
    )
    flip_fraction: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Classification: share of training labels changed to another class at "
        "random (from split_seed), to test noisy-label detection; the changed rows are "
        "recorded in Dataset.flipped. Validation and test labels stay clean.",
    )
    val_fraction: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="Fraction of the data set's rows (data points) held out for validation "
        "(above 0: every retrained model is scored on it, and the valuation utilities are "
        "measured on it). Not the split of the store's rows (retrained models), which is "
        "splits.val_fraction.",
    )
    test_fraction: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="Fraction of the data set's rows (data points) held out for testing. Not "
        "the split of the store's rows (retrained models), which is splits.test_fraction.",
    )
    max_train: int | None = Field(
        default=None,
        gt=0,
        description="Keep at most this many training rows (the ground set size n).",
    )
    classes: list[int | str] | None = Field(
        default=None,
        description="Classification: keep only the rows whose raw label is one of these "
        "(e.g. [0, 1] for Iris setosa against versicolor), before splitting; default: all.",
    )
    scaling: Literal["standard", "unit_ball", "none"] = Field(
        default="standard",
        description="standard: zero mean, unit variance fitted on the training split; "
        "unit_ball: standard, then divided by the largest training row norm (‖x‖ ≤ 1).",
    )
    split_seed: int = Field(default=0, description="Seed of the train/validation/test split.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for s3:// files (e.g. endpoint_url); credentials come from "
        "the environment, never from this file.",
    )

    @model_validator(mode="after")
    def _check_splits(self) -> _Dataset:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("dataset.val_fraction + dataset.test_fraction must be below 0.9")
        if self.classes is not None:
            if self.task == "regression":
                raise ValueError("dataset.classes applies to classification only")
            if len(set(self.classes)) < 2:
                raise ValueError("dataset.classes must name at least 2 distinct classes")
        return self


class SklearnDatasetConfig(_Dataset):
    """A data set bundled with scikit-learn."""

    source: Literal["sklearn"] = Field(description="sklearn: a bundled scikit-learn data set.")
    name: str | None = Field(
        default=None,
        description="For source=sklearn: one of breast_cancer, digits, wine, iris, diabetes.",
    )

    @model_validator(mode="after")
    def _check_name(self) -> SklearnDatasetConfig:
        if self.name not in SKLEARN_DATASETS:
            raise ValueError(
                f"dataset.name must be one of {', '.join(SKLEARN_DATASETS)} for source=sklearn,"
                f" got {self.name!r}"
            )
        return self


class SyntheticDatasetConfig(_Dataset):
    """A generated classification or regression problem (scikit-learn's generators)."""

    source: Literal["synthetic"] = Field(
        description="synthetic: a generated classification or regression problem."
    )
    n_samples: int = Field(default=600, gt=0, description="source=synthetic: number of rows.")
    n_features: int = Field(default=10, gt=0, description="source=synthetic: number of features.")
    n_classes: int = Field(default=2, ge=2, description="source=synthetic: number of classes.")
    class_sep: float = Field(
        default=1.0, gt=0, description="source=synthetic: separation of the class clusters."
    )
    label_noise: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="source=synthetic: fraction of labels assigned at random.",
    )


class FileDatasetConfig(_Dataset):
    """Data from a Parquet, CSV, NPY or NPZ file (see mp_ray/data/files.py)."""

    source: Literal["file"] = Field(description="file: Parquet, CSV or NPY on a path or s3://.")
    path: str | None = Field(
        default=None,
        description="For source=file: the feature file (.parquet, .csv, .npy or .npz), local "
        "or s3://. A .npz holds arrays 'X' and 'y'.",
    )
    labels_path: str | None = Field(
        default=None, description="For a .npy feature file: the .npy file holding the labels."
    )

    @model_validator(mode="after")
    def _check_path(self) -> FileDatasetConfig:
        if not self.path:
            raise ValueError("dataset.path is required for source=file")
        return self


class DatasetConfig(_Tagged):
    """Where the training data comes from and how it is split and scaled: one model per
    ``source`` (sklearn, synthetic, file), each with its own fields and the shared ones."""

    tag = "source"
    models = (SklearnDatasetConfig, SyntheticDatasetConfig, FileDatasetConfig)


class _Learner(_Strict):
    """The fields every learner kind shares."""

    kind: str = Field(
        description="logistic: L2-regularised logistic regression (binary or multinomial); "
        "svm: L2-regularised linear SVM with the squared hinge loss (one-vs-rest for 3+ "
        "classes); ridge: ridge regression (one-hot ±1 targets for classes); mlp: "
        "one-hidden-layer MLP; custom: your Learner subclass, named by import path; sklearn: "
        "a scikit-learn estimator, named by import path, fitted per subset; torch: any "
        "torch.nn.Module from a factory."
    )
    dtype: Literal["float32", "float64"] = Field(
        default="float64",
        description="Precision of training (parameters are stored as float32). float32 "
        "trains 1.6–1.7× faster on a CPU (digits at tol 0.03, benchmarks/README.md) but "
        "cannot certify a tol below 1.2e-4.",
    )


# The iterative convex solvers' settings (logistic, svm: mp_ray/learners/optim.py).
SolverTolerance = Annotated[
    float,
    Field(
        default=1e-8,
        gt=0,
        description="Convex learners: stop when the solver's (quasi-)Newton step, its estimate "
        "of the distance to the optimum, is below tol · ‖θ‖ (the estimated relative parameter "
        "error; raised to 1000·eps of the dtype, 1.2e-4 in float32).",
    ),
]
SolverIterations = Annotated[
    int, Field(default=500, gt=0, description="Convex learners: iteration cap.")
]


class LogisticLearnerConfig(_Learner):
    """L2-regularised logistic regression (mp_ray/learners/logistic.py)."""

    kind: Literal["logistic"] = Field(
        description="logistic: L2-regularised logistic regression (binary or multinomial)."
    )
    C: float = Field(
        default=1.0,
        gt=0,
        description="logistic: inverse regularisation, objective ½‖W‖² + C·Σ_{i∈S} ℓ_i "
        "(scikit-learn's form; intercepts unpenalised).",
    )
    tol: SolverTolerance
    max_iter: SolverIterations


class SVMLearnerConfig(_Learner):
    """The L2-regularised linear SVM with the squared hinge loss (mp_ray/learners/svm.py)."""

    kind: Literal["svm"] = Field(
        description="svm: L2-regularised linear SVM with the squared hinge loss (binary, or "
        "one-vs-rest for 3+ classes)."
    )
    C: float = Field(
        default=1.0,
        gt=0,
        description="svm: inverse regularisation, objective ½(‖w‖² + b²) + C·Σ_{i∈S} max(0, "
        "1 − yᵢ(w·xᵢ + b))², yᵢ = ±1, per one-vs-rest problem: scikit-learn's LinearSVC(C=C, "
        "loss='squared_hinge', fit_intercept=True, intercept_scaling=1). The intercept b is "
        "penalised like a weight, as liblinear's weight on a constant feature of value 1.",
    )
    tol: SolverTolerance
    max_iter: SolverIterations


class RidgeLearnerConfig(_Learner):
    """Ridge regression, solved in closed form (mp_ray/learners/ridge.py)."""

    kind: Literal["ridge"] = Field(
        description="ridge: ridge regression (one-hot ±1 targets for classes)."
    )
    alpha: float = Field(
        default=1.0, gt=0, description="ridge: objective Σ_{i∈S}(yᵢ − xᵢ·w − b)² + alpha·‖w‖²."
    )


class MLPLearnerConfig(_Learner):
    """A one-hidden-layer MLP trained by minibatch SGD (mp_ray/learners/mlp.py)."""

    kind: Literal["mlp"] = Field(description="mlp: one-hidden-layer MLP.")
    hidden: int = Field(default=32, gt=0, description="mlp: hidden width.")
    epochs: int = Field(default=30, gt=0, description="mlp: passes over the subset.")
    lr: float = Field(default=0.1, gt=0, description="mlp: SGD learning rate.")
    batch_size: int = Field(default=32, gt=0, description="mlp: minibatch size.")
    weight_decay: float = Field(default=1e-4, ge=0, description="mlp: L2 weight decay.")


def _plugin(check: str, *args: Any) -> Any:
    """``mp_ray.learners.plugin.<check>(*args)``: what a config names by import path, checked;
    a config error saying what is wrong otherwise."""
    from mp_ray.learners import plugin

    try:
        return getattr(plugin, check)(*args)
    except plugin.PluginError as err:
        raise PydanticCustomError("plugin", str(err)) from None


class CustomLearnerConfig(_Learner):
    """A learner of your own: a subclass of mp_ray.learners.Learner named by import path
    (mp_ray/learners/plugin.py, README "Bring your own model")."""

    kind: Literal["custom"] = Field(description="custom: a Learner subclass of your own.")
    target: str = Field(
        description="custom: the class, as module:Class (the module importable where every "
        "stage runs: the driver and Ray's workers, e.g. through PYTHONPATH)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="custom: the class's own settings, validated by its Options model (a "
        "pydantic model; a class without one takes none); part of the store's identity.",
    )

    @field_validator("target")
    @classmethod
    def _check_target(cls, target: str) -> str:
        _plugin("learner_class", target)
        return target

    @field_validator("options")
    @classmethod
    def _check_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """The options as the class's Options model dumps them (defaults filled in)."""
        if "target" not in info.data:  # the target was refused already
            return options
        return _plugin("validated_options", info.data["target"], options)


class SklearnLearnerConfig(_Learner):
    """A scikit-learn estimator, fitted on one subset at a time
    (mp_ray/learners/sklearn_learner.py)."""

    kind: Literal["sklearn"] = Field(description="sklearn: a scikit-learn estimator.")
    estimator: str = Field(
        description="sklearn: the estimator class as module:Class, e.g. "
        "sklearn.linear_model:LogisticRegression."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="sklearn: keyword arguments of the estimator (fix random_state here for "
        "a randomised one: every subset is fitted with them).",
    )
    extractor: str | None = Field(
        default=None,
        description="sklearn: module:function(estimator) -> 1-D array, the parameters of a "
        "fitted estimator; with `decision`. None: a linear estimator's coef_ and intercept_.",
    )
    decision: str | None = Field(
        default=None,
        validate_default=True,
        description="sklearn, with `extractor`: module:function(params (K, d), X (m, p)) -> "
        "outputs (K, m, c), numpy float64 in and out (c = 1 for binary classification and "
        "regression: the logit of the second class or the value; else one per class).",
    )
    sample_weight: bool = Field(
        default=True,
        description="sklearn: pass a subset as fit's sample_weight (1 inside, 0 outside) "
        "where fit accepts one; false (or a fit without it): fit on the subset's rows alone.",
    )

    @field_validator("estimator")
    @classmethod
    def _check_estimator(cls, estimator: str) -> str:
        _plugin("estimator_class", estimator)
        return estimator

    @field_validator("params")
    @classmethod
    def _check_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Params the estimator takes: it is built with them once."""
        if "estimator" in info.data:  # else refused already
            _plugin("estimator", info.data["estimator"], params)
        return params

    @field_validator("extractor", "decision")
    @classmethod
    def _check_function(cls, path: str | None, info: ValidationInfo) -> str | None:
        if path is not None:
            _plugin("function", path)
        extractor = info.data.get("extractor", path)  # refused already when missing
        if info.field_name == "decision" and (path is None) != (extractor is None):
            raise PydanticCustomError(
                "extractor_decision",
                "learner.extractor and learner.decision go together: give both (a non-linear "
                "estimator) or neither (a linear one, read from coef_ and intercept_)",
            )
        return path


class TorchLearnerConfig(_Learner):
    """Any ``torch.nn.Module`` from a factory, trained by seeded minibatch SGD or Adam, K
    models at once (mp_ray/learners/torch_module.py)."""

    kind: Literal["torch"] = Field(description="torch: any torch.nn.Module from a factory.")
    dtype: Literal["float32", "float64"] = Field(
        default="float32",
        description="Precision of training: float32, torch's own default for networks, "
        "trains the digits CNN about 2× and an MLP 1.6× faster than float64 on a CPU; "
        "float64 makes a model reproducible to ~1e-15 across batch compositions.",
    )
    factory: str = Field(
        description="torch: import path 'package.module:function' of the model's factory, "
        "called as function(n_features, n_outputs, **factory_kwargs); it returns a "
        "torch.nn.Module without buffers mapping inputs (m, n_features) to outputs "
        "(m, n_outputs), n_outputs = 1 for binary classification (one logit) and regression, "
        "else the class count. Examples: mp_ray.learners.zoo:mlp, mp_ray.learners.zoo:digits_cnn."
    )
    factory_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="torch: keyword arguments of the factory (JSON values), e.g. {hidden: 64}.",
    )
    optimizer: Literal["sgd", "adam"] = Field(
        default="sgd",
        description="torch: sgd (torch.optim.SGD, with momentum) or adam (torch.optim.Adam, "
        "betas 0.9, 0.999, eps 1e-8); weight decay is their coupled L2 term.",
    )
    lr: float = Field(default=0.1, gt=0, description="torch: the (initial) learning rate.")
    momentum: float = Field(
        default=0.0, ge=0, lt=1, description="torch: SGD's momentum (sgd only; 0: plain SGD)."
    )
    weight_decay: float = Field(
        default=1e-4,
        ge=0,
        description="torch: L2 weight decay on every parameter, biases included; the "
        "objective is the mean loss on S + (weight_decay/2)·‖θ‖².",
    )
    epochs: int = Field(default=30, gt=0, description="torch: passes over the subset.")
    batch_size: int = Field(default=32, gt=0, description="torch: minibatch size.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="torch: constant, or cosine: lr·½(1 + cos(π·t/T)) at a model's step t of "
        "its T = epochs·⌈|S|/batch_size⌉ steps.",
    )

    @field_validator("factory")
    @classmethod
    def _factory_resolves(cls, path: str) -> str:
        _plugin("function", path)
        return path

    @model_validator(mode="after")
    def _check_momentum(self) -> TorchLearnerConfig:
        if self.momentum and self.optimizer != "sgd":
            raise ValueError("learner.momentum applies to optimizer sgd only")
        return self


class LearnerConfig(_Tagged):
    """The learning algorithm A whose trained parameters mp-ray predicts: one model per
    ``kind`` (logistic, svm, ridge, mlp, torch, custom, sklearn), each with the settings it
    reads."""

    tag = "kind"
    models = (
        LogisticLearnerConfig,
        SVMLearnerConfig,
        RidgeLearnerConfig,
        MLPLearnerConfig,
        TorchLearnerConfig,
        CustomLearnerConfig,
        SklearnLearnerConfig,
    )


class _Sampler(_Strict):
    """The field every sampler kind has."""

    kind: str = Field(
        description="bernoulli: each point kept with probability alpha (datamodels); "
        "fixed_size: a uniform subset of round(alpha·n) points; uniform_size: size uniform "
        "in [min_size, max_size], then a uniform subset (ModelPred); leave_one_out: row 0 "
        "is the full set, row i+1 drops point i; permutation: the prefixes of random "
        "permutations, row r = prefix of length (r mod n) + 1 of permutation r // n."
    )


class _FractionSampler(_Sampler):
    """The field of the samplers that keep a fraction of the points."""

    alpha: float = Field(
        default=0.5, gt=0, le=1, description="bernoulli/fixed_size: the subset fraction."
    )


class BernoulliSamplerConfig(_FractionSampler):
    """Each point kept independently with probability alpha (Datamodels' masks)."""

    kind: Literal["bernoulli"] = Field(
        description="bernoulli: each point kept with probability alpha (datamodels)."
    )


class FixedSizeSamplerConfig(_FractionSampler):
    """A uniform subset of exactly round(alpha·n) points."""

    kind: Literal["fixed_size"] = Field(
        description="fixed_size: a uniform subset of round(alpha·n) points."
    )


class UniformSizeSamplerConfig(_Sampler):
    """A size uniform in [min_size, max_size], then a uniform subset of it (ModelPred)."""

    kind: Literal["uniform_size"] = Field(
        description="uniform_size: size uniform in [min_size, max_size], then a uniform "
        "subset (ModelPred)."
    )
    min_size: int = Field(default=1, ge=0, description="uniform_size: smallest subset size.")
    max_size: int | None = Field(
        default=None, ge=1, description="uniform_size: largest subset size (default n)."
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> UniformSizeSamplerConfig:
        if self.max_size is not None and self.max_size < self.min_size:
            raise ValueError("sampler.max_size must be at least sampler.min_size")
        return self


class LeaveOneOutSamplerConfig(_Sampler):
    """The full set, then each set without one point."""

    kind: Literal["leave_one_out"] = Field(
        description="leave_one_out: row 0 is the full set, row i+1 drops point i."
    )


class PermutationSamplerConfig(_Sampler):
    """The prefixes of random permutations (permutation-sampling Shapley's chains)."""

    kind: Literal["permutation"] = Field(
        description="permutation: the prefixes of random permutations, row r = prefix of "
        "length (r mod n) + 1 of permutation r // n."
    )


class SamplerConfig(_Tagged):
    """How subsets are drawn; row r of the store is drawn from (seed, r) alone. One model per
    ``kind`` (bernoulli, fixed_size, uniform_size, leave_one_out, permutation)."""

    tag = "kind"
    models = (
        BernoulliSamplerConfig,
        FixedSizeSamplerConfig,
        UniformSizeSamplerConfig,
        LeaveOneOutSamplerConfig,
        PermutationSamplerConfig,
    )


class StoreConfig(_Strict):
    """Where retraining rows are written."""

    uri: str = Field(
        description="A local path, s3://bucket/key.zarr, or memory://name (this process only)."
    )
    n_rows: int | None = Field(
        default=None,
        gt=0,
        description="Number of retrained models N (leave_one_out: defaults to n + 1).",
    )
    block_rows: int = Field(
        default=250,
        gt=0,
        description="Rows per block = rows per Zarr chunk = one actor task. Aim for chunks of "
        "≥ 1 MB on S3.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for s3:// (e.g. endpoint_url); credentials come from the "
        "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never from this file.",
    )


class RetrainConfig(_Strict):
    """The pool of Ray actors that retrains models block by block."""

    num_actors: int = Field(default=2, gt=0, description="Number of retraining actors.")
    num_cpus: float = Field(
        default=1.0,
        ge=0,
        description="CPUs reserved per actor, its torch threads on a CPU. One actor per core "
        "(1) trains the minibatch learners (torch, mlp) fastest: in one process their groups "
        "of rows contend for Python's interpreter lock.",
    )
    num_gpus: float = Field(
        default=0.0,
        ge=0,
        description="GPUs per actor; fractional values share a GPU between actors (0.25: four "
        "actors per GPU, for models small enough that one actor cannot keep a GPU busy).",
    )
    gpu_memory_budget_mb: float | None = Field(
        default=None,
        gt=0,
        description="MiB that a GPU actor's passes over the training set (objective, "
        "gradient, losses) may hold in intermediates; its rows are taken in chunks that fit. "
        "None: half the actor's share (num_gpus, at most 1) of the GPU's free memory when the "
        "actor starts. Ignored on CPU, where chunks are sized to the cache.",
    )
    max_in_flight: int = Field(
        default=2, gt=0, description="Blocks queued per actor at once (backpressure)."
    )
    max_retries: int = Field(
        default=3, ge=0, description="Times a block is retried after its actor died."
    )
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each actor requires."
    )
    scheduling_strategy: Literal["SPREAD", "DEFAULT"] = Field(
        default="SPREAD",
        description="Where Ray places the actors (and their replacements): SPREAD over as many "
        "nodes as have room, so that one lost node takes few actors with it and every node's "
        "network reaches the store; DEFAULT is Ray's hybrid policy, which fills a node before "
        "using the next (fewer nodes for an autoscaler to start).",
    )
    on_missing_gpu: Literal["error", "warn"] = Field(
        default="error",
        description="What an actor granted a GPU (num_gpus above 0) does when torch sees no "
        "CUDA device there (a CPU build of torch, a mismatched driver): error refuses to "
        "start, naming the problem; warn logs it and trains on CPU.",
    )


NonNegative = Annotated[float, Field(ge=0)]
# `predictor.width: auto`: the small width for learners of at most this many parameters.
AUTO_WIDTH: dict[str, int] = {"params_up_to": 128, "small": 128, "large": 256}
# `predictor.lambda_global: auto` (and `unlabelled_per_batch: auto`): the global regulariser
# on, at this strength and with this many unlabelled subsets a step, below this many
# labelled training rows (with the Newton step it helped at every count measured, up to
# 10,000; from there the gain is small and the KKT residual more than doubles a fit's time).
AUTO_GLOBAL: dict[str, Any] = {
    "labels_below": 10000,
    "lambda_global": 0.1,
    "unlabelled_per_batch": 16,
}

# What `predictor.preset: reference` sets (fields the config gives itself are kept): the
# ModelPred reference code's pooling, target scale and loss aggregation, and the paper's
# hyperparameters, which only mean what they meant there in that form.
REFERENCE_PRESET: dict[str, Any] = {
    "width": 128,
    "pooling": "sum",
    "center": False,
    "targets": "raw",
    "aggregation": "batch_norm",
    "lr": 1e-4,
    "lr_schedule": "constant",
    "batch_size": 32,
    "lambda_global": 1.0,
    "lambda_local": 1.0,
    "l1": 0.01,
    "l2": 0.01,
    "newton_steps": 0,
}


class PredictorConfig(_Strict):
    """The ModelPred set function f(S) ≈ θ(S) and how it is fitted (see mp_ray/predictor)."""

    preset: Literal["mp-ray", "reference"] = Field(
        default="mp-ray",
        description="mp-ray: the defaults below; reference: the ModelPred reference code's "
        "form and the paper's hyperparameters (width 128, sum pooling, no centring, raw "
        "targets, batch-norm aggregation, Adam lr 1e-4 constant, batch 32, λ_global = "
        "λ_local = 1, l1 = l2 = 0.01, no Newton step); a field given in the config overrides "
        "the preset's value.",
    )
    width: Annotated[int, Field(ge=4)] | Literal["auto"] = Field(
        default="auto",
        description="Width of φ and ρ (ρ's last hidden: /2). auto: "
        f"{AUTO_WIDTH['small']} for learners of at most {AUTO_WIDTH['params_up_to']} "
        f"parameters, else {AUTO_WIDTH['large']}. The change of the parameters with the "
        "subset passes through ρ's last hidden layer: on digits (d = 650) width 128 left "
        "the held-out parameter error at 0.21 whatever the row count, 256 reached 0.16; on "
        "breast_cancer (d = 31) 256 did worse than 128 (0.24 against 0.21).",
    )
    center: bool = Field(
        default=True,
        description="Centre the pooled representation on the mean training mask m̄ (ρ reads "
        "the pooled views of S minus those of m̄, recorded in the checkpoint). Subsets of one "
        "store differ little in their raw pooled sum; centred, ρ sees the differences at "
        "the scale it starts at, and trains several times faster.",
    )
    pooling: Literal["views", "sum"] = Field(
        default="views",
        description="What ρ reads of the pooled sum Σ_{i∈S} φ(z_i): views: the sum ÷ n, the "
        "sum ÷ |S| and |S|/n; sum: the sum alone (the reference code's).",
    )
    targets: Literal["outputs", "standardised", "raw"] = Field(
        default="outputs",
        description="The coordinates the set function predicts parameters in (the parameter "
        "regression is a mean of squares in them). outputs: centred and mapped so that a "
        "squared error is the mean squared error of the model's outputs over the training "
        "points, scaled to unit mean variance (linear learners; others, such as mlp, get "
        "standardised); standardised: each parameter centred on its mean over the training "
        "rows and divided by its standard deviation; raw: the parameters themselves (the "
        "reference code's).",
    )
    aggregation: Literal["mean", "batch_norm"] = Field(
        default="mean",
        description="How the global and local terms combine a batch's subsets. mean: the "
        "mean over subsets of ‖∇_W J_S‖ + ‖∇_b J_S‖, and of |L_S(f(S)) − L_S(θ(S))|; "
        "batch_norm (the reference code's): ‖G_W‖_F + ‖G_b‖_F of the gradients stacked "
        "over the batch, and the Euclidean norm of the batch's loss gaps.",
    )
    lr: float = Field(
        default=1e-2,
        gt=0,
        description="Adam's initial learning rate (on breast_cancer, 2,000 steps: 5e-3 and "
        "2e-2 end near 1e-2's error, 3e-2 collapses to the mean θ).",
    )
    lr_schedule: Literal["cosine", "constant"] = Field(
        default="cosine",
        description="cosine: anneal the learning rate from lr to 0 over `steps`, a function "
        "of the step alone (a resumed fit continues it); constant: keep lr throughout.",
    )
    steps: int = Field(
        default=5000,
        gt=0,
        description="Budget in optimizer steps (each of `batch_size` subsets), whatever the "
        "store's size: a fit stops here or earlier at a validation plateau (`patience`).",
    )
    eval_every: int = Field(
        default=250,
        gt=0,
        description="Optimizer steps between validations; each validation also reports "
        "metrics and writes a checkpoint (what a rerun resumes from).",
    )
    batch_size: int = Field(
        default=128,
        gt=0,
        description="Subsets per optimisation step, over all data-parallel workers together "
        "(each takes its share), so results do not depend on the worker count. A step's "
        "cost is mostly φ over the whole ground set, so larger batches cost little more.",
    )
    lambda_global: NonNegative | Literal["auto"] = Field(
        default="auto",
        description="Strength of the global regulariser: the learner's KKT residual at the "
        "predicted parameters (0 switches it off). auto: "
        f"{AUTO_GLOBAL['lambda_global']} when the store's training split holds fewer than "
        f"{AUTO_GLOBAL['labels_below']:,} rows and the learner gives objective_grad, else "
        "0 — with the Newton step it helped at "
        "every labelled-row count measured (benchmarks/README.md, label efficiency), most "
        "with few; from 10,000 the gain is small and it more than doubles a fit's time.",
    )
    lambda_local: float = Field(
        default=0.0,
        ge=0,
        description="Strength of the local regulariser |L_S(f(S)) − L_S(θ(S))| (0: off).",
    )
    l1: float = Field(default=0.0, ge=0, description="L1 penalty on the predictor's weights.")
    l2: float = Field(default=0.0, ge=0, description="L2 penalty on the predictor's weights.")
    unlabelled_per_batch: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        default="auto",
        description="Extra sampled subsets per optimisation step (over all workers) without "
        "retrained parameters; only the global regulariser sees them. auto: "
        f"{AUTO_GLOBAL['unlabelled_per_batch']} when the global regulariser is on, else 0.",
    )
    newton_steps: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        default="auto",
        description="Steps of Newton's method on each subset's own objective taken from the "
        "set function's prediction when it is used (evaluate, lds, the applications, Serve), "
        "each with the full-data Hessian: θ ← θ − H_D⁻¹∇J_S(θ), at the cost of influence "
        "functions each (mp_ray/predictor/refine.py); 0: the set function alone. auto: 3 "
        "for convex learners (logistic, svm, ridge), 0 for the others and for learners "
        "without objective, objective_grad and hvp. The step is what resolves one point more "
        "or less (benchmarks/README.md, the Newton step).",
    )
    patience: int = Field(
        default=8, gt=0, description="Validations without improvement before stopping."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_epochs(cls, data: Any) -> Any:
        if isinstance(data, dict) and "epochs" in data:
            raise ValueError(
                "predictor.epochs was replaced by predictor.steps (a budget in optimizer "
                "steps, validated every predictor.eval_every steps)"
            )
        return data

    def resolved(self, labelled_rows: int, n_params: int, kkt: bool = True) -> PredictorConfig:
        """These settings with every ``auto`` value decided, for a store of ``n_params``
        parameters whose training split holds ``labelled_rows`` rows; ``kkt``: whether the
        learner gives its objective's gradient (without it, ``lambda_global: auto`` is 0)."""
        width = self.width
        if width == "auto":
            small = n_params <= AUTO_WIDTH["params_up_to"]
            width = AUTO_WIDTH["small"] if small else AUTO_WIDTH["large"]
        strength = self.lambda_global
        if strength == "auto":
            few = labelled_rows < AUTO_GLOBAL["labels_below"]
            strength = AUTO_GLOBAL["lambda_global"] if few and kkt else 0.0
        unlabelled = self.unlabelled_per_batch
        if unlabelled == "auto":
            unlabelled = AUTO_GLOBAL["unlabelled_per_batch"] if strength else 0
        return self.model_copy(
            update={"width": width, "lambda_global": strength, "unlabelled_per_batch": unlabelled}
        )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") == "reference":
            return {**REFERENCE_PRESET, **data}
        return data


class DistillConfig(_Strict):
    """The distilled datamodel (Ye et al., 2024; see mp_ray/distill): per-group synthetic
    examples whose reverse gradient step from θ(D) reproduces retraining without the group."""

    groups_per_class: int = Field(
        default=4,
        ge=2,
        description="k-means clusters per class (fewer for a class with fewer points); at "
        "least 2, so that removing one group never empties a class.",
    )
    synthetic_per_group: int = Field(
        default=4, gt=0, description="Synthetic examples learned for each group."
    )
    init: Literal["real", "random"] = Field(
        default="real",
        description="real: start each group's synthetic examples at k-means centroids of its "
        "own points, soft-labelled halfway between θ*'s prediction and the group's class; "
        "random: Gaussian features with the training mean and spread, random soft labels.",
    )
    learn_step: bool = Field(
        default=True,
        description="Learn the reverse step size η with the synthetic examples; else keep the "
        "initial η, chosen so that the initial steps have the retrained changes' total norm.",
    )
    iterations: int = Field(default=500, gt=0, description="Adam steps of the distillation.")
    lr: float = Field(default=0.05, gt=0, description="Adam's learning rate for the distillation.")
    objective: Literal["margin", "loss"] = Field(
        default="margin",
        description="The evaluation objective E of the attribution matrix: margin: the "
        "learner's correct-class margin (the store's outputs); loss: the per-example loss.",
    )
    holdout_removals: int = Field(
        default=50,
        ge=3,
        description="Held-out validation removals (unions of groups), retrained and never "
        "distilled on.",
    )
    holdout_union: int = Field(
        default=2, ge=2, description="Groups removed together in each held-out removal."
    )
    validation_rows: int = Field(
        default=500,
        ge=0,
        description="At most this many of the store's test rows (random subsets, never "
        "distilled on) to validate predict(masks) on; 0 skips them.",
    )
    uri: str | None = Field(
        default=None,
        description="Where the distilled datamodel is saved: a Zarr group URI (path, s3:// "
        "with store.storage_options, or memory://); default: the 'distill' group inside the "
        "experiment's store, which must exist.",
    )


class DatamodelsConfig(_Strict):
    """Linear datamodels (Ilyas et al., 2022): an L1-regularised linear model per target from
    subset indicators to the store's ``outputs``.

    Store rows are split by the ``splits`` section, as for every method, so every method is
    scored on the same held-out rows: each target's λ is chosen on the validation rows, then
    refitted on train + validation rows.
    """

    n_lambdas: int = Field(
        default=30, ge=2, description="Points on the geometric λ path from λ_max down."
    )
    lambda_min_ratio: float = Field(
        default=1e-3, gt=0, lt=1, description="Smallest λ of the path as a fraction of λ_max."
    )
    path_patience: int = Field(
        default=3,
        ge=1,
        description="A target leaves the path after this many λ's without a lower validation "
        "error (its best λ is kept).",
    )
    tol: float = Field(
        default=1e-6,
        gt=0,
        description="Stop a target's solve when its duality gap is below tol · ‖y − ȳ‖²/m "
        "(scikit-learn's Lasso criterion).",
    )
    max_iter: int = Field(
        default=2000, gt=0, description="Proximal-gradient iteration cap per λ and block."
    )
    target_block: int = Field(
        default=1024,
        gt=0,
        description="Targets solved together within a task; bounds memory to a few (n, block) "
        "matrices.",
    )
    targets_per_task: int = Field(
        default=1024,
        gt=0,
        description="Targets per Ray task (a shard): each task makes its own pass over the "
        "store's rows, summing their statistics (the masks' n × n Gram matrix among them) "
        "again, and fits its targets; more tasks run in parallel, fewer repeat less reading.",
    )
    memory_budget_mb: float = Field(
        default=4096.0,
        gt=0,
        description="MiB a task's n × n matrices may take. The moments solver holds two "
        "float64 n × n matrices, the masks' Gram matrices summed over the training and over "
        "the validation rows (16·n² bytes: up to 16,384 points in 4 GiB); past the budget a "
        "task uses the Gram-free solver, which forms every gradient in a pass over the rows "
        "(the same answer, many more reads of the store).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the solver runs; auto picks a GPU when present."
    )
    num_cpus: float = Field(
        default=1.0,
        ge=0,
        description="CPUs reserved for each Ray task that fits a shard of the targets; the task "
        "runs as many torch threads (a store with fewer shards than CPUs fits faster with more).",
    )
    num_gpus: float = Field(
        default=0.0,
        ge=0,
        description="GPUs reserved for that task (fractions allowed); with device=auto the "
        "solver then runs on the GPU.",
    )


# The store's row split: once predictor fields, now the splits section's (see
# ExperimentConfig._splits_from_predictor).
SPLIT_FIELDS = ("val_fraction", "test_fraction")


class SplitsConfig(_Strict):
    """The store's row split: which rows of the store (retrained models) every method fitted
    on it — the predictor, datamodels, the distilled datamodel — fits on, validates on and is
    evaluated on (mp_ray/store/rows.py). Each row falls in one split by a hash of (seed, row),
    or of its chain for permutation stores, so every method sees the same held-out rows.
    Not the data set's split of its data points (``dataset.val_fraction`` and
    ``dataset.test_fraction``)."""

    val_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=0.5,
        description="Share of the store's rows (whole chains for permutation stores) held "
        "out for validation: the predictor's early stopping, the datamodels' choice of λ.",
    )
    test_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=0.5,
        description="Share of the store's rows (whole chains for permutation stores) held "
        "out for evaluation (never fitted or tuned on).",
    )
    max_test_rows: int | None = Field(
        default=20_000,
        gt=0,
        description="Held-out rows an evaluation scores at most (evaluate, lds, the "
        "datamodels' LDS): the first of the test split in row order, a random sample of it. "
        "Bounds their memory at any store size (a Spearman ρ over 20,000 rows has a "
        "standard error below 0.01); null: every test row.",
    )


class FitConfig(_Strict):
    """How Ray Train fits the predictor (``mp-ray fit``; see mp_ray/predictor/fit.py)."""

    storage_path: str = Field(
        default="runs/train",
        description="Where Ray Train keeps runs and checkpoints (a path or s3://); a run is "
        "the folder <storage_path>/<run name>, which also holds the run's "
        f"{'resolved_config.yaml'}.",
    )
    num_workers: int = Field(
        default=2,
        gt=0,
        description="Data-parallel Ray Train workers; a step's batch is shared out over them, "
        "so results do not depend on the count.",
    )
    use_gpu: bool = Field(default=False, description="Give each worker a GPU.")
    max_failures: int = Field(
        default=1,
        ge=-1,
        description="Times a run restarts from its latest checkpoint after a worker failed "
        "(-1: without end).",
    )
    checkpoints_to_keep: int | None = Field(
        default=2,
        gt=0,
        description="The latest checkpoints a run keeps (one per validation); null keeps all.",
    )


class _Space(_Strict):
    """The field every search-space distribution has."""

    type: str = Field(
        description="choice: one of `values`, uniformly; uniform: uniform in [low, high]; "
        "log_uniform: log-uniform in [low, high], low above 0."
    )


class ChoiceSpace(_Space):
    """A hyperparameter drawn from a list of candidates, each as likely."""

    type: Literal["choice"] = Field(description="choice: one of `values`, uniformly.")
    values: list[bool | int | float | str] = Field(
        min_length=1, description="The candidates (one value: the setting is fixed)."
    )

    def candidates(self) -> list[Any]:
        """The values a trial can get."""
        return list(self.values)


class _Range(_Space):
    """A real hyperparameter drawn from an interval."""

    low: float = Field(description="The interval's lower end.")
    high: float = Field(description="The interval's upper end (above low).")

    @model_validator(mode="after")
    def _check_order(self) -> _Range:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high:g}) must be above low ({self.low:g})")
        return self

    def candidates(self) -> list[Any]:
        """The interval's ends."""
        return [self.low, self.high]


class UniformSpace(_Range):
    """A real hyperparameter uniform in [low, high]."""

    type: Literal["uniform"] = Field(description="uniform: uniform in [low, high].")


class LogUniformSpace(_Range):
    """A positive real hyperparameter whose logarithm is uniform in [log low, log high]."""

    type: Literal["log_uniform"] = Field(
        description="log_uniform: log-uniform in [low, high], low above 0."
    )
    low: float = Field(gt=0, description="The interval's lower end, above 0.")


class ParameterSpace(_Tagged):
    """How Tune draws one predictor hyperparameter: one model per ``type`` (choice, uniform,
    log_uniform)."""

    tag = "type"
    models = (ChoiceSpace, UniformSpace, LogUniformSpace)


# Tune's default search (see mp_ray/tuning.py): the regularisers 0 or log-spaced in [1e-4, 1]
# (numpy's logspace(-4, 0, 9) to 6 decimals), the learning rate around its default 1e-2 and
# the width.
STRENGTHS = [0.0, 0.0001, 0.000316, 0.001, 0.003162, 0.01, 0.031623, 0.1, 0.316228, 1.0]
DEFAULT_SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "lambda_global": {"type": "choice", "values": STRENGTHS},
    "lambda_local": {"type": "choice", "values": STRENGTHS},
    "lr": {"type": "log_uniform", "low": 1e-3, "high": 2e-2},
    "width": {"type": "choice", "values": [64, 128, 256, 512]},
}


def _default_search_space() -> dict[str, BaseModel]:
    return {
        name: ParameterSpace.model_validate(space) for name, space in DEFAULT_SEARCH_SPACE.items()
    }


def _predictor_error(name: str, value: Any) -> str | None:
    """Why ``value`` is not a valid ``predictor.<name>``; None when it is."""
    try:
        PredictorConfig.model_validate({name: value})
    except ValidationError as err:
        return err.errors()[0]["msg"]
    return None


class TuneConfig(_Strict):
    """How Ray Tune searches the predictor's hyperparameters (``mp-ray tune``; ASHA over Ray
    Train fits, see mp_ray/tuning.py). Each trial fits with the fit section's failure and
    checkpoint policy; running a search again under the same name resumes it."""

    storage_path: str = Field(
        default="runs/tune",
        description="Where Tune keeps a search (a path or s3://): <storage_path>/<name> "
        "holds its results, the best predictor and the search's resolved_config.yaml, "
        "<storage_path>/<name>-trials the trials' Ray Train runs.",
    )
    num_samples: int = Field(default=8, gt=0, description="Number of trials.")
    workers_per_trial: int = Field(
        default=1,
        gt=0,
        description="Ray Train workers per trial (each trial's fit.num_workers); each "
        "reserves 0.99 CPU (and a GPU with use_gpu), the trial's driver 0.01 CPU.",
    )
    use_gpu: bool | None = Field(
        default=None, description="Give each trial's Train workers a GPU; null: as fit.use_gpu."
    )
    max_concurrent_trials: int | None = Field(
        default=None,
        gt=0,
        description="Trials run at once; null: no limit, every trial starts and its Train "
        "workers wait for resources (the demand an autoscaling cluster grows for). On a "
        "fixed cluster, the number of trials whose workers fit at once.",
    )
    grace_period: int = Field(
        default=2,
        gt=0,
        description="ASHA: validations (of predictor.eval_every steps) a trial runs before "
        "it may be stopped.",
    )
    reduction_factor: int = Field(
        default=4, ge=2, description="ASHA: 1/reduction_factor of the trials go on at a rung."
    )
    search_space: dict[str, ParameterSpace] = Field(
        default_factory=_default_search_space,
        description="The searched predictor fields, each with how it is drawn (other fields "
        "keep the predictor section's value). Default: lambda_global and lambda_local 0 or "
        "log-spaced in [1e-4, 1], lr log-uniform in [1e-3, 2e-2], width 64, 128, 256 or 512; "
        "a default dimension the learner cannot serve (a regulariser without its methods) "
        "is left out, a given one is refused before any trial starts.",
    )

    @field_validator("search_space")
    @classmethod
    def _check_fields(cls, space: dict[str, Any]) -> dict[str, Any]:
        if not space:
            raise ValueError("give at least one predictor field to search")
        fields = [name for name in PredictorConfig.model_fields if name != "preset"]
        for name, distribution in space.items():
            if name not in fields:
                raise ValueError(f"{name!r} is not a predictor field; one of {', '.join(fields)}")
            for value in distribution.candidates():
                if problem := _predictor_error(name, value):
                    raise ValueError(
                        f"{name}: {value!r} is not a valid predictor.{name}: {problem}"
                    )
            between = isinstance(distribution, _Range) and math.nextafter(
                distribution.low, distribution.high
            )
            if between and _predictor_error(name, between):
                raise ValueError(
                    f"{name}: {distribution.type} draws real numbers, which predictor.{name} "
                    "does not take; give a choice"
                )
        return space


class ServeConfig(_Strict):
    """How ``mp-ray serve`` serves the predictor with Ray Serve (mp_ray/serve/app.py). A Serve
    config file (``serve run``) takes batching, max_batch_size and batch_wait_ms from here
    unless its args set them; its own deployments section sets replicas and CPUs."""

    host: str = Field(default="127.0.0.1", description="HTTP host (loopback by default).")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port.")
    replicas: int = Field(default=1, gt=0, description="Model replicas.")
    replica_cpus: float = Field(
        default=1.0, ge=0, description="Logical CPUs each model replica reserves."
    )
    batching: bool = Field(
        default=True,
        description="Share one predictor call between concurrent /v1/predict requests "
        "(@serve.batch).",
    )
    max_batch_size: int = Field(
        default=64, gt=0, description="Batching: most requests in one predictor call."
    )
    batch_wait_ms: float = Field(
        default=1.0, ge=0, description="Batching: how long a batch waits for more requests."
    )
    ingress: Literal["haproxy", "proxy"] = Field(
        default="haproxy",
        description="An embedded Ray's HTTP ingress: haproxy (Ray's high-throughput mode: "
        "HAProxy in front of the replicas, gRPC between deployments) or proxy (Serve's Python "
        "proxy). A cluster keeps its own setting.",
    )


class MlflowConfig(_Strict):
    """Logging each fit (and so each Tune trial's fit) to MLflow through Ray's integration
    (``ray.air.integrations.mlflow.setup_mlflow`` on the rank-0 Ray Train worker): the
    predictor settings as parameters, every validation's metrics by step. Needs the
    ``mlflow`` extra (``pip install 'mp-ray[mlflow]'``) where the driver and the workers
    run."""

    enabled: bool = Field(default=False, description="Log fits to MLflow.")
    tracking_uri: str | None = Field(
        default=None,
        description="The MLflow tracking server or store (http://host:5000, file:/path, "
        "databricks). None: MLflow's own default (MLFLOW_TRACKING_URI where the workers run, "
        "else a local store in their working directory).",
    )
    experiment_name: str | None = Field(
        default=None,
        description="The MLflow experiment, created when missing. None: observability.experiment.",
    )


class ObservabilityConfig(_Strict):
    """What a run reports beside its results: metrics through ``ray.util.metrics`` (on each
    Ray node's Prometheus endpoint) and, optionally, MLflow tracking (README, Monitoring)."""

    experiment: str | None = Field(
        default=None,
        description="The experiment's name in the metrics' `experiment` tag and as the "
        "default MLflow experiment. None: the store's name (runs/quickstart.zarr: "
        "quickstart).",
    )
    metrics: bool = Field(
        default=True,
        description="Record the mp_ray_ metrics of retraining and fits (a Serve "
        "application always records its request metrics).",
    )
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)


class ExperimentConfig(_Strict):
    """One experiment: a dataset, a learner, a sampler, a store, how to retrain, and how to
    fit, tune and serve the predictor."""

    seed: int = Field(default=0, ge=0, description="Root seed; all randomness derives from it.")
    dataset: DatasetConfig
    learner: LearnerConfig
    sampler: SamplerConfig
    store: StoreConfig
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    predictor: PredictorConfig = Field(default_factory=PredictorConfig)
    fit: FitConfig = Field(default_factory=FitConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    datamodels: DatamodelsConfig = Field(default_factory=DatamodelsConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    _source: str = PrivateAttr(default="the config")

    @model_validator(mode="before")
    @classmethod
    def _splits_from_predictor(cls, data: Any) -> Any:
        """Move ``predictor.val_fraction`` and ``predictor.test_fraction`` (configs written
        before the ``splits`` section, stored ones included) to ``splits``, warning; refuse
        a share given in both places with different values."""
        predictor = data.get("predictor") if isinstance(data, dict) else None
        if not isinstance(predictor, dict) or not set(SPLIT_FIELDS) & set(predictor):
            return data
        splits = data.get("splits") or {}
        if isinstance(splits, BaseModel):
            splits = splits.model_dump(exclude_unset=True)
        splits, predictor = dict(splits), dict(predictor)
        for name in SPLIT_FIELDS:
            if name not in predictor:
                continue
            value = predictor.pop(name)
            if name in splits and splits[name] != value:
                raise ValueError(
                    f"predictor.{name} ({value}) and splits.{name} ({splits[name]}) differ; "
                    f"give it once, as splits.{name}"
                )
            splits[name] = value
            warnings.warn(
                f"predictor.{name} has moved to splits.{name}; read as splits.{name}",
                FutureWarning,
                stacklevel=2,
            )
        return {**data, "predictor": predictor, "splits": splits}

    @property
    def experiment_name(self) -> str:
        """The experiment's name in metrics and MLflow: ``observability.experiment``, else
        the store's name (``s3://bucket/runs/quickstart.zarr``: ``quickstart``)."""
        store = PurePosixPath(self.store.uri.rstrip("/")).name
        return self.observability.experiment or store.removesuffix(".zarr")

    @property
    def source(self) -> str:
        """The file the config was read from, for messages ("the config" when not a file)."""
        return self._source

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        """A copy with dotted keys (``fit.num_workers``) set to the given values, validated
        as the file would be (:class:`ConfigError` naming a bad field)."""
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value)
        experiment = parse_experiment(data, self.source)
        experiment._source = self.source
        return experiment

    def with_absolute_paths(self) -> ExperimentConfig:
        """A copy whose local store, data and run storage paths are absolute, so that Ray
        workers with another working directory find the same files."""
        from mp_ray.store.location import normalise_uri

        dataset = self.dataset
        if isinstance(dataset, FileDatasetConfig):
            dataset = dataset.model_copy(
                update={
                    key: normalise_uri(value)
                    for key in ("path", "labels_path")
                    if (value := getattr(dataset, key))
                }
            )
        store = self.store.model_copy(update={"uri": normalise_uri(self.store.uri)})
        runs = {
            section: getattr(self, section).model_copy(
                update={"storage_path": normalise_uri(getattr(self, section).storage_path)}
            )
            for section in ("fit", "tune")
        }
        return self.model_copy(update={"dataset": dataset, "store": store, **runs})


def write_resolved_config(config: ExperimentConfig, folder: str) -> str:
    """Write ``config`` whole (every default filled in) as YAML to ``<folder>/``
    :data:`RESOLVED_CONFIG` (a path or s3://, made if missing); returns the file's URI."""
    import fsspec

    uri = f"{folder.rstrip('/')}/{RESOLVED_CONFIG}"
    with fsspec.open(uri, "w", auto_mkdir=True) as handle:
        handle.write(config_yaml(config))
    return uri


def config_yaml(config: ExperimentConfig) -> str:
    """``config`` whole as YAML, under a comment naming where it came from."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    return (
        f"# The configuration a run ran with, from {config.source}: every default filled in, "
        "command-line overrides applied, `auto` values as resolved.\n" + text
    )


# The sections with one model per kind, by where they are in ExperimentConfig ("*": any
# key), with what messages call them.
_TAGGED: dict[tuple[str, ...], tuple[str, type[_Tagged]]] = {
    ("dataset",): ("dataset", DatasetConfig),
    ("learner",): ("learner", LearnerConfig),
    ("sampler",): ("sampler", SamplerConfig),
    ("tune", "search_space", "*"): ("search space", ParameterSpace),
}


def _tagged_at(loc: tuple[int | str, ...]) -> tuple[int, str, type[_Tagged]] | None:
    """For an error at ``loc`` inside a section with one model per kind: the length of the
    section's path, its name in messages and its class."""
    for path, (name, tagged) in _TAGGED.items():
        parts = loc[: len(path)]
        if len(parts) == len(path) and all(
            key in ("*", part) for key, part in zip(path, parts, strict=True)
        ):
            return len(path), name, tagged
    return None


def _format_error(item: ErrorDetails) -> str:
    """One error as ``section.field: message``. Errors inside a section with one model per
    kind are located by pydantic under the kind (``learner.ridge.hidden``): the kind moves
    into the message instead."""
    loc, message = item["loc"], item["msg"]
    found = _tagged_at(loc)
    if found is not None:
        depth, name, tagged = found
        section = ".".join(str(part) for part in loc[:depth])
        tag, kinds = tagged.tag, ", ".join(tagged.kinds)
        if item["type"] == "union_tag_invalid":
            given = item.get("ctx", {}).get("tag")
            return f"{section}.{tag}: {given!r} is not a {name} {tag}; one of {kinds}"
        if item["type"] == "union_tag_not_found":
            return f"{section}.{tag}: Field required (one of {kinds})"
        if len(loc) > depth:
            kind, loc = loc[depth], (*loc[:depth], *loc[depth + 1 :])
            if item["type"] == "extra_forbidden":
                message = f"not a field of {name} {tag} {kind!r}"
    where = ".".join(str(part) for part in loc) or "(top level)"
    return f"{where}: {message}"


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    lines.extend(f"  {_format_error(item)}" for item in err.errors())
    return "\n".join(lines)


def parse_experiment(data: Any, source: str = "<dict>") -> ExperimentConfig:
    """Validate a mapping as an :class:`ExperimentConfig`; errors name each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data)}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read a YAML experiment config; ``overrides`` maps dotted keys (``store.uri``) to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if isinstance(data, dict):
        for dotted, value in (overrides or {}).items():
            _set_dotted(data, dotted, value)
    experiment = parse_experiment(data, str(path))
    experiment._source = str(path)
    return experiment


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot override {dotted}: {key} is not a mapping")
    node[leaf] = value
