"""The evaluation table (``mp-ray evaluate``) and the behaviour report (``mp-ray lds``) read
the store's test rows one block at a time (:mod:`checked_reads`) and give the figures of
the whole test split read at once.

The store is a real one: breast_cancer cut to 100 points, 60 Bernoulli(½) rows in three
blocks, trained in this process (no Ray); the methods are the baselines (no predictor)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zarr
from checked_reads import CheckedReadsStore
from in_process_store import train_in_process

from mp_ray.baselines import FullDataModel, InfluenceFunction
from mp_ray.config import ExperimentConfig, parse_experiment
from mp_ray.data import load_dataset
from mp_ray.evaluation.report import behaviour_report
from mp_ray.learners import make_learner
from mp_ray.method_outputs import ParameterOutputs
from mp_ray.predictor.evaluation import evaluate_on_store, evaluation_table
from mp_ray.scores import lds
from mp_ray.store.identity import MODELS_UNREAD, SEEDED_UNREAD
from mp_ray.store.rows import TEST, Rows, row_splits
from mp_ray.store_baselines import MaskRidge, MeanParams, fit_store_baselines


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> ExperimentConfig:
    """The experiment, its store trained."""
    root = tmp_path_factory.mktemp("streamed")
    config = parse_experiment(
        {
            "seed": 4,
            "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 100},
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-8},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": str(root / "bc.zarr"), "n_rows": 60, "block_rows": 20},
            "splits": {"test_fraction": 0.4},
        }
    )
    train_in_process(config)
    return config


def whole_test_split(config: ExperimentConfig) -> Rows:
    """The store's non-degenerate test rows, every array read whole with plain Zarr."""
    group = zarr.open_group(config.store.uri, mode="r")
    store = CheckedReadsStore.open(config.store.uri)
    rows = np.arange(store.spec.n_rows)
    degenerate = group["metrics"][:][:, store.spec.metric_names.index("degenerate")] != 0
    splits = config.splits
    test = rows[(row_splits(store, rows, splits.val_fraction, splits.test_fraction) == TEST)]
    test = test[~degenerate[test]]
    return Rows(test, group["masks"][:][test], group["params"][:][test], group["outputs"][:][test])


def checked_store(config: ExperimentConfig, unread: tuple[str, ...]) -> CheckedReadsStore:
    fingerprint = load_dataset(config.dataset).fingerprint
    return CheckedReadsStore.open_for(config, fingerprint, unread, complete=True)


def assert_same_rows(found: list[dict], expected: list[dict]) -> None:
    assert [set(row) for row in found] == [set(row) for row in expected]
    for got, want in zip(found, expected, strict=True):
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key
            else:
                assert got[key] == value, key


def test_the_evaluation_table_streams_the_test_rows(config):
    store = checked_store(config, MODELS_UNREAD)
    data = load_dataset(config.dataset)
    learner = make_learner(config.learner, data.X_train, data.y_train, data.n_classes)
    table = evaluate_on_store(config, {}, data, learner, store)

    whole = whole_test_split(config)
    assert len(whole) >= 3
    assert {"masks", "params", "metrics"} <= store.read_arrays()
    assert {start // 20 for name, start, _ in store.reads if name == "masks"} == {0, 1, 2}
    mean, ridge = fit_store_baselines(
        store, config.splits.val_fraction, config.splits.test_fraction
    )
    methods = {
        MeanParams.name: mean,
        MaskRidge.name: ridge,
        FullDataModel.name: FullDataModel(learner),
        InfluenceFunction.name: InfluenceFunction(learner),
    }
    expected = evaluation_table(learner, methods, whole, data)  # all test rows at once
    assert_same_rows(table, expected)
    assert table[0]["rows"] == len(whole)


def test_the_behaviour_report_streams_the_test_rows(config):
    store = checked_store(config, SEEDED_UNREAD)
    report = behaviour_report(config, None, None, n_loo=4, n_counterfactual=0, store=store)

    whole = whole_test_split(config)
    assert report.info["test_rows"] == len(whole)
    assert {"masks", "outputs", "metrics"} <= store.read_arrays()
    data = load_dataset(config.dataset)
    learner = make_learner(config.learner, data.X_train, data.y_train, data.n_classes)
    mean, ridge = fit_store_baselines(
        store, config.splits.val_fraction, config.splits.test_fraction
    )
    baselines = (mean, ridge, FullDataModel(learner), InfluenceFunction(learner))
    rows = {row["method"]: row for row in report.table}
    assert list(rows) == [method.name for method in baselines]
    for method in baselines:  # the LDS of every test row's outputs predicted at once
        outputs = ParameterOutputs(method, learner, data.X_test, data.y_test)
        score = lds(outputs, whole.masks, whole.outputs)
        found = rows[method.name]
        assert found["lds_defined"] == score.defined
        if math.isnan(score.mean):
            assert math.isnan(found["lds"])
        else:
            assert found["lds"] == pytest.approx(score.mean, rel=1e-9)
    assert not math.isnan(rows[InfluenceFunction.name]["lds"])
