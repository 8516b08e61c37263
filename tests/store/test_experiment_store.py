"""The Zarr store: declaration, block writes, reopen checks, plain-zarr reads, S3 and Parquet."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from mp_ray.store import (
    BlockShapeError,
    ExperimentStore,
    StoreMismatchError,
    StoreNotFoundError,
    StoreSpec,
    export_parquet,
    format_summary,
    summarize,
)

SPEC = StoreSpec(
    n_rows=10,
    n_train=7,
    n_params=3,
    n_targets=4,
    metric_names=("subset_size", "test_accuracy"),
    block_rows=4,
    dataset_fingerprint="ab" * 32,
    dataset_name="toy",
    root_seed=3,
    learner={"kind": "logistic", "C": 1.0},
    sampler={"kind": "bernoulli", "alpha": 0.5},
)


def block_values(store: ExperimentStore, block: int) -> dict[str, np.ndarray]:
    """Distinct, checkable values for every row of ``block``."""
    rows = store.block_rows(block)
    rng = np.random.default_rng(block)
    masks = rng.random((len(rows), SPEC.n_train)) < 0.5
    return {
        "masks": masks,
        "params": rows[:, None] + np.arange(SPEC.n_params) / 10.0,
        "outputs": rng.normal(size=(len(rows), SPEC.n_targets)),
        "metrics": np.stack([masks.sum(axis=1), rows / 10.0], axis=1),
        "seeds": rows * 1000,
    }


def fill(store: ExperimentStore, blocks: list[int]) -> None:
    for block in blocks:
        store.write_block(block, block_values(store, block))


def test_blocks_are_chunk_aligned_and_last_block_short(tmp_path):
    store = ExperimentStore.create_or_open(str(tmp_path / "s.zarr"), SPEC)
    assert store.n_blocks == 3
    assert store.block_rows(2).tolist() == [8, 9]
    assert store.group["params"].chunks == (4, 3)
    assert store.group["done"].chunks == (1,)
    with pytest.raises(IndexError, match="block 3 out of range"):
        store.block_rows(3)


def test_round_trip_and_plain_zarr_read(tmp_path):
    uri = str(tmp_path / "s.zarr")
    fill(ExperimentStore.create_or_open(uri, SPEC), [2, 0])
    store = ExperimentStore.open(uri)
    assert store.pending_blocks() == [1]
    assert store.completed_rows().tolist() == [0, 1, 2, 3, 8, 9]
    expected = block_values(store, 2)
    np.testing.assert_allclose(store.read("params", np.array([8, 9])), expected["params"])
    np.testing.assert_array_equal(store.read("masks", slice(8, 10)), expected["masks"])
    # Anyone can read the store with zarr-python alone.
    group = zarr.open_group(uri, mode="r")
    np.testing.assert_allclose(group["params"][8:10], expected["params"].astype(np.float32))
    assert group["seeds"][9] == 9000
    assert group.attrs["mp_ray"]["dataset_name"] == "toy"
    assert group["metrics"].attrs["names"] == ["subset_size", "test_accuracy"]


def test_reopen_with_same_spec_keeps_rows(tmp_path):
    uri = str(tmp_path / "s.zarr")
    fill(ExperimentStore.create_or_open(uri, SPEC), [0])
    again = ExperimentStore.create_or_open(uri, SPEC)
    assert again.pending_blocks() == [1, 2]
    np.testing.assert_allclose(again.read("params", slice(0, 4))[:, 0], [0, 1, 2, 3])


def test_reopen_with_other_spec_names_the_fields(tmp_path):
    uri = str(tmp_path / "s.zarr")
    fill(ExperimentStore.create_or_open(uri, SPEC), [0])
    other = dataclasses.replace(
        SPEC,
        block_rows=5,
        sampler={"kind": "bernoulli", "alpha": 0.2},
        learner={"kind": "logistic", "C": 0.1},
    )
    with pytest.raises(StoreMismatchError) as err:
        ExperimentStore.create_or_open(uri, other)
    assert str(err.value) == (
        f"store {uri} was made with other settings than the config: learner.C: store 1.0, "
        "config 0.1; sampler.alpha: store 0.5, config 0.2; block_rows: store 4, config 5; "
        "use a new store URI or the original config"
    )
    # A setting the learner's kind does not read is not part of the store's identity.
    unread = dataclasses.replace(SPEC, learner={"kind": "logistic", "C": 1.0, "alpha": 9.0})
    assert ExperimentStore.create_or_open(uri, unread).spec == SPEC
    # The failed reopen changed nothing.
    assert ExperimentStore.open(uri).completed_rows().tolist() == [0, 1, 2, 3]


def test_reopen_with_other_dataset_is_refused(tmp_path):
    uri = str(tmp_path / "s.zarr")
    ExperimentStore.create_or_open(uri, SPEC)
    other = dataclasses.replace(SPEC, dataset_fingerprint="cd" * 32, dataset_name="other")
    with pytest.raises(StoreMismatchError, match="built from another dataset"):
        ExperimentStore.create_or_open(uri, other)


def test_foreign_zarr_group_and_missing_store_are_clear_errors(tmp_path):
    foreign = zarr.open_group(str(tmp_path / "f.zarr"), mode="w")
    foreign.create_array("x", shape=(2,), dtype="f4")
    with pytest.raises(StoreMismatchError, match="not an mp-ray store"):
        ExperimentStore.create_or_open(str(tmp_path / "f.zarr"), SPEC)
    with pytest.raises(StoreNotFoundError, match="no mp-ray store"):
        ExperimentStore.open(str(tmp_path / "missing.zarr"))


def test_bad_block_is_refused_before_anything_is_written(tmp_path):
    store = ExperimentStore.create_or_open(str(tmp_path / "s.zarr"), SPEC)
    good = block_values(store, 0)
    with pytest.raises(BlockShapeError, match=r"params has shape \(4, 2\), expected \(4, 3\)"):
        store.write_block(0, {**good, "params": good["params"][:, :2]})
    bad = good["params"].copy()
    bad[1, 1] = np.nan
    with pytest.raises(BlockShapeError, match="params holds NaN"):
        store.write_block(0, {**good, "params": bad})
    with pytest.raises(BlockShapeError, match="missing array 'seeds'"):
        store.write_block(0, {k: v for k, v in good.items() if k != "seeds"})
    assert store.pending_blocks() == [0, 1, 2]
    assert not store.read("masks", slice(0, 4)).any()


def test_read_rejects_unknown_rows_and_arrays(tmp_path):
    store = ExperimentStore.create_or_open(str(tmp_path / "s.zarr"), SPEC)
    with pytest.raises(IndexError, match=r"row indices must lie in \[0, 10\)"):
        store.read("params", np.array([3, 10]))
    with pytest.raises(KeyError, match="unknown array 'weights'"):
        store.read("weights")


def test_memory_store_round_trip():
    uri = f"memory://{uuid.uuid4().hex}"
    fill(ExperimentStore.create_or_open(uri, SPEC), [1])
    store = ExperimentStore.open(uri)
    assert store.pending_blocks() == [0, 2]
    np.testing.assert_allclose(store.read("params", slice(4, 8))[:, 0], [4, 5, 6, 7])


def test_summary_and_parquet_export(tmp_path):
    store = ExperimentStore.create_or_open(str(tmp_path / "s.zarr"), SPEC)
    fill(store, [0, 2])
    summary = summarize(store)
    assert summary["rows_done"] == 6 and summary["blocks_done"] == 2
    assert summary["metrics"]["test_accuracy"]["max"] == pytest.approx(0.9)
    assert summary["identity"] == {
        "dataset.fingerprint": "ab" * 32,
        "learner.kind": "logistic",
        "learner.C": 1.0,
        "sampler.kind": "bernoulli",
        "sampler.alpha": 0.5,
        "seed": 3,
    }
    text = format_summary(summary)
    assert "6 / 10 done" in text and "test_accuracy" in text
    identity = "learner    kind=logistic C=1.0\nsampler    kind=bernoulli alpha=0.5\nseed       3"
    assert identity in text
    path = tmp_path / "rows.parquet"
    assert export_parquet(store, str(path)) == 6
    table = pq.read_table(path).to_pydict()
    assert table["row"] == [0, 1, 2, 3, 8, 9]
    assert table["seed"] == [0, 1000, 2000, 3000, 8000, 9000]
    expected_sizes = store.read("masks", np.array([0, 1, 2, 3, 8, 9])).sum(axis=1)
    assert table["subset_size"] == expected_sizes.tolist()
    np.testing.assert_allclose(table["test_accuracy"], [0, 0.1, 0.2, 0.3, 0.8, 0.9], atol=1e-6)


@pytest.mark.s3
def test_s3_round_trip_and_reopen(s3_server, s3_bucket):
    uri = f"s3://{s3_bucket}/exp/s.zarr"
    store = ExperimentStore.create_or_open(uri, SPEC, s3_server)
    fill(store, [0, 2])
    reopened = ExperimentStore.create_or_open(uri, SPEC, s3_server)
    assert reopened.pending_blocks() == [1]
    np.testing.assert_allclose(reopened.read("params", np.array([1, 9]))[:, 0], [1, 9], atol=1e-6)
    group = zarr.open_group(uri, mode="r", storage_options={**s3_server, "anon": False})
    assert group["seeds"][8] == 8000
    with pytest.raises(StoreMismatchError, match="n_rows: store 10, config 12"):
        ExperimentStore.create_or_open(uri, dataclasses.replace(SPEC, n_rows=12), s3_server)
    assert export_parquet(reopened, f"s3://{s3_bucket}/exp/rows.parquet", s3_server) == 6
