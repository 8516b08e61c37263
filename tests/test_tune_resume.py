"""A real `mp-ray tune` process killed mid-search, then resumed by running it again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import yaml
from ray import tune
from ray.tune.experiment import Trial
from typer.testing import CliRunner

from mp_ray.cli import app
from mp_ray.config import load_experiment
from mp_ray.retrain import run_retrain
from mp_ray.tuning import tune_predictor

SEARCH = {
    "seed": 4,
    "dataset": {"source": "sklearn", "name": "iris"},
    "learner": {"kind": "logistic"},
    "sampler": {"kind": "uniform_size", "min_size": 15},
    "retrain": {"num_actors": 1},
    # Six validations per trial: time to catch the first trial between two of them.
    "predictor": {"steps": 48, "eval_every": 8, "batch_size": 32, "width": 16},
}


def saved_trials(folder: Path) -> list[Trial]:
    """The trials as Tune last saved the search in ``folder`` (none before its first save or
    while it is half written)."""
    with suppress(OSError, ValueError):
        return tune.ExperimentAnalysis(str(folder)).trials
    return []


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_killed_search_resumes_to_as_many_trials(ray_session, tmp_path):
    path = tmp_path / "search.yaml"
    tuning = {
        "storage_path": str(tmp_path / "tune"),
        "num_samples": 2,
        "max_concurrent_trials": 1,  # the second trial starts once the first has ended
        "grace_period": 6,  # ASHA stops no trial before its last step: each fit ends
        "search_space": {"lr": {"type": "choice", "values": [1e-3, 3e-3]}},
    }
    store = {"uri": str(tmp_path / "iris.zarr"), "n_rows": 150, "block_rows": 50}
    path.write_text(yaml.safe_dump({**SEARCH, "store": store, "tune": tuning}))
    config = load_experiment(path)
    run_retrain(config)
    folder, early = tmp_path / "tune" / "search", tmp_path / "early"
    command = [sys.executable, "-m", "mp_ray.cli", "tune", "-c", str(path), "--no-progress"]
    env = {
        **os.environ,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "TUNE_GLOBAL_CHECKPOINT_S": "0",  # Tune saves the search's state at every step
    }
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline, ended = time.monotonic() + 300, 0
    while time.monotonic() < deadline and process.poll() is None and not ended:
        time.sleep(0.3)
        trials = saved_trials(folder)
        ended = sum(trial.status == "TERMINATED" for trial in trials)
        if not ended and trials and "step" in trials[0].last_result and not early.exists():
            # The search as saved while its first trial was still fitting: kept for later.
            shutil.copytree(folder, early)
            copied = saved_trials(early)
            if not copied or "step" not in copied[0].last_result:  # copied mid-write
                shutil.rmtree(early)
    process.send_signal(signal.SIGKILL)  # as a lost node or an evicted pod would
    _, stderr = process.communicate(timeout=60)
    assert ended == 1 and early.exists(), stderr
    assert process.returncode == -signal.SIGKILL, stderr

    result = CliRunner().invoke(app, ["tune", "-c", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"resuming search search in {folder}: 1 of 2 trials had ended" in result.output
    trials = json.loads((folder / "trials.json").read_text())
    assert len(trials) == 2  # as many as a search run through
    assert pq.read_table(folder / "trials.parquet").num_rows == 2

    # Resumed from the state saved before its first trial ended, the search finds that
    # trial's fit (and the second's) ended since: each trial hands over its fit's last
    # result, trained no further. (On a Ray of its own: Tune stages a search's state in the
    # Ray session, where the later state of this one is.)
    shutil.rmtree(folder)
    shutil.copytree(early, folder)
    env.pop("RAY_ADDRESS")
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "0 of 2 trials had ended" in rerun.stderr
    assert json.loads((folder / "trials.json").read_text()) == trials

    # Run again, the search has ended: nothing runs, the same results come back.
    outcome = tune_predictor(config, "search")
    assert len(outcome.grid) == 2 and outcome.grid.num_terminated == 2
    assert outcome.trials == trials
    assert outcome.best.path in [entry.path for entry in outcome.grid]
    assert outcome.best.metrics["best_val_rel_error"] == trials[0]["val_rel_error"]

    # Resumed only with the settings it began with.
    result = CliRunner().invoke(app, ["tune", "-c", str(path), "--samples", "3"])
    assert result.exit_code != 0 and "resuming" not in result.output
    assert f"search {folder} ran with other settings than {path}: " in result.output
    assert "tune.num_samples: search 2, config 3; give another name" in result.output
