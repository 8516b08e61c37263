"""The fit, tune and serve sections: defaults as the code had them, errors that name the field,
the search space as data, and command-line flags as overrides of the config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from ray import tune
from typer.testing import CliRunner

from mp_ray.cli import app
from mp_ray.config import (
    ChoiceSpace,
    ConfigError,
    ExperimentConfig,
    LogUniformSpace,
    UniformSpace,
    parse_experiment,
)
from mp_ray.serve import app as serve_app
from mp_ray.tuning import search_space

BASE = {
    "dataset": {"source": "sklearn", "name": "iris"},
    "learner": {"kind": "logistic"},
    "sampler": {"kind": "bernoulli", "alpha": 0.5},
    "store": {"uri": "runs/x.zarr", "n_rows": 100},
}
runner = CliRunner()


def with_section(**sections: Any) -> dict[str, Any]:
    return {**BASE, **sections}


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_config_without_the_sections_runs_as_before():
    config = parse_experiment(BASE)
    fit, tuning, serve = config.fit, config.tune, config.serve
    assert (fit.storage_path, fit.num_workers, fit.use_gpu) == ("runs/train", 2, False)
    assert (fit.max_failures, fit.checkpoints_to_keep) == (1, 2)
    assert (tuning.storage_path, tuning.num_samples, tuning.workers_per_trial) == (
        "runs/tune",
        8,
        1,
    )
    assert (tuning.max_concurrent_trials, tuning.use_gpu) == (None, None)  # none; as fit's
    assert (tuning.grace_period, tuning.reduction_factor) == (2, 4)
    assert (serve.host, serve.port, serve.replicas, serve.replica_cpus) == (
        "127.0.0.1",
        8000,
        1,
        1,
    )
    assert (serve.batching, serve.max_batch_size, serve.batch_wait_ms) == (True, 64, 1.0)
    assert serve.ingress == "haproxy"
    # The search Tune ran before the space was data: strengths 0 or log-spaced in [1e-4, 1].
    space = tuning.search_space
    strengths = [0.0, *np.logspace(-4, 0, 9).round(6).tolist()]
    assert (
        space["lambda_global"]
        == space["lambda_local"]
        == ChoiceSpace(type="choice", values=strengths)
    )
    assert space["lr"] == LogUniformSpace(type="log_uniform", low=1e-3, high=2e-2)
    assert space["width"].values == [64, 128, 256, 512]
    domains = search_space(config)
    assert domains["lambda_global"].categories == strengths
    assert isinstance(domains["lr"], tune.search.sample.Float)
    assert (domains["lr"].lower, domains["lr"].upper) == (1e-3, 2e-2)


def test_the_search_space_round_trips_through_yaml(tmp_path):
    space = {
        "lr": {"type": "uniform", "low": 0.001, "high": 0.01},
        "pooling": {"type": "choice", "values": ["views", "sum"]},
        "center": {"type": "choice", "values": [True]},
    }
    config = parse_experiment(
        with_section(tune={"search_space": space, "max_concurrent_trials": 2})
    )
    assert isinstance(config.tune.search_space["lr"], UniformSpace)
    again = parse_experiment(yaml.safe_load(yaml.safe_dump(config.model_dump(mode="json"))))
    assert again == config
    assert search_space(config)["pooling"].categories == ["views", "sum"]


@pytest.mark.parametrize(
    ("sections", "names"),
    [
        ({"fit": {"num_workers": 0}}, "fit.num_workers"),
        ({"fit": {"checkpoints_to_keep": 0}}, "fit.checkpoints_to_keep"),
        ({"fit": {"max_failures": -2}}, "fit.max_failures"),
        ({"fit": {"workers": 2}}, "fit.workers"),
        ({"tune": {"num_samples": 0}}, "tune.num_samples"),
        ({"tune": {"max_concurrent_trials": 0}}, "tune.max_concurrent_trials"),
        ({"tune": {"reduction_factor": 1}}, "tune.reduction_factor"),
        ({"serve": {"port": 70000}}, "serve.port"),
        ({"serve": {"max_batch_size": 0}}, "serve.max_batch_size"),
        ({"serve": {"batch_wait_ms": -1}}, "serve.batch_wait_ms"),
        ({"serve": {"ingress": "nginx"}}, "serve.ingress"),
    ],
)
def test_each_section_names_its_bad_field(sections, names):
    with pytest.raises(ConfigError, match=re.escape(names)):
        parse_experiment(with_section(**sections))


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lr": {"type": "log_uniform", "low": 0, "high": 1}}, r"tune\.search_space\.lr\.low"),
        ({"lr": {"type": "uniform", "low": 1, "high": 0.5}}, r"tune\.search_space\.lr: .*above"),
        ({"lr": {"type": "normal"}}, r"search_space\.lr\.type: 'normal' is not a search space"),
        ({"lr": {"type": "choice", "values": [0.1], "low": 0}}, r"search_space\.lr\.low: not a"),
        ({"lr": {"type": "choice", "values": []}}, r"tune\.search_space\.lr\.values"),
        ({"width": {"type": "choice", "values": [2, 64]}}, r"width: 2 is not a valid predictor"),
        ({"width": {"type": "uniform", "low": 64, "high": 512}}, r"width: uniform draws real"),
        ({"preset": {"type": "choice", "values": ["reference"]}}, "'preset' is not a predictor"),
        ({}, r"tune\.search_space: .*at least one"),
    ],
)
def test_the_search_space_is_checked_against_the_predictor(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_experiment(with_section(tune={"search_space": space}))


def test_an_unknown_predictor_field_in_the_search_space_is_named():
    space = {"lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}}
    space["learning_rate"] = {"type": "choice", "values": [0.1]}
    with pytest.raises(ConfigError, match=r"'learning_rate' is not a predictor field; one of"):
        parse_experiment(with_section(tune={"search_space": space}))


def test_overrides_are_validated_like_the_file():
    config = parse_experiment(with_section(fit={"num_workers": 3}))
    changed = config.with_overrides({"fit.storage_path": "elsewhere", "serve.batching": "false"})
    assert changed.fit.num_workers == 3 and changed.fit.storage_path == "elsewhere"
    assert changed.serve.batching is False and config.serve.batching is True
    with pytest.raises(ConfigError, match=r"fit\.num_workers"):
        config.with_overrides({"fit.num_workers": 0})


class Captured(Exception):
    """Stops a command where the test has seen what it needed."""


def test_fit_and_tune_flags_win_over_the_config(tmp_path, monkeypatch):
    import mp_ray.predictor.fit
    import mp_ray.ray_session
    import mp_ray.tuning

    seen: dict[str, ExperimentConfig] = {}

    def capture(command: str) -> Any:
        def run(config: ExperimentConfig, name: str, **kwargs: Any) -> None:
            seen[command] = config
            raise Captured

        return run

    monkeypatch.setattr(mp_ray.ray_session, "connect", lambda: None)
    monkeypatch.setattr(mp_ray.predictor.fit, "fit_predictor", capture("fit"))
    monkeypatch.setattr(mp_ray.tuning, "tune_predictor", capture("tune"))
    fit = {"num_workers": 1, "storage_path": "from-config", "max_failures": 3}
    tuning = {"num_samples": 3, "storage_path": "tune-config", "workers_per_trial": 2}
    path = write(tmp_path, with_section(fit=fit, tune=tuning))

    result = runner.invoke(app, ["fit", "-c", str(path), "--workers", "4", "--gpu"])
    assert isinstance(result.exception, Captured), result.output
    assert seen["fit"].fit.num_workers == 4 and seen["fit"].fit.use_gpu is True  # flags
    assert seen["fit"].fit.storage_path == "from-config" and seen["fit"].fit.max_failures == 3
    result = runner.invoke(app, ["fit", "-c", str(path)])  # no flags: the config's values
    assert seen["fit"].fit == parse_experiment(with_section(fit=fit)).fit

    args = ["tune", "-c", str(path), "--samples", "5", "--storage-path", "tune-flag"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, Captured), result.output
    assert seen["tune"].tune.num_samples == 5 and seen["tune"].tune.storage_path == "tune-flag"
    assert seen["tune"].tune.workers_per_trial == 2

    result = runner.invoke(app, ["fit", "-c", str(path), "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output


class FakeDeployment:
    """Stands in for a Serve deployment: records the options and arguments it is given."""

    def __init__(self) -> None:
        self.options_given: dict[str, Any] = {}
        self.bound: dict[str, Any] = {}

    def options(self, **options: Any) -> FakeDeployment:
        self.options_given.update(options)
        return self

    def bind(self, *args: Any, **kwargs: Any) -> FakeDeployment:
        self.bound = {"args": args, **kwargs}
        return self


def test_serve_settings_come_from_the_config_unless_given(tmp_path, monkeypatch):
    serve = {"batch_wait_ms": 5.0, "max_batch_size": 16, "replicas": 3, "port": 8123}
    path = write(tmp_path, with_section(serve=serve))
    predictor, gateway = FakeDeployment(), FakeDeployment()
    monkeypatch.setattr(serve_app, "PredictorDeployment", predictor)
    monkeypatch.setattr(serve_app, "Gateway", gateway)

    # A Serve config file's args (strings on `serve run`) override the serve section.
    args = {"config": str(path), "predictor": "p", "insecure": True, "batch_wait_ms": "2"}
    serve_app.build_app(args)
    assert predictor.bound["batch_wait_ms"] == 2.0 and predictor.bound["max_batch_size"] == 16
    assert predictor.bound["batching"] is True
    assert predictor.options_given == {}  # its deployments section decides replicas and CPUs

    # `mp-ray serve`: flags over the config, the rest from the config, all handed to the app.
    built: dict[str, Any] = {}

    def build(args: dict[str, Any]) -> None:
        built.update(args)
        raise Captured

    monkeypatch.setattr(serve_app, "build_app", build)
    command = ["serve", "-c", str(path), "--predictor", "p", "--no-batching", "--replicas", "2"]
    result = runner.invoke(app, command)
    assert isinstance(result.exception, Captured), result.output
    assert built["batching"] is False and built["replicas"] == 2  # flags
    assert built["batch_wait_ms"] == 5.0 and built["max_batch_size"] == 16  # the config
    assert built["replica_cpus"] == 1.0  # the default
