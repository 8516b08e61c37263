"""Modules that read stores, fit datamodels, distil or evaluate do not import Ray Train:
importing it costs seconds and pulls torch.distributed, and none of them fits a predictor.
Each is imported in a fresh interpreter, since this one has imported everything already."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIGHT = (
    "mp_ray.evaluation.report",
    "mp_ray.datamodels.job",
    "mp_ray.distill.job",
    "mp_ray.apps.context",
    "mp_ray.store",
    "mp_ray.store.rows",
    "mp_ray.experiment",  # the Python front door, where the tree has it
)


@pytest.mark.parametrize("module", LIGHT)
def test_importing_does_not_load_ray_train(module):
    path = REPO.joinpath(*module.split("."))
    if not (path.with_suffix(".py").exists() or path.is_dir()):
        pytest.skip(f"{module} is not in this tree")
    check = (
        f"import {module}, sys; "
        "loaded = sorted(name for name in sys.modules if name.split('.')[:2] == ['ray', 'train']); "
        "print(' '.join(loaded)); sys.exit(1 if loaded else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"importing {module} loaded {done.stdout.strip()}{done.stderr}"


def test_the_command_line_starts_without_torch():
    check = "import mp_ray.cli, sys; sys.exit(1 if 'torch' in sys.modules else 0)"
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"importing mp_ray.cli loaded torch{done.stderr}"
