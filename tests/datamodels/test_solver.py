"""The batched Lasso and the λ path against scikit-learn, target by target, and the Gram
matrix's pieces (block sums, products, the step's eigenvalue estimate) against dense
NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

from mp_ray.config import DatamodelsConfig, SamplerConfig
from mp_ray.datamodels.fit import fit_datamodels
from mp_ray.datamodels.gram import add_gram
from mp_ray.datamodels.solver import Moments, duality_gap, lasso, lipschitz
from mp_ray.datamodels.sums import Sums
from mp_ray.sampling import make_sampler


def _problem(m: int, n: int, targets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bernoulli(½) masks (m, n), point 0 in every subset (a constant column), and outputs
    (m, T) sparse-linear in the masks plus noise."""
    masks = make_sampler(SamplerConfig(kind="bernoulli", alpha=0.5), n, seed).masks(np.arange(m))
    masks[:, 0] = True
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(n, targets)) * (rng.random((n, targets)) < 0.2)
    return masks, masks @ weights + rng.normal(scale=2.0, size=(m, targets))


def _moments(masks: np.ndarray, outputs: np.ndarray) -> Moments:
    """The Lasso moments of ``outputs`` on the standardised ``masks``, from their sums."""
    sums = Sums.zeros(masks.shape[1], torch.zeros(outputs.shape[1], dtype=torch.float64), True)
    sums.add(masks, outputs)
    rows = sums.centred()
    return rows.moments(rows.standardisation())


def _sklearn_scaled(masks: np.ndarray) -> np.ndarray:
    return StandardScaler().fit_transform(masks.astype(float))


def test_gram_sums_by_blocks_and_its_products_equal_dense_numpy():
    masks, outputs = _problem(300, 50, 2)
    total = torch.zeros(50, 50, dtype=torch.float64)
    for window in (masks[:120], masks[120:]):  # blocks of 7 columns: ragged last block
        add_gram(total, torch.as_tensor(window), block=7)
    gram = masks.astype(np.float64).T @ masks
    np.testing.assert_array_equal(total.numpy(), gram)
    # The standardised Gram matrix as products, and the step's eigenvalue estimate.
    scaled = _sklearn_scaled(masks)
    dense = scaled.T @ scaled / len(masks)
    moments = _moments(masks, outputs)
    vectors = np.random.default_rng(3).normal(size=(50, 4))
    product = (moments.gram @ torch.as_tensor(vectors)).numpy()
    np.testing.assert_allclose(product, dense @ vectors, rtol=1e-10, atol=1e-12)
    largest = np.linalg.eigvalsh(dense)[-1]
    assert largest <= lipschitz(moments) <= largest * (1 + 1e-5)


def test_batched_lasso_equals_sklearn_per_target():
    masks, outputs = _problem(600, 80, 4)
    moments = _moments(masks, outputs)
    lam = moments.lambda_max() * torch.tensor([0.5, 0.1, 0.02, 0.005], dtype=torch.float64)
    result = lasso(moments, lam, tol=1e-12, max_iter=50_000)
    assert bool(result.converged.all())
    X_sk = _sklearn_scaled(masks)
    for t in range(4):
        reference = Lasso(alpha=float(lam[t]), tol=1e-12, max_iter=100_000).fit(X_sk, outputs[:, t])
        ours = result.weights[:, t].numpy()
        assert np.linalg.norm(ours - reference.coef_) <= 1e-4 * np.linalg.norm(reference.coef_)
        assert ours[0] == 0.0  # the constant column carries nothing
    gaps = duality_gap(moments, result.weights, lam)
    assert bool((gaps >= -1e-12).all()) and float(gaps.max()) < 1e-9


def test_lambda_max_gives_zero_weights_and_warm_start_is_respected():
    masks, outputs = _problem(300, 40, 3)
    moments = _moments(masks, outputs)
    lam = moments.lambda_max()
    assert float(lasso(moments, lam).weights.abs().max()) == 0.0
    # From a solution, a solve at the same λ stops at the first check.
    exact = lasso(moments, 0.1 * lam, tol=1e-12, max_iter=50_000).weights
    assert lasso(moments, 0.1 * lam, start=exact, tol=1e-8).iterations == 0


def _sklearn_path_mse(X_train, y_train, X_val, y_val, lam: float) -> float:
    model = Lasso(alpha=lam, tol=1e-12, max_iter=100_000).fit(X_train, y_train)
    return float(np.mean((model.predict(X_val) - y_val) ** 2))


def test_path_picks_the_validation_minimum_then_refits_on_all_rows():
    masks, outputs = _problem(700, 60, 3, seed=1)
    train, val = slice(0, 550), slice(550, 700)
    config = DatamodelsConfig(n_lambdas=12, lambda_min_ratio=1e-2, path_patience=12, tol=1e-12)
    config = config.model_copy(update={"max_iter": 50_000})
    models = fit_datamodels(masks[train], outputs[train], masks[val], outputs[val], config)

    scaler = StandardScaler().fit(masks[train].astype(float))
    X_train, X_val = scaler.transform(masks[train]), scaler.transform(masks[val])
    for t in range(3):
        path = [
            _sklearn_path_mse(X_train, outputs[train, t], X_val, outputs[val, t], lam)
            for lam in models.lambdas[:, t]
        ]
        np.testing.assert_allclose(models.val_path[:, t], path, rtol=1e-6)
        assert models.lam[t] == models.lambdas[int(np.argmin(path)), t]
        assert models.val_mse[t] == pytest.approx(min(path), rel=1e-6)
        # The refit: scikit-learn's Lasso at the chosen λ on train + validation rows.
        scaler_all = StandardScaler().fit(masks.astype(float))
        reference = Lasso(alpha=models.lam[t], tol=1e-12, max_iter=100_000)
        reference.fit(scaler_all.transform(masks), outputs[:, t])
        raw = reference.coef_ / scaler_all.scale_
        assert np.linalg.norm(models.weights[t] - raw) <= 1e-4 * np.linalg.norm(raw)
        bias = reference.intercept_ - raw @ scaler_all.mean_
        assert models.bias[t] == pytest.approx(bias, rel=1e-5, abs=1e-6)
        predicted = models.outputs(masks[:5])[:, t]
        expected = reference.predict(scaler_all.transform(masks[:5]))
        np.testing.assert_allclose(predicted, expected, rtol=1e-5)  # float32 weights


def test_early_exit_keeps_the_best_lambda_seen():
    masks, outputs = _problem(600, 60, 8, seed=2)
    config = DatamodelsConfig(n_lambdas=25, path_patience=2)
    models = fit_datamodels(masks[:500], outputs[:500], masks[500:], outputs[500:], config)
    left = np.isnan(models.val_path)
    assert left.any(), "with patience 2 some targets leave the path early"
    assert np.all(models.val_mse == np.nanmin(models.val_path, axis=0))


def test_bad_input_is_named():
    masks, outputs = _problem(100, 20, 2)
    config = DatamodelsConfig()
    with pytest.raises(ValueError, match="same m"):
        fit_datamodels(masks, outputs[:50], masks, outputs, config)
    broken = outputs.copy()
    broken[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_datamodels(masks, broken, masks, outputs, config)
    models = fit_datamodels(masks[:80], outputs[:80], masks[80:], outputs[80:], config)
    with pytest.raises(ValueError, match=r"masks must have shape \(B, 20\)"):
        models.outputs(masks[:, :10])
