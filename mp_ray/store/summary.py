"""What is in a store: a summary for humans and a Parquet export of the scalar columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mp_ray.outputs import atomic_output
from mp_ray.store.experiment import ExperimentStore
from mp_ray.store.identity import show
from mp_ray.store.location import is_remote_uri, normalise_uri, storage_options_for


def summarize(store: ExperimentStore) -> dict[str, Any]:
    """Counts, shapes, provenance (the experiment identity, flattened as in
    :mod:`mp_ray.store.identity`) and per-metric statistics of the completed rows."""
    spec = store.spec
    done = store.done_blocks()
    rows = store.completed_rows()
    sizes = store.read("masks", rows).sum(axis=1) if rows.size else np.zeros(0)
    metrics = store.metrics_table(rows)
    return {
        "uri": store.uri,
        "dataset": spec.dataset_name,
        "dataset_fingerprint": spec.dataset_fingerprint,
        "learner": spec.learner.get("kind"),
        "sampler": spec.sampler.get("kind"),
        "root_seed": spec.root_seed,
        "identity": spec.identity,
        "rows_total": spec.n_rows,
        "rows_done": int(rows.size),
        "blocks_done": int(done.sum()),
        "blocks_total": spec.n_blocks,
        "block_rows": spec.block_rows,
        "shapes": {
            "masks": [spec.n_rows, spec.n_train],
            "params": [spec.n_rows, spec.n_params],
            "outputs": [spec.n_rows, spec.n_targets],
            "metrics": [spec.n_rows, len(spec.metric_names)],
        },
        "subset_size": _stats(sizes),
        "metrics": {name: _stats(values) for name, values in metrics.items()},
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


def rows_table(store: ExperimentStore) -> pa.Table:
    """One row per completed model: row, block, seed, subset_size and the store's metrics."""
    rows = store.completed_rows()
    columns: dict[str, np.ndarray] = {
        "row": rows,
        "block": rows // store.spec.block_rows,
        "seed": store.read("seeds", rows),
        "subset_size": store.read("masks", rows).sum(axis=1).astype(np.int64),
        **store.metrics_table(rows),
    }
    return pa.table(columns)


def export_parquet(
    store: ExperimentStore, path: str, storage_options: dict[str, Any] | None = None
) -> int:
    """Write :func:`rows_table` to Parquet at ``path`` (local or ``s3://``). Returns the
    number of rows written.
    """
    table = rows_table(store)
    path = normalise_uri(path)
    if is_remote_uri(path):
        import fsspec

        with fsspec.open(path, "wb", **storage_options_for(path, storage_options)) as handle:
            pq.write_table(table, handle)
    else:
        with atomic_output(path) as partial:
            pq.write_table(table, partial)
    return table.num_rows
