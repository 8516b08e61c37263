"""Unusable data over the command line: ``retrain`` names the problem in one line and stops
before it declares a store or starts Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from mp_ray.cli import app

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def retrain_on(tmp_path: Path, data: Path, **dataset) -> str:
    """The output of ``mp-ray retrain`` on the data file ``data``, asserted to fail cleanly
    before anything is declared."""
    config = yaml.safe_load(QUICKSTART.read_text())
    config["dataset"] = {"source": "file", "path": str(data), **dataset}
    config["store"]["uri"] = str(tmp_path / "x.zarr")
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["retrain", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "x.zarr").exists()
    return result.output


@pytest.mark.parametrize("name", ["empty.parquet", "empty.csv"])
def test_a_file_without_rows_is_named(tmp_path, table, name):
    data = tmp_path / name
    writer = pq.write_table if name.endswith(".parquet") else pacsv.write_csv
    writer(table.slice(0, 0), data)
    output = retrain_on(tmp_path, data)
    assert f"error: data file {data} is empty: it holds no rows" in output
    assert "class" not in output


@pytest.mark.parametrize("name", ["normal.parquet", "whole_numbers.csv"])
def test_a_continuous_label_under_classification_suggests_regression(tmp_path, table, name):
    """Real values, or whole numbers with a few rows each (like diabetes' disease score)."""
    rng = np.random.default_rng(0)
    data = tmp_path / name
    if name.endswith(".parquet"):
        labels, writer = rng.normal(size=300), pq.write_table
    else:
        labels, writer = rng.integers(25, 347, size=300), pacsv.write_csv
    writer(table.set_column(5, "label", pa.array(labels)), data)
    output = retrain_on(tmp_path, data, task="classification")
    distinct = len(np.unique(labels))
    assert f"labels of {name} look continuous ({distinct} distinct numbers in 300 rows)" in output
    assert "dataset.task: regression" in output
