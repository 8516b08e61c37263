"""The command line's error boundary and its outputs: every expected failure is one
``error:`` line with exit status 2 and no traceback, refused before the work where it can
be, and result files are written whole, into folders created for them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from refusals import refused
from typer.testing import CliRunner

from mp_ray.cli import app
from mp_ray.config import ConfigError
from mp_ray.datamodels.job import run_datamodels
from mp_ray.outputs import atomic_output
from mp_ray.predictor.fit import fit_predictor
from mp_ray.ray_resources import ResourcesError

runner = CliRunner()


def small_config(tmp_path: Path, **store: object) -> Path:
    """breast_cancer cut to 60 training points (retraining answers in milliseconds)."""
    config = {
        "seed": 0,
        "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 60},
        "learner": {"kind": "logistic", "C": 1.0},
        "sampler": {"kind": "bernoulli", "alpha": 0.5},
        "store": {"uri": str(tmp_path / "small.zarr"), "n_rows": 100, "block_rows": 50, **store},
    }
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_malformed_options_are_one_line_naming_the_option(tmp_path):
    config = small_config(tmp_path)
    cases = {
        "1,x": ("--remove", "'x'"),
        " , ": ("--remove", "no index"),
        "99999999999999999999999": ("--remove", "out of range 0…59"),
        "3,3": ("--remove", "3", "more than once"),
        "-1": ("--remove", "out of range"),
    }
    for remove, names in cases.items():
        args = ["counterfactual", "-c", str(config), "--target", "0", "--remove", remove]
        refused(runner.invoke(app, args), *names)
    args = ["counterfactual", "-c", str(config), "--target", "x", "--remove", "1"]
    refused(runner.invoke(app, args), "--target", "counterfactual --help")
    args = ["counterfactual", "-c", str(config), "--target", "999", "--remove", "1"]
    refused(runner.invoke(app, args), "--target", "out of range")
    refused(runner.invoke(app, ["memorization", "-c", str(config), "--subsets", "0"]), "--subsets")
    refused(runner.invoke(app, ["calibrate", "-c", str(config), "--fraction", "1.5"]), "--fraction")


def test_malformed_config_is_one_line_and_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\ndataset: {source: sklearn, name: '[bold]nope'}\n")
    line = refused(runner.invoke(app, ["check-config", str(path)]), "dataset.name", "[bold]nope")
    assert "learner: Field required" in line
    result = runner.invoke(app, ["--debug", "check-config", str(path)])
    assert isinstance(result.exception, ConfigError)  # raised on, with its traceback


def test_an_output_that_cannot_be_written_is_refused_before_the_work(tmp_path):
    config = small_config(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ["value", "-c", str(config), "--method", "loo"]
    result = runner.invoke(app, [*args, "--output", str(blocker / "values.parquet")])
    refused(result, "--output", "is a file")
    assert "valuing" not in result.stderr  # refused while parsing, before any model
    result = runner.invoke(app, [*args, "--plots", str(blocker)])
    refused(result, "--plots", "not a folder")
    result = runner.invoke(app, [*args, "--output", str(tmp_path)])
    refused(result, "--output", "is a folder")


def test_value_writes_into_new_folders_and_prints_the_removal_curves(tmp_path):
    config = small_config(tmp_path)
    output = tmp_path / "new" / "deeper" / "values.parquet"
    plots = tmp_path / "plots" / "run1"
    args = ["value", "-c", str(config), "--method", "loo"]
    result = runner.invoke(app, [*args, "--output", str(output), "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    assert output.stat().st_size > 0 and (plots / "removal.png").stat().st_size > 0
    # No partial files; the config it ran with beside the values and in the plots folder.
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "values.config.yaml",
        "values.parquet",
    ]
    assert (
        (plots / "resolved_config.yaml")
        .read_text()
        .startswith('# mp-ray value (by retraining); request {"method":"loo"}\n# The configuration')
    )
    # The removal curves are printed without --plots too.
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    header, high, low = result.stdout.splitlines()[-3:]
    assert header.split()[:2] == ["share", "removed"] and header.split()[-1] == "50%"
    for row in (high, low):
        accuracies = [float(v) for v in row.split()[3:]]
        assert len(accuracies) == 11 and all(0.0 <= a <= 1.0 for a in accuracies)


def test_an_interrupted_write_leaves_neither_a_file_nor_a_partial_one(tmp_path):
    target = tmp_path / "out" / "table.json"
    target.parent.mkdir()
    target.write_text("the previous result")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as partial:
        partial.write_text("half a")
        raise KeyboardInterrupt
    assert target.read_text() == "the previous result"
    assert [p.name for p in target.parent.iterdir()] == ["table.json"]


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_datamodels_on_a_missing_store_is_one_line_and_creates_nothing(ray_session, tmp_path):
    missing = tmp_path / "nowhere" / "store.zarr"
    config = small_config(tmp_path, uri=str(missing))
    result = runner.invoke(app, ["datamodels", "-c", str(config)])
    refused(result, "no mp-ray store", str(missing))
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_work_that_asks_for_a_missing_gpu_is_refused_before_it_waits(fitted_run, tmp_path):
    config, _ = fitted_run
    with pytest.raises(ResourcesError, match=r"Ray Train worker .* GPU=1 \(cluster has 0\)"):
        run = {
            "fit.storage_path": str(tmp_path / "train"),
            "fit.num_workers": 1,
            "fit.use_gpu": True,
        }
        fit_predictor(config.with_overrides(run), "gpu")
    datamodels = config.datamodels.model_copy(update={"num_gpus": 1.0})
    with pytest.raises(ResourcesError, match=r"datamodels.num_cpus / num_gpus"):
        run_datamodels(config.model_copy(update={"datamodels": datamodels}))
    assert not (tmp_path / "train").exists()
