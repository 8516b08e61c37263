"""Operational metrics through ``ray.util.metrics``. Every Ray node serves them, beside Ray's
own, as Prometheus text at ``http://<node>:<metrics export port>/metrics``; Ray adds the
prefix ``ray_`` and, to counters, the suffix ``_total`` (the counter
``mp_ray_retrain_rows_written`` is scraped as ``ray_mp_ray_retrain_rows_written_total``).

Retraining, recorded in the driver as block results come back (tags ``experiment``,
``store``): counters ``mp_ray_retrain_rows_written`` (rows, one model each, trained and
written to the store), ``mp_ray_retrain_blocks_written`` and ``mp_ray_retrain_blocks_retried``
(sent again after their actor died); gauges ``mp_ray_retrain_models_per_second`` (rows
written by the run over its seconds so far) and ``mp_ray_retrain_rows_pending``.

Fit, recorded by the rank-0 Ray Train worker at each validation (tags ``experiment``,
``run``): gauges ``mp_ray_fit_step``, ``mp_ray_fit_train_loss``, ``mp_ray_fit_val_rel_error``
and ``mp_ray_fit_best_val_rel_error``.

Serve, recorded by the gateway for every request (tags ``endpoint``, ``outcome``: ok,
client_error or server_error, ``code``: the HTTP status; Serve adds ``application``,
``deployment`` and ``replica``): counter ``mp_ray_serve_requests`` and histogram
``mp_ray_serve_request_latency_ms`` (tag ``endpoint``).

Metric objects are made once per process, on first use (a Ray worker or the driver).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from ray.util import metrics

if TYPE_CHECKING:
    from mp_ray.config import ExperimentConfig

PREFIX = "mp_ray_"
RETRAIN_TAGS = ("experiment", "store")
FIT_TAGS = ("experiment", "run")
# The validation metrics (TrainWorker.validate) kept as gauges, with their descriptions.
FIT_GAUGES = {
    "step": "Optimizer steps taken at the latest validation.",
    "train_loss": "Mean training loss since the previous validation, over workers.",
    "val_rel_error": "Mean relative parameter error on the validation rows.",
    "best_val_rel_error": "Lowest validation error so far.",
}
LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


@cache
def counter(name: str, description: str, tag_keys: tuple[str, ...]) -> metrics.Counter:
    """The counter ``mp_ray_<name>`` of this process."""
    return metrics.Counter(PREFIX + name, description, tag_keys)


@cache
def gauge(name: str, description: str, tag_keys: tuple[str, ...]) -> metrics.Gauge:
    """The gauge ``mp_ray_<name>`` of this process."""
    return metrics.Gauge(PREFIX + name, description, tag_keys)


class RetrainMetrics:
    """The series of one retraining run over ``pending_rows`` rows to train; ``clock``
    gives seconds (monotonic)."""

    def __init__(
        self,
        config: ExperimentConfig,
        store_uri: str,
        pending_rows: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.tags = {"experiment": config.experiment_name, "store": store_uri}
        self.pending, self.written = pending_rows, 0
        self.clock, self.start = clock, clock()
        self._set_pending()

    def block_written(self, rows: int) -> None:
        """A block of ``rows`` rows was trained and written."""
        self.written += rows
        self.pending = max(0, self.pending - rows)
        counter("retrain_rows_written", "Rows (models) trained and written.", RETRAIN_TAGS).inc(
            rows, self.tags
        )
        counter("retrain_blocks_written", "Blocks trained and written.", RETRAIN_TAGS).inc(
            1, self.tags
        )
        elapsed = self.clock() - self.start
        if elapsed > 0:
            gauge(
                "retrain_models_per_second",
                "Rows written by the run over its seconds so far.",
                RETRAIN_TAGS,
            ).set(self.written / elapsed, self.tags)
        self._set_pending()

    def block_retried(self) -> None:
        """A block goes back to the queue because its actor died."""
        counter(
            "retrain_blocks_retried", "Blocks sent again after their actor died.", RETRAIN_TAGS
        ).inc(1, self.tags)

    def _set_pending(self) -> None:
        gauge("retrain_rows_pending", "Rows left to train in the run.", RETRAIN_TAGS).set(
            self.pending, self.tags
        )


def record_fit(config: ExperimentConfig, run: str, validation: dict[str, Any]) -> None:
    """Set the fit gauges of run ``run`` from one validation's metrics (rank 0 only)."""
    tags = {"experiment": config.experiment_name, "run": run}
    for name, description in FIT_GAUGES.items():
        gauge(f"fit_{name}", description, FIT_TAGS).set(float(validation[name]), tags)


@cache
def _serve_series() -> tuple[Any, Any]:
    """The request counter and latency histogram of this Serve replica (Serve's metric
    classes add the application, deployment and replica tags)."""
    from ray.serve import metrics as serve_metrics

    requests = serve_metrics.Counter(
        PREFIX + "serve_requests",
        "Requests answered, by endpoint, outcome and HTTP status.",
        ("endpoint", "outcome", "code"),
    )
    latency = serve_metrics.Histogram(
        PREFIX + "serve_request_latency_ms",
        "Time from a request's arrival at the gateway to its answer, in ms.",
        LATENCY_BOUNDARIES_MS,
        ("endpoint",),
    )
    return requests, latency


def record_request(endpoint: str, status: int, seconds: float) -> None:
    """One request to ``endpoint`` answered with HTTP ``status`` after ``seconds``."""
    outcome = "ok" if status < 400 else "client_error" if status < 500 else "server_error"
    requests, latency = _serve_series()
    requests.inc(1, {"endpoint": endpoint, "outcome": outcome, "code": str(status)})
    latency.observe(seconds * 1000, {"endpoint": endpoint})
