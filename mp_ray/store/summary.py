"""What is in a store: a summary for humans and a Parquet export of the scalar columns.

Both come from the rows' seeds and metrics (the subset sizes are the ``subset_size``
metric), streamed window by window; masks are read only from a store whose metrics lack
``subset_size``, one window at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mp_ray.outputs import atomic_output
from mp_ray.store.experiment import ExperimentStore, RowWindow
from mp_ray.store.identity import show
from mp_ray.store.location import is_remote_uri, normalise_uri, storage_options_for


def summarize(store: ExperimentStore) -> dict[str, Any]:
    """Counts, shapes, provenance (the experiment identity, flattened as in
    :mod:`mp_ray.store.identity`) and per-metric statistics of the completed rows."""
    spec = store.spec
    done = store.done_blocks()
    table = rows_table(store)
    return {
        "uri": store.uri,
        "dataset": spec.dataset_name,
        "dataset_fingerprint": spec.dataset_fingerprint,
        "learner": spec.learner.get("kind"),
        "sampler": spec.sampler.get("kind"),
        "root_seed": spec.root_seed,
        "identity": spec.identity,
        "rows_total": spec.n_rows,
        "rows_done": table.num_rows,
        "blocks_done": int(done.sum()),
        "blocks_total": spec.n_blocks,
        "block_rows": spec.block_rows,
        "shapes": {
            "masks": [spec.n_rows, spec.n_train],
            "params": [spec.n_rows, spec.n_params],
            "outputs": [spec.n_rows, spec.n_targets],
            "metrics": [spec.n_rows, len(spec.metric_names)],
        },
        "subset_size": _stats(table["subset_size"].to_numpy()),
        "metrics": {name: _stats(table[name].to_numpy()) for name in spec.metric_names},
    }


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    values = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def _identity_lines(identity: dict[str, Any]) -> list[tuple[str, str]]:
    """The learner, sampler and seed of a flattened identity, one line each:
    ``("learner", "kind=logistic C=0.1 …")``."""
    parts: dict[str, list[str]] = {}
    for field, value in identity.items():
        part, _, key = field.rpartition(".")
        if part != "dataset":
            text = show(field, value)
            parts.setdefault(part or key, []).append(f"{key}={text}" if part else text)
    return [(part, " ".join(values)) for part, values in parts.items()]


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text rendering of :func:`summarize`'s result."""
    lines = [
        f"store      {summary['uri']}",
        f"dataset    {summary['dataset']} (fingerprint {summary['dataset_fingerprint'][:16]}…)",
        *(f"{part:<10} {settings}" for part, settings in _identity_lines(summary["identity"])),
        f"rows       {summary['rows_done']} / {summary['rows_total']} done "
        f"({summary['blocks_done']} / {summary['blocks_total']} blocks of "
        f"{summary['block_rows']})",
    ]
    lines += [f"{name:<10} {tuple(shape)}" for name, shape in summary["shapes"].items()]
    columns = {"subset_size": summary["subset_size"], **summary["metrics"]}
    if summary["rows_done"]:
        lines.append(f"{'column':<16}{'mean':>12}{'std':>12}{'min':>12}{'max':>12}")
        for name, stats in columns.items():
            lines.append(
                f"{name:<16}"
                + "".join(f"{stats[key]:>12.4g}" for key in ("mean", "std", "min", "max"))
            )
    return "\n".join(lines)


ROW_GROUP_ROWS = 1 << 16  # rows per Parquet row group of export_parquet (≈ 5 MB of columns)


def _window_names(store: ExperimentStore) -> tuple[str, ...]:
    """The arrays a window of the table is read from: masks only where no metric holds the
    subset sizes."""
    counted = "subset_size" not in store.spec.metric_names
    return ("seeds", "metrics", "masks") if counted else ("seeds", "metrics")


def _columns(store: ExperimentStore, window: RowWindow) -> dict[str, np.ndarray]:
    """The table's columns for one window: row, block, seed, subset_size, then the other
    metrics."""
    metrics = {name: window["metrics"][:, j] for j, name in enumerate(store.spec.metric_names)}
    sizes = metrics.pop("subset_size", None)
    if sizes is None:
        sizes = window["masks"].sum(axis=1).astype(np.int64)
    return {
        "row": window.rows,
        "block": window.rows // store.spec.block_rows,
        "seed": window["seeds"],
        "subset_size": sizes,
        **metrics,
    }


def _schema(store: ExperimentStore) -> pa.Schema:
    """The table's columns and types (those of its columns for no rows)."""
    empty = store.read_rows(_window_names(store), np.zeros(0, dtype=np.int64))
    return pa.record_batch(_columns(store, empty)).schema


def _table(store: ExperimentStore, rows: np.ndarray, schema: pa.Schema) -> pa.Table:
    """The table's ``rows``, built one store window (at most ``block_rows`` rows) at a time."""
    windows = store.iter_rows(_window_names(store), rows)
    return pa.Table.from_batches(
        (pa.record_batch(_columns(store, window)) for window in windows), schema=schema
    )


def rows_table(store: ExperimentStore) -> pa.Table:
    """One row per completed model: row, block, seed, subset_size and the store's metrics;
    read window by window, it holds these scalar columns of every row, never the masks."""
    return _table(store, store.completed_rows(), _schema(store))


def export_parquet(
    store: ExperimentStore, path: str, storage_options: dict[str, Any] | None = None
) -> int:
    """Write :func:`rows_table` to Parquet at ``path`` (local or ``s3://``), streamed one
    row group at a time. Returns the number of rows written.
    """
    path = normalise_uri(path)
    if is_remote_uri(path):
        import fsspec

        with fsspec.open(path, "wb", **storage_options_for(path, storage_options)) as handle:
            return _write_row_groups(store, handle)
    with atomic_output(path) as partial:
        return _write_row_groups(store, partial)


def _write_row_groups(store: ExperimentStore, where: Any) -> int:
    """Write the completed rows' table to Parquet at ``where`` (a path or a binary file),
    one row group of :data:`ROW_GROUP_ROWS` rows at a time; returns the rows written."""
    rows = store.completed_rows()
    schema = _schema(store)
    with pq.ParquetWriter(where, schema) as writer:
        for start in range(0, rows.size, ROW_GROUP_ROWS):
            writer.write_table(_table(store, rows[start : start + ROW_GROUP_ROWS], schema))
    return int(rows.size)
