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

The trial driver holds almost no CPU (0.01) and each Train worker 0.99; with
``max_concurrent: auto`` Tune runs only as many trials at once as the cluster's CPUs can
place (:func:`concurrent_trials`). Each trial is a fit with the ``fit`` section's failure and
checkpoint policy, on CPUs, and writes its own resolved config into its run folder; the
search writes its own (``max_concurrent`` resolved) into ``<tune.storage_path>/<name>``, and
the best trial's beside the exported best predictor. Tune's own status tables are off;
``on_trial`` hears of each trial as it ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
import ray
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from mp_ray.config import (
    RESOLVED_CONFIG,
    ChoiceSpace,
    ExperimentConfig,
    LogUniformSpace,
    UniformSpace,
    write_resolved_config,
)
from mp_ray.data import Dataset, load_dataset
from mp_ray.predictor.fit import PREDICTOR_DIR, checkpoint_uri, fit_predictor, store_moments
from mp_ray.predictor.moments import TrainingMoments
from mp_ray.predictor.predictor import Predictor
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import FIT_UNREAD

METRIC = "val_rel_error"
DRIVER_CPU, WORKER_CPU = 0.01, 0.99  # a trial's driver function and each of its workers


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
    """The best trial's values and error, where its predictor was exported, and all trials."""

    best_params: dict[str, Any]
    best_val_rel_error: float
    predictor_uri: str
    trials: list[dict[str, Any]]


def _trial(
    params: dict[str, Any],
    experiment: dict[str, Any],
    dataset: Dataset,
    moments: TrainingMoments,
) -> None:
    """One Tune trial: a Ray Train fit with the trial's predictor settings, on the search's
    ``dataset`` and training ``moments``."""
    config = ExperimentConfig.model_validate(experiment)
    fit_predictor(
        config.with_overrides({f"predictor.{key}": value for key, value in params.items()}),
        name=f"trial-{tune.get_context().get_trial_id()}",
        resources_per_worker={"CPU": WORKER_CPU},
        callbacks=[TuneReportCallback()],
        dataset=dataset,
        moments=moments,
    )


class _TrialEnded(tune.Callback):
    """Calls ``on_trial`` in the driver with each ended trial's last result (empty for one
    that failed)."""

    def __init__(self, on_trial: Callable[[dict[str, Any]], None] | None) -> None:
        self.on_trial = on_trial

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config to restore a search; the callback stays in this driver.
        return {"on_trial": None}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.on_trial is not None:
            self.on_trial(dict(trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.on_trial is not None:
            self.on_trial({})


def concurrent_trials(workers_per_trial: int) -> int:
    """How many trials fit on the cluster at once (each Train worker holds 0.99 CPU).

    Trials beyond that would wait for a worker group past Ray Train's start-up timeout and
    keep retrying, so Tune starts a trial only when its workers can be placed."""
    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, int(cpus // (WORKER_CPU * workers_per_trial + DRIVER_CPU)))


def tune_predictor(
    config: ExperimentConfig,
    name: str,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    dataset: Dataset | None = None,
) -> TuneOutcome:
    """Run the search ``name`` with the config's ``tune`` settings; export the best trial's
    predictor to ``<tune.storage_path>/<name>/best`` and the trial table to
    ``<tune.storage_path>/<name>/trials.json``. ``on_trial`` is called with each trial's last
    result as it ends (an empty one when it failed); ``dataset`` is the config's dataset
    when the caller has it loaded already (else it is loaded here)."""
    config = config.with_absolute_paths()
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    # Refuse a mismatched or unfinished store here, before Tune starts any trial.
    store = ExperimentStore.open_for(config, dataset.fingerprint, FIT_UNREAD, complete=True)
    moments = store_moments(store, config, dataset)
    settings = config.tune
    if settings.max_concurrent == "auto":
        concurrent = concurrent_trials(settings.workers_per_trial)
        settings = settings.model_copy(update={"max_concurrent": concurrent})
        config = config.model_copy(update={"tune": settings})
    storage_path = settings.storage_path
    write_resolved_config(config, f"{storage_path}/{name}")
    trial_runs = {
        "fit.storage_path": f"{storage_path}/{name}-trials",
        "fit.num_workers": settings.workers_per_trial,
        "fit.use_gpu": False,
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
    steps, eval_every = config.predictor.steps, config.predictor.eval_every
    tuner = tune.Tuner(
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
            # The generator's own limit: Tune's max_concurrent_trials only wraps Searchers.
            search_alg=BasicVariantGenerator(
                random_state=config.seed, max_concurrent=settings.max_concurrent
            ),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            verbose=0,
            callbacks=[] if on_trial is None else [_TrialEnded(on_trial)],
        ),
    )
    grid = tuner.fit()
    searched = list(settings.search_space)
    trials = []
    for result in grid:
        if result.metrics:
            params = {key: result.config[key] for key in searched}
            trials.append(
                {
                    **params,
                    "steps": result.metrics.get("step"),
                    METRIC: result.metrics.get("best_val_rel_error"),
                    CHECKPOINT_PATH_KEY: result.metrics.get(CHECKPOINT_PATH_KEY),
                }
            )
    if not trials:
        raise RuntimeError(f"no Tune trial of {name} reported a result: {grid.errors}")
    trials.sort(key=lambda row: row[METRIC])
    best = trials[0]
    export = f"{storage_path}/{name}/best"
    best_checkpoint = checkpoint_uri(best[CHECKPOINT_PATH_KEY], storage_path)
    Predictor.load(f"{best_checkpoint}/{PREDICTOR_DIR}").save(export)
    best_run = best_checkpoint.rsplit("/", 1)[0]  # the trial's fit wrote its config there
    with (
        fsspec.open(f"{best_run}/{RESOLVED_CONFIG}") as source,
        fsspec.open(f"{export}/{RESOLVED_CONFIG}", "wb") as target,
    ):
        target.write(source.read())
    with fsspec.open(f"{storage_path}/{name}/trials.json", "w") as handle:
        json.dump(trials, handle, indent=2)
    return TuneOutcome(
        best_params={key: best[key] for key in searched},
        best_val_rel_error=best[METRIC],
        predictor_uri=export,
        trials=trials,
    )
