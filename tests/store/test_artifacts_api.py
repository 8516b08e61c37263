"""The store's artifacts API: round trips of every kind, interrupted writes, rewrites that
leave everything else alone, and stores written before the API (by direct Zarr calls)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from mp_ray.apps.valuation import ValuationResult
from mp_ray.datamodels.fit import Datamodels
from mp_ray.datamodels.storage import DatamodelsNotFoundError, read_datamodels, write_datamodels
from mp_ray.store import (
    ArtifactIncompleteError,
    ArtifactNotFoundError,
    Artifacts,
    ExperimentStore,
    StoreMismatchError,
    StoreSpec,
)

N_TRAIN, N_TARGETS, N_GROUPS, N_PARAMS = 6, 3, 2, 4
SPEC = StoreSpec(
    n_rows=4,
    n_train=N_TRAIN,
    n_params=N_PARAMS,
    n_targets=N_TARGETS,
    metric_names=("subset_size",),
    block_rows=2,
    dataset_fingerprint="cd" * 32,
    dataset_name="toy",
    root_seed=1,
    learner={"kind": "logistic"},
    sampler={"kind": "bernoulli", "alpha": 0.5},
)
ROW_ARRAYS = ("masks", "params", "outputs", "metrics", "seeds", "done")


def datamodels_arrays(seed: int) -> dict[str, np.ndarray]:
    """Datamodels of T targets over n points with a path of K = 5 λ."""
    rng = np.random.default_rng(seed)
    return {
        "weights": rng.normal(size=(N_TARGETS, N_TRAIN)).astype(np.float32),
        "bias": rng.normal(size=N_TARGETS),
        "lam": rng.random(N_TARGETS),
        "val_mse": rng.random(N_TARGETS),
        "val_path": rng.random((5, N_TARGETS)),
        "lambdas": rng.random((5, N_TARGETS)),
    }


def distill_arrays(seed: int) -> dict[str, np.ndarray]:
    """A distilled datamodel: G groups of m = 1 synthetic example, p = 2 features,
    c = 2 classes, R = 3 held-out removals."""
    rng = np.random.default_rng(seed)
    return {
        "groups": rng.integers(0, N_GROUPS, N_TRAIN),
        "theta": rng.normal(size=N_PARAMS),
        "features": rng.normal(size=(N_GROUPS, 1, 2)),
        "labels": np.full((N_GROUPS, 1, 2), 0.5),
        "weights": np.ones((N_GROUPS, 1)),
        "single": rng.normal(size=(N_GROUPS, N_PARAMS)),
        "unions": rng.random((3, N_GROUPS)) < 0.5,
        "union_params": rng.normal(size=(3, N_PARAMS)),
    }


def valuation(seed: int) -> ValuationResult:
    rng = np.random.default_rng(seed)
    return ValuationResult(
        method="tmc",
        values=rng.normal(size=N_TRAIN),
        stderr=rng.random(N_TRAIN),
        counts=rng.integers(1, 9, N_TRAIN),
        n_evaluations=40,
        converged=False,
        seconds=1.5,
        params={"metric": "accuracy", "samples": 10, "models": "retrain"},
    )


@pytest.fixture
def store(tmp_path) -> ExperimentStore:
    """A writable store with every row written."""
    store = ExperimentStore.create_or_open(str(tmp_path / "s.zarr"), SPEC)
    rng = np.random.default_rng(0)
    for block in range(store.n_blocks):
        k = len(store.block_rows(block))
        store.write_block(
            block,
            {
                "masks": rng.random((k, N_TRAIN)) < 0.5,
                "params": rng.normal(size=(k, N_PARAMS)),
                "outputs": rng.normal(size=(k, N_TARGETS)),
                "metrics": rng.random((k, 1)),
                "seeds": np.arange(k),
            },
        )
    return store


def assert_arrays_equal(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        assert found[key].dtype == value.dtype, key
        np.testing.assert_array_equal(found[key], value, err_msg=key)


def test_every_kind_round_trips(store, tmp_path):
    models = datamodels_arrays(1)
    store.artifacts.write("datamodels", "a", models, {"dataset_fingerprint": "x", "k": [1, 2]})
    arrays, meta = store.artifacts.read("datamodels", "a")
    assert_arrays_equal(arrays, models)
    assert meta == {"dataset_fingerprint": "x", "k": [1, 2]}
    assert store.artifacts.read("datamodels", "a", fingerprint="x")[1] == meta
    with pytest.raises(StoreMismatchError, match=r"'a' in .* was fitted on another dataset"):
        store.artifacts.read("datamodels", "a", fingerprint="y" * 32)

    distilled = distill_arrays(2)
    store.artifacts.write("distill", None, distilled, {"eta": 0.1, "report": {"residual": 0.2}})
    arrays, meta = store.artifacts.read("distill")
    assert_arrays_equal(arrays, distilled)
    assert meta == {"eta": 0.1, "report": {"residual": 0.2}}

    values = {"values": np.arange(3.0), "stderr": np.zeros(3), "counts": np.ones(3, np.int64)}
    store.artifacts.write("valuation", "v", values, {"method": "loo", "seconds": 2.0})
    arrays, meta = store.artifacts.read("valuation", "v")
    assert_arrays_equal(arrays, values)
    assert meta == {"method": "loo", "seconds": 2.0}

    # A distilled datamodel at a URI of its own is the root of its group.
    own = Artifacts.at_own_uri(str(tmp_path / "d.zarr"), None, "distill", write=True)
    own.write("distill", None, distilled, {"eta": 0.3})
    arrays, meta = Artifacts.at_own_uri(str(tmp_path / "d.zarr"), None, "distill", False).read(
        "distill"
    )
    assert_arrays_equal(arrays, distilled)
    assert meta == {"eta": 0.3}
    assert sorted(zarr.open_group(str(tmp_path / "d.zarr"), mode="r").array_keys()) == sorted(
        distilled
    )

    # The packages' writers and readers go through it.
    write_datamodels(store, Datamodels(**models), {"rows": {"train": 2}}, "b")
    model, meta = read_datamodels(store, "b")
    np.testing.assert_array_equal(model.weights, models["weights"])
    assert meta["dataset_fingerprint"] == SPEC.dataset_fingerprint and meta["n_targets"] == 3
    result = valuation(3)
    result.to_store(store, "tmc")
    back = ValuationResult.from_store(ExperimentStore.open(store.uri), "tmc")
    np.testing.assert_array_equal(back.values, result.values)
    assert back.counts.dtype == np.int64 and back.params == result.params

    assert [(entry["group"], entry["complete"]) for entry in store.artifacts.list()] == [
        ("datamodels/a", True),
        ("datamodels/b", True),
        ("distill", True),
        ("valuation/tmc", True),
        ("valuation/v", True),
    ]


def test_missing_artifacts_and_bad_writes_are_refused(store, tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="holds no datamodels 'none'"):
        store.artifacts.read("datamodels", "none")
    with pytest.raises(ArtifactNotFoundError, match="holds no distilled datamodel"):
        store.artifacts.read("distill")
    with pytest.raises(DatamodelsNotFoundError, match="has no datamodels named 'none'"):
        read_datamodels(store, "none")
    with pytest.raises(KeyError, match="has no valuation result named 'none'"):
        ValuationResult.from_store(store, "none")
    with pytest.raises(ValueError, match="has arrays weights, bias"):
        store.artifacts.write("datamodels", "a", {"weights": np.zeros(2)}, {"n": 1})
    unmarked = dict.fromkeys(("values", "stderr", "counts"), np.zeros(2))
    with pytest.raises(ValueError, match="would not mark the valuation complete"):
        store.artifacts.write("valuation", "v", unmarked, {"seconds": 1.0})
    with pytest.raises(ValueError, match="without '/'"):
        store.artifacts.write("datamodels", "a/b", datamodels_arrays(0), {"n": 1})
    with pytest.raises(ValueError, match="without a name"):
        store.artifacts.read("distill", "named")
    assert store.artifacts.list() == []
    with pytest.raises(StoreMismatchError, match="is an experiment store"):
        Artifacts.at_own_uri(store.uri, None, "distill", write=True)
    with pytest.raises(ArtifactNotFoundError, match="no distilled datamodel at"):
        Artifacts.at_own_uri(str(tmp_path / "absent.zarr"), None, "distill", write=False)


def test_an_interrupted_write_reads_as_incomplete(store, tmp_path, monkeypatch):
    result = valuation(4)
    result.to_store(store, "tmc")
    store.artifacts.write("distill", None, distill_arrays(1), {"eta": 0.1})
    own = Artifacts.at_own_uri(str(tmp_path / "d.zarr"), None, "distill", write=True)
    own.write("distill", None, distill_arrays(1), {"eta": 0.1})

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    # The arrays are written, the metadata is not: a new artifact, and a rewrite of a
    # complete one, are both left incomplete (the old metadata never marks new arrays).
    monkeypatch.setattr(zarr.core.attributes.Attributes, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_datamodels(store, Datamodels(**datamodels_arrays(1)), {}, "cut")
    with pytest.raises(KeyboardInterrupt):
        result.to_store(store, "tmc")
    with pytest.raises(KeyboardInterrupt):
        store.artifacts.write("distill", None, distill_arrays(2), {"eta": 0.2})
    with pytest.raises(KeyboardInterrupt):
        own.write("distill", None, distill_arrays(2), {"eta": 0.2})
    monkeypatch.undo()

    assert "weights" in zarr.open_group(store.uri, mode="r")["datamodels/cut"]
    with pytest.raises(ArtifactIncompleteError, match=r"datamodels 'cut' in .* not completely"):
        store.artifacts.read("datamodels", "cut")
    with pytest.raises(DatamodelsNotFoundError, match="were not completely written: fit them"):
        read_datamodels(store, "cut")
    with pytest.raises(KeyError, match=r"was not completely written: run `mp-ray value`"):
        ValuationResult.from_store(store, "tmc")
    with pytest.raises(ArtifactIncompleteError):
        store.artifacts.read("distill")
    with pytest.raises(ArtifactIncompleteError):
        Artifacts.at_own_uri(str(tmp_path / "d.zarr"), None, "distill", write=False).read("distill")
    found = store.artifacts.list()
    assert [(entry["group"], entry["complete"], entry["facts"]) for entry in found] == [
        ("datamodels/cut", False, {}),
        ("distill", False, {}),
        ("valuation/tmc", False, {}),
    ]


def test_rewriting_one_artifact_leaves_the_rest(store):
    rows = {name: store.read(name) for name in ROW_ARRAYS}
    write_datamodels(store, Datamodels(**datamodels_arrays(1)), {"fit": 1}, "a")
    write_datamodels(store, Datamodels(**datamodels_arrays(2)), {"fit": 2}, "b")
    store.artifacts.write("distill", None, distill_arrays(3), {"eta": 0.1})
    valuation(4).to_store(store, "tmc")
    before = {
        "b": store.artifacts.read("datamodels", "b"),
        "distill": store.artifacts.read("distill"),
        "tmc": store.artifacts.read("valuation", "tmc"),
    }

    write_datamodels(store, Datamodels(**datamodels_arrays(5)), {"fit": 3}, "a")
    reopened = ExperimentStore.open(store.uri)
    model, meta = read_datamodels(reopened, "a")
    np.testing.assert_array_equal(model.weights, datamodels_arrays(5)["weights"])
    assert meta["fit"] == 3
    after = {
        "b": reopened.artifacts.read("datamodels", "b"),
        "distill": reopened.artifacts.read("distill"),
        "tmc": reopened.artifacts.read("valuation", "tmc"),
    }
    for key, (arrays, meta) in before.items():
        assert_arrays_equal(after[key][0], arrays)
        assert after[key][1] == meta
    for name, values in rows.items():
        np.testing.assert_array_equal(reopened.read(name), values)
    assert reopened.completed_rows().tolist() == [0, 1, 2, 3]
    assert [entry["group"] for entry in reopened.artifacts.list()] == [
        "datamodels/a",
        "datamodels/b",
        "distill",
        "valuation/tmc",
    ]


def test_a_store_written_before_the_api_still_reads(store, tmp_path):
    """Every artifact written the way the writers did before, with direct Zarr calls."""
    models, distilled, result = datamodels_arrays(1), distill_arrays(2), valuation(3)
    root = zarr.open_group(store.uri, mode="r+")
    group = root.require_group("datamodels").create_group("old", overwrite=True)
    for name, value in models.items():
        group.create_array(name, data=np.ascontiguousarray(value))
    group.attrs["mp_ray_datamodels"] = {
        "dataset_fingerprint": SPEC.dataset_fingerprint,
        "n_targets": N_TARGETS,
        "n_train": N_TRAIN,
    }
    group = root.require_group("distill")
    for name, value in distilled.items():
        group.create_array(name, data=np.ascontiguousarray(value), overwrite=True)
    group.attrs["mp_ray_distill"] = {"eta": 0.5, "n_groups": N_GROUPS, "per_group": 1}
    group = root.require_group("valuation").create_group("tmc", overwrite=True)
    for key in ("values", "stderr", "counts"):
        group.create_array(key, data=getattr(result, key))
    meta = {
        "method": result.method,
        "n_evaluations": result.n_evaluations,
        "converged": result.converged,
        "seconds": result.seconds,
        "params": result.params,
    }
    group.attrs.update(meta)
    own = zarr.open_group(str(tmp_path / "d.zarr"), mode="a")
    for name, value in distilled.items():
        own.create_array(name, data=np.ascontiguousarray(value), overwrite=True)
    own.attrs["mp_ray_distill"] = {"eta": 0.7}

    reopened = ExperimentStore.open(store.uri)
    model, meta_back = read_datamodels(reopened, "old")
    assert_arrays_equal(
        {name: getattr(model, name) for name in models},
        models,
    )
    assert meta_back["n_targets"] == N_TARGETS
    arrays, meta_back = reopened.artifacts.read("distill")
    assert_arrays_equal(arrays, distilled)
    assert meta_back["eta"] == 0.5
    back = ValuationResult.from_store(reopened, "tmc")
    np.testing.assert_array_equal(back.values, result.values)
    assert (back.method, back.n_evaluations, back.params) == ("tmc", 40, result.params)
    arrays, meta_back = Artifacts.at_own_uri(str(tmp_path / "d.zarr"), None, "distill", False).read(
        "distill"
    )
    assert_arrays_equal(arrays, distilled)
    assert meta_back == {"eta": 0.7}
    found = reopened.artifacts.list()
    assert [(entry["kind"], entry["group"], entry["complete"]) for entry in found] == [
        ("datamodels", "datamodels/old", True),
        ("distilled datamodel", "distill", True),
        ("valuation", "valuation/tmc", True),
    ]
    assert found[1]["facts"] == {"n_groups": N_GROUPS, "per_group": 1, "eta": 0.5}
    assert found[2]["facts"]["metric"] == "accuracy"
