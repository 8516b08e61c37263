"""A trained block's metric columns and outputs equal the learner's own methods, each called
on its own: whether the trainer derives a set's losses from its outputs (a learner with
``loss_from_outputs``) or makes a pass of its own for them, and whether the objective's pass
gives the training loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mp_ray.config import parse_experiment
from mp_ray.data import load_dataset
from mp_ray.retrain import BlockTrainer
from mp_ray.retrain.block import CLASSIFICATION_METRICS

LEARNERS = {
    # one pass for the objective and another for the training loss; a set's loss apart
    "logistic": {"kind": "logistic", "C": 1.0},
    # the set's losses from its outputs; the objective by autograd, the loss apart
    "mlp": {"kind": "mlp", "hidden": 6, "epochs": 10},
    # the set's losses from its outputs; the objective's pass gives the training loss
    "torch": {
        "kind": "torch",
        "factory": "mp_ray.learners.zoo:mlp",
        "factory_kwargs": {"hidden": 6},
        "epochs": 10,
        "dtype": "float64",
    },
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_a_blocks_metrics_equal_the_learners_methods(tmp_path, name):
    config = parse_experiment(
        {
            "seed": 3,
            "dataset": {"source": "sklearn", "name": "wine"},
            "learner": LEARNERS[name],
            "sampler": {"kind": "bernoulli", "alpha": 0.5},
            "store": {"uri": str(tmp_path / "block.zarr"), "n_rows": 12, "block_rows": 6},
        }
    )
    data = load_dataset(config.dataset)
    trainer = BlockTrainer(config, data)
    learner = trainer.learner
    assert trainer.spec.metric_names == CLASSIFICATION_METRICS
    assert learner.provides("loss_from_outputs") == (name != "logistic")
    values = trainer.train_rows(np.arange(6))
    metrics = dict(zip(CLASSIFICATION_METRICS, values["metrics"].T, strict=True))
    params = torch.as_tensor(values["params"], dtype=learner.dtype)
    masks = values["masks"]
    objective, gradient = learner.objective_and_grad(params, masks)
    expected = {
        "subset_size": masks.sum(axis=1),
        "objective": objective,
        "grad_norm": torch.linalg.vector_norm(gradient, dim=1),
        "train_loss": learner.mean_subset_loss(params, masks),
        "val_loss": learner.per_sample_loss(params, data.X_val, data.y_val).mean(dim=1),
        "test_loss": learner.per_sample_loss(params, data.X_test, data.y_test).mean(dim=1),
        "val_accuracy": learner.score(params, data.X_val, data.y_val),
        "test_accuracy": learner.score(params, data.X_test, data.y_test),
    }
    for column, value in expected.items():
        np.testing.assert_allclose(metrics[column], np.asarray(value), rtol=1e-5, err_msg=column)
    margins = learner.margin(params, data.X_test, data.y_test)
    np.testing.assert_allclose(values["outputs"], margins.numpy(), rtol=1e-6)
    assert (metrics["train_loss"] > 0).all() and (metrics["test_accuracy"] > 0.3).all()
