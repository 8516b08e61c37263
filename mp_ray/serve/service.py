"""The answers behind the HTTP API: the application service
(:class:`~mp_ray.apps.service.AppService`) over a fitted predictor, its answers turned
into the API's responses (no Serve, no HTTP), so each endpoint answers exactly what the
command line answers for the same request.

A request the service cannot answer raises :class:`RequestError`, which names the
offending field; the HTTP layer turns it into 422. Valuation answers are cached per
(predictor version, request).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from mp_ray.apps.context import app_context
from mp_ray.apps.service import AppService, RequestError
from mp_ray.config import load_experiment
from mp_ray.errors import InputError
from mp_ray.outputs import json_ready
from mp_ray.serve import schemas

VALUES_CACHE_SIZE = 32

__all__ = ["ModelPredService", "RequestError", "describe", "load_service"]


def _fidelity(answer: Any) -> dict | None:
    return answer.fidelity.to_json() if answer.fidelity else None


class ModelPredService:
    """Every endpoint's answer for one fitted predictor and its experiment."""

    def __init__(self, apps: AppService, version: str) -> None:
        context = apps.context
        if context.source != "predictor":
            raise ValueError("the service needs a fitted predictor")
        if context.dataset.n_train > schemas.MAX_POINTS:
            raise InputError(
                f"dataset {context.dataset.name} has {context.dataset.n_train} training points; "
                f"the service answers for at most {schemas.MAX_POINTS}"
            )
        self.apps = apps
        self.version = version
        self._values: OrderedDict[str, schemas.ValuesResponse] = OrderedDict()

    def mask(self, subset: schemas.Subset | schemas.PredictRequest) -> np.ndarray:
        """The subset as a bool mask ``(n,)``; indices and mask length checked."""
        return self.apps.mask(subset)

    def predict_params(self, masks: np.ndarray) -> torch.Tensor:
        """Parameters ``(B, d)`` for masks ``(B, n)``: one predictor call for the batch."""
        return self.apps.context.models.predict(masks)

    def predict_response(
        self, request: schemas.PredictRequest, params: torch.Tensor
    ) -> schemas.PredictResponse:
        """The response for one subset given its predicted ``params (d,)``."""
        return self.apps.predict(request, params)

    def values(self, request: schemas.ValuesRequest) -> schemas.ValuesResponse:
        key = f"{self.version}\n{request.model_dump_json()}"
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key].model_copy(update={"cached": True})
        answer = self.apps.value(request)
        result = answer.result
        response = schemas.ValuesResponse(
            method=result.method,
            values=result.values.tolist(),
            stderr=np.nan_to_num(result.stderr, posinf=-1.0).tolist(),
            models_scored=result.n_evaluations,
            cached=False,
            fidelity=_fidelity(answer),
            noisy_labels=json_ready(answer.noisy_labels),
            removal_fractions=answer.curves[0].fractions.tolist() if answer.curves else [],
            removal_curves={curve.order: curve.utilities.tolist() for curve in answer.curves},
        )
        self._values[key] = response
        if len(self._values) > VALUES_CACHE_SIZE:
            self._values.popitem(last=False)
        return response

    def select(self, request: schemas.SelectRequest) -> schemas.SelectResponse:
        answer = self.apps.select(request)
        return schemas.SelectResponse(
            indices=answer.result.indices.tolist(),
            predicted_accuracy=answer.result.utility,
            greedy_points_kept=answer.result.stop,
            test_accuracy=answer.scores,
            fidelity=_fidelity(answer),
        )

    def memorization(self, request: schemas.MemorizationRequest) -> schemas.MemorizationResponse:
        answer = self.apps.memorization(request)
        return schemas.MemorizationResponse(
            memorization=answer.result.memorization.tolist(),
            stderr=answer.result.memorization_stderr.tolist(),
            score=answer.result.score,
            subsets=answer.subsets,
            fidelity=_fidelity(answer),
        )

    def calibrated(self, request: schemas.CalibratedRequest) -> schemas.CalibratedResponse:
        answer = self.apps.calibrate(request)
        probabilities = answer.probabilities
        return schemas.CalibratedResponse(
            probabilities=None if probabilities is None else probabilities.tolist(),
            methods=json_ready(answer.result.rows),
            fidelity=_fidelity(answer),
        )

    def counterfactual(
        self, request: schemas.CounterfactualRequest
    ) -> schemas.CounterfactualResponse:
        answer = self.apps.counterfactual(request)
        result, exact = answer.result, answer.retrained_change
        probability = "probability" in result.before
        return schemas.CounterfactualResponse(
            probability_before=result.before["probability"].tolist() if probability else None,
            probability_after=result.after["probability"][0].tolist() if probability else None,
            margin_change=result.change("margin")[0].tolist(),
            prediction_flips=result.flipped[0].tolist(),
            retrained_change=None if exact is None else np.asarray(exact).tolist(),
            fidelity=_fidelity(answer),
        )

    def add(self, request: schemas.AddRequest) -> schemas.PredictResponse:
        """The model predicted for the base subset plus the request's new points."""
        return self.apps.add(request).model

    def metadata(self) -> schemas.Metadata:
        predictor = self.apps.context.models.predictor  # type: ignore[attr-defined]
        meta = predictor.meta
        data = self.apps.context.dataset
        return schemas.Metadata(
            version=self.version,
            dataset=data.name,
            dataset_fingerprint=meta.dataset_fingerprint,
            store_uri=meta.store_uri,
            n_train=data.n_train,
            n_features=data.n_features,
            n_classes=data.n_classes,
            n_params=meta.n_params,
            learner=meta.learner,
            metrics=dict(meta.extra),
        )


def load_service(config: str, predictor_uri: str) -> ModelPredService:
    """The service of the experiment YAML ``config`` over the predictor at ``predictor_uri``;
    a predictor that does not match the experiment raises ``StoreMismatchError``."""
    experiment = load_experiment(config)
    context = app_context(experiment, predictor_uri, experiment.store.storage_options)
    return ModelPredService(AppService(context), version=predictor_uri)


def describe(error: RequestError) -> dict[str, Any]:
    """The JSON body of a 422 answer, shaped like FastAPI's validation errors."""
    return {"detail": [{"loc": ["body", error.field], "msg": error.message}]}
