"""The schema's bounds keep every valid request below the transport between the gateway and
the model replicas (Serve pickles a handle call's arguments with cloudpickle)."""

from __future__ import annotations

import numpy as np
from ray import cloudpickle

from mp_ray.serve.ingress import REPLICA_MESSAGE_BYTES
from mp_ray.serve.schemas import (
    MAX_INPUT_ROWS,
    MAX_INPUT_VALUES,
    MAX_POINTS,
    CounterfactualRequest,
    PredictRequest,
)

GRPC_DEFAULT_BYTES = 4 * 1024 * 1024


def test_the_largest_valid_requests_fit_the_raised_transport_limit_only():
    rows = np.random.default_rng(0).normal(
        size=(MAX_INPUT_ROWS, MAX_INPUT_VALUES // MAX_INPUT_ROWS)
    )
    indices = list(range(MAX_POINTS - 1, -1, -1))  # every index, the largest first
    largest = [
        PredictRequest(indices=indices, inputs=rows.tolist()),
        CounterfactualRequest(
            inputs=rows.tolist(), labels=[MAX_POINTS - 1] * MAX_INPUT_ROWS, remove=indices
        ),
    ]
    for request in largest:
        size = len(cloudpickle.dumps((request,)))
        assert GRPC_DEFAULT_BYTES < size < REPLICA_MESSAGE_BYTES / 4, (type(request), size)
