"""The Python front door: one experiment config, its dataset and learner loaded once, and
every stage as a method.

    from mp_ray import Experiment

    experiment = Experiment.from_yaml("configs/quickstart.yaml", {"store.n_rows": 500})
    experiment.retrain()                      # models on sampled subsets, into the store
    fit = experiment.fit(name="demo")         # the ModelPred predictor (Ray Train)
    values = experiment.value(method="tmc", max_samples=100)   # from that predictor
    values.to_pandas()                        # one row per training point

Stages that run on Ray (``retrain``, ``fit``, ``tune``, ``datamodels``) connect to
``RAY_ADDRESS`` when it is set, else start an embedded local Ray, unless Ray is already
initialised in this process; ``evaluate``, ``lds`` and ``distill`` run here, on the
experiment's dataset and learner. The applications (``value``, ``select``,
``memorization``, ``calibrate``, ``counterfactual``, ``add``) run here too, through the
application service that the command line and Ray Serve call
(:class:`~mp_ray.apps.service.AppService`): their keyword arguments are the fields of the
service's request (a bad one is the request's validation error, naming it), and they return
its answer. They answer from the fitted
predictor (``predictor=True``, the default: the last one ``fit`` or ``tune`` produced; or a
checkpoint URI) or by retraining the learner (``predictor=False``). Importing this module
imports neither Ray Train nor Ray Tune: the stages import them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel

from mp_ray.apps.context import app_context
from mp_ray.apps.service import (
    AddAnswer,
    AddRequest,
    AppService,
    CalibrateAnswer,
    CalibrateRequest,
    CounterfactualAnswer,
    CounterfactualRequest,
    MemorizationAnswer,
    MemorizationRequest,
    SelectAnswer,
    SelectRequest,
    ValueAnswer,
    ValueRequest,
)
from mp_ray.apps.service.service import ValueProgress
from mp_ray.config import ExperimentConfig, load_experiment
from mp_ray.data import Dataset
from mp_ray.learners import Learner
from mp_ray.loaded import dataset_of, learner_of
from mp_ray.results import DatamodelsResult, FitResult, RetrainResult, TuneResult
from mp_ray.store import ExperimentStore

if TYPE_CHECKING:
    from mp_ray.distill import DistilledDatamodel, DistillReport
    from mp_ray.evaluation.report import BehaviourReport
    from mp_ray.predictor import Predictor

Request = TypeVar("Request", bound=BaseModel)


class Experiment:
    """The experiment of ``config``: its dataset and learner (loaded on first use, then
    kept), its store, its predictors, and the stages that fill and use them.

    ``predictor_uri`` is the predictor the applications use by default: the last one
    :meth:`fit` or :meth:`tune` produced, or one set by hand (a checkpoint directory or
    ``s3://`` URI)."""

    def __init__(self, config: ExperimentConfig, predictor_uri: str | None = None) -> None:
        self.config = config
        self.predictor_uri = predictor_uri
        # The application service of each predictor URI (None: retraining), made once.
        self._services: dict[str | None, AppService] = {}

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Experiment:
        """The experiment of a YAML config; ``overrides`` maps dotted keys (``store.n_rows``,
        ``fit.num_workers``) to values that replace the file's, validated as the file is
        (:class:`~mp_ray.config.ConfigError` naming a bad field)."""
        return cls(load_experiment(path, overrides))

    def __repr__(self) -> str:
        return f"Experiment({self.config.source}, store {self.config.store.uri})"

    # -- what the stages share -------------------------------------------------------------

    @cached_property
    def dataset(self) -> Dataset:
        """The dataset, loaded once: training, validation and test splits."""
        return dataset_of(self.config)

    @cached_property
    def learner(self) -> Learner:
        """The learner on the training split (on the CPU), made once."""
        return learner_of(self.config, self.dataset)

    def store(self, writable: bool = False) -> ExperimentStore:
        """The experiment's store, refused (:class:`~mp_ray.store.StoreMismatchError`)
        unless it was made from this config's dataset, learner, sampler and seed."""
        return ExperimentStore.open_for(
            self.config, self.dataset.fingerprint, (), read_only=not writable
        )

    def predictor(self, uri: str | None = None) -> Predictor:
        """The fitted predictor at ``uri`` (default: :attr:`predictor_uri`), refused unless
        fitted on this experiment's dataset and learner."""
        from mp_ray.predictor.predictor import load_predictor_for

        return load_predictor_for(
            self._predictor_uri(uri or True),
            self.config,
            self.dataset.fingerprint,
            self.config.store.storage_options,
        )

    def service(self, predictor: bool | str = True) -> AppService:
        """The application service answering from models of subsets from the predictor
        (``True``: :attr:`predictor_uri`; or a URI) or, with ``False``, from retraining;
        made once per predictor, on the experiment's dataset and learner."""
        uri = self._predictor_uri(predictor) if predictor else None
        if uri not in self._services:
            context = app_context(
                self.config,
                uri,
                self.config.store.storage_options,
                dataset=self.dataset,
                learner=self.learner,
            )
            self._services[uri] = AppService(context)
        return self._services[uri]

    def _use_predictor(self, uri: str) -> None:
        """Make the predictor just written at ``uri`` the default, forgetting a service
        made from an earlier predictor there."""
        self.predictor_uri = uri
        self._services.pop(uri, None)

    def _predictor_uri(self, predictor: Literal[True] | str) -> str:
        if predictor is not True:
            return predictor
        if self.predictor_uri is None:
            raise ValueError(
                "this experiment has no predictor yet: call .fit() (or .tune()), set "
                ".predictor_uri, or pass predictor=False to retrain instead"
            )
        return self.predictor_uri

    # -- stages on Ray ----------------------------------------------------------------------

    def retrain(self, on_result: Callable[[dict[str, Any]], None] | None = None) -> RetrainResult:
        """Train every pending block of the store on Ray actors (a rerun resumes);
        ``on_result`` hears of each block as it is written (its ``rows``, timings)."""
        from mp_ray.ray_session import connect
        from mp_ray.retrain import run_retrain

        connect()
        report = run_retrain(self.config, self.dataset, on_result)
        return RetrainResult(report, self.store())

    def fit(
        self, name: str = "predictor", on_report: Callable[[dict[str, Any]], None] | None = None
    ) -> FitResult:
        """Fit the ModelPred predictor on the store with Ray Train as run ``name`` (rerunning
        a name resumes it) and make it :attr:`predictor_uri`; ``on_report`` is called with
        the metrics of each validation."""
        from mp_ray.predictor.fit import fit_predictor
        from mp_ray.ray_session import connect

        history: list[dict[str, Any]] = []

        def record(metrics: dict[str, Any]) -> None:
            history.append(dict(metrics))
            if on_report is not None:
                on_report(metrics)

        connect()
        outcome = fit_predictor(self.config, name, on_report=record, dataset=self.dataset)
        self._use_predictor(outcome.predictor_uri)
        return FitResult(outcome, history)

    def tune(
        self, name: str = "search", on_trial: Callable[[dict[str, Any]], None] | None = None
    ) -> TuneResult:
        """Search the predictor's hyperparameters with Ray Tune (the config's ``tune``
        section) and make the best trial's predictor :attr:`predictor_uri`; ``on_trial`` is
        called with each trial's last result as it ends."""
        from mp_ray.ray_session import connect
        from mp_ray.tuning import tune_predictor

        connect()
        outcome = tune_predictor(self.config, name, on_trial, dataset=self.dataset)
        self._use_predictor(outcome.predictor_uri)
        return TuneResult(outcome)

    def datamodels(
        self, name: str = "default", on_progress: Callable[[int], None] | None = None
    ) -> DatamodelsResult:
        """Fit a datamodel per target of the store in Ray tasks and save them in the store
        under ``datamodels/<name>``; ``on_progress`` hears the targets of each block fitted."""
        from mp_ray.datamodels.job import run_datamodels
        from mp_ray.datamodels.storage import read_datamodels
        from mp_ray.ray_session import connect

        connect()
        summary = run_datamodels(self.config, name, on_progress, self.dataset)
        models, _ = read_datamodels(self.store(), name)
        return DatamodelsResult(summary, models)

    # -- evaluation and the distilled datamodel (here, without Ray) --------------------------

    def evaluate(self, predictors: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Predicted against retrained models on the store's test rows, one table row per
        method and subset-size group (``mp-ray evaluate``): the fitted ``predictors`` (label
        → URI; default: ``ModelPred``, :attr:`predictor_uri`) and the baselines."""
        from mp_ray.predictor.evaluation import evaluate_on_store

        chosen = {"ModelPred": self._predictor_uri(True)} if predictors is None else predictors
        return evaluate_on_store(self.config, chosen, self.dataset, self.learner)

    def lds(
        self,
        predictors: Mapping[str, str] | None = None,
        datamodels: str | None = "default",
        distilled: bool = False,
        **options: Any,
    ) -> BehaviourReport:
        """Every method's predicted outputs scored against retraining (``mp-ray lds``): LDS,
        leave-one-out correlation and counterfactual test, for the fitted ``predictors``
        (label → URI; default: ``ModelPred``, :attr:`predictor_uri`, when there is one), the
        store's datamodels ``datamodels`` (None: none), the saved distilled datamodel when
        ``distilled``, and the baselines. ``options``: ``n_loo``, ``n_counterfactual``,
        ``support_size``, ``on_progress`` of
        :func:`~mp_ray.evaluation.report.behaviour_report`."""
        from mp_ray.evaluation.report import behaviour_report

        if predictors is None:
            uri = self.predictor_uri
            predictors = {} if uri is None else {"ModelPred": uri}
        extra = {"distilled datamodel": self.distilled()} if distilled else {}
        return behaviour_report(
            self.config,
            dict(predictors),
            datamodels,
            extra,
            dataset=self.dataset,
            learner=self.learner,
            **options,
        )

    def distill(
        self, on_progress: Callable[[int], None] | None = None
    ) -> tuple[DistilledDatamodel, DistillReport]:
        """Fit, validate and save the distilled datamodel (``mp-ray distill``; the config's
        ``distill`` section); ``on_progress`` hears of each distillation iteration."""
        from mp_ray.distill import run_distill

        return run_distill(self.config, self.dataset, on_progress=on_progress, learner=self.learner)

    def distilled(self) -> DistilledDatamodel:
        """The distilled datamodel :meth:`distill` saved, over this experiment's learner."""
        from mp_ray.distill import load_distilled

        return load_distilled(self.config, self.dataset, learner=self.learner)

    # -- applications ----------------------------------------------------------------------

    def value(
        self,
        *,
        predictor: bool | str = True,
        on_progress: ValueProgress | None = None,
        store_name: str | None = None,
        **request: Any,
    ) -> ValueAnswer:
        """Value every training point; ``request``: the fields of
        :class:`~mp_ray.apps.service.ValueRequest` (``method``, ``max_samples``, ``check``,
        …). ``on_progress`` hears the samples drawn, the samples expected (None: unknown
        yet) and the models scored; ``store_name`` also saves the values in the store."""
        asked = self._request(ValueRequest, request)
        return self.service(predictor).value(asked, on_progress, store_name)

    def select(
        self, *, predictor: bool | str = True, baseline: np.ndarray | None = None, **request: Any
    ) -> SelectAnswer:
        """Choose a subset on the validation split; ``request``: the fields of
        :class:`~mp_ray.apps.service.SelectRequest` (``size``, ``method``, …). With
        ``baseline`` values ``(n,)``, the test scores also hold the top-``size`` points by
        them."""
        return self.service(predictor).select(self._request(SelectRequest, request), baseline)

    def memorization(
        self,
        *,
        predictor: bool | str = True,
        on_progress: Callable[[int], None] | None = None,
        **request: Any,
    ) -> MemorizationAnswer:
        """Memorisation of every training point and its influence on every test point;
        ``request``: the fields of :class:`~mp_ray.apps.service.MemorizationRequest`
        (``subsets``, ``alpha``, ``score``, …). ``on_progress`` hears the models of each
        block as it is scored."""
        asked = self._request(MemorizationRequest, request)
        return self.service(predictor).memorization(asked, on_progress)

    def calibrate(self, *, predictor: bool | str = True, **request: Any) -> CalibrateAnswer:
        """Calibration of a subsampled ensemble against θ(D) and temperature scaling;
        ``request``: the fields of :class:`~mp_ray.apps.service.CalibrateRequest`
        (``models``, ``fraction``, ``inputs``, …)."""
        return self.service(predictor).calibrate(self._request(CalibrateRequest, request))

    def counterfactual(
        self, *, predictor: bool | str = True, **request: Any
    ) -> CounterfactualAnswer:
        """How the predictions on targets change when training points are removed;
        ``request``: the fields of :class:`~mp_ray.apps.service.CounterfactualRequest`
        (``remove``, and ``targets`` or ``inputs`` and ``labels``, …)."""
        asked = self._request(CounterfactualRequest, request)
        return self.service(predictor).counterfactual(asked)

    def add(self, *, predictor: bool | str = True, **request: Any) -> AddAnswer:
        """What the model becomes with new points added (needs a predictor); ``request``:
        the fields of :class:`~mp_ray.apps.service.AddRequest` (``inputs`` and ``labels``,
        and/or ``from_test``, …)."""
        return self.service(predictor).add(self._request(AddRequest, request))

    @staticmethod
    def _request(kind: type[Request], fields: dict[str, Any]) -> Request:
        """The request of ``fields``, NumPy arrays and scalars taken as lists and numbers; a
        bad field is the request's :class:`pydantic.ValidationError` naming it."""
        return kind(**{name: _plain(value) for name, value in fields.items()})


def _plain(value: Any) -> Any:
    """A NumPy array or scalar as Python lists and numbers; anything else as it is."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value
