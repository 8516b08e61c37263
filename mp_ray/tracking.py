"""Optional MLflow tracking of fits through Ray's own integration
(``ray.air.integrations.mlflow.setup_mlflow``), on when ``observability.mlflow.enabled``.

The rank-0 Ray Train worker of a fit opens one MLflow run named after the Ray Train run
(a Tune trial's fit is a run too), logs the predictor settings as its parameters and each
validation's metrics at their step, and ends it FINISHED or FAILED. MLflow is an extra
dependency (``pip install 'mp-ray[mlflow]'``): a config that turns tracking on where it is
not installed is refused before any work (:func:`check_tracking`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from mp_ray.config import ExperimentConfig
from mp_ray.errors import MpRayError


class TrackingUnavailableError(MpRayError, RuntimeError):
    """MLflow tracking is turned on but mlflow is not installed."""


def check_tracking(config: ExperimentConfig) -> None:
    """Raise :class:`TrackingUnavailableError` when the config turns MLflow tracking on and
    mlflow cannot be imported here."""
    if config.observability.mlflow.enabled and importlib.util.find_spec("mlflow") is None:
        raise TrackingUnavailableError(
            "observability.mlflow.enabled is true but mlflow is not installed: install "
            "mp-ray's mlflow extra (pip install 'mp-ray[mlflow]') where the driver and the "
            "Ray Train workers run, or set observability.mlflow.enabled: false"
        )


class FitTracker:
    """One fit's MLflow run, open on the rank-0 worker (``None`` everywhere else and when
    tracking is off: see :func:`fit_tracker`)."""

    def __init__(self, config: ExperimentConfig, run: str) -> None:
        from ray.air.integrations.mlflow import setup_mlflow

        settings = config.observability.mlflow
        self.mlflow = setup_mlflow(
            config=_params(config),
            tracking_uri=settings.tracking_uri,
            experiment_name=settings.experiment_name or config.experiment_name,
            run_name=run,
            create_experiment_if_not_exists=True,
            rank_zero_only=False,  # the caller is rank 0 already
            tags={"store": config.store.uri},
        )

    def log(self, validation: dict[str, Any]) -> None:
        """Log one validation's numeric metrics at its ``step``."""
        numbers = {key: float(value) for key, value in validation.items() if key != "step"}
        self.mlflow.log_metrics(numbers, step=int(validation["step"]))

    def end(self, failed: bool) -> None:
        """End the MLflow run, FAILED when the fit raised."""
        self.mlflow.end_run(status="FAILED" if failed else "FINISHED")


def fit_tracker(config: ExperimentConfig, rank: int, run: str) -> FitTracker | None:
    """The tracker of Ray Train run ``run`` for worker ``rank``: one on rank 0 when MLflow
    tracking is on, else None."""
    if rank != 0 or not config.observability.mlflow.enabled:
        return None
    check_tracking(config)
    return FitTracker(config, run)


def _params(config: ExperimentConfig) -> dict[str, Any]:
    """The run's parameters: the predictor and fit settings, the learner and the sampler
    (``predictor.lr``, ``learner.kind``…)."""
    sections = ("predictor", "fit", "learner", "sampler")
    return {
        f"{section}.{key}": value
        for section in sections
        for key, value in getattr(config, section).model_dump(mode="json").items()
    }
