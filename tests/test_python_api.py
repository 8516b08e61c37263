"""The Python front door: the README's "Python API" example run as it stands, the lazy
package exports, and every application asked through the application service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

import mp_ray
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
    assert (table["label"] == data.y_train).all()
    assert values.result.params["models"] == "predictor" and values.fidelity is not None
    # One service per predictor, on the dataset and learner loaded once.
    service = experiment.service()
    assert experiment.service(namespace["fit"].predictor_uri) is service
    assert service.context.dataset is data and service.context.learner is experiment.learner
    assert experiment.store().spec.n_rows == 500
    assert experiment.predictor().meta.dataset_fingerprint == data.fingerprint
    # The request's fields, refused as the request refuses them: by name, before any work.
    with pytest.raises(ValidationError, match="max_samples"):
        experiment.value(max_samples=0)
    with pytest.raises(ValidationError, match="max_sample\n"):
        experiment.value(max_sample=10)
    # By retraining instead: exact leave-one-out values of the same points.
    loo = experiment.value(method="loo", predictor=False, removal_curves=False)
    assert loo.result.params["models"] == "retrain" and len(loo.to_pandas()) == data.n_train
    assert loo.fidelity is None and loo.curves == []
    chosen = experiment.select(size=10, check=0, test_scores=False)
    assert len(chosen.result.indices) == 10 and chosen.to_pandas()["selected"].sum() == 10
    scores = experiment.memorization(subsets=500, check=0).to_pandas()
    assert len(scores) == data.n_train and set(scores["label"]) <= set(range(data.n_classes))
    calibration = experiment.calibrate(models=20, check=0, inputs=data.X_test[:2])
    assert "accuracy" in calibration.to_pandas() and calibration.probabilities.shape == (2, 3)
    removal = experiment.counterfactual(remove=values.result.ranking()[:5], targets=[0, 1])
    assert removal.to_pandas()["target"].tolist() == [0, 1] and removal.fidelity is not None
    added = experiment.add(from_test=5).to_pandas()
    assert added["method"].tolist() == ["ModelPred", "influence functions"]
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
