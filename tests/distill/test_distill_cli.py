"""``mp-ray distill``, run as users run it."""

from __future__ import annotations

import json
import re

import yaml
from typer.testing import CliRunner

from mp_ray import cli_distill  # noqa: F401  (registers the command)
from mp_ray.cli import app

runner = CliRunner()


def _config(tmp_path, **distill) -> str:
    data = {
        "seed": 1,
        "dataset": {"source": "sklearn", "name": "breast_cancer", "max_train": 120},
        "learner": {"kind": "logistic", "tol": 1e-8},
        "sampler": {"kind": "bernoulli"},
        "store": {"uri": str(tmp_path / "absent.zarr")},
        "distill": {"iterations": 100, "holdout_removals": 5, **distill},
    }
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_distill_prints_the_held_out_validation(tmp_path):
    config = _config(tmp_path, uri=str(tmp_path / "distilled.zarr"))
    report = tmp_path / "report.json"
    args = ["distill", "-c", config, "--groups-per-class", "2", "--per-group", "1"]
    result = runner.invoke(app, [*args, "--output", str(report)])
    assert result.exit_code == 0, result.output
    assert "in 4 groups" in result.stdout and "1 synthetic examples per group" in result.stdout
    # Of the 6 pairs of 4 groups, the 2 that would empty a class are never drawn.
    assert "unions of 2 groups: 4 retrained models, held out" in result.stdout
    assert "single groups: 4 retrained models, supervised (not a validation)" in result.stdout
    for method in ("distilled datamodel", "no change θ*", "influence functions"):
        assert method in result.stdout
    assert f"saved to {tmp_path / 'distilled.zarr'}" in result.output
    assert re.search(r"^distill: (\d+)/\1 iterations, .*, done in ", result.stderr, re.M)
    none = next(line for line in result.stdout.splitlines() if line.startswith("no change θ*"))
    assert none.split()[3:5] == ["–", "–"] and none.split()[-1].startswith("0/")
    saved = json.loads(report.read_text())
    assert saved["n_groups"] == 4 and "store test rows" not in saved["table"]
    unions = saved["table"]["unions of 2 groups"]["methods"]
    assert unions["no change θ*"]["pearson"] is None  # undefined, not 0


def test_distill_fails_clearly(tmp_path):
    result = runner.invoke(app, ["distill", "-c", _config(tmp_path)])
    assert result.exit_code == 2
    assert "no mp-ray store at" in result.output and "mp-ray retrain" in result.output
    config = _config(tmp_path, uri=str(tmp_path / "d.zarr"), holdout_union=3)
    result = runner.invoke(app, ["distill", "-c", config, "--groups-per-class", "2"])
    assert result.exit_code == 2
    assert "only 0 held-out unions of 3 groups exist" in result.output
