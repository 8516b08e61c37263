"""Configs: YAML validated by pydantic, with errors that name the offending field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mp_ray.config import (
    AUTO_GLOBAL,
    AUTO_WIDTH,
    ConfigError,
    ExperimentConfig,
    PredictorConfig,
    load_experiment,
    parse_experiment,
)

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))
BASE = {
    "dataset": {"source": "sklearn", "name": "iris"},
    "learner": {"kind": "logistic"},
    "sampler": {"kind": "bernoulli", "alpha": 0.5},
    "store": {"uri": "runs/x.zarr", "n_rows": 100},
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


EXPERIMENTS = [path for path in CONFIGS if path.name != "serve.yaml"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiment_configs_validate(path):
    assert isinstance(load_experiment(path), ExperimentConfig)


def test_the_serve_config_is_valid_and_points_at_the_package():
    from ray.serve.schema import ServeDeploySchema

    from mp_ray.serve import app

    path = next(path for path in CONFIGS if path.name == "serve.yaml")
    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (application,) = schema.applications
    module, _, builder = application.import_path.partition(":")
    assert module == app.__name__ and callable(getattr(app, builder))
    assert (path.parents[1] / application.args["config"]).exists()
    names = {deployment.name for deployment in application.deployments}
    assert names == {app.Gateway.name, app.PredictorDeployment.name}


def test_defaults_are_filled(tmp_path):
    config = load_experiment(write(tmp_path, BASE))
    assert config.seed == 0
    assert config.retrain.num_actors == 2
    assert config.dataset.scaling == "standard"


@pytest.mark.parametrize(
    ("patch", "names"),
    [
        ({"retrain": {"num_actor": 2}}, "retrain.num_actor"),
        ({"learner": {"kind": "logistic", "c": 1.0}}, "learner.c"),
        ({"learner": {"kind": "svm"}}, "learner.kind"),
        ({"sampler": {"kind": "bernoulli", "alpha": 1.5}}, "sampler.alpha"),
        ({"store": {"uri": "x", "block_rows": 0}}, "store.block_rows"),
        ({"dataset": {"source": "sklearn", "name": "mnist"}}, "dataset.name must be one of"),
        ({"dataset": {"source": "file"}}, "dataset.path is required"),
        ({"retrain": {"num_gpus": "lots"}}, "retrain.num_gpus"),
        ({"sampler": {"kind": "uniform_size", "min_size": 5, "max_size": 2}}, "max_size"),
        (
            {"dataset": {"source": "sklearn", "name": "iris", "val_fraction": 0}},
            "dataset.val_fraction",
        ),
        ({"predictor": {"lambda_global": -0.1}}, "predictor.lambda_global"),
        ({"predictor": {"lambda_global": "sometimes"}}, "predictor.lambda_global"),
        ({"predictor": {"targets": "logits"}}, "predictor.targets"),
        ({"predictor": {"preset": "paper"}}, "predictor.preset"),
    ],
)
def test_bad_fields_are_named(tmp_path, patch, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_experiment(write(tmp_path, {**BASE, **patch}))


def test_auto_global_regulariser_follows_the_labelled_row_count():
    settings = PredictorConfig()
    assert settings.lambda_global == "auto" and settings.unlabelled_per_batch == "auto"
    few = settings.resolved(AUTO_GLOBAL["labels_below"] - 1, 31)
    assert few.lambda_global == AUTO_GLOBAL["lambda_global"] > 0
    assert few.unlabelled_per_batch == AUTO_GLOBAL["unlabelled_per_batch"] > 0
    many = settings.resolved(AUTO_GLOBAL["labels_below"], 31)
    assert many.lambda_global == 0 and many.unlabelled_per_batch == 0
    # A value the config gives is kept; unlabelled subsets follow the strength.
    given = PredictorConfig(lambda_global=0.3).resolved(10**6, 31)
    assert given.lambda_global == 0.3 and given.unlabelled_per_batch == 16
    assert PredictorConfig(unlabelled_per_batch=4).resolved(10, 31).unlabelled_per_batch == 4


def test_auto_width_follows_the_parameter_count():
    assert PredictorConfig().width == "auto"
    assert PredictorConfig().resolved(10, AUTO_WIDTH["params_up_to"]).width == AUTO_WIDTH["small"]
    wide = PredictorConfig().resolved(10, AUTO_WIDTH["params_up_to"] + 1).width
    assert wide == AUTO_WIDTH["large"] > AUTO_WIDTH["small"]
    assert PredictorConfig(width=64).resolved(10, 10**4).width == 64


def test_missing_section_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="learner: Field required"):
        parse_experiment({k: v for k, v in BASE.items() if k != "learner"})
    path = tmp_path / "broken.yaml"
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_experiment(write(tmp_path, [1, 2]))


def test_dotted_overrides(tmp_path):
    config = load_experiment(
        write(tmp_path, BASE), {"store.uri": "s3://b/x.zarr", "retrain.num_actors": 3}
    )
    assert config.store.uri == "s3://b/x.zarr"
    assert config.retrain.num_actors == 3
