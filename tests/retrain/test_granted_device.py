"""The device a retraining actor trains on, from what Ray granted it and what torch sees;
and the memory budget a BlockTrainer gives its learner (none on a CPU)."""

from __future__ import annotations

import pytest
import torch

from mp_ray.config import parse_experiment
from mp_ray.data import load_dataset
from mp_ray.errors import MpRayError
from mp_ray.retrain import BlockTrainer
from mp_ray.retrain.block import GpuNotVisibleError, granted_device


@pytest.mark.parametrize("cuda_available", [False, True])
def test_no_gpu_granted_trains_on_cpu(cuda_available):
    assert granted_device(0.0, cuda_available) == torch.device("cpu")


@pytest.mark.parametrize("gpus", [0.25, 1.0, 2.0])
def test_a_granted_gpu_that_torch_sees_is_used(gpus):
    assert granted_device(gpus, cuda_available=True) == torch.device("cuda")


def test_a_granted_gpu_that_torch_cannot_see_is_refused():
    with pytest.raises(GpuNotVisibleError) as caught:
        granted_device(0.25, cuda_available=False)
    message = str(caught.value)
    assert "Ray granted this actor 0.25 GPU but torch sees no CUDA device" in message
    assert "CUDA_VISIBLE_DEVICES" in message and "retrain.num_gpus: 0" in message
    assert isinstance(caught.value, MpRayError)


def test_a_cpu_trainer_ignores_the_gpu_memory_budget(tmp_path):
    config = parse_experiment(
        {
            "dataset": {"source": "sklearn", "name": "wine"},
            "learner": {"kind": "logistic"},
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": str(tmp_path / "budget.zarr"), "n_rows": 20, "block_rows": 10},
            "retrain": {"num_gpus": 0.25, "gpu_memory_budget_mb": 1.0},
        }
    )
    trainer = BlockTrainer(config, load_dataset(config.dataset))
    assert trainer.learner.memory_budget is None


def test_warn_trains_on_cpu_and_logs_the_problem(caplog):
    with caplog.at_level("WARNING", logger="mp_ray.retrain.block"):
        assert granted_device(0.5, cuda_available=False, on_missing="warn") == torch.device("cpu")
    (record,) = caplog.records
    assert "Ray granted this actor 0.5 GPU but torch sees no CUDA device" in record.getMessage()
    assert "training on CPU (retrain.on_missing_gpu: warn)" in record.getMessage()
    assert granted_device(0.5, cuda_available=True, on_missing="warn") == torch.device("cuda")
