"""`mp-ray retrain` with its stderr on a pipe (as in a Ray job or a pod's log) prints plain
progress lines, at the interval MP_RAY_PROGRESS_INTERVAL_S sets, instead of a bar."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^retrain: (\d+)/60 models, [\d.,]+ models/s, (ETA|done in) \d+:\d\d:\d\d$")


def test_a_piped_retrain_prints_a_progress_line_per_interval(tmp_path):
    config = tmp_path / "piped.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": {"source": "sklearn", "name": "wine"},
                "learner": {"kind": "logistic"},
                "sampler": {"kind": "bernoulli", "alpha": 0.5},
                "store": {"uri": str(tmp_path / "piped.zarr"), "n_rows": 60, "block_rows": 10},
                "retrain": {"num_actors": 1, "num_cpus": 1},
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MP_RAY_PROGRESS_INTERVAL_S": "0"}
    env.pop("RAY_ADDRESS", None)
    ran = subprocess.run(
        [sys.executable, "-c", "from mp_ray.cli import app; app()", "retrain", "-c", str(config)],
        capture_output=True,  # stdout and stderr on pipes
        text=True,
        env=env,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    lines = [line for line in ran.stderr.splitlines() if line.startswith("retrain: ")]
    assert all(LINE.match(line) for line in lines), lines
    counts = [int(LINE.match(line).group(1)) for line in lines]
    assert counts == sorted(counts) and counts[-1] == 60
    assert len(counts) >= 6  # a line for every block: the interval is 0
    assert lines[-1].split(", ")[-1].startswith("done in")
    assert "\x1b[?25l" not in ran.stderr  # a live bar hides the cursor: none here
