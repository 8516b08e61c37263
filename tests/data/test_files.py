"""Parquet, CSV, NPY and NPZ files, local and on S3, and the errors bad files raise."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import s3fs

from mp_ray.config import DatasetConfig
from mp_ray.data import Dataset, DatasetError, load_dataset, read_points


def from_file(path, **fields) -> Dataset:
    return load_dataset(DatasetConfig(source="file", path=str(path), **fields))


def assert_same(data: Dataset, reference: Dataset) -> None:
    for split in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(data, split), getattr(reference, split))
    assert data.n_classes == reference.n_classes
    assert data.fingerprint == reference.fingerprint


def test_every_format_reproduces_the_in_memory_source(tmp_path, table, raw_arrays, reference):
    X, y = raw_arrays
    pq.write_table(table, tmp_path / "d.parquet")
    pacsv.write_csv(table, tmp_path / "d.csv")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    parquet = from_file(tmp_path / "d.parquet")
    assert parquet.name == "d.parquet"
    assert parquet.feature_names == ("f0", "f1", "f2", "f3", "f4")
    for data in (
        parquet,
        from_file(tmp_path / "d.csv"),  # string labels map to sorted ids: cat 0, dog 1, eel 2
        from_file(tmp_path / "X.npy", labels_path=str(tmp_path / "y.npy")),
        from_file(tmp_path / "d.npz"),
    ):
        assert_same(data, reference)


def test_label_column_and_regression_files(tmp_path, raw_arrays):
    X = raw_arrays[0]
    target = X[:, 0] * 2.0 + 1.0
    pq.write_table(pa.table({"target": target, "a": X[:, 1], "b": X[:, 2]}), tmp_path / "r.parquet")
    data = from_file(tmp_path / "r.parquet", label_column="target", task="regression")
    assert data.task == "regression" and data.n_classes == 1
    assert data.feature_names == ("a", "b")
    assert data.y_train.dtype == np.float32
    assert set(data.y_test) <= set(target.astype(np.float32))


def test_points_are_read_with_the_label_column_of_a_dataset_of_any_source(
    tmp_path, synthetic, raw_arrays, reference
):
    """New points (``mp-ray add --points``) are read like a data file, with the dataset
    config's label column, whatever the dataset's source."""
    X, y = raw_arrays
    columns = {**{f"x{j}": X[:, j] for j in range(X.shape[1])}, "target": y}
    pq.write_table(pa.table(columns), tmp_path / "p.parquet")
    config = DatasetConfig(**synthetic, label_column="target")
    X_new, y_new = read_points(reference, config, str(tmp_path / "p.parquet"))
    np.testing.assert_array_equal(X_new, reference.scaling.apply(X))
    np.testing.assert_array_equal(y_new, y)


@pytest.mark.s3
def test_parquet_on_s3_loads_like_local(tmp_path, table, reference, s3_server, s3_bucket):
    pq.write_table(table, tmp_path / "d.parquet")
    s3fs.S3FileSystem(**s3_server).put(str(tmp_path / "d.parquet"), f"{s3_bucket}/in/d.parquet")
    remote = from_file(f"s3://{s3_bucket}/in/d.parquet", storage_options=s3_server)
    assert_same(remote, reference)
    with pytest.raises(DatasetError, match=f"data file not found: s3://{s3_bucket}/in/no.parquet"):
        from_file(f"s3://{s3_bucket}/in/no.parquet", storage_options=s3_server)


def test_missing_files_are_named(tmp_path, raw_arrays):
    with pytest.raises(DatasetError, match=r"data file not found: .*missing\.parquet"):
        from_file(tmp_path / "missing.parquet")
    np.save(tmp_path / "X.npy", raw_arrays[0])
    with pytest.raises(DatasetError, match=r"data file not found: .*nolabels\.npy"):
        from_file(tmp_path / "X.npy", labels_path=str(tmp_path / "nolabels.npy"))
    with pytest.raises(DatasetError, match=r"X\.npy is an \.npy feature file: set dataset\."):
        from_file(tmp_path / "X.npy")
    with pytest.raises(DatasetError, match=r"unsupported data file .*d\.txt: use \.parquet"):
        from_file(tmp_path / "d.txt")


def test_bad_tables_are_named(tmp_path, table):
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(
        DatasetError,
        match=r"label column 'target' not in d\.parquet; its columns are f0, f1, f2, f3, f4, "
        "label",
    ):
        from_file(tmp_path / "d.parquet", label_column="target")
    notes = table.append_column("note", pa.array(["x"] * table.num_rows))
    pacsv.write_csv(notes, tmp_path / "notes.csv")
    with pytest.raises(DatasetError, match=r"feature column 'note' of notes\.csv is not numeric"):
        from_file(tmp_path / "notes.csv")
    labels = table["label"].to_pylist()
    labels[7] = None
    holes = table.set_column(5, "label", pa.array(labels))
    pq.write_table(holes, tmp_path / "holes.parquet")
    with pytest.raises(DatasetError, match=r"label column 'label' of holes\.parquet has 1 null"):
        from_file(tmp_path / "holes.parquet")
    pq.write_table(table.select(["label"]), tmp_path / "bare.parquet")
    with pytest.raises(DatasetError, match=r"bare\.parquet has no feature columns"):
        from_file(tmp_path / "bare.parquet")


def test_bad_arrays_are_named(tmp_path, raw_arrays):
    X, y = raw_arrays
    np.savez(tmp_path / "noy.npz", X=X)
    with pytest.raises(DatasetError, match=r"noy\.npz lacks array\(s\) y; it holds X"):
        from_file(tmp_path / "noy.npz")
    np.savez(tmp_path / "flat.npz", X=X[:, 0], y=y)
    with pytest.raises(DatasetError, match=r"features in flat\.npz must be 2-d .* shape \(300,\)"):
        from_file(tmp_path / "flat.npz")


def test_empty_files_are_named(tmp_path, table):
    pq.write_table(table.slice(0, 0), tmp_path / "none.parquet")
    pacsv.write_csv(table.slice(0, 0), tmp_path / "header.csv")
    (tmp_path / "blank.csv").write_bytes(b"")
    np.savez(tmp_path / "none.npz", X=np.zeros((0, 5)), y=np.zeros(0))
    for name, what in [
        ("none.parquet", "rows"),
        ("header.csv", "rows"),
        ("blank.csv", "bytes"),
        ("none.npz", "rows"),
    ]:
        path = tmp_path / name
        with pytest.raises(DatasetError, match=rf"data file {path} is empty: it holds no {what}"):
            from_file(path)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match=rf"cannot read {tmp_path}/junk\.parquet as parquet: "):
        from_file(tmp_path / "junk.parquet")
