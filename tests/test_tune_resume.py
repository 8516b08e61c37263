"""A real `mp-ray tune` process killed mid-search, then resumed by running it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress

import pyarrow.parquet as pq
import pytest
import ray
import yaml
from typer.testing import CliRunner

from mp_ray.cli import app
from mp_ray.config import load_experiment
from mp_ray.retrain import run_retrain
from mp_ray.tuning import ended_trials, tune_predictor

SEARCH = {
    "seed": 4,
    "dataset": {"source": "sklearn", "name": "iris"},
    "learner": {"kind": "logistic"},
    "sampler": {"kind": "uniform_size", "min_size": 15},
    "retrain": {"num_actors": 1},
    "predictor": {"steps": 16, "eval_every": 8, "batch_size": 32, "width": 16},
}


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_killed_search_resumes_to_as_many_trials(ray_session, tmp_path):
    path = tmp_path / "search.yaml"
    tuning = {
        "storage_path": str(tmp_path / "tune"),
        "num_samples": 2,
        "max_concurrent_trials": 1,  # the second trial starts once the first has ended
        "search_space": {"lr": {"type": "choice", "values": [1e-3, 3e-3]}},
    }
    store = {"uri": str(tmp_path / "iris.zarr"), "n_rows": 150, "block_rows": 50}
    path.write_text(yaml.safe_dump({**SEARCH, "store": store, "tune": tuning}))
    config = load_experiment(path)
    run_retrain(config)
    command = [sys.executable, "-m", "mp_ray.cli", "tune", "-c", str(path), "--no-progress"]
    env = {
        **os.environ,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "TUNE_GLOBAL_CHECKPOINT_S": "0",  # Tune saves the search's state at every step
    }
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline, ended = time.monotonic() + 300, None
    while time.monotonic() < deadline and process.poll() is None and not ended:
        time.sleep(0.5)
        with suppress(OSError, ValueError):  # no state yet, or caught mid-write
            ended = ended_trials(config, "search")
    process.send_signal(signal.SIGKILL)  # as a lost node or an evicted pod would
    _, stderr = process.communicate(timeout=60)
    assert ended is not None and len(ended) == 1, stderr
    assert process.returncode == -signal.SIGKILL, stderr

    result = CliRunner().invoke(app, ["tune", "-c", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "resuming search search in" in result.output
    assert "1 of 2 trials had ended" in result.output
    folder = tmp_path / "tune" / "search"
    trials = json.loads((folder / "trials.json").read_text())
    assert len(trials) == 2  # as many as a search run through
    assert pq.read_table(folder / "trials.parquet").num_rows == 2

    # Run again, the search has ended: nothing runs, the same results come back.
    outcome = tune_predictor(config, "search")
    assert len(outcome.grid) == 2 and len(outcome.trials) == 2
    assert outcome.grid.num_terminated == 2 and not outcome.grid.errors
    assert outcome.best.path in [entry.path for entry in outcome.grid]
    assert outcome.best_val_rel_error == min(row["val_rel_error"] for row in trials)
    assert outcome.best.metrics["best_val_rel_error"] == outcome.best_val_rel_error
