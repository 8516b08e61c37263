"""The store's streaming read path: row windows, and stages that read through it never ask
for more than one block of a row array in one read (:mod:`checked_reads`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from checked_reads import CheckedReadsStore

from mp_ray.config import SplitsConfig
from mp_ray.predictor.moments import training_moments
from mp_ray.retrain.block import CLASSIFICATION_METRICS
from mp_ray.store import ExperimentStore, StoreSpec, export_parquet, rows_table, summarize
from mp_ray.store import summary as summary_module
from mp_ray.store.rows import (
    TEST,
    TRAIN,
    held_out_blocks,
    read_split,
    row_splits,
    split_blocks,
)

RETRAIN_METRICS = CLASSIFICATION_METRICS  # the metrics of a retrained classification store
BLOCK = 5


def make_spec(metric_names: tuple[str, ...]) -> StoreSpec:
    return StoreSpec(
        n_rows=23,
        n_train=12,
        n_params=4,
        n_targets=3,
        metric_names=metric_names,
        block_rows=BLOCK,
        dataset_fingerprint="cd" * 32,
        dataset_name="toy",
        root_seed=5,
        learner={"kind": "logistic", "C": 1.0},
        sampler={"kind": "bernoulli", "alpha": 0.5},
    )


def write_store(uri: str, spec: StoreSpec, blocks: list[int]) -> None:
    """Fill ``blocks`` with random rows; every seventh row is degenerate."""
    store = ExperimentStore.create_or_open(uri, spec)
    for block in blocks:
        rows = store.block_rows(block)
        rng = np.random.default_rng(block)
        masks = rng.random((len(rows), spec.n_train)) < 0.5
        columns = {
            "subset_size": masks.sum(axis=1),
            "degenerate": (rows % 7 == 0).astype(float),
        }
        metrics = [columns.get(name, rng.random(len(rows))) for name in spec.metric_names]
        store.write_block(
            block,
            {
                "masks": masks,
                "params": rng.normal(size=(len(rows), spec.n_params)),
                "outputs": rng.normal(size=(len(rows), spec.n_targets)),
                "metrics": np.stack(metrics, axis=1),
                "seeds": rows * 10 + 1,
            },
        )


def whole_array_table(uri: str) -> pa.Table:
    """The rows table as it was built before streaming: whole arrays read at once."""
    group = zarr.open_group(uri, mode="r")
    spec = StoreSpec.from_json(dict(group.attrs["mp_ray"]))
    done = np.flatnonzero(group["done"][:])
    rows = np.concatenate(
        [np.arange(b * BLOCK, min((b + 1) * BLOCK, spec.n_rows)) for b in done]
    ).astype(np.int64)
    metrics = group["metrics"].get_orthogonal_selection((rows, slice(None)))
    columns = {
        "row": rows,
        "block": rows // BLOCK,
        "seed": group["seeds"].get_orthogonal_selection((rows,)),
        "subset_size": group["masks"][:][rows].sum(axis=1).astype(np.int64),
        **{name: metrics[:, j] for j, name in enumerate(spec.metric_names)},
    }
    return pa.table(columns)


def test_checked_store_fails_a_read_past_one_block(tmp_path):
    uri = str(tmp_path / "s.zarr")
    write_store(uri, make_spec(RETRAIN_METRICS), [0, 1, 2])
    store = CheckedReadsStore.open(uri)
    assert store.read("params", slice(5, 10)).shape == (5, 4)
    assert store.read("seeds", np.array([6, 9])).tolist() == [61, 91]
    with pytest.raises(AssertionError, match=r"masks rows \[0, 23\) spans more than one block"):
        store.read("masks")
    with pytest.raises(AssertionError, match=r"params rows \[3, 7\)"):
        store.read("params", slice(3, 7))
    with pytest.raises(AssertionError, match=r"metrics rows \[4, 6\)"):
        store.read("metrics", np.array([4, 5]))


def test_iter_rows_yields_windows_of_one_block(tmp_path):
    uri = str(tmp_path / "s.zarr")
    write_store(uri, make_spec(RETRAIN_METRICS), [0, 1, 3, 4])
    store = CheckedReadsStore.open(uri)
    group = zarr.open_group(uri, mode="r")

    windows = list(store.iter_rows(("masks", "seeds")))
    assert [w.rows.tolist() for w in windows] == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [15, 16, 17, 18, 19],
        [20, 21, 22],
    ]
    for window in windows:
        np.testing.assert_array_equal(window["masks"], group["masks"][:][window.rows])

    rows = np.array([22, 3, 4, 0, 9, 5, 6, 8])
    windows = list(store.iter_rows(("params",), rows, window=2))
    # Windows of 2 start at each block's first row: [0, 2), [2, 4), [4, 5), [5, 7), …
    assert [w.rows.tolist() for w in windows] == [[0], [3], [4], [5, 6], [8], [9], [22]]
    assert all(stop - start <= 2 for name, start, stop in store.reads if name == "params")
    gathered = store.read_rows(("params",), rows)
    assert gathered.rows.tolist() == sorted(rows.tolist())
    np.testing.assert_array_equal(gathered["params"], group["params"][:][np.sort(rows)])

    empty = store.read_rows(("masks", "metrics"), np.zeros(0, dtype=np.int64))
    assert empty["masks"].shape == (0, 12) and empty["masks"].dtype == bool
    assert empty["metrics"].shape == (0, 9) and empty["metrics"].dtype == np.float32
    with pytest.raises(ValueError, match=r"window must lie in \[1, 5\]"):
        next(store.iter_rows(window=6))
    with pytest.raises(KeyError, match="weights"):
        next(store.iter_rows(("weights",)))
    with pytest.raises(IndexError):
        next(store.iter_rows(rows=np.array([23])))


@pytest.mark.parametrize(
    "metric_names", [RETRAIN_METRICS, ("objective", "test_accuracy")], ids=["sizes", "no-sizes"]
)
def test_summary_and_parquet_stream_with_todays_figures(tmp_path, monkeypatch, metric_names):
    uri = str(tmp_path / "s.zarr")
    write_store(uri, make_spec(metric_names), [0, 1, 3, 4])
    store = CheckedReadsStore.open(uri)
    expected = whole_array_table(uri)

    summary = summarize(store)
    assert summary["rows_done"] == expected.num_rows == 18
    stats = summary_module._stats  # unchanged: the streamed columns must feed it today's values
    assert summary["subset_size"] == stats(expected["subset_size"].to_numpy())
    assert summary["metrics"] == {name: stats(expected[name].to_numpy()) for name in metric_names}
    table = rows_table(store)
    assert table.equals(expected) and table.schema == expected.schema

    path, before = tmp_path / "rows.parquet", tmp_path / "before.parquet"
    assert export_parquet(store, str(path)) == 18
    pq.write_table(expected, before)  # the export as it was written from whole arrays
    assert path.read_bytes() == before.read_bytes()
    monkeypatch.setattr(summary_module, "ROW_GROUP_ROWS", 7)  # three row groups of 18 rows
    assert export_parquet(store, str(path)) == 18
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    assert pq.read_table(path).equals(expected)

    # Subset sizes come from the metric where the store has it: no mask is read.
    assert ("masks" in store.read_arrays()) == ("subset_size" not in metric_names)


def test_empty_store_exports_an_empty_table_of_todays_columns(tmp_path):
    uri = str(tmp_path / "s.zarr")
    write_store(uri, make_spec(RETRAIN_METRICS), [])
    store = CheckedReadsStore.open(uri)
    expected = pa.table(
        {
            "row": np.zeros(0, np.int64),
            "block": np.zeros(0, np.int64),
            "seed": np.zeros(0, np.int64),
            **{name: np.zeros(0, np.float32) for name in RETRAIN_METRICS},
        }
    )
    assert rows_table(store).equals(expected)
    path = tmp_path / "rows.parquet"
    assert export_parquet(store, str(path)) == 0
    assert pq.read_table(path).equals(expected)
    assert summarize(store)["subset_size"] == {}


def test_training_moments_and_splits_read_one_block_at_a_time(tmp_path):
    uri = str(tmp_path / "s.zarr")
    spec = make_spec(RETRAIN_METRICS)
    write_store(uri, spec, list(range(spec.n_blocks)))
    store = CheckedReadsStore.open(uri)
    group = zarr.open_group(uri, mode="r")
    splits = SplitsConfig(val_fraction=0.2, test_fraction=0.2)

    rows = np.arange(spec.n_rows)
    degenerate = rows % 7 == 0
    codes = row_splits(store, rows, splits.val_fraction, splits.test_fraction)
    train = rows[(codes == TRAIN) & ~degenerate]
    params = group["params"][:][train].astype(np.float64)

    moments = training_moments(store, splits, None)
    scaler = moments.scaler("standardised")
    assert moments.count == len(train) > 0
    np.testing.assert_allclose(moments.center, group["masks"][:][train].mean(axis=0))
    np.testing.assert_allclose(scaler.mean, params.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(scaler.std, params.std(axis=0), rtol=1e-6)

    blocks = list(split_blocks(store, TRAIN, splits.val_fraction, splits.test_fraction))
    assert len(blocks) == spec.n_blocks
    assert np.concatenate([part.index for part in blocks]).tolist() == train.tolist()
    test = read_split(store, [4, 0, 2], TEST, splits.val_fraction, splits.test_fraction, True)
    expected = [r for b in (4, 0, 2) for r in store.block_rows(b) if codes[r] == TEST]
    assert test.index.tolist() == [r for r in expected if not degenerate[r]]
    np.testing.assert_array_equal(test.outputs, group["outputs"][:][test.index])
    assert store.read_arrays() == {"masks", "params", "outputs", "metrics"}


@pytest.mark.parametrize("cap", [1, 4, 6, None])
def test_held_out_rows_are_the_first_test_rows_up_to_the_cap(tmp_path, cap):
    """``splits.max_test_rows`` keeps the first test rows in row order, one block at a time."""
    uri = str(tmp_path / "held_out.zarr")
    write_store(uri, make_spec(RETRAIN_METRICS), [0, 1, 2, 3, 4])
    store = CheckedReadsStore.open(uri)
    splits = SplitsConfig(val_fraction=0.3, test_fraction=0.4, max_test_rows=cap)
    every = read_split(store, list(range(store.n_blocks)), TEST, 0.3, 0.4, with_outputs=True)
    assert len(every) > 6  # the caps below cut it
    parts = list(held_out_blocks(store, splits, with_outputs=True))
    kept = len(every) if cap is None else cap
    assert sum(len(part) for part in parts) == kept
    np.testing.assert_array_equal(np.concatenate([p.index for p in parts]), every.index[:kept])
    np.testing.assert_array_equal(np.concatenate([p.outputs for p in parts]), every.outputs[:kept])
