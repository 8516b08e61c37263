"""Raw (X, y) from a file on a local path or any fsspec URL such as ``s3://``.

Formats, by suffix: ``.parquet`` / ``.csv`` (every column but ``label_column`` is a
feature), ``.npy`` (the feature matrix; labels in the ``.npy`` at ``labels_path``) and
``.npz`` (arrays ``X`` and ``y``). ``storage_options`` go to fsspec (e.g. ``endpoint_url``).
"""

from __future__ import annotations

import io

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mp_ray.config import FileDatasetConfig
from mp_ray.data.raw import DatasetError, RawData
from mp_ray.errors import one_line
from mp_ray.store.storage_errors import check_object, storage_errors


def read_file(config: FileDatasetConfig) -> RawData:
    """The raw data in ``config.path`` (and ``config.labels_path`` for ``.npy``)."""
    path = str(config.path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix in ("parquet", "csv"):
        reader = pq.read_table if suffix == "parquet" else pacsv.read_csv
        try:
            table = reader(_open(path, config))
        except pa.ArrowInvalid as err:
            raise DatasetError(f"cannot read {path} as {suffix}: {one_line(err)}") from err
        return _from_table(table, name, config)
    if suffix == "npz":
        with np.load(_open(path, config)) as archive:
            missing = sorted({"X", "y"} - set(archive.files))
            if missing:
                raise DatasetError(
                    f"{name} lacks array(s) {', '.join(missing)}; it holds "
                    f"{', '.join(sorted(archive.files)) or 'nothing'}"
                )
            return _from_arrays(archive["X"], archive["y"], name, config)
    if suffix == "npy":
        if not config.labels_path:
            raise DatasetError(f"{name} is an .npy feature file: set dataset.labels_path")
        X = np.load(_open(path, config))
        return _from_arrays(X, np.load(_open(config.labels_path, config)), name, config)
    raise DatasetError(f"unsupported data file {path}: use .parquet, .csv, .npy or .npz")


def _open(path: str, config: FileDatasetConfig) -> io.BytesIO:
    """The whole file, read through fsspec; storage failures raise a one-line error."""
    options = config.storage_options
    try:
        check_object(path, options)
        with storage_errors(path, options), fsspec.open(path, "rb", **options) as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DatasetError(f"data file not found: {path}") from None
    if not data:
        raise DatasetError(f"data file {path} is empty: it holds no bytes")
    return io.BytesIO(data)


def _check_rows(n_rows: int, config: FileDatasetConfig) -> None:
    if not n_rows:
        raise DatasetError(f"data file {config.path} is empty: it holds no rows")


def _from_table(table: pa.Table, name: str, config: FileDatasetConfig) -> RawData:
    _check_rows(table.num_rows, config)
    label = config.label_column
    if label not in table.column_names:
        raise DatasetError(
            f"label column {label!r} not in {name}; its columns are {', '.join(table.column_names)}"
        )
    if table[label].null_count:
        raise DatasetError(f"label column {label!r} of {name} has {table[label].null_count} nulls")
    features = [column for column in table.column_names if column != label]
    if not features:
        raise DatasetError(f"{name} has no feature columns besides the label column {label!r}")
    for column in features:
        kind = table[column].type
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            raise DatasetError(f"feature column {column!r} of {name} is not numeric ({kind})")
    X = np.column_stack([pc.cast(table[column], pa.float64()).to_numpy() for column in features])
    y = table[label].to_numpy()
    return RawData(name, X, y, tuple(features), config.task)


def _from_arrays(X: np.ndarray, y: np.ndarray, name: str, config: FileDatasetConfig) -> RawData:
    if X.ndim != 2:
        raise DatasetError(f"features in {name} must be 2-d (rows, features), got shape {X.shape}")
    _check_rows(X.shape[0], config)
    names = tuple(f"x{j}" for j in range(X.shape[1]))
    return RawData(name, X, np.asarray(y).reshape(-1), names, config.task)
