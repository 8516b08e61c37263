"""The torch learner: a factory's nn.Module trained K models at once, equal to a plain
per-model ``torch.optim`` loop with the same initialisation, minibatches and optimizer."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from benchmarks.peers.torch_loop import reference_fit
from mp_ray.config import ConfigError, LearnerConfig, parse_experiment
from mp_ray.learners import TorchModuleLearner, make_learner, torch_module
from mp_ray.learners.plugin import function
from mp_ray.learners.threads import model_groups

MLP = "mp_ray.learners.zoo:mlp"
CNN = "mp_ray.learners.zoo:digits_cnn"
SEEDS = np.array([7, 11, 13])


def small_subsets(n: int, seed: int = 0) -> np.ndarray:
    """Masks ``(3, n)``: about 12%, 6% and 3% of the points (the smaller ones idle)."""
    rng = np.random.default_rng(seed)
    return rng.random((3, n)) < np.array([[0.12], [0.06], [0.03]])


CASES = {
    "mlp-sgd-momentum": ("digits", {"factory": MLP, "momentum": 0.9, "weight_decay": 1e-3}),
    "mlp-adam-cosine": (
        "digits",
        {"factory": MLP, "optimizer": "adam", "lr": 0.01, "lr_schedule": "cosine"},
    ),
    "cnn-sgd-cosine": (
        "digits",
        {
            "factory": CNN,
            "momentum": 0.5,
            "lr_schedule": "cosine",
            "factory_kwargs": {"channels": 4},
        },
    ),
    "cnn-adam": ("digits", {"factory": CNN, "optimizer": "adam", "lr": 0.005}),
    "binary-mlp-sgd": ("breast_cancer", {"factory": MLP, "factory_kwargs": {"hidden": 8}}),
    "regression-linear-adam": (
        "diabetes",
        {"factory": "torch.nn:Linear", "optimizer": "adam", "lr": 0.05},
    ),
}


@pytest.mark.parametrize(("dtype", "atol"), [("float64", 1e-9), ("float32", 1e-5)])
@pytest.mark.parametrize(("name", "settings"), CASES.values(), ids=list(CASES))
def test_equals_a_plain_per_model_torch_loop(dataset, name, settings, dtype, atol):
    data = dataset(name)
    config = LearnerConfig(kind="torch", dtype=dtype, epochs=3, batch_size=16, **settings)
    learner = make_learner(config, data.X_train, data.y_train, data.n_classes)
    masks = small_subsets(data.n_train)
    trained = learner.fit_batch(masks, SEEDS)
    assert trained.dtype == getattr(torch, dtype)
    for k in range(len(masks)):
        expected = reference_fit(learner, masks[k], int(SEEDS[k]))
        torch.testing.assert_close(trained[k], expected, rtol=0, atol=atol)
        assert (trained[k] - learner.initial_params(SEEDS[k : k + 1])[0]).abs().max() > 1e-3


@pytest.fixture(scope="module")
def digits(dataset):
    return dataset("digits")


@pytest.fixture(scope="module")
def cnn(digits) -> TorchModuleLearner:
    config = LearnerConfig(
        kind="torch",
        dtype="float64",
        factory=CNN,
        factory_kwargs={"channels": 4},
        epochs=2,
        batch_size=16,
    )
    return make_learner(config, digits.X_train, digits.y_train, digits.n_classes)


def test_a_batch_equals_its_rows_fitted_alone_in_chunks_or_thread_groups(cnn, digits, monkeypatch):
    masks = np.vstack([small_subsets(digits.n_train, seed=1), np.zeros((1, digits.n_train))])
    seeds = np.append(SEEDS, 99)
    together = cnn.fit_batch(masks, seeds)
    alone = torch.cat([cnn.fit_batch(masks[k : k + 1], seeds[k : k + 1]) for k in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-9)
    one_per_chunk = make_learner(
        cnn.config, digits.X_train, digits.y_train, digits.n_classes, memory_budget=1
    )
    assert one_per_chunk.models_per_chunk(4) == 1
    torch.testing.assert_close(one_per_chunk.fit_batch(masks, seeds), together)
    monkeypatch.setattr(torch_module, "GROUP_FLOATS", 1)  # a thread for every 2 rows
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(model_groups(4, cnn.device, cnn._min_group())) == 2
        torch.testing.assert_close(cnn.fit_batch(masks, seeds), together)
    finally:
        torch.set_num_threads(threads)
    assert cnn.degenerate(masks).tolist() == [False, False, False, True]
    torch.testing.assert_close(together[3], cnn.initial_params(seeds[3:])[0])  # empty: no steps
    assert (cnn.fit_batch(masks[:1], np.array([5])) - together[0]).abs().max() > 1e-2


def test_parameters_follow_named_parameters(cnn, digits):
    module = function(CNN)(64, digits.n_classes, channels=4)
    named = dict(module.named_parameters())
    assert cnn.names == list(named) and cnn.n_params == sum(p.numel() for p in named.values())
    biases = sum(p.numel() for name, p in named.items() if name.endswith("bias"))
    assert cnn.intercept_mask().sum() == biases == 4 + 8 + 10
    assert not cnn.convex


def test_per_sample_grads_equal_autograd_per_example(cnn, digits):
    params = cnn.fit_batch(small_subsets(digits.n_train)[:1], SEEDS[:1])[0]
    X, y = digits.X_test[:5], digits.y_test[:5]
    grads = cnn.per_sample_grads(params, X, y)
    module = function(CNN)(64, digits.n_classes, channels=4).double()
    nn.utils.vector_to_parameters(params, module.parameters())
    for i in range(len(X)):
        out = module(torch.as_tensor(X[i : i + 1]))
        loss = F.cross_entropy(out, torch.as_tensor(y[i : i + 1]))
        expected = torch.autograd.grad(loss, list(module.parameters()))
        torch.testing.assert_close(grads[i], torch.cat([g.reshape(-1) for g in expected]))


def test_the_objective_is_the_mean_loss_plus_weight_decay_and_hvp_its_derivative(cnn, digits):
    masks = small_subsets(digits.n_train)[:2]
    params = cnn.fit_batch(masks, SEEDS[:2])
    grad = cnn.objective_grad(params, masks)
    per_sample = cnn.per_sample_grads(params[0], digits.X_train, digits.y_train)
    weights = torch.as_tensor(masks[0], dtype=torch.float64)
    data_part = weights @ per_sample / weights.sum()
    torch.testing.assert_close(grad[0], data_part + cnn.config.weight_decay * params[0])
    v = torch.randn(params.shape, generator=torch.Generator().manual_seed(0), dtype=params.dtype)
    eps = 1e-6
    finite_hv = (
        cnn.objective_grad(params + eps * v, masks) - cnn.objective_grad(params - eps * v, masks)
    ) / (2 * eps)
    torch.testing.assert_close(cnn.hvp(params, masks, v), finite_hv, rtol=1e-4, atol=1e-6)


FACTORIES = """
    from torch import nn

    def not_a_module(n_features, n_outputs):
        return [n_features, n_outputs]

    def with_buffers(n_features, n_outputs):
        return nn.Sequential(nn.Linear(n_features, n_outputs), nn.BatchNorm1d(n_outputs))

    def wrong_width(n_features, n_outputs):
        return nn.Linear(n_features, n_outputs + 1)

    width = 3
"""


@pytest.fixture
def factories(tmp_path, monkeypatch) -> str:
    """The name of an importable module of faulty factories."""
    (tmp_path / "faulty_factories.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "faulty_factories"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_package.models:net", "cannot import 'no_such_package.models:net'"),
        ("mp_ray.learners.zoo:resnet", "mp_ray.learners.zoo has no 'resnet'"),
        ("mp_ray.learners.zoo.mlp", "'mp_ray.learners.zoo.mlp' is not an import path module:name"),
        ("{module}:width", "'{module}:width' is not callable"),
    ],
)
def test_a_factory_path_that_does_not_resolve_is_a_config_error(factories, path, message):
    path, message = path.format(module=factories), message.format(module=factories)
    with pytest.raises(ConfigError) as err:
        parse_experiment(
            {
                "dataset": {"source": "sklearn", "name": "digits"},
                "learner": {"kind": "torch", "factory": path},
                "sampler": {"kind": "bernoulli"},
                "store": {"uri": "memory://x", "n_rows": 10},
            }
        )
    assert str(err.value).splitlines()[1].startswith("  learner.factory: ")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("not_a_module", "returned a list, not a torch.nn.Module"),
        ("with_buffers", "the module has buffers (1.running_mean, 1.running_var"),
        ("wrong_width", "the module maps inputs (2, 64) to (2, 11), expected (2, 10)"),
    ],
)
def test_a_factory_without_a_usable_module_is_refused_when_the_learner_is_built(
    factories, digits, factory, message
):
    config = LearnerConfig(kind="torch", factory=f"{factories}:{factory}")
    with pytest.raises(ConfigError) as err:
        make_learner(config, digits.X_train, digits.y_train, digits.n_classes)
    assert str(err.value).startswith(f"learner.factory {factories}:{factory}: ")
    assert message in str(err.value)


def test_momentum_is_an_sgd_setting():
    with pytest.raises(ValidationError, match="momentum applies to optimizer sgd only"):
        LearnerConfig(kind="torch", factory=MLP, optimizer="adam", momentum=0.9)
