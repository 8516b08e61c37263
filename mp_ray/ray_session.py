"""Connecting to Ray: the cluster named by ``RAY_ADDRESS`` when set, else an embedded one.

The package never calls ``ray.init`` at import; the CLI and the job entrypoints call
:func:`connect`. The environment defaults below are the ones Ray 2.60 needs on a single
machine (token auth off, ports on loopback, no usage stats); a value already in the
environment wins.
"""

from __future__ import annotations

import os

RAY_ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
}


def apply_ray_env_defaults() -> None:
    """Set the Ray environment defaults that are not already set (workers inherit them)."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def connect(num_cpus: int | None = None, object_store_memory: int | None = None) -> bool:
    """Connect to ``RAY_ADDRESS`` or start a local Ray; returns True if this call started it.

    Does nothing when Ray is already initialised in this process.
    """
    import ray

    if ray.is_initialized():
        return False
    apply_ray_env_defaults()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return False
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        include_dashboard=True,  # its State API lets Ray Train clean up stopped runs
        log_to_driver=True,
    )
    return True
