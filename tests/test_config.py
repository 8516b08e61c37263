"""Configs: YAML validated by pydantic, with errors that name the offending field."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
import zarr
from pydantic import ValidationError

from mp_ray.config import (
    AUTO_GLOBAL,
    AUTO_WIDTH,
    ConfigError,
    DatasetConfig,
    ExperimentConfig,
    LearnerConfig,
    MLPLearnerConfig,
    PredictorConfig,
    RidgeLearnerConfig,
    SamplerConfig,
    SklearnDatasetConfig,
    SplitsConfig,
    SVMLearnerConfig,
    UniformSizeSamplerConfig,
    config_yaml,
    load_experiment,
    parse_experiment,
)
from mp_ray.data import load_dataset
from mp_ray.retrain import BlockTrainer
from mp_ray.store import ExperimentStore
from mp_ray.store.experiment import CONFIG_ATTR

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
        ({"learner": {"kind": "knn"}}, "learner.kind"),
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


# Every field of each learner and sampler kind, and each dataset source's own fields with some
# shared ones, at values other than their defaults.
OWN_FIELDS = {
    "learner": {
        "logistic": {"C": 5.0, "tol": 1e-6, "max_iter": 50, "dtype": "float32"},
        "svm": {"C": 0.5, "tol": 1e-6, "max_iter": 50, "dtype": "float32"},
        "ridge": {"alpha": 2.0, "dtype": "float32"},
        "mlp": {
            "hidden": 7,
            "epochs": 3,
            "lr": 0.5,
            "batch_size": 8,
            "weight_decay": 0.0,
            "dtype": "float32",
        },
        "torch": {
            "factory": "mp_ray.learners.zoo:digits_cnn",
            "factory_kwargs": {"channels": 4},
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "epochs": 3,
            "batch_size": 8,
            "lr_schedule": "cosine",
            "dtype": "float32",
        },
        "custom": {"target": "mp_ray.learners:Ridge", "options": {}, "dtype": "float32"},
        "sklearn": {
            "estimator": "sklearn.linear_model:Ridge",
            "params": {"alpha": 2.0},
            "extractor": "numpy:ravel",
            "decision": "numpy:ravel",
            "sample_weight": False,
            "dtype": "float32",
        },
    },
    "sampler": {
        "bernoulli": {"alpha": 0.3},
        "fixed_size": {"alpha": 0.3},
        "uniform_size": {"min_size": 2, "max_size": 9},
        "leave_one_out": {},
        "permutation": {},
    },
    "dataset": {
        "sklearn": {"name": "wine", "task": "classification", "max_train": 50},
        "synthetic": {
            "n_samples": 60,
            "n_features": 3,
            "n_classes": 3,
            "class_sep": 2.0,
            "label_noise": 0.1,
            "task": "classification",
            "flip_fraction": 0.1,
        },
        "file": {
            "path": "X.npy",
            "labels_path": "y.npy",
            "label_column": "y",
            "storage_options": {"anon": True},
            "scaling": "unit_ball",
        },
    },
}
SECTIONS = {"learner": LearnerConfig, "sampler": SamplerConfig, "dataset": DatasetConfig}
OWN = [
    (section, kind, fields)
    for section, kinds in OWN_FIELDS.items()
    for kind, fields in kinds.items()
]


def test_every_kind_is_covered():
    for section, kinds in OWN_FIELDS.items():
        assert list(kinds) == list(SECTIONS[section].kinds)
    for section in ("learner", "sampler"):
        for kind, model in SECTIONS[section].kinds.items():
            assert set(model.model_fields) == {"kind", *OWN_FIELDS[section][kind]}


@pytest.mark.parametrize(("section", "kind", "fields"), OWN, ids=[f"{s}-{k}" for s, k, _ in OWN])
def test_each_kind_accepts_its_own_fields(section, kind, fields):
    tagged = SECTIONS[section]
    config = parse_experiment({**BASE, section: {tagged.tag: kind, **fields}})
    settings = getattr(config, section)
    assert type(settings) is tagged.kinds[kind]
    assert {name: getattr(settings, name) for name in fields} == fields
    assert tagged(**{tagged.tag: kind, **fields}) == settings  # the class builds the same


@pytest.mark.parametrize(
    ("section", "settings", "message"),
    [
        (
            "learner",
            {"kind": "ridge", "alpha": 2.0, "hidden": 7},
            "learner.hidden: not a field of learner kind 'ridge'",
        ),
        ("learner", {"kind": "mlp", "C": 5}, "learner.C: not a field of learner kind 'mlp'"),
        (
            "learner",
            {"kind": "svm", "alpha": 2.0},
            "learner.alpha: not a field of learner kind 'svm'",
        ),
        (
            "sampler",
            {"kind": "bernoulli", "min_size": 3},
            "sampler.min_size: not a field of sampler kind 'bernoulli'",
        ),
        (
            "sampler",
            {"kind": "permutation", "alpha": 0.5},
            "sampler.alpha: not a field of sampler kind 'permutation'",
        ),
        (
            "dataset",
            {"source": "sklearn", "name": "iris", "n_samples": 100},
            "dataset.n_samples: not a field of dataset source 'sklearn'",
        ),
        (
            "dataset",
            {"source": "synthetic", "path": "d.csv"},
            "dataset.path: not a field of dataset source 'synthetic'",
        ),
    ],
)
def test_a_field_of_another_kind_is_named_with_the_kind(section, settings, message):
    with pytest.raises(ConfigError) as err:
        parse_experiment({**BASE, section: settings})
    assert str(err.value).splitlines()[1:] == [f"  {message}"]


def test_every_field_of_another_kind_is_named_and_other_errors_keep_their_place():
    with pytest.raises(ConfigError) as err:
        parse_experiment({**BASE, "learner": {"kind": "ridge", "C": 5, "hidden": 7, "alpha": 0}})
    assert str(err.value).splitlines()[1:] == [
        "  learner.alpha: Input should be greater than 0",
        "  learner.C: not a field of learner kind 'ridge'",
        "  learner.hidden: not a field of learner kind 'ridge'",
    ]


@pytest.mark.parametrize(
    ("section", "settings", "message"),
    [
        (
            "learner",
            {"kind": "knn"},
            "learner.kind: 'knn' is not a learner kind; one of logistic, svm, ridge, mlp, "
            "torch, custom, sklearn",
        ),
        (
            "learner",
            {"C": 1.0},
            "learner.kind: Field required (one of logistic, svm, ridge, mlp, torch, custom, "
            "sklearn)",
        ),
        (
            "sampler",
            {"kind": "sobol"},
            "sampler.kind: 'sobol' is not a sampler kind; one of bernoulli, fixed_size, "
            "uniform_size, leave_one_out, permutation",
        ),
        (
            "dataset",
            {"source": "hdf5"},
            "dataset.source: 'hdf5' is not a dataset source; one of sklearn, synthetic, file",
        ),
    ],
)
def test_an_unknown_or_missing_kind_lists_the_kinds(section, settings, message):
    with pytest.raises(ConfigError) as err:
        parse_experiment({**BASE, section: settings})
    assert str(err.value).splitlines()[1:] == [f"  {message}"]


def test_the_section_classes_build_the_model_of_each_kind():
    ridge = LearnerConfig(kind="ridge", alpha=2.0)
    assert isinstance(ridge, RidgeLearnerConfig) and ridge.alpha == 2.0
    assert ridge.model_copy(update={"dtype": "float32"}).dtype == "float32"
    assert isinstance(SamplerConfig(kind="uniform_size", min_size=3), UniformSizeSamplerConfig)
    assert isinstance(DatasetConfig(source="sklearn", name="wine"), SklearnDatasetConfig)
    assert LearnerConfig.model_validate({"kind": "mlp"}) == MLPLearnerConfig(kind="mlp")
    with pytest.raises(ValidationError, match="hidden"):
        LearnerConfig(kind="ridge", hidden=3)


def test_an_svm_learner_validates_and_refuses_a_field_it_does_not_read(tmp_path):
    config = load_experiment(write(tmp_path, {**BASE, "learner": {"kind": "svm", "C": 0.5}}))
    assert isinstance(config.learner, SVMLearnerConfig)
    assert (config.learner.C, config.learner.tol, config.learner.max_iter) == (0.5, 1e-8, 500)
    with pytest.raises(ConfigError, match=r"learner\.gamma"):
        load_experiment(write(tmp_path, {**BASE, "learner": {"kind": "svm", "gamma": 2.0}}))
    with pytest.raises(ConfigError, match=r"learner\.C"):
        load_experiment(write(tmp_path, {**BASE, "learner": {"kind": "svm", "C": 0}}))


def test_a_record_with_every_kinds_fields_gives_the_model_of_its_kind():
    """Stores written before each kind had its own model recorded every kind's fields."""
    recorded = {
        "kind": "logistic",
        "C": 0.1,
        "alpha": 1.0,
        "tol": 1e-8,
        "max_iter": 500,
        "hidden": 32,
        "epochs": 30,
        "lr": 0.1,
        "batch_size": 32,
        "weight_decay": 1e-4,
        "dtype": "float64",
    }
    assert LearnerConfig.from_record(recorded) == LearnerConfig(kind="logistic", C=0.1)
    with pytest.raises(ValidationError, match="knn"):
        LearnerConfig.from_record({"kind": "knn", "C": 0.1})


def test_only_a_file_dataset_has_its_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_experiment({**BASE, "dataset": {"source": "file", "path": "d.csv"}})
    assert config.with_absolute_paths().dataset.path == str(tmp_path / "d.csv")
    sklearn = parse_experiment(BASE).with_absolute_paths()
    assert sklearn.dataset == parse_experiment(BASE).dataset


# The splits section: the store's row split, and configs that still give it as predictor
# fields (YAML files, a resolved config a run wrote, the config a store recorded).

MOVED = r"predictor\.(val|test)_fraction has moved to splits\.(val|test)_fraction"


def old_layout(data: dict) -> dict:
    """``data`` (a whole config) as written before the splits section: its two shares
    under predictor, and no section (nor the fields it brought) of its own."""
    data = dict(data)
    splits = data.pop("splits")
    shares = {name: splits[name] for name in ("val_fraction", "test_fraction")}
    return {**data, "predictor": {**data["predictor"], **shares}}


def test_the_section_has_the_former_predictor_defaults_and_bounds():
    config = parse_experiment(BASE)
    assert config.splits == SplitsConfig(val_fraction=0.1, test_fraction=0.1)
    assert "val_fraction" not in PredictorConfig.model_fields
    given = parse_experiment({**BASE, "splits": {"val_fraction": 0.2, "test_fraction": 0.3}})
    assert (given.splits.val_fraction, given.splits.test_fraction) == (0.2, 0.3)
    with pytest.raises(ConfigError, match=r"splits\.test_fraction"):
        parse_experiment({**BASE, "splits": {"test_fraction": 0.5}})


def test_the_data_set_split_is_another_setting():
    config = parse_experiment({**BASE, "splits": {"test_fraction": 0.3}})
    assert config.dataset.test_fraction == 0.15 and config.splits.test_fraction == 0.3
    for field in ("val_fraction", "test_fraction"):
        assert f"splits.{field}" in type(config.dataset).model_fields[field].description
    assert "dataset.val_fraction" in SplitsConfig.__doc__


def test_a_yaml_file_with_the_predictor_fields_loads_into_splits_with_a_warning(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(
        yaml.safe_dump(
            {**BASE, "predictor": {"steps": 40, "val_fraction": 0.2, "test_fraction": 0.3}}
        )
    )
    with pytest.warns(FutureWarning) as caught:
        config = load_experiment(path)
    messages = sorted(str(warning.message) for warning in caught)
    assert messages == [
        "predictor.test_fraction has moved to splits.test_fraction; read as splits.test_fraction",
        "predictor.val_fraction has moved to splits.val_fraction; read as splits.val_fraction",
    ]
    assert config.splits == SplitsConfig(val_fraction=0.2, test_fraction=0.3)
    assert config.predictor.steps == 40


def test_a_resolved_config_written_before_the_section_runs_the_same(tmp_path):
    config = parse_experiment({**BASE, "splits": {"test_fraction": 0.25}})
    path = tmp_path / "resolved_config.yaml"
    path.write_text(yaml.safe_dump(old_layout(config.model_dump(mode="json"))))
    with pytest.warns(FutureWarning, match=MOVED):
        again = load_experiment(path)
    assert again.model_dump() == config.model_dump()
    assert "val_fraction" not in yaml.safe_load(config_yaml(again))["predictor"]


def test_a_config_recorded_in_an_existing_store_still_reads(tmp_path):
    config = parse_experiment(
        {**BASE, "store": {"uri": str(tmp_path / "old.zarr"), "n_rows": 20, "block_rows": 10}}
    )
    BlockTrainer(config, load_dataset(config.dataset))  # declares the store
    # What a store retrained before the splits section recorded.
    group = zarr.open_group(config.store.uri, mode="r+")
    group.attrs[CONFIG_ATTR] = old_layout(config.model_dump(mode="json"))
    with pytest.warns(FutureWarning, match=MOVED):
        recorded = parse_experiment(ExperimentStore.open(config.store.uri).recorded_config())
    assert recorded.model_dump() == config.model_dump()


def test_the_same_share_in_both_places_is_accepted_and_different_ones_are_refused():
    with pytest.warns(FutureWarning, match=MOVED):
        same = parse_experiment(
            {**BASE, "predictor": {"test_fraction": 0.3}, "splits": {"test_fraction": 0.3}}
        )
    assert same.splits.test_fraction == 0.3
    with warnings.catch_warnings(), pytest.raises(ConfigError) as refused:
        warnings.simplefilter("ignore", FutureWarning)
        parse_experiment(
            {**BASE, "predictor": {"test_fraction": 0.3}, "splits": {"test_fraction": 0.2}}
        )
    assert "predictor.test_fraction (0.3) and splits.test_fraction (0.2) differ" in str(
        refused.value
    )


def test_the_split_is_not_a_searchable_predictor_field():
    with pytest.raises(ConfigError, match="'val_fraction' is not a predictor field"):
        parse_experiment(
            {
                **BASE,
                "tune": {"search_space": {"val_fraction": {"type": "choice", "values": [0.1]}}},
            }
        )
