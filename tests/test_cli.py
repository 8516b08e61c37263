"""The ``mp-ray`` command line, run as users run it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import yaml
from typer.testing import CliRunner

from mp_ray.cli import app
from mp_ray.config import RESOLVED_CONFIG, load_experiment
from mp_ray.predictor import Predictor
from mp_ray.store import ExperimentStore

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
runner = CliRunner()


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_retrain_then_inspect(ray_session, tmp_path):
    uri = str(tmp_path / "quick.zarr")
    report = tmp_path / "report.json"
    args = ["retrain", "-c", str(QUICKSTART), "--store", uri, "--rows", "500"]
    result = runner.invoke(app, [*args, "--no-progress", "--report-json", str(report)])
    assert result.exit_code == 0, result.output
    assert "500 / 500 done" in result.stdout
    assert json.loads(report.read_text())["rows_trained"] == 500

    result = runner.invoke(app, ["inspect", uri, "--json", "--parquet", str(tmp_path / "r.pq")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows_done"] == 500 and summary["shapes"]["params"] == [500, 31]
    assert summary["metrics"]["test_accuracy"]["mean"] > 0.9
    assert pq.read_table(tmp_path / "r.pq").num_rows == 500

    # Rerunning the finished job trains nothing.
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained 0 models" in result.output and "skipped 2 finished blocks" in result.output


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_fit_rerun_export_then_evaluate(ray_session, tmp_path):
    config = yaml.safe_load(QUICKSTART.read_text())
    config["store"] = {"uri": str(tmp_path / "quick.zarr"), "n_rows": 500, "block_rows": 250}
    config["predictor"].update(steps=30, eval_every=10, patience=3)
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(config))
    assert runner.invoke(app, ["retrain", "-c", str(path), "--no-progress"]).exit_code == 0
    export = tmp_path / "predictor"
    args = ["fit", "-c", str(path), "--storage-path", str(tmp_path / "train"), "--name", "q"]
    result = runner.invoke(app, [*args, "--export", str(export)])
    assert result.exit_code == 0, result.output
    assert "fitted 30 steps" in result.output and (export / "model.pt").exists()
    # Step progress on stderr; none of Ray Train's per-worker report lines.
    progress = r"^fit: 30/30 steps, .*, done in .*, validation error 0\."
    assert re.search(progress, result.stderr, re.M)
    assert "Reporting training result" not in result.output
    # Rerunning a finished fit resumes at its end and reports the same predictor.
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    assert rerun.stdout.strip().splitlines()[-1] == result.stdout.strip().splitlines()[-1]

    table = tmp_path / "new" / "folder" / "table.json"  # made by evaluate, after the work
    args = ["evaluate", "-c", str(path), "--output", str(table)]
    result = runner.invoke(app, [*args, "--predictor", f"fit={export}", "--predictor", str(export)])
    assert result.exit_code == 0, result.output
    rows = {
        row["method"]: row for row in json.loads(table.read_text()) if row["subset size"] == "all"
    }
    assert set(rows) == {
        "ModelPred (fit)",
        "ModelPred (fit), set function alone",
        "ModelPred (2)",
        "ModelPred (2), set function alone",
        "mean θ",
        "ridge on the mask",
        "full data θ(D)",
        "influence functions",
    }
    assert all(0.5 < row["agreement"] <= 1 for row in rows.values())
    # Linear in the mask beats a constant even on fewer training rows than points.
    assert rows["ridge on the mask"]["rel_error"] < rows["mean θ"]["rel_error"]
    assert "ridge on the mask" in result.stdout and "mean θ" in result.stdout
    assert rows["ModelPred (fit)"]["rel_error"] == rows["ModelPred (2)"]["rel_error"]
    # The default Newton step from the set function's prediction is closer to retraining.
    alone = rows["ModelPred (fit), set function alone"]["rel_error"]
    assert rows["ModelPred (fit)"]["rel_error"] < alone


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_fit_reruns_from_its_resolved_config(ray_session, tmp_path):
    config = yaml.safe_load(QUICKSTART.read_text())
    config["store"] = {"uri": str(tmp_path / "quick.zarr"), "n_rows": 300, "block_rows": 150}
    config["predictor"].update(steps=20, eval_every=10)
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(config))
    assert runner.invoke(app, ["retrain", "-c", str(path), "--no-progress"]).exit_code == 0
    # The store keeps the config its retraining ran with; retraining from it changes nothing.
    recorded = tmp_path / "retrain.yaml"
    args = ["inspect", config["store"]["uri"], "--resolved-config", str(recorded)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["retrain", "-c", str(recorded), "--no-progress"])
    assert result.exit_code == 0 and "trained 0 models" in result.output, result.output

    train, export = tmp_path / "train", tmp_path / "exported"
    args = ["fit", "-c", str(path), "--storage-path", str(train), "--workers", "1"]
    result = runner.invoke(app, [*args, "--name", "first", "--export", str(export)])
    assert result.exit_code == 0, result.output
    resolved = load_experiment(train / "first" / RESOLVED_CONFIG)
    assert resolved.fit.num_workers == 1 and resolved.fit.storage_path == str(train)  # flags
    assert resolved.predictor.width == 128 and resolved.predictor.lambda_global == 0.1  # auto
    assert load_experiment(export / RESOLVED_CONFIG).model_dump() == resolved.model_dump()

    # The written config alone (no flags) fits the same predictor again.
    rerun = runner.invoke(app, ["fit", "-c", str(train / "first" / RESOLVED_CONFIG)])
    assert rerun.exit_code == 0, rerun.output
    second = rerun.stdout.strip().splitlines()[-1]
    assert second.startswith(str(train / "predictor"))
    first, again = Predictor.load(str(export)), Predictor.load(second)
    masks = np.random.default_rng(0).random((16, first.n_train)) < 0.5
    first, again = first.predict(masks), again.predict(masks)
    np.testing.assert_allclose(again.numpy(), first.numpy(), rtol=1e-5, atol=1e-6)


def test_bad_config_and_missing_store_exit_with_a_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    config = yaml.safe_load(QUICKSTART.read_text())
    config["retrain"]["num_actor"] = 3
    bad.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["retrain", "-c", str(bad)])
    assert result.exit_code == 2
    assert "retrain.num_actor" in result.output

    result = runner.invoke(app, ["inspect", str(tmp_path / "none.zarr")])
    assert result.exit_code == 2
    assert "no mp-ray store" in result.output


def test_check_config_prints_defaults():
    result = runner.invoke(app, ["check-config", str(QUICKSTART)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["retrain"]["max_retries"] == 3


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_ctrl_c_then_rerun_resumes(ray_session, tmp_path):
    """A real `mp-ray retrain` process on the shared cluster, interrupted with SIGINT."""
    config = yaml.safe_load(QUICKSTART.read_text())
    config["dataset"] = {"source": "sklearn", "name": "digits", "max_train": 300}
    config["store"] = {"uri": str(tmp_path / "digits.zarr"), "n_rows": 1200, "block_rows": 60}
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "mp_ray.cli", "retrain", "-c", str(path), "--no-progress"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        try:
            done = ExperimentStore.open(config["store"]["uri"]).done_blocks().sum()
        except FileNotFoundError:
            continue
        if done >= 2:
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=60)
    assert done >= 2, stderr
    assert process.returncode == 130, stderr
    assert "rerun the same command to resume" in stderr
    finished = 20 - len(ExperimentStore.open(config["store"]["uri"]).pending_blocks())
    assert 2 <= finished < 20

    result = runner.invoke(app, ["retrain", "-c", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"skipped {finished} finished blocks" in result.output
    assert "1200 / 1200 done" in result.stdout
