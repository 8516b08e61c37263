"""The Python front door: the README's "Python API" example run as it stands, the lazy
package exports, and the result tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import mp_ray
from mp_ray.apps.valuation import ValuationResult
from mp_ray.results import Values, records_table
from mp_ray.store import StoreMismatchError

ROOT = Path(__file__).resolve().parents[1]
README_HEADING = "## Python API"


def readme_example() -> str:
    """The first Python code block after the README's "Python API" heading."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(f"\n{README_HEADING}\n") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("\n```", start)]


def test_the_package_exports_lazily_and_imports_no_ray_train():
    script = """
import json, sys
import mp_ray
light = sorted(m for m in ("ray", "torch", "mp_ray.experiment") if m in sys.modules)
names = [getattr(mp_ray, name).__name__ for name in mp_ray.__all__[:-1]]
import mp_ray.experiment
heavy = sorted(m for m in ("ray.train", "ray.tune") if m in sys.modules)
print(json.dumps({"light": light, "names": names, "heavy": heavy}))
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen["light"] == []  # `import mp_ray` alone loads neither Ray, torch nor the stages
    assert seen["names"] == mp_ray.__all__[:-1]
    assert seen["heavy"] == []  # Ray Train and Tune load when a stage runs
    assert mp_ray.__all__[-1] == "__version__"
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = mp_ray.Nothing


def test_records_table_fills_missing_keys_with_nulls():
    table = records_table([{"step": 250, "error": 0.5}, {"step": 500, "lr": 0.01}])
    assert table.column_names == ["step", "error", "lr"]
    assert table.to_pydict() == {"step": [250, 500], "error": [0.5, None], "lr": [None, 0.01]}


def test_values_table_is_the_parquet_table(tmp_path):
    result = ValuationResult(
        "leave_one_out", [0.3, -0.1], [0.0, 0.0], [1, 1], 3, True, 0.1, {"metric": "accuracy"}
    )
    values = Values.of(result)
    result.to_parquet(str(tmp_path / "values.parquet"))
    assert values.to_arrow().equals(pq.read_table(tmp_path / "values.parquet"))
    assert values.to_pandas()["value"].tolist() == [0.3, -0.1]
    assert values.ranking().tolist() == [0, 1]


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_the_readme_example_runs(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    namespace: dict = {}
    exec(compile(readme_example(), "README.md (Python API)", "exec"), namespace)
    experiment, values = namespace["experiment"], namespace["values"]
    data = experiment.dataset
    assert data.name == "iris"
    assert (tmp_path / "runs" / "iris.zarr").is_dir()
    assert len(namespace["retrained"].to_pandas()) == 500
    assert len(namespace["fit"].to_pandas()) >= 1
    table = namespace["table"]
    assert len(table) == data.n_train and np.isfinite(table["value"]).all()
    assert values.params["models"] == "predictor"
    # The dataset and learner are loaded once and shared by every application.
    context = experiment.context()
    assert context.dataset is data and context.learner is experiment.learner
    assert experiment.store().spec.n_rows == 500
    assert experiment.predictor().meta.dataset_fingerprint == data.fingerprint
    # By retraining instead: exact leave-one-out values of the same points.
    loo = experiment.value("loo", predictor=False)
    assert loo.params["models"] == "retrain" and len(loo.to_pandas()) == data.n_train
    chosen = experiment.select(10)
    assert len(chosen.indices) == 10 and chosen.to_pandas()["selected"].sum() == 10
    scores = experiment.memorization(subsets=500).to_pandas()
    assert len(scores) == data.n_train and set(scores["label"]) <= set(range(data.n_classes))
    datamodels = experiment.datamodels().to_pandas()
    assert len(datamodels) == len(data.y_test) and (datamodels["nonzero"] <= data.n_train).all()
    search = mp_ray.Experiment(experiment.config.with_overrides({"tune.num_samples": 2}))
    trials = search.tune(name="iris").to_pandas()
    assert len(trials) == 2 and search.predictor_uri.endswith("best")
    # Another experiment's predictor is refused, naming what differs.
    other = mp_ray.Experiment.from_yaml(
        ROOT / "configs" / "quickstart.yaml", {"store.uri": "runs/other.zarr"}
    )
    with pytest.raises(StoreMismatchError, match="another dataset"):
        other.predictor(namespace["fit"].predictor_uri)
    with pytest.raises(ValueError, match=r"call \.fit\(\)"):
        other.value()
