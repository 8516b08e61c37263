"""Experiment identity: what it holds, how two are compared, and the one-line refusal."""

from __future__ import annotations

import numpy as np
import pytest

from mp_ray.config import LearnerConfig, SamplerConfig, load_experiment
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner
from mp_ray.predictor.predictor import PredictorMeta
from mp_ray.predictor.scaling import TargetScaler
from mp_ray.retrain.block import build_spec
from mp_ray.store import ExperimentStore, StoreIncompleteError, StoreMismatchError
from mp_ray.store.identity import (
    DATAMODELS_UNREAD,
    FIT_UNREAD,
    LEARNER_SETTINGS,
    MODELS_UNREAD,
    SAMPLER_SETTINGS,
    config_identity,
    differences,
    make_identity,
)

FINGERPRINT = "ab" * 32


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(
        "seed: 4\n"
        "dataset: {source: sklearn, name: breast_cancer, max_train: 60}\n"
        "learner: {kind: logistic, C: 0.1}\n"
        "sampler: {kind: bernoulli, alpha: 0.5}\n"
        f"store: {{uri: {tmp_path / 's.zarr'}, n_rows: 8, block_rows: 4}}\n"
    )
    return path


def with_learner(config, **settings):
    return config.model_copy(update={"learner": config.learner.model_copy(update=settings)})


def test_identity_holds_the_settings_each_kind_reads(config_file):
    config = load_experiment(config_file)
    assert config_identity(config, FINGERPRINT) == {
        "dataset.fingerprint": FINGERPRINT,
        "learner.kind": "logistic",
        "learner.C": 0.1,
        "learner.tol": 1e-8,
        "learner.max_iter": 500,
        "learner.dtype": "float64",
        "sampler.kind": "bernoulli",
        "sampler.alpha": 0.5,
        "seed": 4,
    }
    # A kind this version does not know keeps every recorded setting.
    assert make_identity(None, {"kind": "knn", "neighbours": 2}) == {
        "learner.kind": "knn",
        "learner.neighbours": 2,
    }


def test_the_tables_hold_every_field_of_each_kind():
    """A new learner or sampler setting must be placed in the tables (or it is never checked)."""
    for table, section in ((LEARNER_SETTINGS, LearnerConfig), (SAMPLER_SETTINGS, SamplerConfig)):
        assert set(table) == set(section.kinds)
        for kind, model in section.kinds.items():
            assert set(table[kind]) == set(model.model_fields) - {"kind"}, kind


def test_a_store_recording_every_kinds_fields_keeps_its_identity(config_file):
    """Stores written before each kind had its own model recorded all the fields of every
    kind; the identity of such a store still matches the config's."""
    config = load_experiment(config_file)
    learner = {
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
    sampler = {"kind": "bernoulli", "alpha": 0.5, "min_size": 1, "max_size": None}
    assert make_identity(FINGERPRINT, learner, sampler, 4) == config_identity(config, FINGERPRINT)


def test_differences_name_each_field_with_both_values():
    recorded = make_identity(FINGERPRINT, {"kind": "logistic", "C": 0.1}, {"kind": "bernoulli"}, 0)
    wanted = make_identity(
        "cd" * 32, {"kind": "logistic", "C": 0.2, "tol": 1e-6}, {"kind": "bernoulli"}, 1
    )
    assert differences(recorded, wanted, "store") == [
        f"dataset.fingerprint: store {FINGERPRINT[:12]}…, config {'cd' * 6}…",
        "learner.C: store 0.1, config 0.2",
        "seed: store 0, config 1",
    ]  # learner.tol is not recorded: unknown, not compared
    assert differences(recorded, wanted, "predictor", ("dataset", "seed")) == [
        "learner.C: predictor 0.1, config 0.2"
    ]
    assert differences(recorded, wanted, "store", DATAMODELS_UNREAD) == [
        f"dataset.fingerprint: store {FINGERPRINT[:12]}…, config {'cd' * 6}…"
    ]
    # A prefix names a section, not any field that starts with the same letters.
    assert differences({"seed": 1}, {"seed": 2}, "store", ("se",)) == ["seed: store 1, config 2"]


def test_store_made_with_other_settings_is_refused_in_one_line(config_file, tmp_path):
    config = load_experiment(config_file)
    dataset = load_dataset(config.dataset)
    learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    ExperimentStore.create_or_open(config.store.uri, build_spec(config, dataset, learner))
    uri = ExperimentStore.open(config.store.uri).uri
    fingerprint = dataset.fingerprint

    other = with_learner(config, C=0.2, dtype="float32")
    with pytest.raises(StoreMismatchError) as err:
        ExperimentStore.open_for(other, fingerprint, MODELS_UNREAD)
    assert str(err.value) == (
        f"store {uri} was made with other settings than {config_file}: "
        "learner.C: store 0.1, config 0.2; learner.dtype: store float64, config float32"
    )
    # The fit trains in float32 whatever learner.dtype says: only C is named there.
    with pytest.raises(StoreMismatchError) as err:
        ExperimentStore.open_for(other, fingerprint, FIT_UNREAD)
    assert str(err.value).endswith(f"{config_file}: learner.C: store 0.1, config 0.2")
    # The sampler and seed where the command does not read them are no mismatch.
    unread = config.model_copy(update={"seed": 9})
    assert ExperimentStore.open_for(unread, fingerprint, MODELS_UNREAD).uri == uri
    with pytest.raises(StoreMismatchError, match="seed: store 4, config 9"):
        ExperimentStore.open_for(unread, fingerprint, FIT_UNREAD)
    with pytest.raises(StoreMismatchError, match="was built from another dataset than"):
        ExperimentStore.open_for(config, "cd" * 32, DATAMODELS_UNREAD)
    with pytest.raises(StoreIncompleteError, match="has 2 unfinished blocks"):
        ExperimentStore.open_for(config, fingerprint, FIT_UNREAD, complete=True)


def test_an_older_checkpoint_is_compared_on_what_it_records():
    meta = PredictorMeta(
        width=8,
        n_params=3,
        n_classes=2,
        scaler=TargetScaler.from_variance(np.zeros(3), np.full(3, 0.5)),
        learner={"kind": "logistic", "C": 0.1, "alpha": 1.0},
        dataset_fingerprint=FINGERPRINT,
        store_uri="s.zarr",
    )
    data = meta.to_json()
    del data["store_identity"]  # as written before the store's identity was recorded
    old = PredictorMeta.from_json(data)
    assert old.identity == {
        "dataset.fingerprint": FINGERPRINT,
        "learner.kind": "logistic",
        "learner.C": 0.1,
    }
    recorded = {**old.identity, "seed": 2}
    new = PredictorMeta.from_json({**data, "store_identity": recorded})
    assert new.identity == recorded
