"""Failing fast on Ray resources: a task, actor or Train worker that asks for more than any
node of the cluster can give (a GPU on a CPU-only cluster, say) would wait forever."""

from __future__ import annotations

from mp_ray.errors import MpRayError


class ResourcesError(MpRayError, RuntimeError):
    """The Ray cluster lacks a resource that one unit of work asks for."""


def check_cluster_fits(what: str, wanted: dict[str, float], settings: str) -> None:
    """Raise :class:`ResourcesError` when one ``what`` (e.g. "retraining actor") asks for
    more of a resource than the cluster's current total; ``settings`` names the config
    fields or options that set ``wanted``.

    Checked against the cluster's current totals; on an autoscaling cluster start with the
    resource present (e.g. a minimum of one GPU worker)."""
    import ray

    available = ray.cluster_resources()
    missing = [
        f"{name}={amount:g} (cluster has {available.get(name, 0):g})"
        for name, amount in wanted.items()
        if amount > available.get(name, 0)
    ]
    if missing:
        raise ResourcesError(
            f"each {what} asks for more than this Ray cluster has: {', '.join(missing)}; "
            f"lower {settings} or add nodes"
        )
