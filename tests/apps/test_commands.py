"""The application commands, run as users run them, on the shared fitted predictor."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from refusals import refused
from typer.testing import CliRunner

from mp_ray.apps.valuation import ValuationResult
from mp_ray.cli import app
from mp_ray.store import ExperimentStore

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
runner = CliRunner()


@pytest.fixture(scope="module")
def config_file(fitted_run, tmp_path_factory):
    config, _ = fitted_run
    path = tmp_path_factory.mktemp("commands") / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return str(path)


def run(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_value_writes_parquet_store_and_plots(fitted_run, config_file, tmp_path):
    config, predictor = fitted_run
    out = tmp_path / "values.parquet"
    result = run(
        "value",
        "-c",
        config_file,
        "--predictor",
        predictor,
        "--max-samples",
        "40",
        "--output",
        str(out),
        "--store-name",
        "tmc",
        "--plots",
        str(tmp_path),
    )
    assert "noisy labels (24 flipped)" in result.stdout
    assert re.search(
        r"^value: 40/40 permutations, .*, done in .*, [\d,]+ models$", result.stderr, re.M
    )
    assert "stopping: max 40 samples\n" in result.stderr
    saved = ValuationResult.from_parquet(str(out))
    stored = ValuationResult.from_store(ExperimentStore.open(config.store.uri), "tmc")
    np.testing.assert_array_equal(saved.values, stored.values)
    assert stored.params["models"] == "predictor" and len(stored) == 120
    assert "fidelity [" in result.stdout and "marginal contributions" in result.stdout
    # 8 subsets × 9 models, and the subsets' own utilities with U(D) and U(∅) for the
    # truncation comparison
    assert stored.params["fidelity"]["models_retrained"] == 72 + 8 + 2
    assert "truncation: " in result.stdout and "by the predictor" in result.stdout
    assert (tmp_path / "values.png").stat().st_size > 0
    assert (tmp_path / "removal.png").stat().st_size > 0
    # The config it ran with, beside the values and in the plots folder, runs it again.
    written = tmp_path / "values.config.yaml"
    header = written.read_text().splitlines()[0]
    assert header == f'# mp-ray value --predictor {predictor}; request {{"max_samples":40}}'
    assert (tmp_path / "resolved_config.yaml").read_text() == written.read_text()
    again = tmp_path / "again.parquet"
    args = ["value", "-c", str(written), "--predictor", predictor, "--max-samples", "40"]
    run(*args, "--check", "0", "--no-progress", "--output", str(again))
    np.testing.assert_array_equal(ValuationResult.from_parquet(str(again)).values, saved.values)


def test_select_memorization_calibrate_counterfactual(fitted_run, config_file, tmp_path):
    _, predictor = fitted_run
    out = tmp_path / "selection.json"
    run("select", "-c", config_file, "--predictor", predictor, "--size", "20", "--output", str(out))
    selection = json.loads(out.read_text())
    assert len(selection["indices"]) == 20 and "random (mean of 20)" in selection["test_accuracy"]
    assert selection["objective"] == "neg_loss" and selection["fidelity"]["cases"] == 72
    args = ["select", "-c", config_file, "--predictor", predictor, "--size", "20"]
    result = run(*args, "--holdout", "0.5", "--check", "0")
    assert "held-out rule: kept" in result.stdout and "fidelity" not in result.stdout

    result = run("memorization", "-c", config_file, "--predictor", predictor, "--top", "3")
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("memorisation: mean own-label probability")
    assert lines[1].split()[:3] == ["index", "label", "memorisation"]
    assert len([line for line in lines[2:5] if line.split()[0].isdigit()]) == 3
    assert lines[5].startswith("fidelity [") and "own-label probability" in lines[5]
    assert "memorization: 20,000/20,000 models" in result.stderr  # a predictor's default

    out = tmp_path / "calibration.json"
    run(
        "calibrate",
        "-c",
        config_file,
        "--predictor",
        predictor,
        "--output",
        str(out),
        "--plot",
        str(tmp_path / "reliability.png"),
    )
    table = json.loads(out.read_text())
    assert all(0 <= row["ece"] <= 1 for row in table["methods"].values())
    assert table["fidelity"]["check"].startswith("spread of the ensemble members")

    result = run(
        "counterfactual",
        "-c",
        config_file,
        "--predictor",
        predictor,
        "--target",
        "0",
        "--remove",
        "1,2,3",
    )
    assert "probability before" in result.stdout and "retrained change" in result.stdout
    assert "fidelity [" in result.stdout and "sign agreement" in result.stdout
    args = ["counterfactual", "-c", config_file, "--predictor", predictor, "--target", "0"]
    result = run(*args, "--remove", "1,2,3", "--check", "0")
    assert "fidelity" not in result.stdout and "retrained change" not in result.stdout
    refused(runner.invoke(app, [*args, "--remove", "1", "--check", "2"]), "needs at least 4")


def test_bad_application_inputs_fail_with_a_message(fitted_run, config_file, tmp_path):
    _, predictor = fitted_run
    result = runner.invoke(
        app,
        [
            "counterfactual",
            "-c",
            config_file,
            "--target",
            "0",
            "--remove",
            "1,500",
            "--predictor",
            predictor,
        ],
    )
    assert result.exit_code == 2 and "--remove out of range 0…119: [500]" in result.output
    result = runner.invoke(
        app, ["select", "-c", config_file, "--size", "10", "--method", "relaxed"]
    )
    assert result.exit_code == 2 and "needs --predictor" in result.output
    other = yaml.safe_load(Path(config_file).read_text())
    other["dataset"]["flip_fraction"] = 0.0
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    result = runner.invoke(app, ["value", "-c", str(path), "--predictor", predictor])
    assert result.exit_code == 2 and "another dataset" in result.output


def test_add_prints_the_table_and_refuses_a_file_of_another_width(
    config_file, fitted_run, tmp_path
):
    _, predictor = fitted_run
    result = run("add", "-c", config_file, "--predictor", predictor, "--from-test", "5", "--check")
    assert "adding 5 points to the 120 training points" in result.stderr
    rows = result.stdout.strip().splitlines()
    assert [row.split("  ")[0] for row in rows[1:]] == [
        "ModelPred",
        "influence functions",
        "retraining",
    ]
    points = tmp_path / "points.csv"
    points.write_text("a,b,c,label\n1,2,3,0\n")
    result = runner.invoke(
        app, ["add", "-c", config_file, "--predictor", predictor, "--points", str(points)]
    )
    refused(result, str(points), "3 feature columns", "30")
