"""The Python front door: one experiment config, its dataset and learner loaded once, and
every stage as a method.

    from mp_ray import Experiment

    experiment = Experiment.from_yaml("configs/quickstart.yaml", {"store.n_rows": 500})
    experiment.retrain()                      # models on sampled subsets, into the store
    fit = experiment.fit(name="demo")         # the ModelPred predictor (Ray Train)
    values = experiment.value("tmc", max_samples=100)   # from that predictor
    values.to_pandas()                        # one row per training point

Stages that run on Ray (``retrain``, ``fit``, ``tune``, ``datamodels``) connect to
``RAY_ADDRESS`` when it is set, else start an embedded local Ray, unless Ray is already
initialised in this process. The applications (``value``, ``select``, ``memorization``)
run here, on the fitted predictor (``predictor=True``, the default: the last one ``fit`` or
``tune`` produced; or a checkpoint URI) or by retraining the learner (``predictor=False``).
Importing this module imports neither Ray Train nor Ray Tune: the stages import them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mp_ray.apps.context import AppContext, app_context
from mp_ray.config import ExperimentConfig, load_experiment
from mp_ray.data import Dataset, load_dataset
from mp_ray.learners import Learner, make_learner
from mp_ray.results import (
    DatamodelsResult,
    FitResult,
    Memorization,
    RetrainResult,
    Selection,
    TuneResult,
    Values,
)
from mp_ray.store import ExperimentStore

if TYPE_CHECKING:
    from mp_ray.apps.valuation import SamplingState
    from mp_ray.predictor import Predictor

ValuationMethod = Literal["tmc", "beta", "banzhaf", "loo"]
Metric = Literal["neg_loss", "accuracy"]


class Experiment:
    """The experiment of ``config``: its dataset and learner (loaded on first use, then
    kept), its store, its predictors, and the stages that fill and use them.

    ``predictor_uri`` is the predictor the applications use by default: the last one
    :meth:`fit` or :meth:`tune` produced, or one set by hand (a checkpoint directory or
    ``s3://`` URI)."""

    def __init__(self, config: ExperimentConfig, predictor_uri: str | None = None) -> None:
        self.config = config
        self.predictor_uri = predictor_uri

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
        return load_dataset(self.config.dataset)

    @cached_property
    def learner(self) -> Learner:
        """The learner on the training split (on the CPU), made once."""
        data = self.dataset
        return make_learner(self.config.learner, data.X_train, data.y_train, data.n_classes)

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

    def context(self, predictor: bool | str = True) -> AppContext:
        """What the applications answer from: models of subsets from the predictor
        (``True``: :attr:`predictor_uri`; or a URI) or, with ``False``, from retraining."""
        uri = self._predictor_uri(predictor) if predictor else None
        return app_context(
            self.config,
            uri,
            self.config.store.storage_options,
            dataset=self.dataset,
            learner=self.learner,
        )

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
        outcome = fit_predictor(self.config, name, on_report=record)
        self.predictor_uri = outcome.predictor_uri
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
        outcome = tune_predictor(self.config, name, on_trial)
        self.predictor_uri = outcome.predictor_uri
        return TuneResult(outcome)

    def datamodels(
        self, name: str = "default", on_progress: Callable[[int], None] | None = None
    ) -> DatamodelsResult:
        """Fit a datamodel per target of the store in a Ray task and save them in the store
        under ``datamodels/<name>``; ``on_progress`` hears the targets of each block fitted."""
        from mp_ray.datamodels.job import run_datamodels
        from mp_ray.datamodels.storage import read_datamodels
        from mp_ray.ray_session import connect

        connect()
        summary = run_datamodels(self.config, name, on_progress)
        models, _ = read_datamodels(self.store(), name)
        return DatamodelsResult(summary, models)

    # -- applications -----------------------------------------------------------------------

    def value(
        self,
        method: ValuationMethod = "tmc",
        *,
        predictor: bool | str = True,
        metric: Metric = "neg_loss",
        max_samples: int = 500,
        truncation: float = 0.01,
        alpha: float = 16.0,
        beta: float = 1.0,
        seed: int = 0,
        on_progress: Callable[[SamplingState], None] | None = None,
    ) -> Values:
        """Value every training point by ``method`` (tmc: TMC-Shapley, beta: Beta(α, β)
        Shapley, banzhaf: Data Banzhaf, loo: leave-one-out) with the utility ``metric`` of
        the models on the validation split, stopping after ``max_samples`` permutations
        (tmc, beta) or subsets (banzhaf). tmc cuts a permutation once its prefix is within
        ``truncation`` of the utility range of U(D) (0: never)."""
        from mp_ray.apps import Utility
        from mp_ray.apps.valuation import (
            MaxSamples,
            NoTruncation,
            RelativeTruncation,
            banzhaf_msr,
            beta_shapley,
            leave_one_out,
            tmc_shapley,
        )

        context = self.context(predictor)
        data = self.dataset
        utility = Utility(context.models, data.X_val, data.y_val, metric)
        stopping = MaxSamples(max_samples)
        if method == "loo":
            result = leave_one_out(utility)
        elif method == "tmc":
            policy = RelativeTruncation(truncation) if truncation else NoTruncation()
            result = tmc_shapley(utility, stopping, seed, policy, on_progress=on_progress)
        elif method == "beta":
            result = beta_shapley(utility, stopping, alpha, beta, seed, on_progress=on_progress)
        elif method == "banzhaf":
            result = banzhaf_msr(utility, stopping, seed, on_progress=on_progress)
        else:
            raise ValueError(f"unknown valuation method {method!r}: tmc, beta, banzhaf or loo")
        result.params.update(dataset_fingerprint=data.fingerprint, models=context.source)
        return Values.of(result)

    def select(
        self,
        size: int,
        *,
        predictor: bool | str = True,
        method: Literal["greedy", "relaxed"] = "greedy",
        objective: Metric = "neg_loss",
        holdout: float = 0.0,
        seed: int = 0,
    ) -> Selection:
        """Choose ``size`` training points on the validation split: greedy forward selection
        maximising ``objective`` (with ``holdout`` > 0, that share of the split chooses how
        many greedy points to keep, the rest drawn at random), or ``relaxed``, the
        predictor's continuous relaxation (needs a predictor)."""
        from mp_ray.apps import PredictedModels, Utility
        from mp_ray.apps.selection import greedy_selection, relaxed_selection

        context = self.context(predictor)
        data = self.dataset
        if method == "greedy":
            utility = Utility(context.models, data.X_val, data.y_val, "accuracy")
            result = greedy_selection(
                utility, size, seed=seed, objective=objective, holdout=holdout
            )
        elif isinstance(context.models, PredictedModels):
            result = relaxed_selection(context.models, data.X_val, data.y_val, size, seed=seed)
        else:
            raise ValueError(
                "method='relaxed' differentiates through the predictor: it needs "
                "predictor=True or a predictor URI, not False"
            )
        return Selection(result, data.y_train)

    def memorization(
        self,
        *,
        predictor: bool | str = True,
        subsets: int | None = None,
        alpha: float = 0.7,
        score: Literal["probability", "correct"] = "probability",
        seed: int = 0,
        on_progress: Callable[[int], None] | None = None,
    ) -> Memorization:
        """Memorisation of every training point and its influence on every test point,
        from ``subsets`` models on subsets keeping each point with probability ``alpha``
        (default 20,000 from a predictor, 2,000 by retraining); ``score``: the own-label
        probability or the 0/1 correctness."""
        from mp_ray.apps.memorization import DEFAULT_SUBSETS
        from mp_ray.apps.memorization import memorization as estimate

        context = self.context(predictor)
        data = self.dataset
        result = estimate(
            context.models,
            data.X_test,
            data.y_test,
            subsets or DEFAULT_SUBSETS[context.source],
            alpha,
            seed,
            on_progress=on_progress,
            score=score,
        )
        return Memorization(result, data.y_train)
