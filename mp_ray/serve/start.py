"""Starting the Serve application on this machine's Ray or a cluster (``mp-ray serve``):
the ingress chosen before Serve is imported, the application built and its predictor
checked before anything is deployed, the replicas checked against the CPUs a local Ray
has, then Serve started and kept running until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from mp_ray.config import ServeConfig
from mp_ray.errors import InputError
from mp_ray.serve.ingress import use_ingress


def on_cluster() -> bool:
    """Whether the application goes to the cluster at ``RAY_ADDRESS`` (not a Ray of this
    process or one it starts)."""
    import ray

    return not ray.is_initialized() and bool(os.environ.get("RAY_ADDRESS"))


def prepare(config: Path, predictor: str, settings: ServeConfig, insecure: bool) -> Any:
    """The application of the experiment YAML ``config`` over ``predictor``, built (refused
    without an API key unless ``insecure``) and its predictor loaded once here, so that a
    mismatch is one error, not a failed deployment; an embedded Ray's ingress is chosen
    first."""
    import ray

    if not on_cluster() and not ray.is_initialized():
        use_ingress(settings.ingress)  # before Serve is imported, here and in the Ray it starts
    from mp_ray.serve import app
    from mp_ray.serve.service import load_service

    application = app.build_app(
        {
            "config": str(config.resolve()),
            "predictor": predictor,
            **settings.model_dump(include=set(app.APP_SETTINGS)),
            "insecure": insecure,
        }
    )
    try:  # what every replica loads
        load_service(str(config.resolve()), predictor)
    except FileNotFoundError as err:
        raise InputError(str(err)) from err
    return application


def deploy(application: Any, settings: ServeConfig) -> None:
    """Connect to Ray, check that a local Ray can place the replicas, start Serve on the
    settings' host and port and run the application (without waiting on it)."""
    import ray
    from ray import serve

    from mp_ray.ray_session import connect
    from mp_ray.serve.app import cpus_needed

    cluster = on_cluster()
    connect()
    # A cluster may autoscale; a Ray on this machine cannot, and Serve would wait forever.
    if not cluster:
        needed = cpus_needed(settings.replicas, settings.replica_cpus)
        available = ray.cluster_resources().get("CPU", 0)
        if needed > available:
            raise InputError(
                f"{settings.replicas} model replica(s) × {settings.replica_cpus:g} CPU + the "
                f"gateway reserve {needed:g} CPUs, this Ray has {available:g}: lower "
                "--replicas or --replica-cpus (serve.replicas, serve.replica_cpus)"
            )
    serve.start(http_options={"host": settings.host, "port": settings.port})
    try:
        serve.run(application, name="mp-ray", route_prefix="/", blocking=False)
    except Exception as err:  # a replica that cannot start (bad checkpoint, wrong dataset)
        raise InputError(f"the service did not start: {err}") from err


def serve_until_stopped() -> None:
    """Keep serving until Ctrl-C or SIGTERM, then shut Serve down."""
    from ray import serve

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # stop as on Ctrl-C, not with Ray's exit
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut shutdown
        serve.shutdown()
