"""Any ``torch.nn.Module`` from a factory, trained by seeded minibatch SGD or Adam, K at once.

The factory (``learner.factory``, ``package.module:function``) is called as
``function(n_features, n_outputs, **factory_kwargs)``, n_outputs = c: 1 for binary
classification (one logit) and regression, else the class count. Examples:
:mod:`mp_ray.learners.zoo`.

Parameters: every parameter of the module (all are trained), flattened to ``(d,)`` in the
order of ``module.named_parameters()``, each in its own row-major order. The intercepts
(:meth:`TorchModuleLearner.intercept_mask`) are the parameters whose name ends in ``bias``.

The module must have no buffers: batch normalisation's running statistics, for one, are
state that the parameters do not hold and that training passes update, so a model would not
be its parameter vector. Such a module is refused at construction. The module runs in eval
mode (``module.eval()``): dropout is off, so each model is a deterministic function of its
parameters.

Initialisation: row k calls the factory with torch's global generator seeded by a number
drawn from the numpy generator of (seed_k, 0) and takes the new module's parameters (the
module's own initialisation, e.g. ``torch.nn.Linear``'s), so it depends on the row's seed
alone. The caller's generator state is restored afterwards, and a lock keeps two threads of
the process from seeding at once (torch's generator is global).

Objective and algorithm: those of :mod:`mp_ray.learners.minibatch` with the configured
optimizer (``sgd`` with momentum or ``adam``) and learning-rate schedule, stepped as
``torch.optim`` would step each model alone (:mod:`mp_ray.learners.stacked_optim`)::

    J_S(θ) = (1/|S|)·Σ_{i∈S} ℓ_i(θ) + (weight_decay/2)·‖θ‖²

Vectorisation: a training step, or the outputs (:meth:`~TorchModuleLearner.decision`), of
the K models runs each layer of theirs as one batched operation. For a module built from
standard layers (``nn.Sequential`` of linear, convolutional, pooling, activation and
reshaping layers; see :mod:`mp_ray.learners.stacked_modules`) each layer runs on the K
models' stacked parameters and activations, and each layer's own backward pass gives the
gradients, from the losses' closed-form gradient with respect to the outputs. For any
other module, one module instance (a copy per thread) takes each model's parameters, views
of its row of ``θ (K, d)``, through ``torch.func.functional_call``, and ``torch.func.vmap``
maps over the models. :meth:`~TorchModuleLearner.per_sample_grads` always vmaps over
examples. The two paths compute the same function: a CNN's step gradients agree to rounding
(float64, tests/learners/test_stacked_modules.py), and the stacked one computes those of 17
digits CNNs of configs/digits_cnn.yaml in 1.7 ms against vmap's 3.6–3.9 (one CPU thread,
alternating in one process). A batch trains in consecutive
chunks of models (:meth:`~TorchModuleLearner.models_per_chunk`: on a CPU, as many as keep
one step's activations in the cache; with a memory budget, as many as fit in it), and on a
CPU with several intra-op threads in concurrent groups of rows, one thread each
(:mod:`mp_ray.learners.threads`). Each row's result is the same in any chunk or group.
Passes over a whole set of examples (outputs, the objective and its gradient) run in blocks
of models and examples of about a training step's chunk of activations each.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from mp_ray.config import ConfigError, TorchLearnerConfig
from mp_ray.learners.base import ArrayLike
from mp_ray.learners.memory import chunk_slices, rows_per_chunk
from mp_ray.learners.minibatch import MinibatchLearner, generators
from mp_ray.learners.plugin import function
from mp_ray.learners.stacked_modules import Params, stacked_module
from mp_ray.learners.stacked_optim import StackedAdam, StackedOptimizer, StackedSGD

_SEEDING = threading.Lock()  # torch's global generator, seeded per model by initial_params
_PROBE_ROWS = 2  # training rows of the forward pass that checks a new module
# Activations of one step of a chunk of models trained together on a CPU, about a core's
# L2 cache (1 MiB here) to a few times it: 136 digits_cnn models (62k floats a model) on 2
# cores, two threads, trained at 0.21 thread-ms a model-step in chunks of 12–25 and at
# 0.23–0.26 in chunks of 68 (2**22 floats), whose ReLUs' backward passes then ran at the
# memory's speed; chunks of 8 lost more to per-operation work (0.25–0.27). The MLP's speed
# (3.5k floats a model) was the same in chunks of 68 to 1,092.
CHUNK_FLOATS = 2**20
# Activations of one step of the smallest group of models given a CPU thread of its own:
# smaller groups lose more to per-operation work than they gain (not tuned).
GROUP_FLOATS = 2**16


class TorchModuleLearner(MinibatchLearner):
    """A factory's ``torch.nn.Module`` trained by minibatch SGD or Adam; see the module
    docstring."""

    name = "torch"

    def __init__(
        self,
        config: TorchLearnerConfig,
        X: ArrayLike,
        y: ArrayLike,
        n_classes: int,
        device: torch.device | str = "cpu",
        memory_budget: int | None = None,
    ) -> None:
        super().__init__(config, X, y, n_classes, device, memory_budget)
        self.factory: Callable[..., object] = function(config.factory)
        self.module = self._build(seed=0).to(device=self.device, dtype=self.dtype).eval()
        self._threads = threading.local()
        named = list(self.module.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [tuple(param.shape) for _, param in named]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.activation_floats = self._check_outputs()
        # The K models' layers run stacked where the module allows it, else through vmap.
        self._stacked = stacked_module(self.module)

    def _build(self, seed: int) -> nn.Module:
        """The factory's module, initialised by torch's generator seeded with ``seed``;
        refused unless it is a ``torch.nn.Module`` with parameters and without buffers."""
        with _SEEDING, torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            module = self.factory(
                int(self.X.shape[1]), self.n_outputs, **self.config.factory_kwargs
            )
        where = f"learner.factory {self.config.factory}"
        if not isinstance(module, nn.Module):
            raise ConfigError(f"{where}: returned a {type(module).__name__}, not a torch.nn.Module")
        buffers = [name for name, _ in module.named_buffers()]
        if buffers:
            raise ConfigError(
                f"{where}: the module has buffers ({', '.join(buffers)}); kind torch "
                "trains parameters only: use a module without buffers (no batch normalisation)"
            )
        if not any(True for _ in module.parameters()):
            raise ConfigError(f"{where}: the module has no parameters")
        return module

    def _check_outputs(self) -> int:
        """Check the module's outputs on a few training rows against ``(rows, c)``; returns
        the floats per example of every submodule's output (the activations of a pass)."""
        counts: list[int] = []

        def count(_module: nn.Module, _inputs: object, output: object) -> None:
            counts.append(output.numel() if isinstance(output, torch.Tensor) else 0)

        hooks = [part.register_forward_hook(count) for part in self.module.modules()]
        try:
            with torch.no_grad():
                out = self.module(self.X[:_PROBE_ROWS])
        finally:
            for hook in hooks:
                hook.remove()
        rows = min(_PROBE_ROWS, self.n_train)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (rows, self.n_outputs):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"learner.factory {self.config.factory}: the module maps inputs "
                f"{(rows, int(self.X.shape[1]))} to {shape}, expected {(rows, self.n_outputs)} "
                "(one output for binary classification and regression, else one per class)"
            )
        return -(-sum(counts) // max(1, rows))

    @property
    def n_params(self) -> int:
        return sum(self.sizes)

    def intercept_mask(self) -> torch.Tensor:
        return torch.cat(
            [
                torch.full((size,), name.endswith("bias"))
                for name, size in zip(self.names, self.sizes, strict=True)
            ]
        ).to(self.device)

    def _thread_module(self) -> nn.Module:
        """This thread's copy of the module: ``functional_call`` swaps a module's parameters
        while it runs, so threads that use the learner at once (groups of rows trained
        concurrently, requests served in parallel) need one each."""
        module = getattr(self._threads, "module", None)
        if module is None:
            module = self._threads.module = copy.deepcopy(self.module)
        return module

    def _named(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameters of one model ``theta (d,)`` or of K ``(K, d)`` by name, views of
        shape ``(*shape)`` or ``(K, *shape)``."""
        lead = theta.shape[:-1]
        parts = torch.split(theta, self.sizes, dim=-1)
        return {
            name: part.view(*lead, *shape)
            for name, part, shape in zip(self.names, parts, self.shapes, strict=True)
        }

    def _forward(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return functional_call(self._thread_module(), self._named(theta), (X,))

    def step_gradient(self) -> Callable[..., torch.Tensor]:
        """:meth:`MinibatchLearner.step_gradient`; for a module of standard layers, the
        stacked layers' backward passes (:mod:`mp_ray.learners.stacked_modules`) from the
        minibatch losses' gradient with respect to the outputs."""
        if self._stacked is None:
            return super().step_gradient()
        # The last θ and its parameters' views, made once: the optimizer steps θ in place.
        last: list[tuple[torch.Tensor, Params]] = []

        def gradient(
            theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, share: torch.Tensor
        ) -> torch.Tensor:
            if not last or last[0][0] is not theta:
                last[:] = [(theta, self._named(theta))]
            return self._stacked_gradient(last[0][1], X, y, share)[1]

        return gradient

    def _stacked_gradient(
        self, named: Params, X: torch.Tensor, y: torch.Tensor, share: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs ``(K, b, c)`` of the stacked models ``named`` on ``X (K, b, p)`` and
        the gradient ``(K, d)`` of their :meth:`_minibatch_loss` (labels ``y``, ``share``)."""
        out, pullback = self._stacked.vjp(named, X)
        return out, self._flat(pullback(self._minibatch_loss_grad(out, y, share)), len(X))

    def _flat(self, grads: Params, n_models: int) -> torch.Tensor:
        """Gradients by parameter name, ``(K, *shape)`` each, as ``(K, d)``."""
        return torch.cat([grads[name].reshape(n_models, -1) for name in self.names], dim=1)

    def loss_floats(self) -> int:
        """Every submodule's outputs per example (measured at construction), beside the
        outputs' floats."""
        return self.activation_floats + super().loss_floats()

    def initial_params(self, seeds: ArrayLike) -> torch.Tensor:
        """The factory's initialisation, torch seeded from each row's seed, (K, d)."""
        with torch.no_grad():
            rows = [
                nn.utils.parameters_to_vector(self._build(int(rng.integers(2**63))).parameters())
                for rng in generators(seeds, stream=0)
            ]
        return torch.stack(rows).to(device=self.device, dtype=self.dtype)

    def _fit(self, weights: torch.Tensor, seeds: ArrayLike | None) -> torch.Tensor:
        """The rows in consecutive chunks of :meth:`models_per_chunk`, one after the other."""
        fit_chunk = super()._fit
        chunks = chunk_slices(weights.shape[0], self.models_per_chunk(weights.shape[0]))
        return torch.cat(
            [fit_chunk(weights[rows], None if seeds is None else seeds[rows]) for rows in chunks]
        )

    def _step_floats(self) -> int:
        """Activations of one model in one training step: a minibatch's :meth:`loss_floats`."""
        return self.loss_floats() * self.config.batch_size

    def _min_group(self) -> int:
        """Models whose steps compute at least ``GROUP_FLOATS`` activations: a group issues
        every operation itself, so a smaller one loses more to per-operation work than it
        gains from a thread of its own."""
        return max(1, GROUP_FLOATS // self._step_floats())

    def models_per_chunk(self, n_models: int) -> int:
        """How many of ``n_models`` train together: with a memory budget, those whose steps
        fit in it (activations, their gradients and the step's temporaries: thrice the
        activations); else on a CPU, those whose activations of one step take about
        ``CHUNK_FLOATS``; else all."""
        if self.memory_budget is not None:
            return rows_per_chunk(
                self.memory_budget, 1, 3 * self._step_floats(), self.dtype.itemsize
            )
        if self.device.type == "cpu":
            return max(1, CHUNK_FLOATS // self._step_floats())
        return max(1, n_models)

    def _blocks(self, n_models: int, n_examples: int) -> tuple[list[slice], list[slice]]:
        """Chunks of models and of examples for a pass over ``n_examples`` examples, a block
        of the two holding about a training step's chunk of activations: the models of
        :meth:`models_per_chunk`, and the examples of as many minibatches as that chunk has
        room for beyond its models."""
        if self.memory_budget is None and self.device.type != "cpu":
            return [slice(0, n_models)], [slice(0, n_examples)]  # no budget: one block
        room = self.models_per_chunk(n_models)
        models = max(1, min(n_models, room))
        rows = self.config.batch_size * max(1, room // models)
        return chunk_slices(n_models, models), chunk_slices(n_examples, rows)

    def _stacked_outputs(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Outputs ``(k, m, c)`` of the models ``theta (k, d)`` on shared inputs ``X (m, p)``
        through the stacked layers."""
        return self._stacked.outputs(self._named(theta), X.expand(len(theta), *X.shape))

    def decision(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        """Outputs ``(K, m, c)`` of the K models on the shared inputs ``X (m, p)``: through
        the stacked layers in blocks of models and examples (:meth:`_blocks`) where the
        module allows it, else vmap's (:meth:`MinibatchLearner.decision`)."""
        if self._stacked is None:
            return super().decision(params, X)
        X, params = self.as_tensor(X), params.to(self.dtype)
        model_chunks, row_chunks = self._blocks(len(params), len(X))
        return torch.cat(
            [
                torch.cat([self._stacked_outputs(params[m], X[r]) for r in row_chunks], dim=1)
                for m in model_chunks
            ]
        )

    def objective_and_grad(
        self, params: torch.Tensor, masks: ArrayLike
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective ``(K,)`` and its gradient ``(K, d)``: :meth:`_stacked_objective`,
        or as the base class when ``params`` carry a graph or the module is not stacked."""
        if params.requires_grad or self._stacked is None:
            return super().objective_and_grad(params, masks)
        return self._stacked_objective(params, masks)[:2]

    def objective_grad_and_loss(
        self, params: torch.Tensor, masks: ArrayLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The objective, its gradient and the mean training loss from one pass
        (:meth:`_stacked_objective`); as the base class where :meth:`objective_and_grad` is."""
        if params.requires_grad or self._stacked is None:
            return super().objective_grad_and_loss(params, masks)
        return self._stacked_objective(params, masks)

    def _stacked_objective(
        self, params: torch.Tensor, masks: ArrayLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The objective ``(K,)``, its gradient ``(K, d)`` and the mean loss over each subset
        ``(K,)`` with one forward and backward pass per block of models and training examples
        (:meth:`_blocks`), so a pass holds one block's activations whatever the training
        set's size."""
        shares = self.shares(self.masks_tensor(masks))  # (K, n): the mean over S
        model_chunks, row_chunks = self._blocks(len(params), self.n_train)
        losses, grads = [], []
        for m in model_chunks:
            named = self._named(params[m].detach().to(self.dtype))
            loss = torch.zeros(len(params[m]), dtype=self.dtype, device=self.device)
            grad = self.config.weight_decay * params[m].to(self.dtype)
            for r in row_chunks:
                share, y = shares[m, r], self.y[r]
                inputs = self.X[r].expand(len(share), -1, -1)
                out, part = self._stacked_gradient(named, inputs, y, share)
                loss = loss + self._minibatch_loss(out, y, share)
                grad = grad + part
            losses.append(loss)
            grads.append(grad)
        loss = torch.cat(losses)
        return loss + self._decay(params), torch.cat(grads), loss

    def optimizer(self, live: torch.Tensor) -> StackedOptimizer:
        cfg = self.config
        if cfg.optimizer == "adam":
            return StackedAdam(cfg.lr, cfg.weight_decay, live, cfg.lr_schedule)
        return StackedSGD(cfg.lr, cfg.weight_decay, live, cfg.lr_schedule, cfg.momentum)

    def per_sample_grads(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """Gradient of each example's loss under one model ``params (d,)``, ``(m, d)``:
        ``torch.func.vmap`` over the examples of the gradient of one example's loss."""

        def example_loss(theta: torch.Tensor, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return self._loss(self._forward(theta, x[None]), label[None])[0]

        theta = params.detach().to(device=self.device, dtype=self.dtype)
        return vmap(grad(example_loss), in_dims=(None, 0, 0))(
            theta, self.as_tensor(X), self.labels(y)
        )
