"""Stores trained in the test's own process, block by block, without Ray."""

from __future__ import annotations

from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset, load_dataset
from mp_ray.retrain import BlockTrainer
from mp_ray.store import ExperimentStore


def train_in_process(config: ExperimentConfig, dataset: Dataset | None = None) -> ExperimentStore:
    """Train every block of ``config``'s store here (``dataset``: the config's, loaded when
    not given) and return the store."""
    trainer = BlockTrainer(config, dataset if dataset is not None else load_dataset(config.dataset))
    for block in range(trainer.store.n_blocks):
        trainer.run_block(block)
    return trainer.store
