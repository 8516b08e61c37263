"""Datasets: bundled sets, synthetic data, files on disk and on S3, splits, scaling, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import s3fs

from mp_ray.config import DatasetConfig
from mp_ray.data import DatasetError, load_dataset


def load(**fields):
    return load_dataset(DatasetConfig(**fields))


@pytest.mark.parametrize(
    ("name", "features", "classes"),
    [
        ("breast_cancer", 30, 2),
        ("digits", 64, 10),
        ("wine", 13, 3),
        ("iris", 4, 3),
        ("diabetes", 10, 1),
    ],
)
def test_sklearn_sets_split_stratified(name, features, classes):
    data = load(source="sklearn", name=name)
    total = data.n_train + len(data.y_val) + len(data.y_test)
    assert data.n_features == features and data.n_classes == classes
    assert data.X_train.dtype == np.float32
    assert len(data.y_test) == pytest.approx(0.15 * total, abs=2)
    if classes > 1:
        assert data.y_train.dtype == np.int64
        for split in (data.y_train, data.y_val, data.y_test):
            assert set(np.unique(split)) == set(range(classes))


def test_scaling_is_fitted_on_the_training_split_only():
    data = load(source="sklearn", name="wine")
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(data.X_train.std(axis=0), 1, atol=1e-4)
    assert np.abs(data.X_test.mean(axis=0)).max() > 0.05
    ball = load(source="sklearn", name="wine", scaling="unit_ball")
    assert np.linalg.norm(ball.X_train, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    raw = load(source="sklearn", name="wine", scaling="none")
    assert raw.X_train.mean() > 1.0


def test_max_train_keeps_a_stratified_sample():
    data = load(source="sklearn", name="digits", max_train=300)
    assert data.n_train == 300
    assert np.bincount(data.y_train).min() >= 25


def test_fingerprint_is_stable_and_sensitive():
    base = load(source="sklearn", name="iris").fingerprint
    assert load(source="sklearn", name="iris").fingerprint == base
    assert load(source="sklearn", name="iris", split_seed=1).fingerprint != base
    assert load(source="sklearn", name="iris", scaling="none").fingerprint != base


def test_synthetic_generator():
    data = load(source="synthetic", n_samples=400, n_features=6, n_classes=3, label_noise=0.1)
    assert data.n_classes == 3 and data.n_features == 6
    assert data.n_train == pytest.approx(280, abs=2)
    reg = load(source="synthetic", task="regression", n_samples=200, n_features=4)
    assert reg.n_classes == 1 and reg.y_train.dtype == np.float32


@pytest.fixture(scope="module")
def table():
    data = load(source="synthetic", n_samples=300, n_features=5, n_classes=3, scaling="none")
    X = np.concatenate([data.X_train, data.X_val, data.X_test])
    y = np.concatenate([data.y_train, data.y_val, data.y_test])
    columns = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    labels = np.array(["cat", "dog", "eel"])[y]
    return pa.table({**columns, "label": labels}), X, y


def from_file(path: str, **fields):
    return load(source="file", path=path, split_seed=3, **fields)


def test_parquet_csv_npy_npz_give_the_same_dataset(tmp_path, table):
    tbl, X, y = table
    pq.write_table(tbl, tmp_path / "d.parquet")
    pacsv.write_csv(tbl, tmp_path / "d.csv")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    reference = from_file(str(tmp_path / "d.parquet"))
    assert reference.feature_names == ("f0", "f1", "f2", "f3", "f4")
    assert reference.n_classes == 3
    for other in (
        from_file(str(tmp_path / "d.csv")),
        from_file(str(tmp_path / "X.npy"), labels_path=str(tmp_path / "y.npy")),
        from_file(str(tmp_path / "d.npz")),
    ):
        np.testing.assert_allclose(other.X_train, reference.X_train, atol=1e-6)  # CSV is text
        np.testing.assert_array_equal(other.y_train, reference.y_train)


@pytest.mark.s3
def test_parquet_on_s3_loads_like_local(tmp_path, table, s3_server, s3_bucket):
    tbl, _, _ = table
    pq.write_table(tbl, tmp_path / "d.parquet")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server["endpoint_url"]})
    fs.put(str(tmp_path / "d.parquet"), f"{s3_bucket}/data/d.parquet")
    remote = from_file(f"s3://{s3_bucket}/data/d.parquet", storage_options=s3_server)
    local = from_file(str(tmp_path / "d.parquet"))
    assert remote.fingerprint == local.fingerprint
    with pytest.raises(DatasetError, match="data file not found"):
        from_file(f"s3://{s3_bucket}/data/missing.parquet", storage_options=s3_server)


def test_bad_files_are_named(tmp_path, table):
    tbl, X, y = table
    pq.write_table(tbl, tmp_path / "d.parquet")
    with pytest.raises(
        DatasetError, match=r"label column 'target' not in d.parquet; columns are f0"
    ):
        from_file(str(tmp_path / "d.parquet"), label_column="target")
    with pytest.raises(DatasetError, match="data file not found"):
        from_file(str(tmp_path / "missing.parquet"))
    pq.write_table(tbl.append_column("note", pa.array(["x"] * len(y))), tmp_path / "s.parquet")
    with pytest.raises(DatasetError, match=r"feature column 'note' of s\.parquet is not numeric"):
        from_file(str(tmp_path / "s.parquet"))
    bad = X.copy()
    bad[4, 2] = np.nan
    np.savez(tmp_path / "nan.npz", X=bad, y=y)
    with pytest.raises(DatasetError, match=r"NaN or infinite values .*row 4, column 'x2'"):
        from_file(str(tmp_path / "nan.npz"))
    np.savez(tmp_path / "short.npz", X=X, y=y[:-3])
    with pytest.raises(DatasetError, match=f"{len(y)} feature rows but {len(y) - 3} labels"):
        from_file(str(tmp_path / "short.npz"))
    np.savez(tmp_path / "one.npz", X=X, y=np.zeros_like(y))
    with pytest.raises(DatasetError, match="1 class"):
        from_file(str(tmp_path / "one.npz"))
    np.save(tmp_path / "X.npy", X)
    with pytest.raises(DatasetError, match=r"set dataset\.labels_path"):
        from_file(str(tmp_path / "X.npy"))
    with pytest.raises(DatasetError, match="unsupported data file"):
        from_file(str(tmp_path / "d.txt"))


def test_too_small_split_is_explained():
    with pytest.raises(DatasetError, match=r"cannot split .* with every class in each split"):
        load(source="synthetic", n_samples=12, n_classes=4, n_features=4)
