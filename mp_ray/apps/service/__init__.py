"""One application service that the command line and Ray Serve both call: typed requests
in, typed answers out (see :mod:`mp_ray.apps.service.service`)."""

from mp_ray.apps.service.answers import (
    AddAnswer,
    CalibrateAnswer,
    CounterfactualAnswer,
    MemorizationAnswer,
    ModelAnswer,
    SelectAnswer,
    ValueAnswer,
)
from mp_ray.apps.service.requests import (
    AddRequest,
    CalibrateRequest,
    CounterfactualRequest,
    MemorizationRequest,
    PredictRequest,
    RequestError,
    SelectRequest,
    Subset,
    ValueRequest,
)
from mp_ray.apps.service.service import AppService

__all__ = [
    "AddAnswer",
    "AddRequest",
    "AppService",
    "CalibrateAnswer",
    "CalibrateRequest",
    "CounterfactualAnswer",
    "CounterfactualRequest",
    "MemorizationAnswer",
    "MemorizationRequest",
    "ModelAnswer",
    "PredictRequest",
    "RequestError",
    "SelectAnswer",
    "SelectRequest",
    "Subset",
    "ValueAnswer",
    "ValueRequest",
]
