"""Retraining on a real local Ray: end to end, a killed actor, an interrupted job, bad input."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from mp_ray.config import ExperimentConfig, parse_experiment
from mp_ray.data import load_dataset
from mp_ray.learners import make_learner
from mp_ray.ray_resources import ResourcesError
from mp_ray.retrain import BlockTrainer, run_retrain
from mp_ray.retrain.block import RunStopped
from mp_ray.sampling import make_sampler, row_seeds
from mp_ray.store import ExperimentStore, StoreMismatchError

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def experiment(uri: str, **store: object) -> ExperimentConfig:
    return parse_experiment(
        {
            "seed": 7,
            "dataset": {"source": "sklearn", "name": "wine"},
            "learner": {"kind": "logistic", "C": 1.0},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": uri, "n_rows": 120, "block_rows": 10, **store},
            "retrain": {"num_actors": 2, "num_cpus": 1, "max_in_flight": 2},
        }
    )


def assert_store_is_exactly_the_experiment(config: ExperimentConfig) -> None:
    """Every row holds what (seed, row) alone determines: its mask, seed and trained params."""
    store = ExperimentStore.open(config.store.uri)
    assert store.pending_blocks() == []
    dataset = load_dataset(config.dataset)
    rows = np.arange(store.spec.n_rows)
    masks = make_sampler(config.sampler, dataset.n_train, config.seed).masks(rows)
    np.testing.assert_array_equal(store.read("masks"), masks)
    np.testing.assert_array_equal(store.read("seeds"), row_seeds(config.seed, rows))
    learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    expected = learner.fit_batch(torch.as_tensor(masks[::7])).numpy()
    np.testing.assert_allclose(store.read("params")[::7], expected, rtol=1e-4, atol=1e-5)


def test_retrain_end_to_end_with_two_actors(ray_session, tmp_path):
    config = experiment(str(tmp_path / "e2e.zarr"))
    seen: list[int] = []
    report = run_retrain(config, on_result=lambda r: seen.append(r["block"]))
    assert sorted(seen) == list(range(12))
    assert report.blocks_trained == 12 and report.rows_trained == 120
    assert report.blocks_skipped == 0 and report.retries == {}
    assert report.models_per_second > 0
    assert_store_is_exactly_the_experiment(config)
    store = ExperimentStore.open(config.store.uri)
    metrics = store.metrics_table()
    assert metrics["test_accuracy"].mean() > 0.85
    np.testing.assert_array_equal(metrics["subset_size"], store.read("masks").sum(axis=1))
    assert metrics["grad_norm"].max() < 1e-4
    # The outputs are the correct-class margins of the stored models on the test split.
    dataset = load_dataset(config.dataset)
    learner = make_learner(config.learner, dataset.X_train, dataset.y_train, dataset.n_classes)
    params = torch.as_tensor(store.read("params", slice(0, 5)), dtype=torch.float64)
    margins = learner.margin(params, dataset.X_test, dataset.y_test)
    np.testing.assert_allclose(store.read("outputs", slice(0, 5)), margins.numpy(), atol=1e-4)


def test_killed_actor_loses_and_duplicates_nothing(ray_session, tmp_path):
    config = experiment(str(tmp_path / "kill.zarr"), n_rows=200)
    seen: list[int] = []
    killed: list[int] = []

    def kill_first_actor(result: dict) -> None:
        seen.append(result["block"])
        if not killed:
            killed.append(result["pid"])
            os.kill(result["pid"], signal.SIGKILL)

    report = run_retrain(config, on_result=kill_first_actor)
    assert report.actors_replaced == 1
    assert sum(report.retries.values()) >= 1
    assert sorted(seen) == list(range(20))  # every block reported exactly once
    assert_store_is_exactly_the_experiment(config)


def test_interrupted_job_resumes_skipping_finished_blocks(ray_session, tmp_path):
    config = experiment(str(tmp_path / "resume.zarr"))

    seen: list[int] = []

    def interrupt_after_three(result: dict) -> None:
        seen.append(result["block"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_retrain(config, on_result=interrupt_after_three)
    finished = 12 - len(ExperimentStore.open(config.store.uri).pending_blocks())
    assert finished >= 3
    report = run_retrain(config)
    assert report.blocks_skipped == finished
    assert report.blocks_trained == 12 - finished
    assert_store_is_exactly_the_experiment(config)
    # A third run has nothing left to do.
    assert run_retrain(config).blocks_trained == 0


def test_a_closed_write_fence_leaves_the_block_pending(tmp_path):
    config = experiment(str(tmp_path / "fence.zarr"))
    trainer = BlockTrainer(config, load_dataset(config.dataset))
    assert trainer.run_block(0)["skipped"] is False
    trainer.fence.close()
    with pytest.raises(RunStopped, match="block 1 was trained after its run stopped"):
        trainer.run_block(1)
    assert ExperimentStore.open(config.store.uri).pending_blocks() == list(range(1, 12))


def test_store_from_another_dataset_is_refused(ray_session, tmp_path):
    uri = str(tmp_path / "mixed.zarr")
    run_retrain(experiment(uri, n_rows=20))
    other = experiment(uri, n_rows=20).model_copy(
        update={"dataset": experiment(uri).dataset.model_copy(update={"name": "iris"})}
    )
    with pytest.raises(StoreMismatchError, match="built from another dataset"):
        run_retrain(other)
    assert ExperimentStore.open(uri).pending_blocks() == []


def test_memory_store_cannot_be_used_by_actors(tmp_path):
    with pytest.raises(ValueError, match="Ray actors cannot reach"):
        run_retrain(experiment("memory://x"))


@pytest.mark.s3
def test_retrain_into_s3(ray_session, s3_server, s3_bucket):
    config = experiment(f"s3://{s3_bucket}/wine.zarr", n_rows=40, storage_options=s3_server)
    report = run_retrain(config)
    assert report.rows_trained == 40
    store = ExperimentStore.open(config.store.uri, s3_server)
    assert store.pending_blocks() == []
    assert store.metrics_table()["test_accuracy"].mean() > 0.85


def test_actor_demands_the_cluster_cannot_meet_fail_fast(ray_session, tmp_path):
    config = experiment(str(tmp_path / "gpu.zarr"), n_rows=20)
    gpu = config.model_copy(
        update={
            "retrain": config.retrain.model_copy(update={"num_gpus": 1, "resources": {"big": 1}})
        }
    )
    with pytest.raises(ResourcesError, match=r"GPU=1 \(cluster has 0\), big=1 \(cluster has 0\)"):
        run_retrain(gpu)
