"""Baselines: the full-data model and first-order influence functions against retraining;
the mean θ and ridge on the mask, streamed from a store, against direct fits."""

from __future__ import annotations

import json
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from in_process_store import train_in_process
from sklearn.linear_model import Ridge

from mp_ray import baselines
from mp_ray.baselines import FullDataModel, InfluenceFunction
from mp_ray.config import DatasetConfig, LearnerConfig, SamplerConfig, parse_experiment
from mp_ray.data import load_dataset
from mp_ray.evaluation.compare import (
    Predicted,
    Removals,
    Truth,
    format_behaviour_table,
    score_method,
)
from mp_ray.learners import make_learner
from mp_ray.outputs import write_json
from mp_ray.predictor.evaluation import (
    evaluation_table,
    format_table,
    size_strata,
    within_size_correlations,
)
from mp_ray.sampling import make_sampler
from mp_ray.scores import relative_errors
from mp_ray.store.rows import TRAIN, VAL, Rows, read_split, split_blocks
from mp_ray.store_baselines import fit_mask_baselines, fit_store_baselines

FRACTIONS = (0.2, 0.2)  # the validation and test shares of the store rows (splits section)


@pytest.fixture(scope="module", params=["breast_cancer", "wine"])
def setting(request):
    data = load_dataset(DatasetConfig(source="sklearn", name=request.param))
    learner = make_learner(
        LearnerConfig(kind="logistic"), data.X_train, data.y_train, data.n_classes
    )
    return data, learner


def test_exact_and_conjugate_gradient_influence_agree(setting):
    data, learner = setting
    masks = make_sampler(SamplerConfig(kind="bernoulli", alpha=0.7), data.n_train, 0).masks(
        np.arange(4)
    )
    exact = InfluenceFunction(learner).predict(masks)
    cg = InfluenceFunction(learner, exact_max_dim=0).predict(masks)
    torch.testing.assert_close(cg, exact, rtol=1e-6, atol=1e-6)


def test_damped_influence_solves_with_the_hessian_plus_damping(setting):
    data, learner = setting
    d, damping = learner.n_params, 0.5
    rhs = torch.randn(3, d, generator=torch.Generator().manual_seed(0), dtype=learner.dtype)
    exact = InfluenceFunction(learner, damping=damping)
    eye = torch.eye(d, dtype=learner.dtype)
    full = torch.ones(d, data.n_train, dtype=torch.bool)
    hessian = learner.hvp(exact.theta.expand(d, -1), full, eye)
    expected = torch.linalg.solve(hessian + damping * eye, rhs.T).T
    torch.testing.assert_close(exact.solve(rhs), expected, rtol=1e-6, atol=1e-8)
    cg = InfluenceFunction(learner, exact_max_dim=0, damping=damping)
    torch.testing.assert_close(cg.solve(rhs), expected, rtol=1e-6, atol=1e-8)


def test_exact_influence_of_a_network_is_formed_in_chunks(monkeypatch):
    """A CNN's H_D (d = 746) is indefinite; formed from products in chunks of a few basis
    vectors, its damped (H_D + λI)⁻¹ equals a dense solve and, with λ past the smallest
    eigenvalue, conjugate gradients."""
    data = load_dataset(DatasetConfig(source="sklearn", name="digits"))
    config = LearnerConfig(
        kind="torch",
        dtype="float64",
        factory="mp_ray.learners.zoo:digits_cnn",
        factory_kwargs={"channels": 2},
        epochs=1,
        batch_size=64,
    )
    learner = make_learner(config, data.X_train[:100], data.y_train[:100], data.n_classes)
    d = learner.n_params
    floats = baselines.HVP_COPIES * learner.n_train * learner.loss_floats()
    monkeypatch.setattr(baselines, "HVP_CHUNK_BYTES", 100 * floats * learner.dtype.itemsize)
    eye = torch.eye(d, dtype=learner.dtype)
    hessian = InfluenceFunction(learner).hessian()  # 8 chunks of ≤ 100 products
    assert torch.equal(hessian, hessian.T)
    direct = learner.hvp(
        learner.fit_batch(torch.ones(1, 100, dtype=torch.bool)).expand(d, -1),
        torch.ones(d, 100, dtype=torch.bool),
        eye,
    )
    torch.testing.assert_close(hessian, 0.5 * (direct + direct.T), rtol=1e-9, atol=1e-12)
    lowest = float(torch.linalg.eigvalsh(hessian)[0])
    assert lowest < 0
    damping = 0.05 - lowest
    rhs = torch.randn(2, d, generator=torch.Generator().manual_seed(1), dtype=learner.dtype)
    expected = torch.linalg.solve(hessian + damping * eye, rhs.T).T
    exact = InfluenceFunction(learner, damping=damping)
    torch.testing.assert_close(exact.solve(rhs), expected, rtol=1e-6, atol=1e-9)
    cg = InfluenceFunction(learner, exact_max_dim=0, damping=damping, cg_tol=1e-10, cg_iter=2000)
    torch.testing.assert_close(cg.solve(rhs), expected, rtol=1e-5, atol=1e-7)


def test_influence_tracks_leave_one_out_retraining(setting):
    data, learner = setting
    masks = make_sampler(SamplerConfig(kind="leave_one_out"), data.n_train, 0).masks(
        np.arange(1, 41)
    )
    influence = InfluenceFunction(learner)
    actual_change = learner.fit_batch(masks) - influence.theta
    predicted_change = influence.predict(masks) - influence.theta
    cosine = torch.nn.functional.cosine_similarity(predicted_change, actual_change, dim=1)
    assert cosine.mean() > 0.95
    torch.testing.assert_close(FullDataModel(learner).predict(masks[:2])[1], influence.theta)


def test_evaluation_table_of_the_truth_and_of_the_baselines(setting):
    data, learner = setting
    masks = make_sampler(SamplerConfig(kind="uniform_size", min_size=30), data.n_train, 1).masks(
        np.arange(60)
    )
    rows = Rows(np.arange(60), masks, learner.fit_batch(masks).numpy())

    class Truth:
        def predict(self, masks):
            return torch.as_tensor(rows.params)

    methods = {"truth": Truth(), "full": FullDataModel(learner), "if": InfluenceFunction(learner)}
    table = evaluation_table(learner, methods, rows, data)
    by = {(row["method"], row["subset size"]): row for row in table}
    truth = by[("truth", "all")]
    assert truth["rows"] == 60
    assert truth["rel_error"] < 1e-6 and truth["agreement"] == 1.0 and truth["accuracy_gap"] == 0
    assert truth["loss_spearman"] == pytest.approx(1.0) and truth["nrmse"] < 1e-6
    # NRMSE (the ModelPred paper's): RMSE over all rows and coordinates / range of actual θ.
    full = FullDataModel(learner).predict(masks).numpy()
    rmse = np.sqrt(((full - rows.params) ** 2).mean())
    assert by[("full", "all")]["nrmse"] == pytest.approx(rmse / np.ptp(rows.params), rel=1e-5)
    assert sum(row["rows"] for row in table if row["method"] == "full") == 2 * 60
    # Influence functions beat the full-data model on parameters, most on large subsets.
    assert by[("if", "all")]["rel_error"] < by[("full", "all")]["rel_error"]
    full = by[("full", "all")]  # a constant prediction: its loss correlations are undefined
    assert np.isnan(full["loss_spearman"]) and full["loss_strata"] == 0 < full["strata"]
    text = format_table(table)
    assert "influence" not in text and "truth" in text
    full_line = next(line for line in text.splitlines() if line.startswith("full "))
    assert full_line.split()[-2:] == ["–", "–"]
    assert f"full all 0 of {full['strata']}" in text.splitlines()[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A Bernoulli(½) store of 1,200 models on 200 breast_cancer points, trained without
    Ray in 12 blocks of 100 rows."""
    config = parse_experiment(
        {
            "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 200},
            "learner": {"kind": "logistic", "C": 1.0, "tol": 1e-8},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {
                "uri": str(tmp_path_factory.mktemp("baselines") / "bc.zarr"),
                "n_rows": 1200,
                "block_rows": 100,
            },
        }
    )
    return train_in_process(config)


def test_streamed_baselines_equal_direct_fits_on_the_training_rows(store):
    mean, ridge = fit_store_baselines(store, *FRACTIONS)
    blocks = list(range(store.n_blocks))
    train, val = (read_split(store, blocks, split, *FRACTIONS) for split in (TRAIN, VAL))
    assert len(train) > 600 and len(val) > 150
    masks = np.ones((3, store.spec.n_train), dtype=bool)
    expected_mean = train.params.astype(float).mean(axis=0)
    np.testing.assert_allclose(mean.predict(masks), np.tile(expected_mean, (3, 1)))

    # Each strength tried is scikit-learn's ridge on the same rows, scored on validation.
    for alpha, error in ridge.val_errors.items():
        direct = Ridge(alpha=alpha, solver="svd").fit(train.masks, train.params.astype(float))
        expected = relative_errors(direct.predict(val.masks), val.params.astype(float)).mean()
        assert error == pytest.approx(expected, rel=1e-6)
        if alpha == ridge.alpha:
            np.testing.assert_allclose(ridge.weights, direct.coef_.T, rtol=0, atol=1e-6)
            np.testing.assert_allclose(ridge.bias, direct.intercept_, rtol=0, atol=1e-6)
    assert ridge.val_errors[ridge.alpha] == min(ridge.val_errors.values())
    # Linear in the mask already predicts far better than a constant.
    assert (
        ridge.val_errors[ridge.alpha]
        < 0.6 * relative_errors(mean.predict(val.masks).numpy(), val.params.astype(float)).mean()
    )


def test_baselines_read_the_store_one_block_at_a_time(store):
    n, d = store.spec.n_train, store.spec.n_params
    read = []

    def counted(split, blocks=None):
        for rows in split_blocks(store, split, *FRACTIONS, blocks):
            read.append((split, len(rows)))
            yield rows

    fit_mask_baselines(counted(TRAIN), counted(VAL), n, d)
    assert [split for split, _ in read] == [TRAIN] * store.n_blocks + [VAL] * store.n_blocks
    assert max(rows for _, rows in read) <= store.spec.block_rows

    def peak_bytes(blocks):
        tracemalloc.start()
        fit_mask_baselines(counted(TRAIN, blocks), counted(VAL, blocks), n, d)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    peak_bytes(range(2))  # first reads fill caches
    # Six times the rows, the same peak (up to the store's caches): keeping the extra 1,000
    # rows as read (bool masks, float32 parameters) would add 324 kB.
    assert peak_bytes(range(12)) < peak_bytes(range(2)) + 100_000


def test_a_constant_prediction_has_no_correlations(tmp_path):
    rng = np.random.default_rng(0)
    masks = rng.random((20, 8)) < 0.5
    removals = Removals(masks[:5], rng.normal(size=(5, 3)), np.arange(5) % 3)
    truth = Truth(rng.normal(size=(20, 3)), removals, removals)
    # Constant up to rounding, as one θ's outputs computed in batches of different sizes.
    constant = SimpleNamespace(outputs=lambda masks: 1 + 1e-15 * rng.normal(size=(len(masks), 3)))
    row = score_method(constant, Predicted(constant.outputs(masks)), truth)
    for key in ("lds", "loo", "cf_pearson", "cf_spearman"):
        assert np.isnan(row[key])  # undefined, not 0
    assert row["lds_defined"] == row["loo_defined"] == 0 and row["targets"] == 3
    same = SimpleNamespace(outputs=lambda masks: truth.outputs[: len(masks)])
    exact = score_method(same, Predicted(same.outputs(masks)), truth)
    assert exact["lds"] == pytest.approx(1.0) and exact["lds_defined"] == 3
    text = format_behaviour_table(
        [{"method": "constant", **row}, {"method": "exact", **exact}]
    ).splitlines()
    assert text[1].split()[1:5] == ["–"] * 4
    assert text[-2] == (
        "LDS: mean over the targets with a defined correlation, of 3: constant 0; "
        "all for the others"
    )
    write_json(tmp_path / "row.json", row)
    assert json.loads((tmp_path / "row.json").read_text())["lds"] is None


def test_loss_correlations_are_taken_among_subsets_of_nearly_one_size():
    """Under permutation prefixes the test loss falls with subset size for every model, so
    the correlation over all rows is high even for predictions that know nothing but size."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 200, 400)
    values = {  # losses that fall with size, predicted from size alone
        "loss_actual": -sizes / 200 + 0.05 * rng.standard_normal(400),
        "loss_predicted": -sizes / 200 + 0.05 * rng.standard_normal(400),
    }
    everything = np.ones(400, dtype=bool)
    overall = within_size_correlations(values, [np.arange(400)])
    assert overall["loss_spearman"] > 0.9
    strata = size_strata(sizes, everything)
    assert len(strata) == 20 and all(np.ptp(sizes[rows]) <= 20 for rows in strata)
    assert abs(within_size_correlations(values, strata)["loss_spearman"]) < 0.25
    values["loss_predicted"] = values["loss_actual"]  # right within every size too
    assert within_size_correlations(values, strata)["loss_spearman"] == pytest.approx(1.0)
