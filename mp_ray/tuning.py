"""Searching the predictor's hyperparameters with Ray Tune: ASHA over Ray Train fits.

Each trial is a small driver function that runs one :func:`~mp_ray.predictor.fit.fit_predictor`
(its own TorchTrainer) with the trial's values and forwards the metrics of every validation
to Tune (``TuneReportCallback``), so ASHA can stop weak trials early (its time is the
optimizer step; ``grace_period`` counts validations). The metric is the validation
error of predicted models against retrained ones (mean ‖θ̂ − θ‖/‖θ‖ on validation rows);
the test rows are never seen. Searched (the default space):

- ``lambda_global``, ``lambda_local``: 0 or a log-spaced value in [1e-4, 1] (a choice over
  ``[0, 1e-4, 3e-4, …, 1]``, so "off" is one of the candidates);
- ``lr``: log-uniform in [1e-3, 2e-2], around the default 1e-2 (on breast_cancer, 2,000
  steps: 1e-3 ends far from converged, 3e-2 collapses to the mean θ);
- ``width``: 64, 128, 256 or 512.

The trial driver holds almost no CPU (0.01) and each Train worker 0.99; Tune runs only as
many trials at once as the cluster's CPUs can place (:func:`concurrent_trials`). Tune's own
status tables are off; ``on_trial`` hears of each trial as it ends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import ray
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from mp_ray.config import ExperimentConfig
from mp_ray.data import load_dataset
from mp_ray.predictor.fit import PREDICTOR_DIR, checkpoint_uri, fit_predictor
from mp_ray.predictor.predictor import Predictor
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import FIT_UNREAD

METRIC = "val_rel_error"
DRIVER_CPU, WORKER_CPU = 0.01, 0.99  # a trial's driver function and each of its workers
STRENGTHS = [0.0, *np.logspace(-4, 0, 9).round(6).tolist()]
TUNED_FIELDS = ("lambda_global", "lambda_local", "lr", "width")


def default_search_space() -> dict[str, Any]:
    """The search space of the module docstring."""
    return {
        "lambda_global": tune.choice(STRENGTHS),
        "lambda_local": tune.choice(STRENGTHS),
        "lr": tune.loguniform(1e-3, 2e-2),
        "width": tune.choice([64, 128, 256, 512]),
    }


@dataclass
class TuneOutcome:
    """The best trial's values and error, where its predictor was exported, and all trials."""

    best_params: dict[str, Any]
    best_val_rel_error: float
    predictor_uri: str
    trials: list[dict[str, Any]]


def _trial(
    params: dict[str, Any], experiment: dict[str, Any], storage_path: str, workers: int
) -> None:
    """One Tune trial: a Ray Train fit with the trial's predictor settings."""
    config = ExperimentConfig.model_validate(experiment)
    settings = config.predictor.model_copy(update=params)
    config = config.model_copy(update={"predictor": settings})
    fit_predictor(
        config,
        name=f"trial-{tune.get_context().get_trial_id()}",
        storage_path=storage_path,
        num_workers=workers,
        resources_per_worker={"CPU": WORKER_CPU},
        callbacks=[TuneReportCallback()],
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
    storage_path: str,
    num_samples: int = 8,
    workers_per_trial: int = 1,
    grace_period: int = 2,
    search_space: dict[str, Any] | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> TuneOutcome:
    """Run the search; export the best trial's predictor to ``<storage_path>/<name>/best``
    and the trial table to ``<storage_path>/<name>/trials.json``. ``on_trial`` is called
    with each trial's last result as it ends (an empty one when it failed)."""
    config = config.with_absolute_paths()
    # Refuse a mismatched or unfinished store here, before Tune starts any trial.
    ExperimentStore.open_for(
        config, load_dataset(config.dataset).fingerprint, FIT_UNREAD, complete=True
    )
    storage_path = os.path.abspath(storage_path) if "://" not in storage_path else storage_path
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial,
            experiment=config.model_dump(mode="json"),
            storage_path=f"{storage_path}/{name}-trials",
            workers=workers_per_trial,
        ),
        {"cpu": DRIVER_CPU},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space or default_search_space(),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            num_samples=num_samples,
            scheduler=ASHAScheduler(
                time_attr="step",
                max_t=config.predictor.steps,
                grace_period=min(
                    grace_period * config.predictor.eval_every, config.predictor.steps
                ),
            ),
            # The generator's own limit: Tune's max_concurrent_trials only wraps Searchers.
            search_alg=BasicVariantGenerator(
                random_state=config.seed, max_concurrent=concurrent_trials(workers_per_trial)
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
    trials = []
    for result in grid:
        if result.metrics:
            params = {key: result.config[key] for key in TUNED_FIELDS if key in result.config}
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
    with fsspec.open(f"{storage_path}/{name}/trials.json", "w") as handle:
        json.dump(trials, handle, indent=2)
    return TuneOutcome(
        best_params={key: best[key] for key in TUNED_FIELDS if key in best},
        best_val_rel_error=best[METRIC],
        predictor_uri=export,
        trials=trials,
    )
