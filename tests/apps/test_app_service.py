"""The application service answers a request as the command line does for the same
options (one service behind both), and refuses bad requests naming the field."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from mp_ray.apps.service import (
    AppService,
    CounterfactualRequest,
    RequestError,
    SelectRequest,
    ValueRequest,
)
from mp_ray.apps.valuation import ValuationResult
from mp_ray.cli import app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_the_command_line_and_the_service_give_the_same_values(fitted_run, fitted, tmp_path):
    config, predictor = fitted_run
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = tmp_path / "values.parquet"
    args = ["value", "-c", str(path), "--predictor", predictor, "--method", "beta"]
    args += ["--max-samples", "24", "--beta", "2", "--seed", "5", "--check", "0"]
    result = CliRunner().invoke(app, [*args, "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    request = ValueRequest(method="beta", max_samples=24, beta=2.0, seed=5, check=0)
    answer = AppService(fitted).value(request)
    np.testing.assert_array_equal(
        ValuationResult.from_parquet(str(out)).values, answer.result.values
    )
    assert answer.fidelity is None and [c.order for c in answer.curves] == ["high", "low"]
    assert answer.noisy_labels is not None and answer.noisy_labels["flipped"] == 24


def test_requests_are_checked_before_any_work(fitted):
    with pytest.raises(ValidationError, match="needs at least 9 models"):
        ValueRequest(method="tmc", check=3)
    with pytest.raises(ValidationError, match="max_samples"):
        ValueRequest(max_samples=0)
    with pytest.raises(ValidationError, match="holdout"):
        SelectRequest(size=5, holdout=0.95)
    service = AppService(fitted)
    with pytest.raises(RequestError, match="out of range 0…119") as refused:
        service.counterfactual(CounterfactualRequest(remove=[500], targets=[0], check=0))
    assert refused.value.field == "remove"
    with pytest.raises(RequestError) as refused:
        service.select(SelectRequest(size=500, check=0))
    assert refused.value.field == "size"
