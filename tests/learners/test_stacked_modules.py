"""The stacked layers of ``kind: torch`` (mp_ray/learners/stacked_modules.py): K models' outputs
and step gradients equal vmap's over ``functional_call`` for every supported layer; any other
module is left to vmap, and its models still equal the plain per-model loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.peers.torch_loop import reference_fit
from mp_ray.config import LearnerConfig
from mp_ray.learners import make_learner
from mp_ray.learners.minibatch import MinibatchLearner
from mp_ray.learners.stacked_modules import stacked_module

K, BATCH = 3, 7


def pooled_cnn(n_features: int, n_outputs: int) -> nn.Module:
    """Convolutions without bias, grouped, dilated, strided and 'same'-padded, both poolings
    and several activations, on the 8×8 digits."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.Tanh(),
        nn.MaxPool2d(2),  # 4×4
        nn.Conv2d(4, 6, 3, padding="same", groups=2),
        nn.GELU(),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, stride=2),  # 2×2
        nn.AvgPool2d(2, ceil_mode=True),  # 1×1
        nn.SiLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(6, n_outputs),
    )


def relu_chain(n_features: int, n_outputs: int) -> nn.Module:
    """ReLUs on the inputs and on another ReLU's outputs, which must not be overwritten, and
    on a linear layer's, which may."""
    return nn.Sequential(
        nn.ReLU(), nn.Linear(n_features, 5), nn.ReLU(), nn.ReLU(), nn.Linear(5, n_outputs)
    )


def flatten_linear(n_features: int, n_outputs: int) -> nn.Module:
    """A whole flattening fused into the linear layer after it, on the features form (the
    CNNs' heads take the channels form)."""
    return nn.Sequential(nn.Unflatten(1, (8, 8)), nn.Flatten(), nn.Linear(64, n_outputs))


def row_linear(n_features: int, n_outputs: int) -> nn.Module:
    """A linear layer on each row of the 8×8 image (inputs of more than two dimensions),
    nested containers."""
    return nn.Sequential(
        nn.Sequential(nn.Unflatten(-1, (8, 8)), nn.Linear(8, 3), nn.LeakyReLU(0.1)),
        nn.Flatten(1, 2),
        nn.Sequential(nn.Linear(24, 5, bias=False), nn.Sigmoid()),
        nn.Linear(5, n_outputs),
    )


class Residual(nn.Module):
    """A module of its own (not a container): vmap's."""

    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.inner = nn.Linear(n_features, n_features)
        self.head = nn.Linear(n_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + torch.relu(self.inner(x)))


def residual(n_features: int, n_outputs: int) -> nn.Module:
    return Residual(n_features, n_outputs)


STACKED = {
    "digits_cnn": ("mp_ray.learners.zoo:digits_cnn", {"channels": 3}),
    "mlp": ("mp_ray.learners.zoo:mlp", {"hidden": 6}),
    "pooled_cnn": (f"{__name__}:pooled_cnn", {}),
    "row_linear": (f"{__name__}:row_linear", {}),
    "relu_chain": (f"{__name__}:relu_chain", {}),
    "flatten_linear": (f"{__name__}:flatten_linear", {}),
    "linear": ("torch.nn:Linear", {}),
}


def learner_for(digits, factory: str, factory_kwargs: dict):
    config = LearnerConfig(
        kind="torch", dtype="float64", factory=factory, factory_kwargs=factory_kwargs
    )
    return make_learner(config, digits.X_train, digits.y_train, digits.n_classes)


@pytest.fixture(scope="module")
def digits(dataset):
    return dataset("digits")


@pytest.mark.parametrize(("factory", "factory_kwargs"), STACKED.values(), ids=list(STACKED))
def test_stacked_outputs_and_step_gradients_equal_vmaps(digits, factory, factory_kwargs):
    learner = learner_for(digits, factory, factory_kwargs)
    assert learner._stacked is not None
    theta = learner.initial_params(np.array([1, 2, 3]))
    rows = torch.as_tensor(np.random.default_rng(0).integers(0, digits.n_train, (K, BATCH)))
    X, y = learner.X[rows], learner.y[rows]
    inputs, training_inputs = X.clone(), learner.X.clone()
    real = torch.ones(K, BATCH, dtype=learner.dtype)
    real[1, 4:] = 0  # a padded minibatch
    w = MinibatchLearner.shares(real)

    expected = torch.vmap(learner._forward)(theta, X)
    outputs = learner._stacked.outputs(learner._named(theta), X)
    assert outputs.shape == (K, BATCH, 10)
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-12)

    vmapped = MinibatchLearner.step_gradient(learner)(theta, X, y, w)
    step = learner.step_gradient()
    stacked = step(theta, X, y, w)
    assert vmapped.abs().max() > 1e-3
    torch.testing.assert_close(stacked, vmapped, rtol=0, atol=1e-12)
    # Each model's gradient is its own: another model's parameters do not move it (the same
    # step function, given another θ or the same θ changed in place).
    shift = torch.linspace(0, 1, theta.shape[1], dtype=theta.dtype)
    shifted = theta.clone()
    shifted[0] += shift
    moved = step(shifted, X, y, w)
    torch.testing.assert_close(moved[1:], stacked[1:])
    assert (moved[0] - stacked[0]).abs().max() > 1e-3
    theta[0] += shift
    torch.testing.assert_close(step(theta, X, y, w), moved)
    learner.decision(theta, digits.X_train[:5])
    assert torch.equal(X, inputs) and torch.equal(learner.X, training_inputs)  # never in place


@pytest.mark.parametrize(
    "module",
    [
        Residual(64, 10),
        nn.Sequential(nn.Linear(64, 4), Residual(4, 10)),
        nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 2, 3, padding_mode="reflect")),
        nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 2, 2, padding="same")),
        nn.Sequential(nn.Linear(64, 4), nn.PReLU(), nn.Linear(4, 10)),
        nn.Sequential(nn.Flatten(0), nn.Linear(64, 10)),
        nn.Sequential(nn.Unflatten(0, (1, -1)), nn.Linear(64, 10)),
        nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv1d(1, 2, 3)),
        nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.MaxPool2d(2, return_indices=True)),
        nn.Sequential(nn.Linear(64, 10), type("MyReLU", (nn.ReLU,), {})()),
    ],
    ids=[
        "own-module",
        "own-module-inside",
        "reflect-padding",
        "uneven-same-padding",
        "prelu",
        "flatten-0",
        "unflatten-0",
        "conv1d",
        "pool-indices",
        "relu-subclass",
    ],
)
def test_other_modules_are_left_to_vmap(module):
    assert stacked_module(module) is None


def test_a_module_left_to_vmap_still_equals_the_plain_loop(digits):
    learner = learner_for(digits, f"{__name__}:residual", {})
    assert learner._stacked is None
    mask = np.random.default_rng(3).random(digits.n_train) < 0.05
    trained = learner.fit_batch(mask[None], np.array([4]))[0]
    torch.testing.assert_close(trained, reference_fit(learner, mask, 4), rtol=0, atol=1e-9)


def test_outputs_and_the_objectives_gradient_in_blocks_equal_vmaps(digits):
    learner = learner_for(digits, "mp_ray.learners.zoo:digits_cnn", {"channels": 3})
    assert len(learner._blocks(4, learner.n_train)[1]) > 1  # blocks of training examples
    params = learner.initial_params(np.arange(4))
    masks = np.random.default_rng(5).random((4, digits.n_train)) < 0.5
    X = digits.X_test[:50]
    torch.testing.assert_close(
        learner.decision(params, X),
        MinibatchLearner.decision(learner, params, X),
        rtol=0,
        atol=1e-12,
    )
    value, gradient = learner.objective_and_grad(params, masks)
    expected_value, expected_gradient = MinibatchLearner.objective_and_grad(
        learner, params.clone().requires_grad_(True), masks
    )
    torch.testing.assert_close(value, expected_value.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(gradient, expected_gradient.detach(), rtol=0, atol=1e-12)
    assert gradient.abs().max() > 1e-3
    # The retraining job's metrics: the mean loss over each subset from the same pass.
    masks[0] = False  # an empty subset: its mean loss is 0
    value, gradient, loss = learner.objective_grad_and_loss(params, masks)
    expected_value, expected_gradient = learner.objective_and_grad(params, masks)
    expected_loss = learner.mean_subset_loss(params, masks)
    torch.testing.assert_close(value, expected_value, rtol=0, atol=1e-12)
    torch.testing.assert_close(gradient, expected_gradient, rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=1e-12)
    assert loss[0] == 0 and (loss[1:] > 0.1).all()
