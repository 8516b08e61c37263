"""Searching the predictor's hyperparameters with Ray Tune: ASHA over Ray Train fits.

Each trial is a small driver function that runs one :func:`~mp_ray.predictor.fit.fit_predictor`
(its own TorchTrainer) with the trial's values and forwards the metrics of every validation
to Tune (``TuneReportCallback``), so ASHA can stop weak trials early (its time is the
optimizer step; ``grace_period`` counts validations). The metric is the validation
error of predicted models against retrained ones (mean ‖θ̂ − θ‖/‖θ‖ on validation rows);
the test rows are never seen. The search is the config's ``tune`` section; its
``search_space`` (:class:`~mp_ray.config.TuneConfig`) by default searches:

- ``lambda_global``, ``lambda_local``: 0 or a log-spaced value in [1e-4, 1] (a choice over
  ``[0, 1e-4, 3e-4, …, 1]``, so "off" is one of the candidates);
- ``lr``: log-uniform in [1e-3, 2e-2], around the default 1e-2 (on breast_cancer, 2,000
  steps: 1e-3 ends far from converged, 3e-2 collapses to the mean θ);
- ``width``: 64, 128, 256 or 512.

The search reads the store's training rows once, for the moments its coordinates come from
(:func:`~mp_ray.predictor.moments.training_moments`), and hands them with the loaded dataset
to every trial through ``tune.with_parameters`` (put once in the object store): no trial
reads them again, whatever the hyperparameters it tries (the moments give the coordinates
of every ``predictor.targets``).

Resources: a trial is its driver (0.01 CPU, Tune's resource request for the trial) and its
Ray Train run of ``tune.workers_per_trial`` workers (the trial's ``fit.num_workers``), each
0.99 CPU and, with ``tune.use_gpu`` (default ``fit.use_gpu``), a GPU — Train's own request,
a placement group of all the workers at once (Train V2 places its workers itself, so they
are not bundles of the trial's request, which would reserve them twice). With
``tune.max_concurrent_trials`` unset, every trial starts and its workers wait for room: on an
autoscaling cluster the waiting placement groups are the demand it adds nodes for; on a
laptop the trials simply take turns (each waiting Train run retries its start-up every
minute). A limit keeps that many trials in flight.

Results: :func:`tune_predictor` returns Ray Tune's ``ResultGrid`` with the best trial's
``Result`` (an entry of it), exports the best trial's predictor, and writes the trials
beside it as ``trials.json`` (ranked rows) and ``trials.parquet`` (the grid's
``get_dataframe()``: every trial's config and last metrics). A search that stopped before
every trial ended (Ctrl-C, a lost driver) raises :class:`SearchInterrupted`; running it again
under the same name resumes it (``Tuner.restore``): trials that ended are kept, unfinished and
failed ones go on, each Train run from its own latest checkpoint. Tune's own status tables
are off; ``on_trial`` hears of each trial as it ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.utils import flatten_dict

from mp_ray.config import (
    RESOLVED_CONFIG,
    ChoiceSpace,
    ConfigError,
    ExperimentConfig,
    LogUniformSpace,
    TuneConfig,
    UniformSpace,
    write_resolved_config,
)
from mp_ray.data import Dataset, load_dataset
from mp_ray.errors import MpRayError
from mp_ray.learners import Learner, LearnerCapabilityError
from mp_ray.loaded import learner_of
from mp_ray.predictor.fit import (
    PREDICTOR_DIR,
    checkpoint_uri,
    fit_predictor,
    fit_settings,
    store_moments,
)
from mp_ray.predictor.moments import TrainingMoments
from mp_ray.predictor.predictor import Predictor
from mp_ray.ray_resources import check_cluster_fits
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import FIT_UNREAD, differences
from mp_ray.tracking import check_tracking

METRIC = "val_rel_error"
RANKED_BY = "best_val_rel_error"  # a trial's rank: its last result's best validation error
DRIVER_CPU, WORKER_CPU = 0.01, 0.99  # a trial's driver function and each of its workers
TRIALS_JSON, TRIALS_PARQUET = "trials.json", "trials.parquet"
# The sections a search's trials run with: resuming a search with other values is refused.
SEARCH_SECTIONS = (
    "seed",
    "dataset",
    "learner",
    "sampler",
    "store",
    "splits",
    "predictor",
    "fit",
    "tune",
)


class SearchInterrupted(MpRayError, RuntimeError):
    """A search stopped before all its trials ended; running it again resumes it."""


def search_space(config: ExperimentConfig) -> dict[str, Any]:
    """The config's ``tune.search_space`` as Tune's sampling domains."""
    domains = {}
    for name, space in config.tune.search_space.items():
        match space:
            case ChoiceSpace():
                domains[name] = tune.choice(space.values)
            case LogUniformSpace():
                domains[name] = tune.loguniform(space.low, space.high)
            case UniformSpace():
                domains[name] = tune.uniform(space.low, space.high)
    return domains


@dataclass
class TuneOutcome:
    """A finished search: the best trial's values and error, where its predictor was
    exported, the trials' rows (ranked, best first), Ray Tune's ``grid`` (one ``Result`` per
    trial) and ``best``, the best trial's entry of it."""

    best_params: dict[str, Any]
    best_val_rel_error: float
    predictor_uri: str
    trials: list[dict[str, Any]]
    grid: tune.ResultGrid
    best: tune.Result


def searchable(
    config: ExperimentConfig,
    dataset: Dataset,
    labelled_rows: int,
    n_params: int,
    learner: Learner | None = None,
) -> ExperimentConfig:
    """``config`` with a search its trials can run, checked before any trial starts
    (``learner``: the config's on ``dataset`` when already made).

    Each dimension of ``tune.search_space`` is tried at each of its candidates (every choice,
    a range's bounds) with the predictor section's other settings, for ``n_params``
    parameters and ``labelled_rows`` training rows
    (:func:`~mp_ray.predictor.fit.fit_settings`): a regulariser or Newton steps the learner
    lacks the methods for would fail every trial that samples it. Where ``tune.search_space``
    is the default, a dimension that fails is left out (a learner without ``objective_grad``
    searches no global regulariser); in a space the config gives, it is an error naming the
    dimension and the value (:class:`~mp_ray.learners.LearnerCapabilityError` for a missing
    method, :class:`~mp_ray.config.ConfigError` otherwise). MLflow tracking on without
    mlflow is refused too (:func:`~mp_ray.tracking.check_tracking`)."""
    check_tracking(config)
    learner = learner_of(config, dataset, learner)
    fit_settings(config.predictor, learner, labelled_rows, n_params)
    given = config.tune.search_space != TuneConfig().search_space
    space = {}
    for name, distribution in config.tune.search_space.items():
        try:
            for value in distribution.candidates():
                settings = config.predictor.model_copy(update={name: value})
                fit_settings(settings, learner, labelled_rows, n_params)
        except (LearnerCapabilityError, ValueError) as error:
            if given:
                refusal = (
                    LearnerCapabilityError
                    if isinstance(error, LearnerCapabilityError)
                    else ConfigError
                )
                raise refusal(f"tune.search_space.{name} = {value!r}: {error}") from error
            continue
        space[name] = distribution
    tune_settings = config.tune.model_copy(update={"search_space": space})
    return config.model_copy(update={"tune": tune_settings})


def trial_uses_gpu(config: ExperimentConfig) -> bool:
    """Whether each trial's Train workers get a GPU: ``tune.use_gpu``, else ``fit.use_gpu``."""
    return config.fit.use_gpu if config.tune.use_gpu is None else config.tune.use_gpu


def worker_resources(use_gpu: bool) -> dict[str, float]:
    """What each Train worker of a trial reserves (its trial's driver: ``DRIVER_CPU``)."""
    return {"CPU": WORKER_CPU, **({"GPU": 1.0} if use_gpu else {})}


def search_folder(config: ExperimentConfig, name: str) -> str:
    """Where the search ``name`` keeps its results: ``<tune.storage_path>/<name>``."""
    return f"{config.with_absolute_paths().tune.storage_path}/{name}"


@contextmanager
def _unreported_trials_unmentioned() -> Iterator[None]:
    """Silences Tune's warning, as it reads a search's results, of each trial that has no
    results file yet (one that had not reported when the search stopped)."""
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def ended_trials(config: ExperimentConfig, name: str) -> list[dict[str, Any]] | None:
    """The last results of the trials that ended in the search ``name`` so far (running it
    resumes it), or None when there is no search of that name to resume. Failed trials are
    not among them: resuming runs them again. Raises ValueError when the search ran with
    other settings than ``config``'s."""
    config = config.with_absolute_paths()
    folder = search_folder(config, name)
    if not tune.Tuner.can_restore(folder):
        return None
    _check_same_search(config, folder)
    return [
        dict(t.last_result or {}) for t in _saved_trials(folder) if t.status == Trial.TERMINATED
    ]


def _saved_trials(folder: str) -> list[Trial]:
    """The trials of the search in ``folder`` as Tune last saved them: what resuming it
    starts from (a trial stopped by an interruption is saved as not ended)."""
    with _unreported_trials_unmentioned():
        return tune.ExperimentAnalysis(folder).trials


def _trial(
    params: dict[str, Any],
    experiment: dict[str, Any],
    dataset: Dataset,
    moments: TrainingMoments,
) -> None:
    """One Tune trial: a Ray Train fit with the trial's predictor settings, on the search's
    ``dataset`` and training ``moments``; a resumed trial resumes its fit by run name."""
    config = ExperimentConfig.model_validate(experiment)
    heard: list[dict[str, Any]] = []
    outcome = fit_predictor(
        config.with_overrides({f"predictor.{key}": value for key, value in params.items()}),
        name=f"trial-{tune.get_context().get_trial_id()}",
        resources_per_worker=worker_resources(config.fit.use_gpu),
        callbacks=[TuneReportCallback()],
        on_report=heard.append,
        dataset=dataset,
        moments=moments,
    )
    if not heard:
        # The fit had ended before the search was interrupted, after Tune last saved the
        # search: Tune never kept its results, so hand over the last one.
        tune.report({**outcome.metrics, CHECKPOINT_PATH_KEY: outcome.checkpoint_path})


# The driver's listener for each running search (by folder); see _TrialEnded.
_LISTENERS: dict[str, Callable[[dict[str, Any]], None]] = {}


class _TrialEnded(tune.Callback):
    """Calls the listener of the search in ``folder`` (:data:`_LISTENERS`) in the driver with
    each ended trial's last result (empty for one that failed).

    Tune keeps its run config, this callback included, with the search and restores it on
    resume: the callback holds only the folder, and the resuming driver registers its own
    listener."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _tell(self, result: dict[str, Any]) -> None:
        if (listener := _LISTENERS.get(self.folder)) is not None:
            listener(result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._tell(dict(trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._tell({})


def _check_same_search(config: ExperimentConfig, folder: str) -> None:
    """Refuse to resume the search in ``folder`` with settings other than it ran with (Tune
    resumes a search with its own)."""
    with fsspec.open(f"{folder}/{RESOLVED_CONFIG}") as handle:
        recorded = yaml.safe_load(handle)
    now = config.model_dump(mode="json")

    def flat(data: dict[str, Any]) -> dict[str, Any]:
        return flatten_dict({key: data.get(key) for key in SEARCH_SECTIONS}, delimiter=".")

    if diffs := differences(flat(recorded), flat(now), "search"):
        raise ValueError(
            f"search {folder} ran with other settings than {config.source}: "
            + "; ".join(diffs)
            + "; give another name, or remove the folder to start it again"
        )


def _new_tuner(trainable: Any, config: ExperimentConfig, name: str, folder: str) -> tune.Tuner:
    """A Tuner for a new search ``name`` with the config's ``tune`` settings."""
    settings = config.tune
    steps, eval_every = config.predictor.steps, config.predictor.eval_every
    return tune.Tuner(
        trainable,
        param_space=search_space(config),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            num_samples=settings.num_samples,
            scheduler=ASHAScheduler(
                time_attr="step",
                max_t=steps,
                grace_period=min(settings.grace_period * eval_every, steps),
                reduction_factor=settings.reduction_factor,
            ),
            # The generator's own limit (0: none): TuneConfig's max_concurrent_trials only
            # wraps Searchers, and the generator takes the seed.
            search_alg=BasicVariantGenerator(
                random_state=config.seed, max_concurrent=settings.max_concurrent_trials or 0
            ),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=settings.storage_path,
            verbose=0,
            callbacks=[_TrialEnded(folder)],
        ),
    )


def tune_predictor(
    config: ExperimentConfig,
    name: str,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    dataset: Dataset | None = None,
) -> TuneOutcome:
    """Run the search ``name`` with the config's ``tune`` settings, or resume it where it
    stopped; export the best trial's predictor to ``<tune.storage_path>/<name>/best`` and
    the trials to ``…/<name>/trials.json`` and ``…/<name>/trials.parquet``. ``on_trial`` is
    called with each trial's last result as it ends (an empty one when it failed);
    ``dataset`` is the config's dataset when the caller has it loaded already (else it is
    loaded here). Raises :class:`SearchInterrupted` when the search stopped early."""
    config = config.with_absolute_paths()
    use_gpu = trial_uses_gpu(config)
    check_cluster_fits(
        "Tune trial's Ray Train worker",
        worker_resources(use_gpu),
        "the trials' resources (tune.use_gpu, fit.use_gpu, --gpu)",
    )
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    # Refuse a mismatched or unfinished store here, before Tune starts any trial.
    store = ExperimentStore.open_for(config, dataset.fingerprint, FIT_UNREAD, complete=True)
    learner = learner_of(config, dataset)
    moments = store_moments(store, config, dataset, learner)
    config = searchable(config, dataset, moments.count, store.spec.n_params, learner)
    settings = config.tune
    folder = search_folder(config, name)
    resuming = tune.Tuner.can_restore(folder)
    if resuming:
        _check_same_search(config, folder)
    else:
        write_resolved_config(config, folder)
    trial_runs = {
        "fit.storage_path": f"{settings.storage_path}/{name}-trials",
        "fit.num_workers": settings.workers_per_trial,
        "fit.use_gpu": use_gpu,
    }
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial,
            experiment=config.with_overrides(trial_runs).model_dump(mode="json"),
            dataset=dataset,
            moments=moments,
        ),
        {"cpu": DRIVER_CPU},
    )
    if resuming:
        with _unreported_trials_unmentioned():
            tuner = tune.Tuner.restore(
                folder,
                trainable,
                resume_unfinished=True,
                resume_errored=True,
                param_space=search_space(config),
            )
    else:
        tuner = _new_tuner(trainable, config, name, folder)
    if on_trial is not None:
        _LISTENERS[folder] = on_trial
    try:
        grid = tuner.fit()
    finally:
        _LISTENERS.pop(folder, None)
    saved = _saved_trials(folder)
    ended = sum(trial.status in (Trial.TERMINATED, Trial.ERROR) for trial in saved)
    if ended < settings.num_samples:
        raise SearchInterrupted(
            f"search {name} stopped with {ended} of {settings.num_samples} trials ended, "
            f"kept in {folder}"
        )
    return _finish(grid, config, folder)


def _finish(grid: tune.ResultGrid, config: ExperimentConfig, folder: str) -> TuneOutcome:
    """Rank the trials of ``grid``, export the best one's predictor (with the config its fit
    ran with) to ``<folder>/best`` and write the trial tables into ``folder``."""
    searched = list(config.tune.search_space)
    ranked = sorted(  # ties in trial order, whatever order a resumed search lists them in
        (result for result in grid if result.metrics),
        key=lambda r: (r.metrics[RANKED_BY], r.metrics["trial_id"]),
    )
    if not ranked:
        raise RuntimeError(f"no Tune trial of {folder} reported a result: {grid.errors}")
    trials = [
        {
            **{key: result.config[key] for key in searched},
            "steps": result.metrics.get("step"),
            METRIC: result.metrics.get(RANKED_BY),
            CHECKPOINT_PATH_KEY: result.metrics.get(CHECKPOINT_PATH_KEY),
        }
        for result in ranked
    ]
    best = trials[0]
    export = f"{folder}/best"
    best_checkpoint = checkpoint_uri(best[CHECKPOINT_PATH_KEY], config.tune.storage_path)
    Predictor.load(f"{best_checkpoint}/{PREDICTOR_DIR}").save(export)
    best_run = best_checkpoint.rsplit("/", 1)[0]  # the trial's fit wrote its config there
    with (
        fsspec.open(f"{best_run}/{RESOLVED_CONFIG}") as source,
        fsspec.open(f"{export}/{RESOLVED_CONFIG}", "wb") as target,
    ):
        target.write(source.read())
    with fsspec.open(f"{folder}/{TRIALS_JSON}", "w") as handle:
        json.dump(trials, handle, indent=2)
    table = pa.Table.from_pandas(grid.get_dataframe(), preserve_index=False)
    with fsspec.open(f"{folder}/{TRIALS_PARQUET}", "wb") as handle:
        pq.write_table(table, handle)
    return TuneOutcome(
        best_params={key: best[key] for key in searched},
        best_val_rel_error=best[METRIC],
        predictor_uri=export,
        trials=trials,
        grid=grid,
        best=ranked[0],
    )
