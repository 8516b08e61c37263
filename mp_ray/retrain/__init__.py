"""Retraining on Ray: many models on sampled subsets, written block by block to the store."""

from mp_ray.retrain.block import BlockTrainer, build_spec, metric_names
from mp_ray.retrain.job import RetrainReport, prepare_store, run_retrain
from mp_ray.retrain.pool import ActorPool, RetrainError

__all__ = [
    "ActorPool",
    "BlockTrainer",
    "RetrainError",
    "RetrainReport",
    "build_spec",
    "metric_names",
    "prepare_store",
    "run_retrain",
]
