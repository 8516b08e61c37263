"""mp-ray: predict the model a learning algorithm would produce from any subset of its data.

The Python front door is :class:`~mp_ray.experiment.Experiment`::

    from mp_ray import Experiment
    experiment = Experiment.from_yaml("configs/quickstart.yaml")

Importing the package never starts Ray, and imports nothing heavy: the names below load
their modules on first use. The CLI and the jobs connect through
:func:`mp_ray.ray_session.connect`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Each exported name and the module that defines it, imported on first use.
_EXPORTS = {
    "Experiment": "mp_ray.experiment",
    "ExperimentConfig": "mp_ray.config",
    "DatamodelsResult": "mp_ray.results",
    "FitResult": "mp_ray.results",
    "RetrainResult": "mp_ray.results",
    "TuneResult": "mp_ray.results",
    "AddAnswer": "mp_ray.apps.service",
    "CalibrateAnswer": "mp_ray.apps.service",
    "CounterfactualAnswer": "mp_ray.apps.service",
    "MemorizationAnswer": "mp_ray.apps.service",
    "SelectAnswer": "mp_ray.apps.service",
    "ValueAnswer": "mp_ray.apps.service",
    "ValuationResult": "mp_ray.apps.valuation",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mp_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
