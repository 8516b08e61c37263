"""Serve's HTTP ingress on an embedded Ray: HAProxy (the default) or Serve's Python proxy.

- ``haproxy``: Ray's high-throughput serving mode — HAProxy (shipped with ``ray[serve]``)
  in front of the ingress replicas' own HTTP ports, and gRPC between deployments
  (``RAY_SERVE_ENABLE_HA_PROXY=1``, ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``), whose messages
  to a replica may be up to :data:`REPLICA_MESSAGE_BYTES`
  (``RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH``; gRPC's default of 4 MiB is below the
  largest valid request, see :mod:`mp_ray.serve.schemas`).
- ``proxy``: Serve's Python HTTP proxy actor and Ray actor calls between deployments.

Serve reads these variables when ``ray.serve`` is imported — in the Ray processes and in the
driver that deploys the application alike (a driver that imported Serve without them
deploys a handle path that forgoes gRPC: measured at half the throughput) — so set them
before importing Serve and before Ray starts. A cluster keeps its own setting: export them
where ``ray start`` runs. HAProxy's stats and metrics ports (8404 and 9101,
``RAY_SERVE_HAPROXY_STATS_PORT`` / ``RAY_SERVE_HAPROXY_METRICS_PORT``) listen on all
interfaces; the service itself stays on the host given to Serve.
"""

import os
import sys
from typing import Literal

Ingress = Literal["haproxy", "proxy"]

REPLICA_MESSAGE_BYTES = 64 * 1024 * 1024  # > 4× the largest valid request, pickled

INGRESS_ENVIRONMENT: dict[str, dict[str, str]] = {
    "haproxy": {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(REPLICA_MESSAGE_BYTES),
    },
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
}


def use_ingress(ingress: Ingress) -> None:
    """Export the variables that select ``ingress`` to this process's Serve and the Ray it
    will start; an error if this process imported Serve with other settings already."""
    environment = INGRESS_ENVIRONMENT[ingress]
    constants = sys.modules.get("ray.serve._private.constants")
    if constants is not None:
        imported = {key: int(getattr(constants, key)) for key in environment}
        if any(imported[key] != int(value) for key, value in environment.items()):
            raise RuntimeError(
                f"the {ingress!r} ingress must be chosen before ray.serve is imported "
                f"(this process imported it with {imported})"
            )
    os.environ.update(environment)
