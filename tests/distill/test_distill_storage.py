"""Saving and loading the distilled datamodel, and the errors that protect it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from mp_ray.config import LearnerConfig, parse_experiment
from mp_ray.data import load_dataset
from mp_ray.distill import DistilledNotFoundError, load_distilled, run_distill
from mp_ray.distill.storage import open_destination, read_distilled, write_distilled
from mp_ray.distill.supervision import retrain_without
from mp_ray.learners import make_learner
from mp_ray.store import ExperimentStore, StoreMismatchError, StoreNotFoundError


def test_round_trip_through_the_experiment_store(distilled):
    model = load_distilled(distilled.config)
    np.testing.assert_array_equal(model.groups, distilled.model.groups)
    assert model.eta == distilled.model.eta
    torch.testing.assert_close(model.steps, distilled.model.steps)
    torch.testing.assert_close(model.theta, distilled.model.theta)
    store = ExperimentStore.open(distilled.config.store.uri)
    arrays, meta = store.artifacts.read("distill")
    assert meta["dataset_fingerprint"] == distilled.dataset.fingerprint
    assert meta["report"]["table"].keys() == distilled.report.table.keys()
    assert arrays["single"].shape == (model.n_groups, 31)


def test_another_dataset_or_learner_is_refused(distilled, tmp_path):
    data = distilled.dataset
    group = open_destination(distilled.config, data.fingerprint, write=False)
    model, truth, _ = read_distilled(group, distilled.model.learner, data.fingerprint)
    # A copy at a URI of its own keeps the record of the dataset it was fitted on.
    own_uri = distilled.config.distill.model_copy(update={"uri": str(tmp_path / "d.zarr")})
    standalone = distilled.config.model_copy(update={"distill": own_uri})
    write_distilled(
        open_destination(standalone, data.fingerprint, write=True),
        model,
        truth,
        data.fingerprint,
        {},
    )
    assert load_distilled(standalone).eta == model.eta
    smaller = standalone.dataset.model_copy(update={"max_train": 140})
    other = standalone.model_copy(update={"dataset": smaller})
    with pytest.raises(StoreMismatchError, match="fitted on another dataset"):
        load_distilled(other)
    with pytest.raises(StoreMismatchError, match="was built from another dataset than the config"):
        run_distill(other)
    # The experiment store keeps the record of its dataset too.
    in_store = other.model_copy(update={"distill": distilled.config.distill})
    with pytest.raises(StoreMismatchError, match="built from another dataset"):
        load_distilled(in_store)
    with pytest.raises(StoreMismatchError, match="built from another dataset"):
        run_distill(in_store)
    mlp = make_learner(LearnerConfig(kind="mlp"), data.X_train, data.y_train, data.n_classes)
    with pytest.raises(
        StoreMismatchError, match=rf"d=31 parameters; the learner has n=150, d={mlp.n_params}"
    ):
        read_distilled(group, mlp, data.fingerprint)


def test_missing_or_foreign_destinations(distilled, tmp_path, make_experiment, make_store):
    with pytest.raises(StoreNotFoundError, match=r"run `mp-ray retrain` first or set distill\.uri"):
        run_distill(make_experiment(tmp_path / "none"))
    as_uri = make_experiment(tmp_path, uri=distilled.config.store.uri)
    with pytest.raises(StoreMismatchError, match="is an experiment store"):
        run_distill(as_uri)
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w").create_array("values", shape=(3,), dtype="f8")
    with pytest.raises(StoreMismatchError, match=r"holds other Zarr content \(values\)"):
        run_distill(make_experiment(tmp_path, uri=str(foreign)))
    with pytest.raises(DistilledNotFoundError, match="no distilled datamodel at"):
        load_distilled(make_experiment(tmp_path, uri=str(tmp_path / "absent.zarr")))

    config = make_experiment(tmp_path / "fresh")
    dataset = load_dataset(config.dataset)
    make_store(config, dataset)
    with pytest.raises(DistilledNotFoundError, match="run `mp-ray distill` first"):
        load_distilled(config, dataset)
    # An interrupted write (arrays without the metadata) is not read.
    zarr.open_group(config.store.uri, mode="r+").require_group("distill").create_array(
        "groups", data=np.zeros(3, dtype=np.int64)
    )
    with pytest.raises(DistilledNotFoundError, match="interrupted write"):
        load_distilled(config, dataset)


def test_unusable_data_is_refused(distilled, tmp_path):
    regression = parse_experiment(
        {
            "dataset": {"source": "sklearn", "name": "diabetes"},
            "learner": {"kind": "ridge"},
            "sampler": {"kind": "bernoulli"},
            "store": {"uri": str(tmp_path / "r.zarr")},
            "distill": {"uri": str(tmp_path / "d.zarr")},
        }
    )
    with pytest.raises(ValueError, match="needs a classification dataset"):
        run_distill(regression)
    data = distilled.dataset
    learner = make_learner(distilled.config.learner, data.X_train, data.y_train, 2)
    whole_class = data.y_train.astype(np.int64)  # group 0 = every point of class 0
    with pytest.raises(ValueError, match=r"removing groups \[0\] leaves a class without"):
        retrain_without(learner, whole_class, np.eye(2, dtype=bool))
