"""What a fit streams from the store: the training moments (one pass, merged block by block,
giving the coordinates that sums of θ and θ² over all training rows at once gave) and each
Train worker's share (every training row once per pass, in an order drawn from the seed and
the pass, resumable at any minibatch, one block at a time)."""

from __future__ import annotations

import numpy as np
import pytest
from checked_reads import CheckedReadsStore

from mp_ray.config import DatasetConfig, LearnerConfig, SplitsConfig
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner
from mp_ray.predictor import OutputScaler, TargetScaler
from mp_ray.predictor.moments import TrainingMoments, training_moments
from mp_ray.predictor.shard import Shard
from mp_ray.retrain.block import CLASSIFICATION_METRICS
from mp_ray.store import ExperimentStore, StoreSpec
from mp_ray.store.rows import TRAIN, VAL, read_split

SPLITS = SplitsConfig(val_fraction=0.2, test_fraction=0.1)


@pytest.fixture(scope="module")
def wine_store(tmp_path_factory):
    """A store of 70 wine models on random subsets (blocks of 16 rows; every ninth row
    degenerate) and the learner's output metric."""
    wine = load_dataset(DatasetConfig(source="sklearn", name="wine"))
    learner = make_learner(LearnerConfig(kind="logistic", tol=1e-6), wine.X_train, wine.y_train, 3)
    masks = np.random.default_rng(0).random((70, wine.n_train)) < 0.6
    params = learner.fit_batch(masks).numpy()
    spec = StoreSpec(
        n_rows=70,
        n_train=wine.n_train,
        n_params=params.shape[1],
        n_targets=1,
        metric_names=CLASSIFICATION_METRICS,
        block_rows=16,
        dataset_fingerprint=wine.fingerprint,
        dataset_name="wine",
        root_seed=3,
        learner={"kind": "logistic"},
        sampler={"kind": "bernoulli", "alpha": 0.6},
    )
    uri = str(tmp_path_factory.mktemp("moments") / "wine.zarr")
    store = ExperimentStore.create_or_open(uri, spec)
    for block in range(spec.n_blocks):
        rows = store.block_rows(block)
        metrics = np.zeros((len(rows), len(CLASSIFICATION_METRICS)), np.float32)
        metrics[:, CLASSIFICATION_METRICS.index("degenerate")] = rows % 9 == 0
        store.write_block(
            block,
            {
                "masks": masks[rows],
                "params": params[rows],
                "outputs": np.zeros((len(rows), 1)),
                "metrics": metrics,
                "seeds": rows,
            },
        )
    return uri, learner.output_metric()


def test_streamed_moments_give_the_coordinates_of_whole_sums(wine_store):
    uri, metric = wine_store
    store = CheckedReadsStore.open(uri)
    moments = training_moments(store, SPLITS, metric)
    # One pass: each block's parameters read once, never two blocks in one read.
    params_reads = [start // 16 for name, start, _ in store.reads if name == "params"]
    assert params_reads == list(range(store.n_blocks))

    train = read_split(store, list(range(store.n_blocks)), TRAIN, 0.2, 0.1)
    params = train.params.astype(np.float64)
    count = len(params)
    assert moments.count == count > 30
    np.testing.assert_allclose(moments.center, train.masks.mean(axis=0), rtol=1e-12)
    # The standardisation as it was computed before: from Σθ and Σθ² over all rows at once.
    mean = params.sum(axis=0) / count
    std = np.sqrt(np.maximum((params**2).sum(axis=0) / count - mean**2, 0.0))
    standardised = moments.scaler("standardised")
    assert isinstance(standardised, TargetScaler)
    np.testing.assert_allclose(standardised.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(standardised.std, std, rtol=1e-10)
    # The output coordinates as before: from Σθ and Σ‖θ_j · L‖², less the mean's energy.
    factor = OutputScaler.factor_of(metric.numpy())
    energy = OutputScaler.energy(params, factor) / count - OutputScaler.energy(mean[None], factor)
    outputs = moments.scaler("outputs")
    assert isinstance(outputs, OutputScaler)
    np.testing.assert_allclose(outputs.mean, mean, rtol=1e-10)
    assert outputs.scale == pytest.approx(np.sqrt(energy / len(mean)), rel=1e-10)
    np.testing.assert_array_equal(moments.scaler("raw").std, np.ones(len(mean)))


def test_merging_is_the_moments_of_the_rows_together():
    rng = np.random.default_rng(1)
    params = rng.normal(5.0, 0.01, size=(50, 6))  # a large mean: sums of squares would cancel
    masks = rng.random((50, 9)) < 0.5
    factor = np.tril(rng.normal(size=(3, 3))) + 3 * np.eye(3)
    whole = TrainingMoments.of_rows(masks, params, factor)
    parts = TrainingMoments.empty(6, 9, factor)
    for piece in np.array_split(np.arange(50), [7, 8, 30]):
        parts = parts.merged(TrainingMoments.of_rows(masks[piece], params[piece], factor))
    assert parts.count == 50
    np.testing.assert_allclose(parts.mean, whole.mean, rtol=1e-14)
    np.testing.assert_allclose(parts.squares, whole.squares, rtol=1e-10)
    np.testing.assert_array_equal(parts.mask_total, masks.sum(axis=0))
    assert parts.output_energy == pytest.approx(whole.output_energy, rel=1e-10)
    np.testing.assert_allclose(parts.squares / 50, params.var(axis=0), rtol=1e-10)
    without = TrainingMoments.empty(6, 9, None)
    with pytest.raises(ValueError, match="zero rows"):
        without.scaler("standardised")
    # No output metric: the output coordinates fall back to the standardisation.
    assert isinstance(without.merged(whole).scaler("standardised"), TargetScaler)


def test_a_pass_streams_each_training_row_once_and_resumes_at_any_minibatch(wine_store):
    store = CheckedReadsStore.open(wine_store[0])
    shard = Shard.of_worker(store, SPLITS, rank=1, world=2)  # blocks 1 and 3
    assert shard.blocks == [1, 3]
    assert store.read_arrays() == {"metrics"}  # counted from the metrics alone
    train = read_split(store, [1, 3], TRAIN, 0.2, 0.1)
    assert shard.n_train == len(train) and shard.n_val == len(
        read_split(store, [1, 3], VAL, 0.2, 0.1)
    )

    store.reads.clear()
    batches = list(shard.batches(seed=4, epoch=0, batch=5))
    assert [len(b) for b in batches[:-1]] == [5] * (len(batches) - 1) and len(batches[-1]) <= 5
    streamed = np.concatenate([b.index for b in batches])
    assert sorted(streamed.tolist()) == train.index.tolist()
    for part in batches:  # each row with its own mask and parameters
        at = np.searchsorted(train.index, part.index)
        np.testing.assert_array_equal(part.params, train.params[at])
        np.testing.assert_array_equal(part.masks, train.masks[at])
    assert sorted(start // 16 for name, start, _ in store.reads if name == "params") == [1, 3]

    again = np.concatenate([b.index for b in shard.batches(seed=4, epoch=0, batch=5)])
    np.testing.assert_array_equal(again, streamed)
    other = np.concatenate([b.index for b in shard.batches(seed=4, epoch=1, batch=5)])
    assert (
        sorted(other.tolist()) == sorted(streamed.tolist()) and other.tolist() != streamed.tolist()
    )
    for start in range(len(batches)):
        resumed = list(shard.batches(seed=4, epoch=0, batch=5, start=start))
        assert [b.index.tolist() for b in resumed] == [b.index.tolist() for b in batches[start:]]

    validation = list(shard.validation_rows())
    assert (
        np.concatenate([v.index for v in validation]).tolist()
        == read_split(store, [1, 3], VAL, 0.2, 0.1).index.tolist()
    )
