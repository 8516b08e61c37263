"""The application service answers a request as the command line does for the same
options (one service behind both), and refuses bad requests naming the field."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from mp_ray.apps.service import (
    AddRequest,
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


def test_valuation_retrains_the_short_prefixes_it_is_asked_to(fitted):
    """``retrain_below`` above n: every prefix is retrained, so the predictor's TMC equals
    TMC by retraining with the same permutations; auto is a fifth of the points."""
    n = fitted.dataset.n_train
    request = ValueRequest(
        method="tmc", max_samples=4, retrain_below=n + 1, check=0, removal_curves=False
    )
    hybrid = AppService(fitted).value(request).result
    exact = AppService(replace(fitted, models=fitted.retrained)).value(request).result
    np.testing.assert_allclose(hybrid.values, exact.values, rtol=1e-6, atol=1e-9)
    assert hybrid.params["retrain_below"] == n + 1 and exact.params["retrain_below"] == 0
    auto = AppService(fitted).retrained_prefixes(ValueRequest(method="beta"))
    assert auto == -(-n // 5)
    assert AppService(fitted).retrained_prefixes(ValueRequest(method="banzhaf")) == 0


def test_adding_points_compares_with_influence_functions_only_when_asked(fitted):
    """``compare`` (on for the command line, off for Serve) decides whether influence
    functions answer beside ModelPred."""
    service = AppService(fitted)
    compared = service.add(AddRequest(from_test=3)).addition.outcomes
    alone = service.add(AddRequest(from_test=3, compare=False)).addition.outcomes
    assert set(compared) == {"ModelPred", "influence functions"}
    assert set(alone) == {"ModelPred"}
    np.testing.assert_array_equal(alone["ModelPred"].after, compared["ModelPred"].after)
