"""Commands refuse a config whose settings differ from the store's or the predictor's, in one
line naming each field and both values, before any work and without changing a file.

One small experiment for the module: breast_cancer cut to 100 training points, 500 models
retrained at learner.C = 0.1, a predictor fitted on them for 26 steps."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from refusals import refused
from typer.testing import CliRunner

from mp_ray.apps.context import app_context
from mp_ray.cli import app
from mp_ray.config import load_experiment
from mp_ray.predictor import Predictor
from mp_ray.store import ExperimentStore, StoreMismatchError

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
runner = CliRunner()

BASE: dict[str, Any] = {
    "seed": 0,
    "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 100},
    "learner": {"kind": "logistic", "C": 0.1, "tol": 1e-6},
    "sampler": {"kind": "uniform_size", "min_size": 10},
    "store": {"n_rows": 500, "block_rows": 250},
    "retrain": {"num_actors": 2},
    "predictor": {"width": 16, "steps": 26, "eval_every": 13, "batch_size": 32, "patience": 2},
}


def write_config(root: Path, name: str, **learner: Any) -> str:
    config = json.loads(json.dumps(BASE))
    config["store"]["uri"] = str(root / "bc.zarr")
    config["learner"].update(learner)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def tree_hashes(root: str) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(root).rglob("*"))
        if path.is_file()
    }


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory) -> SimpleNamespace:
    """The store retrained at C = 0.1 and a predictor fitted on it, with configs at C = 0.1
    (float32 for the fit: learner.dtype is not read by it), 0.2 and 10."""
    root = tmp_path_factory.mktemp("identity")
    config = write_config(root, "c01")
    result = invoke("retrain", "-c", config, "--no-progress")
    assert result.exit_code == 0, result.output
    export = str(root / "predictor")
    fit_config = write_config(root, "c01-float32", dtype="float32")
    args = ["fit", "-c", fit_config, "--workers", "1", "--storage-path", str(root / "train")]
    result = invoke(*args, "--export", export)
    assert result.exit_code == 0, result.output
    return SimpleNamespace(
        root=root,
        store=str(root / "bc.zarr"),
        predictor=export,
        config=config,
        c02=write_config(root, "c02", C=0.2),
        c10=write_config(root, "c10", C=10.0),
    )


def test_a_fitted_predictor_records_the_store_identity(run):
    meta = Predictor.load(run.predictor).meta
    store = ExperimentStore.open(run.store)
    assert meta.identity == store.spec.identity
    # The store's settings, not the fit config's (which asked for float32).
    assert meta.identity["learner.C"] == 0.1 and meta.identity["learner.dtype"] == "float64"
    assert meta.learner["C"] == 0.1 and meta.learner["dtype"] == "float64"
    assert meta.identity["sampler.kind"] == "uniform_size" and meta.identity["seed"] == 0


def test_commands_refuse_another_learner_C(run):
    store_files, predictor_files = tree_hashes(run.store), tree_hashes(run.predictor)
    store_diff = "learner.C: store 0.1, config 0.2"
    store_line = f"store {run.store} was made with other settings than {run.c02}: {store_diff}"
    on_store = {
        "evaluate": ["--predictor", run.predictor],
        "fit": ["--workers", "1", "--storage-path", str(run.root / "train-c02")],
        "tune": ["--samples", "1", "--storage-path", str(run.root / "tune-c02")],
        "lds": ["--loo", "2"],
        "explain": ["--target", "0"],
        "distill": [],
        "value": ["--store-name", "c02", "--max-samples", "5"],
    }
    for command, args in on_store.items():
        line = refused(invoke(command, "-c", run.c02, *args), store_diff)
        assert line == f"error: {store_line}", command
    predictor_line = (
        f"error: predictor {run.predictor} was fitted with other settings than {run.c02}: "
        "learner.C: predictor 0.1, config 0.2"
    )
    with_predictor = {
        "value": ["--max-samples", "5"],
        "select": ["--size", "10"],
        "memorization": ["--subsets", "10"],
        "calibrate": ["--models", "4"],
        "counterfactual": ["--target", "0", "--remove", "1,2"],
    }
    for command, args in with_predictor.items():
        result = invoke(command, "-c", run.c02, "--predictor", run.predictor, *args)
        assert refused(result) == predictor_line, command

    # A predictor fitted at C = 0.1 used with a C = 10 config.
    result = invoke("value", "-c", run.c10, "--predictor", run.predictor, "--max-samples", "5")
    refused(result, f"predictor {run.predictor}", "learner.C: predictor 0.1, config 10.0")
    # The service's start-up path refuses it the same way.
    with pytest.raises(StoreMismatchError, match=r"learner\.C: predictor 0\.1, config 10\.0$"):
        app_context(load_experiment(run.c10), run.predictor)

    # retrain names the field too, instead of both learner settings whole.
    line = refused(invoke("retrain", "-c", run.c02, "--no-progress"))
    assert line == (
        f"error: store {run.store} was made with other settings than the config: {store_diff}; "
        "use a new store URI or the original config"
    )
    assert tree_hashes(run.store) == store_files
    assert tree_hashes(run.predictor) == predictor_files


def test_another_dataset_is_named_as_such(run):
    other = yaml.safe_load(Path(run.config).read_text())
    other["dataset"]["max_train"] = 90
    path = run.root / "other-dataset.yaml"
    path.write_text(yaml.safe_dump(other))
    store_files = tree_hashes(run.store)
    for command in ("lds", "datamodels"):
        line = refused(invoke(command, "-c", str(path)), "dataset.fingerprint: store ")
        prefix = f"error: store {run.store} was built from another dataset than {path}: "
        assert line.startswith(prefix), command
    line = refused(
        invoke(
            "counterfactual",
            "-c",
            str(path),
            "--target",
            "0",
            "--remove",
            "1",
            "--predictor",
            run.predictor,
        )
    )
    assert f"predictor {run.predictor} was fitted on another dataset" in line
    assert tree_hashes(run.store) == store_files


def test_an_older_checkpoint_is_checked_on_its_learner(run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run.predictor, old)
    meta_file = old / "predictor.json"
    meta = json.loads(meta_file.read_text())
    del meta["store_identity"]
    meta_file.write_text(json.dumps(meta))
    assert app_context(load_experiment(run.config), str(old)).source == "predictor"
    result = invoke("value", "-c", run.c10, "--predictor", str(old), "--max-samples", "5")
    refused(result, "learner.C: predictor 0.1, config 10.0")


def test_inspect_shows_the_identity(run):
    result = invoke("inspect", run.store)
    assert result.exit_code == 0, result.output
    assert "learner    kind=logistic C=0.1 tol=1e-06 max_iter=500 dtype=float64" in result.stdout
    assert "sampler    kind=uniform_size min_size=10 max_size=none" in result.stdout
    assert "seed       0" in result.stdout
    identity = json.loads(invoke("inspect", run.store, "--json").stdout)["identity"]
    assert identity == ExperimentStore.open(run.store).spec.identity
    assert identity["learner.C"] == 0.1 and len(identity["dataset.fingerprint"]) == 64
