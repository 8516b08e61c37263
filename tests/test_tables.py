"""The table views of the application answers and of data values: one row per training
point (or target, or method), the columns a notebook user reads, metadata kept."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from mp_ray.apps.calibration import CalibrationResult
from mp_ray.apps.counterfactual import Counterfactual
from mp_ray.apps.memorization import MemorizationResult
from mp_ray.apps.selection import SelectionResult
from mp_ray.apps.service import (
    CalibrateAnswer,
    CounterfactualAnswer,
    MemorizationAnswer,
    SelectAnswer,
    ValueAnswer,
)
from mp_ray.apps.valuation import ValuationResult
from mp_ray.tables import records_table

LABELS = np.array([0, 1, 1])


def values() -> ValuationResult:
    return ValuationResult(
        "leave_one_out", [0.3, -0.1, 0.2], [0.0] * 3, [1] * 3, 4, True, 0.1, {"metric": "accuracy"}
    )


def test_records_table_fills_missing_keys_with_nulls():
    table = records_table([{"step": 250, "error": 0.5}, {"step": 500, "lr": 0.01}])
    assert table.column_names == ["step", "error", "lr"]
    assert table.to_pydict() == {"step": [250, 500], "error": [0.5, None], "lr": [None, 0.01]}


def test_values_table_is_what_the_parquet_file_holds(tmp_path):
    result = values()
    result.to_parquet(str(tmp_path / "values.parquet"))
    assert result.to_arrow().equals(pq.read_table(tmp_path / "values.parquet"))
    meta = json.loads(result.to_arrow().schema.metadata[b"mp_ray.valuation"])
    assert meta["method"] == "leave_one_out" and meta["params"] == {"metric": "accuracy"}
    assert result.to_pandas()["value"].tolist() == [0.3, -0.1, 0.2]
    read = ValuationResult.from_parquet(str(tmp_path / "values.parquet"))
    np.testing.assert_array_equal(read.values, result.values)


def test_value_answer_adds_the_labels_to_the_values_table():
    answer = ValueAnswer(values(), LABELS, None, None, [])
    table = answer.to_arrow()
    assert table.column_names == ["index", "label", "value", "stderr", "count"]
    assert table.schema.metadata == values().to_arrow().schema.metadata
    assert answer.to_pandas()["label"].tolist() == [0, 1, 1]


def test_memorization_and_selection_have_a_row_per_training_point():
    influence = np.array([[0.1, 0.4], [0.0, -0.2], [0.3, 0.3]])
    result = MemorizationResult(
        np.array([0.5, 0.1, 0.2]), np.full(3, 0.01), influence, influence, 100, 0.7, "correct", 1.0
    )
    table = MemorizationAnswer(result, LABELS, 100, None).to_arrow()
    assert table.column_names == [
        "index",
        "label",
        "memorization",
        "stderr",
        "max_influence",
        "influenced",
    ]
    assert table["influenced"].to_pylist() == [1, 0, 0]
    metadata = table.schema.metadata
    assert metadata[b"mp_ray.score"] == b"correct" and metadata[b"mp_ray.subsets"] == b"100"
    assert b"mp_ray.fidelity" not in metadata  # no check ran
    chosen = SelectionResult("greedy", np.array([True, False, True]), 0.9, 5, 0.1)
    frame = SelectAnswer(chosen, LABELS, {}, None).to_pandas()
    assert frame["selected"].tolist() == [True, False, True] and frame["index"].tolist() == [
        0,
        1,
        2,
    ]


def test_counterfactual_has_a_row_per_target_and_calibration_per_method():
    outputs = {"margin": np.array([1.0, -0.5]), "prediction": np.array([1, 0])}
    after = {"margin": np.array([[-0.2, -0.4]]), "prediction": np.array([[0, 0]])}
    answer = CounterfactualAnswer(
        None, np.array([1, 0]), np.array([3]), Counterfactual(outputs, after), None, None
    )
    frame = answer.to_pandas()
    assert frame["target"].isna().all()  # given rows, not test points
    assert frame["margin_change"].round(6).tolist() == [-1.2, 0.1]
    assert frame["flipped"].tolist() == [True, False] and "retrained_change" not in frame
    rows = {"θ(D)": {"ece": 0.1, "nll": 0.5, "accuracy": 0.9}}
    calibration = CalibrationResult(rows, {}, 1.2, 10, 0.8, 0.5)
    table = CalibrateAnswer(calibration, None, None).to_arrow()
    assert table.to_pylist() == [{"method": "θ(D)", "ece": 0.1, "nll": 0.5, "accuracy": 0.9}]
