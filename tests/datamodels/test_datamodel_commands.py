"""Datamodels fitted on a real retraining store through the commands users run, and checked
against retraining on subsets and removals they never saw."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mp_ray.apps.context import app_context
from mp_ray.cli import app
from mp_ray.config import load_experiment
from mp_ray.datamodels.apps import brittleness, nearest_targets, removal_effect, support
from mp_ray.datamodels.storage import DatamodelsNotFoundError, read_datamodels
from mp_ray.method_outputs import ParameterOutputs
from mp_ray.retrain import run_retrain
from mp_ray.store import ExperimentStore

runner = CliRunner()


@pytest.fixture(scope="module")
def bernoulli_config(ray_session, tmp_path_factory):
    """A Bernoulli(½) store of 2,000 models on 100 breast_cancer points, with its config
    (datamodels fitted in shards of 30 targets)."""
    root = tmp_path_factory.mktemp("datamodels")
    data = {
        "seed": 3,
        "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 100},
        "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-6},
        "sampler": {"kind": "bernoulli", "alpha": 0.5},
        "store": {"uri": str(root / "dm.zarr"), "n_rows": 2000, "block_rows": 500},
        "retrain": {"num_actors": 2},
        "datamodels": {"targets_per_task": 30},  # the 85 targets in three Ray tasks
    }
    path = root / "dm.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_experiment(path)
    run_retrain(config)
    return path, config


@pytest.fixture(scope="module")
def fitted_datamodels(bernoulli_config):
    path, config = bernoulli_config
    result = runner.invoke(app, ["datamodels", "-c", str(path)])
    assert result.exit_code == 0, result.output
    # Not a terminal: plain progress lines, the last one with every target done.
    assert re.search(
        r"^datamodels: (\d+)/\1 targets, [\d.,]+ targets/s, done in ", result.stderr, re.M
    )
    assert "underdetermined" not in result.stderr  # 2,000 rows for 100 points
    store = ExperimentStore.open(config.store.uri)
    return read_datamodels(store)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_datamodels_command_writes_the_store_and_scores_held_out_rows(
    bernoulli_config, fitted_datamodels
):
    models, meta = fitted_datamodels
    assert models.weights.shape == (meta["n_targets"], 100)
    assert meta["sampler"]["alpha"] == 0.5 and meta["rows"]["test"] > 100
    assert meta["shards"] == 3 and meta["solver"] == "moments"
    assert len(meta["peak_rss_mib"]) == 3 and min(meta["peak_rss_mib"]) > 0
    # Measured 0.93 on this store: predicted outputs track retraining on unseen subsets.
    assert meta["test_lds"] > 0.8
    assert np.all(models.lam > 0) and np.all(models.val_mse > 0)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_applications_against_retraining(bernoulli_config, fitted_datamodels):
    _, config = bernoulli_config
    models, _ = fitted_datamodels
    context = app_context(config)
    data = context.dataset
    retrained = ParameterOutputs(context.retrained, context.learner, data.X_test, data.y_test)
    full = np.ones((1, 100), dtype=bool)

    # Removing each target's 5 top supporters: the predicted and retrained changes agree.
    targets = np.arange(0, models.n_targets, 3)
    removal = np.ones((len(targets), 100), dtype=bool)
    predicted = np.empty(len(targets))
    for row, target in enumerate(targets):
        supporters = support(models, int(target), 5).supporters
        removal[row, supporters] = False
        predicted[row] = removal_effect(models, supporters)[target]
    changes = retrained.outputs(removal) - retrained.outputs(full)
    actual = changes[np.arange(len(targets)), targets]
    assert np.corrcoef(predicted, actual)[0, 1] > 0.8  # measured 0.97
    assert np.all(predicted <= 0)  # removing supporters lowers the predicted margin

    flips = brittleness(models, retrained, np.arange(models.n_targets), max_k=40)
    predicted_flip = flips.predicted_k > 0
    assert predicted_flip.sum() >= 10
    # Measured: 66% of predicted flips are real, and the rest end near the boundary (every
    # retrained margin below 45% of its full-data value).
    assert flips.confirmed.sum() >= 0.5 * predicted_flip.sum()
    ratio = flips.retrained_margin[predicted_flip] / flips.full_margin[predicted_flip]
    assert np.all(ratio < 0.6)

    neighbours, similarity = nearest_targets(models, 0, 5)
    assert 0 not in neighbours and np.all(np.diff(similarity) <= 0)

    with pytest.raises(ValueError, match="out of range"):
        removal_effect(models, [3, 100])
    with pytest.raises(ValueError, match="more than once"):
        removal_effect(models, [3, 3])


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_lds_table_and_explain(bernoulli_config, fitted_datamodels, tmp_path):
    path, _ = bernoulli_config
    out = tmp_path / "lds.json"
    result = runner.invoke(app, ["lds", "-c", str(path), "--loo", "20", "--output", str(out)])
    assert result.exit_code == 0, result.output
    # 20 + 30 removals retrained, each set with the full-data model.
    assert re.search(r"^lds retraining: 52/52 models, .*, done in ", result.stderr, re.M)
    table = {row["method"]: row for row in json.loads(out.read_text())["table"]}
    assert set(table) == {
        "datamodels",
        "mean θ",
        "ridge on the mask",
        "full data θ(D)",
        "influence functions",
    }
    assert table["datamodels"]["lds"] > 0.8  # measured 0.93 (influence functions 0.88)
    assert table["ridge on the mask"]["lds"] > 0.8
    # A constant prediction ranks nothing: its correlations are undefined (null, printed as
    # dashes), over no target, and the table says so.
    correlations = ("lds", "loo", "cf_pearson", "cf_spearman")
    for method in ("mean θ", "full data θ(D)"):
        assert all(table[method][key] is None for key in correlations)
        assert table[method]["lds_defined"] == table[method]["loo_defined"] == 0
    assert re.search(r"^mean θ +– +– +– +– +[\d.]+$", result.stdout, re.M)
    assert re.search(
        r"^LDS: mean over .* of \d+: .*mean θ 0, full data θ\(D\) 0", result.stdout, re.M
    )
    assert table["influence functions"]["loo"] > 0.8  # first order is exact-ish for one point
    assert table["datamodels"]["cf_pearson"] > 0.8  # measured 0.98

    result = runner.invoke(app, ["explain", "-c", str(path), "--target", "2", "--top", "3"])
    assert result.exit_code == 0, result.output
    assert "supporters:" in result.output and "nearest targets:" in result.output
    result = runner.invoke(app, ["explain", "-c", str(path), "--target", "999"])
    assert result.exit_code == 2 and "target 999 out of range" in result.output


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_missing_or_torn_datamodels_are_named(bernoulli_config, fitted_datamodels):
    _, config = bernoulli_config
    store = ExperimentStore.open(config.store.uri, read_only=False)
    with pytest.raises(DatamodelsNotFoundError, match="no datamodels named 'other'"):
        read_datamodels(store, "other")
    # A write interrupted before its metadata is not read as datamodels.
    store.group.require_group("datamodels").create_group("torn")
    with pytest.raises(DatamodelsNotFoundError, match="not completely written"):
        read_datamodels(store, "torn")


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_datamodels_on_fewer_rows_than_points_warn_before_working(ray_session, tmp_path):
    data = {
        "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 100},
        "learner": {"kind": "logistic", "C": 1.0},
        "sampler": {"kind": "bernoulli", "alpha": 0.5},
        "store": {"uri": str(tmp_path / "few.zarr"), "n_rows": 60, "block_rows": 60},
        "retrain": {"num_actors": 1},
    }
    path = tmp_path / "few.yaml"
    path.write_text(yaml.safe_dump(data))
    run_retrain(load_experiment(path))
    result = runner.invoke(app, ["datamodels", "-c", str(path)])
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("warning: ") and "for 100 points" in first
    assert "underdetermined" in first
