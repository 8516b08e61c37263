"""Reading the Prometheus text that a local Ray node serves on its metrics export port."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[dict[str, str], float]  # a series' labels and its value


def metrics_port() -> int:
    """The metrics export port of the local Ray this process is connected to."""
    import ray

    (node,) = [node for node in ray.nodes() if node["Alive"]]
    return int(node["MetricsExportPort"])


def samples(port: int, name: str) -> list[Sample]:
    """Every sample named ``name`` (as exported: ``ray_mp_ray_…``) at ``port`` now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def wait_for(
    port: int, name: str, accept: Callable[[list[Sample]], bool], timeout: float = 90.0
) -> list[Sample]:
    """The samples of ``name`` once ``accept`` takes them (Ray exports its workers' metrics
    every few seconds); fails after ``timeout`` seconds with the last ones seen."""
    deadline = time.monotonic() + timeout
    while True:
        found = samples(port, name)
        if accept(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: no accepted samples in {timeout:g} s; last {found}")
        time.sleep(0.5)
