"""An actor granted a GPU share where torch sees no CUDA device, on a real local Ray that
declares one GPU (started in a subprocess: the session's Ray has none): by default the
retraining refuses, naming the problem; with ``retrain.on_missing_gpu: warn`` it trains on
CPU and says so in the actor's log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.ray,
    pytest.mark.timeout(300),
    pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no GPU"),
]

ROOT = Path(__file__).resolve().parents[2]
# Run in the subprocess: a local Ray with one (declared) GPU, then the same retraining with
# each on_missing_gpu; prints one JSON line of what happened.
SCRIPT = """
import json, sys
import ray
from mp_ray.config import parse_experiment
from mp_ray.ray_session import apply_ray_env_defaults
from mp_ray.retrain import RetrainError, run_retrain

apply_ray_env_defaults()
ray.init(address="local", num_cpus=2, num_gpus=1, object_store_memory=256 * 1024**2,
         include_dashboard=False, _temp_dir=sys.argv[2])
experiment = {
    "dataset": {"source": "sklearn", "name": "wine"},
    "learner": {"kind": "logistic"},
    "sampler": {"kind": "bernoulli", "alpha": 0.5},
    "store": {"uri": sys.argv[1], "n_rows": 20, "block_rows": 10},
}
outcome = {}
try:
    retrain = {"num_actors": 1, "num_cpus": 1, "num_gpus": 0.5}
    run_retrain(parse_experiment({**experiment, "retrain": retrain}))
    outcome["error"] = None
except RetrainError as err:
    outcome["error"] = str(err)
devices = []
retrain = {"num_actors": 1, "num_cpus": 1, "num_gpus": 0.5, "on_missing_gpu": "warn"}
report = run_retrain(
    parse_experiment({**experiment, "retrain": retrain}),
    on_result=lambda result: devices.append(result["device"]),
)
outcome.update(rows=report.rows_trained, devices=devices)
ray.shutdown()
print(json.dumps(outcome))
"""


def test_a_gpu_share_without_cuda_is_refused_or_trains_on_cpu_with_a_warning(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="mpg", dir="/tmp")
    ran = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "gpu.zarr"), temp_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    outcome = json.loads(ran.stdout.strip().splitlines()[-1])
    assert "a retraining actor failed to start" in outcome["error"]
    assert "Ray granted this actor 0.5 GPU but torch sees no CUDA device" in outcome["error"]
    assert "retrain.on_missing_gpu: warn" in outcome["error"]
    assert outcome["rows"] == 20 and outcome["devices"] == ["cpu", "cpu"]
    # The actor's own log file: the driver's stderr gets the line only if Ray's log monitor
    # streams it before the script's ray.shutdown().
    actor_logs = "".join(
        path.read_text(errors="replace")
        for path in Path(temp_dir, "session_latest", "logs").glob("worker-*.err")
    )
    assert "torch sees no CUDA device" in actor_logs
    assert "training on CPU (retrain.on_missing_gpu: warn)" in actor_logs
