"""A small store of synthetic rows for the streaming datamodels tests, and the datamodels the
dense solver fitted on it (the reference the moments solver must reproduce).

1,200 rows in blocks of 100 over 40 points: Bernoulli(½) masks with point 0 in every subset
(a constant column), every 13th row degenerate, and 6 targets sparse-linear in the masks
plus noise, around offsets up to 60 (far from 0, as margins can be). The reference
(``dense_reference.npz``: weights, bias, lam, val_mse) is what ``fit_datamodels`` computed
on the training and validation rows of this store at commit 276d048, when it built the
standardised design and its Gram matrix densely.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mp_ray.config import SplitsConfig
from mp_ray.store import ExperimentStore, StoreSpec

REFERENCE = Path(__file__).with_name("dense_reference.npz")
SPLITS = SplitsConfig(val_fraction=0.15, test_fraction=0.15)
N_ROWS, BLOCK, N_POINTS, N_TARGETS = 1200, 100, 40, 6
METRICS = ("subset_size", "degenerate")


def make_store(uri: str) -> ExperimentStore:
    """The store described in the module docstring, written at ``uri``."""
    spec = StoreSpec(
        n_rows=N_ROWS,
        n_train=N_POINTS,
        n_params=2,
        n_targets=N_TARGETS,
        metric_names=METRICS,
        block_rows=BLOCK,
        dataset_fingerprint="ef" * 32,
        dataset_name="synthetic",
        root_seed=11,
        sampler={"kind": "bernoulli", "alpha": 0.5},
    )
    store = ExperimentStore.create_or_open(uri, spec)
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(N_POINTS, N_TARGETS)) * (rng.random((N_POINTS, N_TARGETS)) < 0.3)
    offsets = np.linspace(-20.0, 60.0, N_TARGETS)
    for block in range(store.n_blocks):
        rows = store.block_rows(block)
        masks = rng.random((len(rows), N_POINTS)) < 0.5
        masks[:, 0] = True
        outputs = masks @ weights + offsets + rng.normal(scale=1.5, size=(len(rows), N_TARGETS))
        metrics = np.stack([masks.sum(axis=1), (rows % 13 == 0).astype(float)], axis=1)
        store.write_block(
            block,
            {
                "masks": masks,
                "params": np.zeros((len(rows), 2)),
                "outputs": outputs,
                "metrics": metrics,
                "seeds": rows,
            },
        )
    return store
