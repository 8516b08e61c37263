"""The README's "Bring your own model" examples run as written, each command a real
``mp-ray`` process on the test session's Ray, from a folder holding the example's files:
retrain → datamodels → lds for a torch network, a scikit-learn estimator and a learner class
of one's own, then a stage that needs what the plug-in lacks, refused at its start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
README_HEADING = "## Bring your own model"


def readme_blocks() -> list[tuple[str, str]]:
    """The (language, code) blocks of the README's "Bring your own model" section, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{README_HEADING}\n")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def run_block(script: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """A README shell block run by bash in ``folder``, with the venv's ``mp-ray`` on the PATH,
    this checkout's mp_ray first on PYTHONPATH and the test session's Ray as RAY_ADDRESS."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script + "\n"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def behaviour_table(done: subprocess.CompletedProcess[str], learner: str) -> str:
    """The behaviour table a README block's ``mp-ray lds`` printed, checked: the block ran,
    retrained 600 models, and left influence functions out of the table with a note."""
    assert done.returncode == 0, done.stderr
    assert "trained 600 models" in done.stderr
    table = done.stdout[done.stdout.rindex("method") :]
    assert "datamodels" in table and "full data θ(D)" in table
    assert "influence functions" not in table
    note = f"note: influence functions left out: learner {learner} does not implement "
    assert note + "objective_grad, hvp" in done.stderr
    return table


@pytest.mark.ray
@pytest.mark.timeout(1800)
def test_the_readme_examples_run_as_written(ray_session, tmp_path):
    blocks = readme_blocks()
    languages = ["python", "yaml", "bash", "yaml", "bash", "python", "yaml", "bash"]
    assert [language for language, _ in blocks] == languages
    (_, factory), (_, torch_yaml), (_, torch_commands) = blocks[:3]
    (_, sklearn_yaml), (_, sklearn_commands), (_, module), (_, custom_yaml), (_, commands) = blocks[
        3:
    ]
    (tmp_path / "small_net.py").write_text(factory)
    (tmp_path / "small_net.yaml").write_text(torch_yaml)
    done = run_block(torch_commands, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trained 600 models" in done.stderr
    table = done.stdout[done.stdout.rindex("method") :]
    assert "influence functions" in table and "datamodels" in table, table
    assert "left out" not in done.stderr

    (tmp_path / "sklearn_logistic.yaml").write_text(sklearn_yaml)
    (tmp_path / "nearest_means.py").write_text(module)
    (tmp_path / "nearest_means.yaml").write_text(custom_yaml)

    done = run_block(sklearn_commands, tmp_path)
    behaviour_table(done, "sklearn LogisticRegression")

    table = behaviour_table(run_block(commands, tmp_path), "NearestMeans")
    datamodels = next(line for line in table.splitlines() if line.startswith("datamodels"))
    assert float(datamodels.split()[1]) > 0.5, table  # their LDS

    # A stage that needs what the plug-in lacks stops at its start, naming the methods.
    config = yaml.safe_load(custom_yaml)
    config["predictor"] = {"newton_steps": 3}
    (tmp_path / "newton.yaml").write_text(yaml.safe_dump(config))
    export = "export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}\n"
    done = run_block(export + "mp-ray fit -c newton.yaml --storage-path train", tmp_path)
    assert done.returncode == 2, done.stderr
    assert (
        "error: predictor.newton_steps: 3 needs objective, objective_grad, hvp of the learner; "
        "learner NearestMeans does not implement them" in done.stderr
    )
    assert not (tmp_path / "train").exists()  # refused before the fit began
