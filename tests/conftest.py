"""Shared fixtures: one local Ray session and one local S3 (moto) server for the whole run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from ports import free_port

from mp_ray.apps.context import AppContext, app_context
from mp_ray.config import ExperimentConfig, parse_experiment
from mp_ray.predictor.fit import fit_predictor
from mp_ray.ray_session import connect
from mp_ray.retrain import run_retrain
from mp_ray.serve.ingress import use_ingress

# Fake credentials for the local moto server, exported before Ray starts so its workers
# inherit them (real deployments take credentials from their own environment).
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
os.environ.update(S3_CREDENTIALS)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# Serve runs behind the ingress `mp-ray serve` starts by default; chosen before any test
# module imports Serve (it reads the choice at import).
use_ingress("haproxy")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A real local Ray with 4 logical CPUs (actors reserve 1 each), stopped at the end,
    started as the commands start theirs (:func:`~mp_ray.ray_session.connect`: with the
    State API through which Ray Train frees the CPUs of a trial Tune stopped early).

    Its workers' and raylet's log lines stay in the session's log files: streamed to this
    driver they would land in whatever a command test is capturing (a Serve controller's
    shutdown message before `inspect --json`'s JSON, say)."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)  # always a local Ray of its own
    temp_dir = tempfile.mkdtemp(prefix="mpr", dir="/tmp")
    connect(4, 512 * 1024**2, log_to_driver=False, temp_dir=temp_dir)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A real S3-compatible HTTP server (moto) on 127.0.0.1; yields fsspec storage options.

    Credentials come from the environment set at the top of this module.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield {"endpoint_url": f"http://127.0.0.1:{port}"}
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: dict[str, str]) -> str:
    """A fresh, empty bucket on the moto server; returns its name."""
    import uuid

    import boto3

    name = f"mpr-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=s3_server["endpoint_url"])
    client.create_bucket(Bucket=name)
    return name


# One small fitted predictor shared by the application and service tests: breast_cancer cut
# to 120 training points with 20% of them mislabelled, 3,000 retrained models on subsets of
# uniform size, ModelPred fitted with Ray Train on one worker.


@pytest.fixture(scope="session")
def fitted_run(ray_session, tmp_path_factory) -> tuple[ExperimentConfig, str]:
    """The experiment and its fitted predictor's checkpoint URI."""
    root = tmp_path_factory.mktemp("apps")
    config = parse_experiment(
        {
            "seed": 0,
            "dataset": {
                "source": "sklearn",
                "name": "breast_cancer",
                "max_train": 120,
                "flip_fraction": 0.2,
            },
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-6},
            "sampler": {"kind": "uniform_size", "min_size": 10},
            "store": {"uri": str(root / "bc.zarr"), "n_rows": 3000, "block_rows": 500},
            "retrain": {"num_actors": 2},
            "predictor": {"width": 64, "steps": 2000, "lr": 3e-3, "batch_size": 64},
        }
    )
    run_retrain(config)
    outcome = fit_predictor(
        config.with_overrides({"fit.storage_path": str(root / "train"), "fit.num_workers": 1}),
        "apps",
    )
    return config, outcome.predictor_uri


@pytest.fixture(scope="session")
def fitted(fitted_run) -> AppContext:
    """The applications' context over the fitted predictor (retraining beside it)."""
    return app_context(*fitted_run)
