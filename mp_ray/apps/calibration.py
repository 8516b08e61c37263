"""Predictive uncertainty from an ensemble of models over subsampled training sets.

The ensemble's probabilities are the mean of the class probabilities of K models, each
trained (or predicted) on a uniformly random subset of round(fraction·n) training points
(subsampling; row r from (seed, r)). It is compared with the full-data model θ(D) and with
θ(D) after temperature scaling (Guo et al., 2017: one temperature T > 0 fitted on the
validation split by minimising the negative log-likelihood). θ(D) and the ensemble's
members come from the same :class:`~mp_ray.apps.models.SubsetModels`: with a predictor,
θ(D) is the predictor's answer for the full training set, not a retrained model
(:attr:`CalibrationResult.models` says which).

Calibration is measured by the expected calibration error over ``bins`` equal-width
confidence bins, ECE = Σ_b (|b|/m)·|acc(b) − conf(b)|, where confidence is the largest
class probability, and summarised by a reliability diagram (accuracy against confidence
per bin).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from mp_ray.apps.models import PredictedModels, RetrainedModels, SubsetModels
from mp_ray.apps.utility import class_probabilities
from mp_ray.sampling import FixedSizeSampler


def reliability(
    probs: np.ndarray, y: np.ndarray, bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean confidence, accuracy and count per equal-width confidence bin, each ``(bins,)``
    (NaN where a bin is empty), for probabilities ``(m, c)`` and labels ``(m,)``."""
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"probabilities must be (m, c) for m labels, got {probs.shape}")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(which, confidence, bins) / count
        accuracy = np.bincount(which, correct.astype(float), bins) / count
    return mean_confidence, accuracy, count


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of probabilities ``(m, c)`` against labels ``(m,)``; see the module docstring."""
    confidence, accuracy, count = reliability(probs, y, bins)
    keep = count > 0
    return float((count[keep] * np.abs(accuracy[keep] - confidence[keep])).sum() / len(y))


def negative_log_likelihood(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


def fit_temperature(
    models: SubsetModels, params: torch.Tensor, X: np.ndarray, y: np.ndarray
) -> float:
    """The temperature T minimising the validation NLL of ``params (1, d)``."""
    learner = models.learner
    labels = torch.as_tensor(y)
    log_t = torch.zeros((), dtype=learner.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        probs = class_probabilities(learner, params, X, temperature=log_t.exp())[0]
        loss = -torch.log(probs[torch.arange(len(labels)), labels].clamp(min=1e-12)).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def subsample_masks(n: int, count: int, fraction: float, seed: int) -> np.ndarray:
    """``count`` uniformly random subsets of round(fraction·n) points, ``(count, n)``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    return FixedSizeSampler(n, seed, fraction).masks(np.arange(count))


ModelSource = Literal["predicted", "retrained"]


def model_source(models: SubsetModels) -> ModelSource | None:
    """Whether ``models`` answers by a predictor or by retraining; None for any other
    implementation of :class:`~mp_ray.apps.models.SubsetModels`."""
    if isinstance(models, PredictedModels):
        return "predicted"
    if isinstance(models, RetrainedModels):
        return "retrained"
    return None


@dataclass
class CalibrationResult:
    """Per method (row name): ECE, NLL, accuracy and the reliability diagram on the
    evaluation data; ``models``: how θ(D) and the ensemble's members were obtained
    (:func:`model_source`)."""

    rows: dict[str, dict[str, float]]
    diagrams: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    temperature: float
    n_models: int
    fraction: float
    seconds: float
    models: ModelSource | None = None
    probabilities: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


def calibrate(
    models: SubsetModels,
    X_val: np.ndarray,
    y_val: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    n_models: int = 100,
    fraction: float = 0.8,
    seed: int = 0,
    bins: int = 15,
) -> CalibrationResult:
    """The subsampled ensemble against θ(D) and temperature-scaled θ(D), on the test data.

    Rows: ``"full-data model θ(D)"``, ``"θ(D), temperature-scaled (T = 1.23)"`` and
    ``"ensemble of 100 models on 80% subsets"``."""
    start = time.perf_counter()
    learner = models.learner
    full = models.predict(np.ones((1, models.n_train), dtype=bool))
    temperature = fit_temperature(models, full, X_val, y_val)
    ensemble = models.predict(subsample_masks(models.n_train, n_models, fraction, seed))
    with torch.no_grad():
        probabilities = {
            "full-data model θ(D)": class_probabilities(learner, full, X_test)[0],
            f"θ(D), temperature-scaled (T = {temperature:.2f})": class_probabilities(
                learner, full, X_test, temperature
            )[0],
            f"ensemble of {n_models} models on {fraction:.0%} subsets": class_probabilities(
                learner, ensemble, X_test
            ).mean(dim=0),
        }
    probabilities = {name: p.double().cpu().numpy() for name, p in probabilities.items()}
    rows, diagrams = {}, {}
    for name, probs in probabilities.items():
        rows[name] = {
            "ece": expected_calibration_error(probs, y_test, bins),
            "nll": negative_log_likelihood(probs, y_test),
            "accuracy": float((probs.argmax(axis=1) == y_test).mean()),
        }
        diagrams[name] = reliability(probs, y_test, bins)
    return CalibrationResult(
        rows,
        diagrams,
        temperature,
        n_models,
        fraction,
        time.perf_counter() - start,
        model_source(models),
        probabilities,
    )
