"""Connecting to Ray: the cluster named by ``RAY_ADDRESS`` when set, else an embedded one.

The package never calls ``ray.init`` at import; the CLI and the job entrypoints call
:func:`connect`. The environment defaults below are the ones Ray 2.60 needs on a single
machine (token auth off, ports on loopback, no usage stats); a value already in the
environment wins.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.util.queue import Queue

RAY_ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # Tune's legacy console output, which RunConfig(verbose=0) silences; the new one prints
    # its header to stdout at every verbosity.
    "RAY_AIR_NEW_OUTPUT": "0",
}


def apply_ray_env_defaults() -> None:
    """Set the Ray environment defaults that are not already set (workers inherit them)."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def connect(
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    log_to_driver: bool = True,
    temp_dir: str | None = None,
) -> bool:
    """Connect to ``RAY_ADDRESS`` or start a local Ray; returns True if this call started it.
    ``log_to_driver``: stream the workers' log lines to this process; ``temp_dir``: the
    local Ray's session folder (default Ray's own).

    Does nothing when Ray is already initialised in this process.
    """
    import ray

    if ray.is_initialized():
        return False
    apply_ray_env_defaults()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver)
        return False
    # Ray Train's placement-group cleaner reaches the State API at this address (workers
    # inherit it); left to find the cluster itself, it fails whenever another Ray instance
    # runs on the machine, and a Tune trial stopped early then keeps its CPUs for good.
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        include_dashboard=True,  # its State API lets Ray Train clean up stopped runs
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=log_to_driver,
        _temp_dir=temp_dir,
    )
    return True


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def relay(callback: Callable[[Any], None] | None) -> Iterator[Queue | None]:
    """A queue that Ray tasks, actors and Train workers ``put`` reports into, each handed to
    ``callback`` in this driver (from a thread) while the block runs, the rest when it
    ends. Yields None, and starts nothing, when ``callback`` is None."""
    if callback is None:
        yield None
        return
    from ray.util.queue import Empty, Queue

    queue = Queue(actor_options={"num_cpus": 0})
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            with suppress(Empty):
                callback(queue.get(timeout=0.5))

    thread = threading.Thread(target=drain, name="mp-ray-relay", daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        done.set()
        thread.join()
        while not queue.empty():
            callback(queue.get_nowait())
        queue.shutdown(force=True)
