"""`mp-ray inspect` lists what a store holds besides its rows — datamodels, the distilled
datamodel, saved data values — complete or not, with their key facts, as text and JSON.

The store is a real one (breast_cancer cut to 100 points, 60 Bernoulli(½) rows trained in
this process, no Ray) and every artifact is written by the code the commands run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from in_process_store import train_in_process
from typer.testing import CliRunner

from mp_ray.apps import RetrainedModels, Utility
from mp_ray.apps.valuation import leave_one_out
from mp_ray.cli import app
from mp_ray.config import ExperimentConfig, parse_experiment
from mp_ray.data import load_dataset
from mp_ray.datamodels.job import fit_from_store
from mp_ray.distill import run_distill
from mp_ray.learners import make_learner
from mp_ray.retrain import BlockTrainer
from mp_ray.store import ExperimentStore, format_artifacts

runner = CliRunner()


def experiment(root: Path) -> ExperimentConfig:
    return parse_experiment(
        {
            "seed": 3,
            "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 100},
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-6},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": str(root / "bc.zarr"), "n_rows": 60, "block_rows": 30},
            "splits": {"test_fraction": 0.3},
            "distill": {
                "groups_per_class": 2,
                "synthetic_per_group": 1,
                "iterations": 30,
                "holdout_removals": 4,
            },
        }
    )


def inspect(uri: str, *options: str) -> str:
    result = runner.invoke(app, ["inspect", uri, *options])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ExperimentStore:
    """The store with its rows and nothing else yet."""
    config = experiment(tmp_path_factory.mktemp("inspect"))
    return train_in_process(config)


def test_a_store_of_rows_alone_has_no_artifacts(tmp_path):
    config = experiment(tmp_path)
    trainer = BlockTrainer(config, load_dataset(config.dataset))
    trainer.run_block(0)
    assert ExperimentStore.open(config.store.uri).artifacts.list() == []
    assert inspect(config.store.uri).splitlines()[-1] == "artifacts  none besides the rows"
    assert json.loads(inspect(config.store.uri, "--json"))["artifacts"] == []


def test_every_artifact_is_listed_with_its_facts(store):
    config = experiment(Path(store.uri).parent)
    data = load_dataset(config.dataset)
    summary = fit_from_store(config)
    run_distill(config, data)
    learner = make_learner(config.learner, data.X_train, data.y_train, data.n_classes)
    values = leave_one_out(Utility(RetrainedModels(learner), data.X_val, data.y_val, "neg_loss"))
    values.params.update(dataset_fingerprint=data.fingerprint, models="retrain")
    values.to_store(store, "loo")
    # A valuation whose write stopped before its metadata (arrays only), and a group no
    # mp-ray command writes.
    root = zarr.open_group(store.uri, mode="r+")
    root.require_group("valuation/cut").create_array("values", data=np.zeros(data.n_train))
    root.require_group("scratch")

    found = {entry["group"]: entry for entry in ExperimentStore.open(store.uri).artifacts.list()}
    assert list(found) == [
        "datamodels/default",
        "distill",
        "valuation/cut",
        "valuation/loo",
        "scratch",
    ]
    datamodels, distilled = found["datamodels/default"], found["distill"]
    assert datamodels["kind"] == "datamodels" and datamodels["complete"]
    assert datamodels["facts"]["n_targets"] == summary["n_targets"] == len(data.y_test)
    assert datamodels["facts"]["test_lds_targets"] == summary["test_lds_targets"]
    lam = datamodels["facts"]["lambda"]
    assert 0 < lam["min"] <= lam["median"] <= lam["max"]
    assert distilled["kind"] == "distilled datamodel" and distilled["name"] is None
    assert distilled["complete"]
    assert distilled["facts"]["n_groups"] == 4 and distilled["facts"]["per_group"] == 1
    assert distilled["facts"]["objective"] == config.distill.objective
    loo = found["valuation/loo"]
    assert loo["complete"] and loo["facts"] == {
        "method": "leave_one_out",
        "n_evaluations": data.n_train + 1,
        "converged": True,
        "seconds": values.seconds,
        "metric": "neg_loss",
        "models": "retrain",
    }
    assert not found["valuation/cut"]["complete"] and found["valuation/cut"]["facts"] == {}
    assert found["scratch"]["kind"] == "unknown" and not found["scratch"]["complete"]

    text = inspect(store.uri)
    lines = text.splitlines()
    start = lines.index("artifacts  5 besides the rows")
    assert lines[start + 1 :] == format_artifacts(list(found.values())).splitlines()[1:]
    by_group = {line.split()[0]: line for line in lines[start + 1 :]}
    assert f"{summary['n_targets']} targets × 100 points" in by_group["datamodels/default"]
    assert "λ median" in by_group["datamodels/default"]
    defined = datamodels["facts"]["test_lds_targets"]
    assert f"the {defined} of {summary['n_targets']} targets" in by_group["datamodels/default"]
    assert "4 groups × 1 synthetic examples" in by_group["distill"]
    assert by_group["valuation/cut"].split()[1:4] == ["valuation", "incomplete", "no"]
    assert by_group["valuation/loo"].split(maxsplit=3)[1:] == [
        "valuation",
        "complete",
        "leave_one_out; metric neg_loss; 101 utility evaluations; converged; "
        "models from retraining",
    ]
    as_json = json.loads(inspect(store.uri, "--json"))
    assert [entry["group"] for entry in as_json["artifacts"]] == list(found)
    assert as_json["artifacts"][3]["facts"]["models"] == "retrain"
    assert "not an mp-ray artifact" in by_group["scratch"]
    assert as_json["rows_done"] == 60
