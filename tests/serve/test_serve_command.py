"""``mp-ray serve`` deploys the application on the running Ray and answers over HTTP."""

from __future__ import annotations

import socket

import httpx
import pytest
import yaml
from ray import serve
from typer.testing import CliRunner

from mp_ray.cli import app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_serve_command_starts_the_service(fitted_run, tmp_path):
    config, predictor = fitted_run
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["serve", "-c", str(path), "--predictor", predictor, "--port", str(port), "--no-block"]
    try:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert f"serving on http://127.0.0.1:{port}/v1" in result.output
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/health", timeout=30).json() == {"status": "ok"}
        metadata = httpx.get(f"{base}/v1/metadata", timeout=30).json()
        assert metadata["version"] == predictor and metadata["n_train"] == 120
    finally:
        serve.shutdown()
