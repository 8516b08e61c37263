"""The Serve application over real HTTP on the local Ray: answers equal the library calls,
bad input gets 4xx naming the field (never 5xx), the largest valid request is answered, the
API key is enforced, a killed replica is replaced without losing accepted requests, and the
checkpoint swaps in place."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import ray
import yaml
from ports import free_port
from prometheus import Sample, metrics_port, wait_for
from ray import serve

from mp_ray.apps import Utility
from mp_ray.apps.calibration import subsample_masks
from mp_ray.apps.counterfactual import counterfactual_removal
from mp_ray.apps.models import retrain_below_for
from mp_ray.apps.selection import greedy_selection
from mp_ray.apps.utility import class_probabilities
from mp_ray.apps.valuation import MaxSamples, beta_shapley, tmc_shapley
from mp_ray.predictor import Predictor
from mp_ray.serve.app import MAX_ERRORS_SHOWN, Gateway, PredictorDeployment
from mp_ray.serve.schemas import MAX_INPUT_ROWS, MAX_POINTS

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
KEY = "test-key-123"
MAX_BODY = 8_000_000  # below the default 8 MiB, above 10^6 indices (7.9 MB)


@dataclass
class Running:
    """The running application: an authenticated client and how it was deployed."""

    client: httpx.Client
    gateway: Any
    deployment: Any
    args: dict[str, str]
    predictor: str


@pytest.fixture(scope="module")
def service(fitted_run, tmp_path_factory):
    """The application on 2 replicas with an API key."""
    config, predictor = fitted_run
    path = tmp_path_factory.mktemp("serve") / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    port = free_port()
    env = {"MP_RAY_API_KEY": KEY, "MP_RAY_MAX_BODY_BYTES": str(MAX_BODY)}
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deployment = PredictorDeployment.options(
        user_config={"predictor_uri": predictor},
        num_replicas=2,
        ray_actor_options={
            "num_cpus": 0.25,
            "runtime_env": {"env_vars": env},
        },
    )
    args = {"config": str(path), "predictor_uri": predictor}
    gateway = Gateway.options(
        ray_actor_options={"num_cpus": 0.25, "runtime_env": {"env_vars": env}}
    )
    serve.run(
        gateway.bind(deployment.bind(**args)), name="mp-ray", route_prefix="/", blocking=False
    )
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as client:
        deadline = time.time() + 60
        while client.get("/v1/ready").status_code != 200 and time.time() < deadline:
            time.sleep(0.5)
        yield Running(client, gateway, deployment, args, predictor)
    serve.shutdown()


def test_health_metadata_and_openapi(service, fitted):
    assert service.client.get("/v1/health").json() == {"status": "ok"}
    meta = service.client.get("/v1/metadata").json()
    assert meta["dataset_fingerprint"] == fitted.dataset.fingerprint
    assert meta["n_train"] == 120 and meta["n_params"] == fitted.learner.n_params
    paths = set(service.client.get("/openapi.json").json()["paths"])
    assert {"/v1/predict", "/v1/values", "/v1/select", "/v1/counterfactual", "/v1/add"} <= paths


def test_answers_equal_the_library_calls(service, fitted):
    data = fitted.dataset
    indices = [3, 5, 8, 13, 21, 34, 55, 89, 100, 101, 102, 110]
    mask = np.zeros(120, dtype=bool)
    mask[indices] = True
    expected = fitted.models.predict(mask[None])[0]
    params = service.client.post("/v1/predict", json={"indices": indices}).json()["params"]
    np.testing.assert_allclose(params, expected.numpy(), rtol=1e-6, atol=1e-7)
    by_mask = service.client.post("/v1/predict", json={"mask": mask.tolist()}).json()["params"]
    assert by_mask == params

    inputs = data.X_test[:5].tolist()
    answer = service.client.post("/v1/predict", json={"indices": indices, "inputs": inputs}).json()
    probabilities = class_probabilities(fitted.learner, expected[None], data.X_test[:5])[0]
    np.testing.assert_allclose(answer["probabilities"], probabilities.numpy(), rtol=1e-6)

    values = service.client.post(
        "/v1/values",
        json={"method": "tmc", "max_samples": 30, "seed": 4, "check": 0, "retrain_below": 0},
    ).json()
    utility = Utility(fitted.models, data.X_val, data.y_val, "neg_loss")
    np.testing.assert_allclose(
        values["values"], tmc_shapley(utility, MaxSamples(30), 4).values, atol=1e-12
    )

    selected = service.client.post("/v1/select", json={"size": 15}).json()["indices"]
    accuracy = Utility(fitted.models, data.X_val, data.y_val, "accuracy")
    assert selected == greedy_selection(accuracy, 15).indices.tolist()

    body = {
        "inputs": data.X_test[:3].tolist(),
        "labels": data.y_test[:3].tolist(),
        "remove": [1, 2],
    }
    answer = service.client.post("/v1/counterfactual", json=body).json()
    result = counterfactual_removal(fitted.models, data.X_test[:3], data.y_test[:3], [[1, 2]])
    np.testing.assert_allclose(answer["margin_change"], result.change("margin")[0], atol=1e-9)

    answer = service.client.post("/v1/calibrated", json={"inputs": inputs, "models": 20}).json()
    ensemble = fitted.models.predict(subsample_masks(120, 20, 0.8, 0))
    mean = class_probabilities(fitted.learner, ensemble, data.X_test[:5]).mean(dim=0)
    np.testing.assert_allclose(answer["probabilities"], mean.numpy(), rtol=1e-6)

    memorization = service.client.post("/v1/memorization", json={"subsets": 200}).json()
    assert len(memorization["memorization"]) == 120 and memorization["score"] == "probability"


def test_values_take_the_command_lines_options(service, fitted):
    """Beta-Shapley with its (α, β) and the standard-error rule, as `mp-ray value` takes
    them (short prefixes retrained, the default); the fidelity check and the removal curves
    when asked for (an endpoint retrains nothing else by default)."""
    data = fitted.dataset
    body = {"method": "beta", "max_samples": 24, "alpha": 4.0, "beta": 2.0, "seed": 3}
    plain = service.client.post("/v1/values", json=body).json()
    assert plain["fidelity"] is None and plain["removal_curves"] == {}
    body = {**body, "check": 60, "removal_curves": True}
    answer = service.client.post("/v1/values", json=body).json()
    below = retrain_below_for("auto", fitted.learner)
    utility = Utility(fitted.models.retraining_below(below), data.X_val, data.y_val, "neg_loss")
    expected = beta_shapley(utility, MaxSamples(24), 4.0, 2.0, 3)
    assert answer["method"] == "beta_shapley"
    np.testing.assert_allclose(answer["values"], expected.values, atol=1e-12)
    assert answer["fidelity"]["models_retrained"] > 0
    assert set(answer["removal_curves"]) == {"high", "low"}
    assert answer["noisy_labels"]["flipped"] == 24
    other = service.client.post("/v1/values", json={**body, "beta": 1.0}).json()
    assert other["values"] != answer["values"]


def test_add_answers_the_library_call(service, fitted):
    data = fitted.dataset
    X_new, y_new = data.X_test[:4], data.y_test[:4]
    body = {"inputs": X_new.tolist(), "labels": y_new.tolist()}
    answer = service.client.post("/v1/add", json=body).json()
    ground_set, added = np.ones((1, 120), bool), np.ones((1, 4), bool)
    expected = fitted.models.predict_with_points(ground_set, X_new, y_new, added)[0]
    assert answer["n_points"] == 124
    np.testing.assert_allclose(answer["params"], expected.numpy(), rtol=1e-6, atol=1e-7)

    body = {**body, "base": {"indices": list(range(50))}, "predict_on": data.X_test[4:9].tolist()}
    answer = service.client.post("/v1/add", json=body).json()
    assert answer["n_points"] == 54 and answer["params"] is None
    assert len(answer["predictions"]) == 5 and np.shape(answer["probabilities"]) == (5, 2)


def test_values_are_cached_per_request(service):
    body = {"method": "banzhaf", "max_samples": 500, "check": 0}
    first = service.client.post("/v1/values", json=body).json()
    assert first["removal_fractions"] == []
    # Two replicas: the second answer comes from whichever cached it; ask until one repeats.
    answers = [service.client.post("/v1/values", json=body).json() for _ in range(4)]
    assert any(a["cached"] for a in answers)
    assert all(a["values"] == first["values"] for a in answers)


HUGE = 99999999999999999999999  # 23 digits: no int64 holds it
TARGET = {"inputs": [[0.0] * 30], "labels": [1]}
MILLION = list(range(MAX_POINTS))


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/predict", {"indices": MILLION}, 422, "indices"),  # 7.9 MB, one per point at most
        ("/v1/counterfactual", {**TARGET, "remove": MILLION}, 422, "remove"),
        ("/v1/predict", {"indices": [*MILLION, MAX_POINTS]}, 422, "indices"),  # above the cap
        ("/v1/predict", {"indices": ["1", "2"]}, 422, "indices"),
        ("/v1/predict", {"indices": [1.0, 2.0]}, 422, "indices"),
        ("/v1/predict", {"indices": [True]}, 422, "indices"),
        ("/v1/predict", {"indices": [HUGE]}, 422, "indices"),
        ("/v1/predict", {"indices": [-1]}, 422, "indices"),
        ("/v1/predict", {"indices": [0, 120]}, 422, "indices"),
        ("/v1/predict", {"indices": [1, 1]}, 422, "indices"),
        ("/v1/predict", {"mask": [True] * 7}, 422, "mask"),
        ("/v1/predict", {"mask": [1] * 120}, 422, "mask"),
        ("/v1/predict", {"indices": [1], "mask": [True] * 120}, 422, "exactly one"),
        ("/v1/predict", {"indices": [1], "inputs": [[0.0] * 3]}, 422, "inputs"),
        ("/v1/predict", {"indices": [1], "inputs": [["0.5"] * 30]}, 422, "inputs"),
        ("/v1/predict", {"indices": [1], "inputs": [[1e308] * 30]}, 422, "inputs"),  # float32
        ("/v1/predict", {"indices": [1], "inputs": [[0.0]] * 4097}, 422, "inputs"),
        ("/v1/predict", {"indices": [1], "extra": 1}, 422, "extra"),
        ("/v1/predict", [1, 2], 422, "body"),
        ("/v1/counterfactual", {**TARGET, "remove": [HUGE]}, 422, "remove"),
        ("/v1/counterfactual", {**TARGET, "remove": []}, 422, "remove"),
        ("/v1/counterfactual", {**TARGET, "remove": [3, 3]}, 422, "remove"),
        ("/v1/counterfactual", {**TARGET, "labels": [HUGE], "remove": [1]}, 422, "labels"),
        ("/v1/counterfactual", {**TARGET, "labels": [7], "remove": [1]}, 422, "labels"),
        ("/v1/counterfactual", {**TARGET, "labels": [1, 0], "remove": [1]}, 422, "labels"),
        ("/v1/add", {"inputs": [[0.0] * 29], "labels": [1]}, 422, "inputs"),
        ("/v1/add", {**TARGET, "labels": [2]}, 422, "labels"),
        ("/v1/add", {**TARGET, "predict_on": [[0.0] * 3]}, 422, "predict_on"),
        ("/v1/add", {**TARGET, "base": {"indices": [120]}}, 422, "indices"),
        ("/v1/values", {"max_samples": "200"}, 422, "max_samples"),
        ("/v1/values", {"max_samples": 10**6}, 422, "max_samples"),
        ("/v1/values", {"seed": HUGE}, 422, "seed"),
        ("/v1/values", {"method": "exact"}, 422, "method"),
        ("/v1/select", {"size": 500}, 422, "size"),
        ("/v1/select", {"size": HUGE}, 422, "size"),
        ("/v1/select", {"size": 5.0}, 422, "size"),
        ("/v1/select", {"size": 1}, 422, "size"),  # greedy starts from one point per class
        ("/v1/memorization", {"subsets": 5}, 422, "subsets"),
        ("/v1/memorization", {"alpha": "0.5"}, 422, "alpha"),
        ("/v1/calibrated", {"inputs": [[0.0] * 30], "fraction": 2}, 422, "fraction"),
        ("/v1/calibrated", {"inputs": [[0.0] * 30], "fraction": 1e-4}, 422, "fraction"),
        ("/v1/calibrated", {"inputs": [[0.0] * 29]}, 422, "inputs"),
        ("/v1/calibrated", {"inputs": [[0.0] * 30], "models": 0}, 422, "models"),
    ],
)
def test_bad_requests_get_4xx_naming_the_field(service, path, body, status, field):
    response = service.client.post(path, json=body)
    assert response.status_code == status, response.text
    assert field in json.dumps(response.json()["detail"])


def test_the_largest_valid_requests_are_answered(service, fitted):
    """Every training point and the most input rows a request may carry."""
    data = fitted.dataset
    rows = np.resize(data.X_test, (MAX_INPUT_ROWS, data.n_features)).tolist()
    labels = np.resize(data.y_test, MAX_INPUT_ROWS).tolist()
    everything = list(range(120))
    answer = service.client.post("/v1/predict", json={"indices": everything, "inputs": rows})
    assert answer.status_code == 200, answer.text
    assert answer.json()["n_points"] == 120 and len(answer.json()["predictions"]) == MAX_INPUT_ROWS
    body = {"inputs": rows, "labels": labels, "remove": everything}
    answer = service.client.post("/v1/counterfactual", json=body)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["prediction_flips"]) == MAX_INPUT_ROWS


def test_nan_oversized_and_unsized_bodies(service):
    def post_json(text: bytes) -> httpx.Response:
        return service.client.post(
            "/v1/predict", content=text, headers={"content-type": "application/json"}
        )

    response = post_json(b'{"indices": [1], "inputs": [[NaN' + b", 0.0" * 29 + b"]]}")
    assert response.status_code == 422 and "NaN" in response.text
    broken = post_json(b'{"indices": [1,')
    assert broken.status_code == 422 and "JSON decode error" in broken.text
    deep = post_json(b"[" * 100_000)
    assert deep.status_code == 400 and "parsing the body" in deep.text
    big = json.dumps({"mask": [True] * (MAX_BODY // 6 + 10_000)})  # above the limit, < 8 MiB
    assert MAX_BODY < len(big) < 8 * 2**20
    response = service.client.post("/v1/predict", content=big)
    assert response.status_code == 413 and str(MAX_BODY) in response.text
    chunked = service.client.post("/v1/predict", content=iter([b'{"indices": [1]}']))
    assert chunked.status_code == 411 and "Content-Length" in chunked.text
    many = service.client.post("/v1/predict", json={"indices": ["1"] * 1000})
    assert many.status_code == 422 and len(many.json()["detail"]) == MAX_ERRORS_SHOWN + 1
    assert "990 more" in many.text
    assert service.client.get("/v1/health").status_code == 200  # the replicas still serve


def test_api_key_is_required(service):
    url = str(service.client.base_url)
    assert httpx.post(f"{url}/v1/predict", json={"indices": [1]}).status_code == 401
    wrong = httpx.get(f"{url}/v1/metadata", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    assert httpx.get(f"{url}/v1/health").status_code == 200


def test_requests_are_counted_per_endpoint_and_outcome_on_rays_endpoint(service):
    url = str(service.client.base_url)
    for _ in range(3):
        assert service.client.get("/v1/metadata").status_code == 200
    assert service.client.post("/v1/predict", json={"indices": [-1]}).status_code == 422
    assert httpx.get(f"{url}/v1/metadata").status_code == 401
    assert service.client.get("/v1/no-such-endpoint").status_code == 404
    port = metrics_port()

    def count(
        endpoint: str, outcome: str, code: str, at_least: int = 1
    ) -> Callable[[list[Sample]], bool]:
        """Whether the samples count ``at_least`` such requests (over every replica): Ray
        exports a worker's metrics every few seconds, so a scrape may lag the requests."""

        def enough(found: list[Sample]) -> bool:
            return at_least <= sum(
                value
                for labels, value in found
                if (labels["endpoint"], labels["outcome"], labels["code"])
                == (endpoint, outcome, code)
                and labels["application"] == "mp-ray"
            )

        return enough

    requests = "ray_mp_ray_serve_requests_total"
    wait_for(port, requests, count("/v1/metadata", "ok", "200", at_least=3))
    wait_for(port, requests, count("/v1/predict", "client_error", "422"))
    wait_for(port, requests, count("/v1/metadata", "client_error", "401"))
    wait_for(port, requests, count("other", "client_error", "404"))
    wait_for(
        port,
        "ray_mp_ray_serve_request_latency_ms_count",
        lambda found: sum(v for labels, v in found if labels["endpoint"] == "/v1/metadata") >= 4,
    )


def test_a_replica_killed_during_a_burst_is_replaced_and_no_request_is_lost(service):
    def ask(k: int) -> int:
        return service.client.post(
            "/v1/predict", json={"indices": [k % 120, (k + 1) % 120]}
        ).status_code

    replicas = [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if "PredictorDeployment" in actor["name"]
    ]
    assert len(replicas) == 2, replicas
    victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(ask, k) for k in range(400)]
        time.sleep(0.3)
        ray.kill(victim, no_restart=True)
        codes = [future.result() for future in futures]
    assert codes.count(200) == len(codes), {code: codes.count(code) for code in set(codes)}
    deadline = time.time() + 60
    while time.time() < deadline:
        status = serve.status().applications["mp-ray"].deployments["PredictorDeployment"]
        if status.replica_states.get("RUNNING", 0) == 2:
            break
        time.sleep(1)
    assert status.replica_states.get("RUNNING", 0) == 2


def test_reconfigure_swaps_the_checkpoint(service, tmp_path):
    copy = tmp_path / "copy"
    Predictor.load(service.predictor).save(str(copy))
    # The replica class itself: reconfigure loads the new checkpoint into a live object.
    replica = PredictorDeployment.func_or_class(service.args["config"], service.predictor)
    replica.reconfigure({"predictor_uri": str(copy)})
    assert replica.service.version == str(copy)
    # Through Serve: a new user_config reaches every replica (a config-file deploy applies it
    # in place; serve.run from Python may start fresh replicas, which is also fine here).
    serve.run(
        service.gateway.bind(
            service.deployment.options(user_config={"predictor_uri": str(copy)}).bind(
                **service.args
            )
        ),
        name="mp-ray",
        route_prefix="/",
        blocking=False,
    )
    deadline = time.time() + 60
    versions: set[str] = set()
    while time.time() < deadline and versions != {str(copy)}:
        versions = {service.client.get("/v1/ready").json()["version"] for _ in range(6)}
        time.sleep(0.5)
    assert versions == {str(copy)}
    assert service.client.post("/v1/predict", json={"indices": [1, 2]}).status_code == 200
