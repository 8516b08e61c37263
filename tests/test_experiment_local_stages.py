"""The stages an :class:`~mp_ray.Experiment` runs here, without Ray — the evaluation table,
the behaviour report and the distilled datamodel — work on the experiment's own dataset and
learner, loaded once, and give the figures of the stage functions called on the config.

The store is a real one: breast_cancer cut to 100 points, 60 Bernoulli(½) rows trained in
this process."""

from __future__ import annotations

import json

import pytest
from in_process_store import train_in_process

from mp_ray import Experiment
from mp_ray.config import parse_experiment
from mp_ray.evaluation.report import behaviour_report
from mp_ray.predictor.evaluation import evaluate_on_store


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Experiment:
    root = tmp_path_factory.mktemp("local")
    config = parse_experiment(
        {
            "seed": 2,
            "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 100},
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-8},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": str(root / "bc.zarr"), "n_rows": 60, "block_rows": 30},
            "splits": {"test_fraction": 0.4},
            "distill": {
                "groups_per_class": 2,
                "synthetic_per_group": 1,
                "iterations": 30,
                "holdout_removals": 4,
            },
        }
    )
    experiment = Experiment(config)
    train_in_process(config, experiment.dataset)
    return experiment


def figures(table: list[dict]) -> str:
    """The table's figures as text (NaN equal to NaN), its timings left out."""
    return json.dumps([{k: v for k, v in row.items() if k != "seconds"} for row in table])


def test_evaluate_and_lds_give_the_stage_functions_figures(experiment):
    with pytest.raises(ValueError, match="no predictor yet"):
        experiment.evaluate()
    table = experiment.evaluate({})
    assert figures(table) == figures(evaluate_on_store(experiment.config, {}))
    report = experiment.lds(datamodels=None, n_loo=4, n_counterfactual=0)
    expected = behaviour_report(experiment.config, {}, None, n_loo=4, n_counterfactual=0)
    assert figures(report.table) == figures(expected.table)
    assert report.info["test_rows"] == expected.info["test_rows"] >= 3


def test_distill_works_on_the_experiments_learner(experiment):
    model, report = experiment.distill()
    assert model.learner is experiment.learner
    assert "store test rows" in report.table
    saved = experiment.distilled()
    assert saved.learner is experiment.learner and saved.eta == model.eta
    report = experiment.lds(datamodels=None, distilled=True, n_loo=4, n_counterfactual=0)
    assert report.table[0]["method"] == "distilled datamodel"
