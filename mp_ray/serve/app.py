"""The Ray Serve application: a FastAPI ingress over a fitted predictor and its experiment.

Endpoints (JSON, schemas in :mod:`mp_ray.serve.schemas`, OpenAPI at ``/docs``):

- ``GET /v1/health`` (process up) and ``GET /v1/ready`` (predictor loaded) — no key needed;
- ``GET /v1/metadata`` — dataset fingerprint, store, learner, fit metrics;
- ``POST /v1/predict`` — the model for a subset: parameters, or predictions on inputs;
  concurrent requests share one predictor call through ``@serve.batch``;
- ``POST /v1/add`` — the model for a subset plus new points outside the ground set;
- ``POST /v1/values``, ``/v1/select``, ``/v1/memorization``, ``/v1/calibrated``,
  ``/v1/counterfactual`` — the applications of :mod:`mp_ray.apps` on the predictor.

Security and bad input: ``MP_RAY_API_KEY``, set in the replicas' environment (where Ray
starts; never in a config file), is required in the ``X-API-Key`` header of every ``/v1``
endpoint but health and ready (401 otherwise); :func:`build_app` refuses to build an
application without it unless told ``insecure``. A body without a length gets 411, one
above ``MP_RAY_MAX_BODY_BYTES`` (default 8 MiB) 413; malformed, wrongly typed, oversized or
out-of-range fields get 422 naming the field. Any other error is the service's own (5xx);
the replica that raised it keeps serving.

Every request's endpoint, outcome and latency are recorded as the application's metrics
(:mod:`mp_ray.metrics`; Serve's own cover deployments and replicas).

Two deployments: ``Gateway`` (the FastAPI ingress: validation, key, limits) forwards to
``PredictorDeployment`` (the model replicas, which scale and batch), retrying a request
whose model replica died. ``reconfigure`` of the predictor deployment (Serve's
``user_config``) swaps the checkpoint in place: ``{"predictor_uri": "..."}``.
:func:`build_app` is the application builder used by ``serve run`` / ``serve deploy`` and
``mp-ray serve`` (:mod:`mp_ray.serve.start`), its args typed by :class:`AppArgs`.
"""

import asyncio
import hmac
import os
import time
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from mp_ray.config import load_experiment
from mp_ray.errors import InputError
from mp_ray.metrics import record_request
from mp_ray.serve import schemas
from mp_ray.serve.service import RequestError, describe, load_service

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
API_KEY_ENV = "MP_RAY_API_KEY"  # when set on the replicas, /v1 endpoints need X-API-Key
MAX_BODY_ENV = "MP_RAY_MAX_BODY_BYTES"
MAX_ERRORS_SHOWN = 10  # validation errors listed in a 422 answer (a list may hold 10^6)
OPEN_PATHS = ("/v1/health", "/v1/ready", "/docs", "/openapi.json")

api = FastAPI(
    title="mp-ray",
    version="1",
    description="Models trained on any subset of the training data, predicted without "
    "retraining, and the data questions they answer.",
)


def _limits() -> tuple[str | None, int]:
    """This replica's API key (None: open) and largest body, from its environment (read per
    request: module state is not shared between Serve's copies of the app and the class)."""
    max_body = os.environ.get(MAX_BODY_ENV, "")
    return (
        os.environ.get(API_KEY_ENV) or None,
        int(max_body) if max_body.isdigit() else DEFAULT_MAX_BODY_BYTES,
    )


@api.middleware("http")
async def _guard(request: Request, call_next: Any) -> Any:
    """Answer the request through :func:`_admitted`, recording its endpoint, status and
    latency (:func:`~mp_ray.metrics.record_request`; an exception counts as a 500)."""
    start = time.perf_counter()
    endpoint = _endpoint(request)
    try:
        response = await _admitted(request, call_next)
    except Exception:
        record_request(endpoint, 500, time.perf_counter() - start)
        raise
    record_request(endpoint, response.status_code, time.perf_counter() - start)
    return response


async def _admitted(request: Request, call_next: Any) -> Any:
    """411 for a body of unknown length, 413 for an oversized one, then 401 for a missing or
    wrong key — before the body is read or validated; else the endpoint's answer."""
    api_key, max_body = _limits()
    length = request.headers.get("content-length", "")
    if request.method == "POST" and not length.isdigit():
        return JSONResponse(status_code=411, content={"detail": "Content-Length header needed"})
    if length.isdigit() and int(length) > max_body:
        return JSONResponse(status_code=413, content={"detail": f"body above {max_body} bytes"})
    if api_key and request.url.path not in OPEN_PATHS:
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            detail = "missing or wrong X-API-Key header"
            return JSONResponse(status_code=401, content={"detail": detail})
    return await call_next(request)


def _endpoint(request: Request) -> str:
    """The request's path when it is one of the API's endpoints (the paths of the OpenAPI
    schema of the application serving it, which FastAPI builds once), else ``other``: the
    metrics' endpoint tag takes no unbounded set of values."""
    path = request.url.path
    return path if path in request.app.openapi()["paths"] else "other"


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 naming the bad fields (without echoing inputs, which may hold NaN); the first
    :data:`MAX_ERRORS_SHOWN` errors and how many more there are."""
    errors = error.errors()
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))}
        for e in errors[:MAX_ERRORS_SHOWN]
    ]
    if len(errors) > MAX_ERRORS_SHOWN:
        detail.append({"loc": ["body"], "msg": f"and {len(errors) - MAX_ERRORS_SHOWN} more"})
    return JSONResponse(status_code=422, content={"detail": detail})


@api.exception_handler(RequestError)
async def _request_error(request: Request, error: RequestError) -> JSONResponse:
    return JSONResponse(status_code=422, content=describe(error))


GATEWAY_CPUS = 0.25  # logical CPUs the ingress reserves: it validates and forwards
REPLICA_CPUS = 1.0  # logical CPUs a model replica reserves by default (one torch thread)


def cpus_needed(replicas: int, replica_cpus: float = REPLICA_CPUS) -> float:
    """Logical CPUs the application reserves with ``replicas`` model replicas."""
    return GATEWAY_CPUS + replicas * replica_cpus


@serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": REPLICA_CPUS})
class PredictorDeployment:
    """A model replica: the experiment's data and learner and the fitted predictor; every
    answer is computed here (see :class:`~mp_ray.serve.service.ModelPredService`)."""

    def __init__(
        self,
        config: str,
        predictor_uri: str,
        batching: bool = True,
        max_batch_size: int = 64,
        batch_wait_ms: float = 1.0,
    ) -> None:
        torch.set_num_threads(1)
        self.config_path = config
        self.batching = batching
        self._batched_params.set_max_batch_size(max_batch_size)
        self._batched_params.set_batch_wait_timeout_s(batch_wait_ms / 1000)
        self.service = load_service(config, predictor_uri)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Swap the predictor checkpoint without restarting the replica."""
        uri = (user_config or {}).get("predictor_uri")
        if uri and uri != self.service.version:
            self.service = load_service(self.config_path, uri)

    @serve.batch  # its size and wait are set per deployment (serve.max_batch_size, …)
    async def _batched_params(self, masks: list[np.ndarray]) -> list[torch.Tensor]:
        """Predicted parameters for concurrent requests, one predictor call for all."""
        return list(self.service.predict_params(np.stack(masks)))

    # A request the service cannot answer comes back as its RequestError, returned rather
    # than raised: the gateway answers it with 422, and the replica does not log a client's
    # mistake as a failure with a traceback.

    async def predict(self, body: schemas.PredictRequest) -> schemas.PredictResponse | RequestError:
        try:
            mask = self.service.mask(body)
            if self.batching:
                params = await self._batched_params(mask)
            else:
                params = self.service.predict_params(mask[None])[0]
            return self.service.predict_response(body, params)
        except RequestError as error:
            return error

    def answer(self, endpoint: str, body: Any = None) -> Any:
        """The answer of one of the service's other endpoints (``values``, ``metadata``…)."""
        method = getattr(self.service, endpoint)
        try:
            return method() if body is None else method(body)
        except RequestError as error:
            return error


RETRIES = 3  # attempts per request when the model replica serving it dies


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": GATEWAY_CPUS})
@serve.ingress(api)
class Gateway:
    """The HTTP ingress: validates requests (FastAPI) and forwards them to the predictor
    replicas through a deployment handle. Requests are idempotent, so one whose replica
    dies mid-call is sent again to a live replica: a killed model replica loses nothing."""

    def __init__(self, predictor: DeploymentHandle) -> None:
        self.predictor = predictor

    async def _ask(self, method: str, *args: Any) -> Any:
        for attempt in range(RETRIES):
            try:
                answer = await getattr(self.predictor, method).remote(*args)
            except (RayActorError, ActorUnavailableError):
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
                continue
            if isinstance(answer, RequestError):  # the request's own mistake: 422
                raise answer
            return answer
        raise AssertionError("unreachable")

    @api.get("/v1/health")
    def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/ready")
    async def ready(self) -> dict[str, Any]:
        metadata = await self._ask("answer", "metadata")
        return {"ready": True, "version": metadata.version}

    @api.get("/v1/metadata", response_model=schemas.Metadata)
    async def metadata(self) -> schemas.Metadata:
        return await self._ask("answer", "metadata")

    @api.post("/v1/predict", response_model=schemas.PredictResponse)
    async def predict(self, body: schemas.PredictRequest) -> Response:
        # The replica built (and validated) the response: serialise it once, here.
        answer: schemas.PredictResponse = await self._ask("predict", body)
        return Response(answer.model_dump_json(), media_type="application/json")

    @api.post("/v1/add", response_model=schemas.PredictResponse)
    async def add(self, body: schemas.AddRequest) -> schemas.PredictResponse:
        return await self._ask("answer", "add", body)

    @api.post("/v1/values", response_model=schemas.ValuesResponse)
    async def values(self, body: schemas.ValuesRequest) -> schemas.ValuesResponse:
        return await self._ask("answer", "values", body)

    @api.post("/v1/select", response_model=schemas.SelectResponse)
    async def select(self, body: schemas.SelectRequest) -> schemas.SelectResponse:
        return await self._ask("answer", "select", body)

    @api.post("/v1/memorization", response_model=schemas.MemorizationResponse)
    async def memorization(self, body: schemas.MemorizationRequest) -> schemas.MemorizationResponse:
        return await self._ask("answer", "memorization", body)

    @api.post("/v1/calibrated", response_model=schemas.CalibratedResponse)
    async def calibrated(self, body: schemas.CalibratedRequest) -> schemas.CalibratedResponse:
        return await self._ask("answer", "calibrated", body)

    @api.post("/v1/counterfactual", response_model=schemas.CounterfactualResponse)
    async def counterfactual(
        self, body: schemas.CounterfactualRequest
    ) -> schemas.CounterfactualResponse:
        return await self._ask("answer", "counterfactual", body)


# The experiment's serve fields an application arg of the same name overrides.
APP_SETTINGS = ("batching", "max_batch_size", "batch_wait_ms", "replicas", "replica_cpus")


class AppArgs(BaseModel):
    """The application's args (``serve run mp_ray.serve.app:build_app key=value``, a Serve
    config file's ``args``, or ``mp-ray serve``); strings such as ``"2"`` and ``"true"`` are
    read as the field's type. The serve settings override the experiment's ``serve``
    section when given (None: the section's)."""

    model_config = ConfigDict(extra="forbid")

    config: str = Field(description="The experiment YAML file.")
    predictor: str = Field(description="The predictor checkpoint directory (or s3://).")
    batching: bool | None = Field(default=None, description="Overrides serve.batching.")
    max_batch_size: int | None = Field(
        default=None, gt=0, description="Overrides serve.max_batch_size."
    )
    batch_wait_ms: float | None = Field(
        default=None, ge=0, description="Overrides serve.batch_wait_ms."
    )
    replicas: int | None = Field(
        default=None,
        gt=0,
        description="A fixed count of predictor replicas (None: the Serve config's "
        "deployments section decides, say by autoscaling).",
    )
    replica_cpus: float | None = Field(
        default=None,
        ge=0,
        description="Logical CPUs each predictor replica reserves (None: as replicas).",
    )
    insecure: bool = Field(
        default=False, description="Serve open endpoints when MP_RAY_API_KEY is not set."
    )


def app_args(args: AppArgs | dict[str, Any]) -> AppArgs:
    """``args`` validated; a missing or bad one is an :class:`InputError` naming it."""
    if isinstance(args, AppArgs):
        return args
    try:
        return AppArgs.model_validate(args)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise InputError(f"mp-ray serve application args: {problems}") from None


def build_app(args: AppArgs | dict[str, Any]) -> serve.Application:
    """The application for ``serve run mp_ray.serve.app:build_app config=... predictor=...``
    (and Serve config files), from its args (:class:`AppArgs`). Without ``MP_RAY_API_KEY``
    in this process's environment (the replicas' on an embedded Ray or in Serve's build
    task) it raises :class:`~mp_ray.errors.InputError` unless ``insecure`` is true."""
    args = app_args(args)
    if not os.environ.get(API_KEY_ENV) and not args.insecure:
        raise InputError(
            f"{API_KEY_ENV} is not set: set it where Ray starts to require an X-API-Key "
            "header, or serve open endpoints on purpose with --insecure (insecure: true)"
        )
    given = args.model_dump(include=set(APP_SETTINGS), exclude_none=True)
    settings = load_experiment(
        args.config, {f"serve.{key}": value for key, value in given.items()}
    ).serve
    predictor = PredictorDeployment
    if "replicas" in given:
        predictor = predictor.options(num_replicas=settings.replicas)
    if "replica_cpus" in given:
        predictor = predictor.options(ray_actor_options={"num_cpus": settings.replica_cpus})
    model = predictor.bind(
        config=args.config,
        predictor_uri=args.predictor,
        batching=settings.batching,
        max_batch_size=settings.max_batch_size,
        batch_wait_ms=settings.batch_wait_ms,
    )
    return Gateway.bind(model)
