"""The answers behind the HTTP API, as plain Python over a fitted predictor (no Serve, no
HTTP), so each endpoint's answer is exactly the library call's answer.

Inputs that depend on the ground set are checked here and rejected with
:class:`RequestError`, which names the offending field; the HTTP layer turns it into 422.
Valuation results are cached per (predictor version, request).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from mp_ray.apps import Utility
from mp_ray.apps.calibration import subsample_masks
from mp_ray.apps.context import AppContext, app_context
from mp_ray.apps.counterfactual import counterfactual_removal
from mp_ray.apps.memorization import memorization
from mp_ray.apps.selection import greedy_selection, relaxed_selection
from mp_ray.apps.utility import class_probabilities
from mp_ray.apps.valuation import MaxSamples, banzhaf_msr, leave_one_out, tmc_shapley
from mp_ray.config import load_experiment
from mp_ray.errors import InputError
from mp_ray.serve import schemas

VALUES_CACHE_SIZE = 32


class RequestError(ValueError):
    """A request that cannot be answered; ``field`` names what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Picklable, so it crosses from a model replica to the gateway intact.
        return (RequestError, (self.field, self.message))


class ModelPredService:
    """Every endpoint's answer for one fitted predictor and its experiment."""

    def __init__(self, context: AppContext, version: str) -> None:
        if context.source != "predictor":
            raise ValueError("the service needs a fitted predictor")
        if context.dataset.n_train > schemas.MAX_POINTS:
            raise InputError(
                f"dataset {context.dataset.name} has {context.dataset.n_train} training points; "
                f"the service answers for at most {schemas.MAX_POINTS}"
            )
        self.context = context
        self.version = version
        self._values: OrderedDict[tuple, schemas.ValuesResponse] = OrderedDict()

    @property
    def n_train(self) -> int:
        return self.context.dataset.n_train

    # -- input checks ----------------------------------------------------------------------

    def mask(self, subset: schemas.Subset) -> np.ndarray:
        """The subset as a bool mask ``(n,)``; indices and mask length checked."""
        n = self.n_train
        if subset.mask is not None:
            if len(subset.mask) != n:
                raise RequestError("mask", f"must have {n} entries, got {len(subset.mask)}")
            return np.asarray(subset.mask, dtype=bool)
        return self._indices_mask(subset.indices or [], "indices")

    def _indices_mask(self, indices: list[int], field: str) -> np.ndarray:
        n = self.n_train
        if len(indices) > n:
            raise RequestError(field, f"at most {n} entries, one per training point")
        index = np.asarray(indices, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= n):
            raise RequestError(field, f"indices must lie in [0, {n})")
        mask = np.zeros(n, dtype=bool)
        mask[index] = True
        return mask

    def inputs(self, rows: list[list[float]], field: str = "inputs") -> np.ndarray:
        """Feature rows as float32 ``(m, p)``, their width and range checked."""
        p = self.context.dataset.n_features
        with np.errstate(over="ignore"):
            X = np.asarray(rows, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != p:
            raise RequestError(field, f"each row must have {p} features")
        if not np.isfinite(X).all():
            raise RequestError(field, "values must lie within float32's range (±3.4e38)")
        return X

    # -- endpoints -------------------------------------------------------------------------

    def predict_params(self, masks: np.ndarray) -> torch.Tensor:
        """Parameters ``(B, d)`` for masks ``(B, n)``: one predictor call for the batch."""
        return self.context.models.params(masks)

    def labelled(self, request: schemas.LabelledRows, task: str) -> tuple[np.ndarray, np.ndarray]:
        """The request's ``inputs (m, p)`` float32 and ``labels (m,)`` int64, checked against
        the classes; ``task`` names what needs a classification predictor."""
        classes = self.context.learner.n_classes
        if classes < 2:
            raise RequestError("labels", f"{task} need a classification task")
        X = self.inputs(request.inputs)
        labels = np.asarray(request.labels, dtype=np.int64)
        if labels.max() >= classes:
            raise RequestError("labels", f"must lie in [0, {classes})")
        return X, labels

    def predict_response(
        self, request: schemas.PredictRequest, params: torch.Tensor
    ) -> schemas.PredictResponse:
        """The response for one subset given its predicted ``params (d,)``."""
        return self._model_response(int(self.mask(request).sum()), params, request.inputs)

    def _model_response(
        self, size: int, params: torch.Tensor, rows: list[list[float]] | None, field: str = "inputs"
    ) -> schemas.PredictResponse:
        """A model of ``size`` points: its ``params (d,)``, or its predictions on ``rows``."""
        if rows is None:
            return schemas.PredictResponse(n_points=size, params=params.tolist())
        learner = self.context.learner
        X = self.inputs(rows, field)
        theta = params[None]
        out = schemas.PredictResponse(
            n_points=size, predictions=learner.predict(theta, X)[0].double().tolist()
        )
        if learner.n_classes > 1:
            out.probabilities = class_probabilities(learner, theta, X)[0].tolist()
        return out

    def values(self, request: schemas.ValuesRequest) -> schemas.ValuesResponse:
        key = (self.version, request.method, request.metric, request.budget, request.seed)
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key].model_copy(update={"cached": True})
        data = self.context.dataset
        utility = Utility(self.context.models, data.X_val, data.y_val, request.metric)
        if request.method == "loo":
            result = leave_one_out(utility)
        elif request.method == "tmc":
            result = tmc_shapley(utility, MaxSamples(request.budget), request.seed)
        else:
            result = banzhaf_msr(utility, MaxSamples(request.budget), request.seed)
        response = schemas.ValuesResponse(
            method=result.method,
            values=result.values.tolist(),
            stderr=np.nan_to_num(result.stderr, posinf=-1.0).tolist(),
            models_scored=result.n_evaluations,
            cached=False,
        )
        self._values[key] = response
        if len(self._values) > VALUES_CACHE_SIZE:
            self._values.popitem(last=False)
        return response

    def select(self, request: schemas.SelectRequest) -> schemas.SelectResponse:
        data = self.context.dataset
        try:  # a size the method cannot reach (above n; greedy: below one point per class)
            if request.method == "relaxed":
                result = relaxed_selection(
                    self.context.models, data.X_val, data.y_val, request.size, seed=request.seed
                )
            else:
                utility = Utility(self.context.models, data.X_val, data.y_val, "accuracy")
                result = greedy_selection(utility, request.size, seed=request.seed)
        except ValueError as err:
            raise RequestError("size", str(err)) from err
        return schemas.SelectResponse(
            indices=result.indices.tolist(), predicted_accuracy=result.utility
        )

    def memorization(self, request: schemas.MemorizationRequest) -> schemas.MemorizationResponse:
        data = self.context.dataset
        try:
            result = memorization(
                self.context.models,
                data.X_test,
                data.y_test,
                request.subsets,
                request.alpha,
                request.seed,
                score=request.score,
            )
        except ValueError as err:
            raise RequestError("subsets", str(err)) from err
        return schemas.MemorizationResponse(
            memorization=result.memorization.tolist(),
            stderr=result.memorization_stderr.tolist(),
            score=result.score,
        )

    def calibrated(self, request: schemas.CalibratedRequest) -> schemas.CalibratedResponse:
        learner = self.context.learner
        if learner.n_classes < 2:
            raise RequestError("inputs", "calibrated probabilities need a classification task")
        X = self.inputs(request.inputs)
        try:  # a fraction that keeps no point
            masks = subsample_masks(self.n_train, request.n_models, request.fraction, request.seed)
        except ValueError as err:
            raise RequestError("fraction", str(err)) from err
        params = self.context.models.params(masks)
        probabilities = class_probabilities(learner, params, X).mean(dim=0)
        return schemas.CalibratedResponse(probabilities=probabilities.tolist())

    def counterfactual(
        self, request: schemas.CounterfactualRequest
    ) -> schemas.CounterfactualResponse:
        X, labels = self.labelled(request, "counterfactual probabilities")
        self._indices_mask(request.remove, "remove")
        result = counterfactual_removal(self.context.models, X, labels, [request.remove])
        return schemas.CounterfactualResponse(
            probability_before=result.before["probability"].tolist(),
            probability_after=result.after["probability"][0].tolist(),
            margin_change=result.change("margin")[0].tolist(),
            prediction_flips=result.flipped[0].tolist(),
        )

    def add(self, request: schemas.AddRequest) -> schemas.PredictResponse:
        """The model predicted for the base subset plus the request's new points."""
        X_new, y_new = self.labelled(request, "added points")
        mask = np.ones(self.n_train, bool) if request.base is None else self.mask(request.base)
        added = np.ones((1, len(y_new)), bool)
        models = self.context.models  # a PredictedModels: the service needs a predictor
        params = models.params_with_points(mask[None], X_new, y_new, added)  # type: ignore[attr-defined]
        return self._model_response(
            int(mask.sum()) + len(y_new), params[0], request.predict_on, "predict_on"
        )

    def metadata(self) -> schemas.Metadata:
        predictor = self.context.models.predictor  # type: ignore[attr-defined]
        meta = predictor.meta
        data = self.context.dataset
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
    return ModelPredService(context, version=predictor_uri)


def describe(error: RequestError) -> dict[str, Any]:
    """The JSON body of a 422 answer, shaped like FastAPI's validation errors."""
    return {"detail": [{"loc": ["body", error.field], "msg": error.message}]}
