"""K models of one ``nn.Module`` architecture run at once, layer by layer, with each layer's
own batched operation and its own backward pass: the fast path of ``kind: torch``'s training
steps and outputs for modules built from standard layers.

``torch.func.vmap`` over ``functional_call`` (the general path) turns each layer of the K
models into one batched operation too, but in layouts of its own choosing: on a CPU, a
convolution becomes a grouped convolution on channels-first inputs, which oneDNN runs several
times slower than on channels-last ones, and a ReLU's backward pass then mixes the two
layouts. Here the activations of the K models are held as

- *features*: ``(K, b, …)``, model-major, each model's ``(b, …)`` stacked (linear layers,
  flattening), or
- *channels*: ``(b, K·C, H, W)`` in channels-last memory, the K models' C channels side by
  side (convolutions as one grouped convolution with K·groups groups, pooling),

converted only where a layer needs the other.

Gradients: each layer states its own backward pass (a linear layer's two batched products, a
convolution's ``convolution_backward``, a ReLU's mask), and :meth:`StackedModule.vjp`
runs them in reverse order on the gradient of the loss with respect to the outputs. Model k's
loss depends on model k's parameters alone, so the gradient of the sum of the K losses holds
each model's own. Autograd over the same operations computes the same numbers, but its
graph, layout conversions and per-operation bookkeeping cost a sixth to a quarter of a small
CNN's step (digits_cnn, chunks of 17 models, one CPU thread); the other activations and the
poolings still use autograd, over that one layer. A whole ``nn.Flatten`` followed by an
``nn.Linear`` runs as one layer that reads channels-last maps in their memory order.

Supported, each by its exact class (a subclass may compute anything): ``nn.Sequential``
(nested) of ``nn.Linear``, ``nn.Conv2d`` (zero padding, numeric or symmetric ``"same"``), the
parameter-free activations of ``ELEMENTWISE`` (``nn.Dropout`` among them: off, the learner
runs modules in eval mode), ``nn.MaxPool2d`` (without indices) / ``nn.AvgPool2d``,
``nn.Flatten`` from dimension 1 on and ``nn.Unflatten`` of dimension ≥ 1 or −1 (never the
example dimension). :func:`stacked_module` returns None for any other module, and the learner
keeps vmap for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Parameter-free layers applied to each element alone: any layout will do.
ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
)
POOLING = (nn.MaxPool2d, nn.AvgPool2d)

Params = dict[str, torch.Tensor]  # parameter name -> the K models' values, (K, *shape)
Context = Any  # what a layer's forward pass keeps for its backward pass


def _features_of(x: torch.Tensor, n_models: int) -> torch.Tensor:
    """Channels-last ``(b, K·C, H, W)`` as a contiguous ``(K, b, C, H, W)``."""
    b, _, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h, w, n_models, -1).permute(3, 0, 4, 1, 2).contiguous()


def _channels_of(x: torch.Tensor) -> torch.Tensor:
    """``(K, b, C, H, W)`` as channels-last ``(b, K·C, H, W)`` (whose memory is
    ``(b, H, W, K, C)``)."""
    k, b, c, h, w = x.shape
    return x.permute(1, 3, 4, 0, 2).contiguous().view(b, h, w, k * c).permute(0, 3, 1, 2)


@dataclass
class Stack:
    """The K models' activations: ``data`` in the features ``(K, b, …)`` or, when
    ``channels``, the channels ``(b, K·C, H, W)`` form (module docstring)."""

    data: torch.Tensor
    channels: bool
    n_models: int
    # ``data`` is a layer's new output that no context holds: the next layer may overwrite it.
    fresh: bool = False

    def features(self) -> torch.Tensor:
        """The activations as ``(K, b, …)``."""
        return _features_of(self.data, self.n_models) if self.channels else self.data

    def as_channels(self) -> torch.Tensor:
        """The activations as ``(b, K·C, H, W)`` in channels-last memory; each model's must be
        ``(b, C, H, W)``."""
        if self.channels:
            return self.data
        if self.data.dim() != 5:
            shape = tuple(self.data.shape[1:])
            raise ValueError(f"a 2-d layer needs (b, C, H, W) inputs, got {shape}")
        return _channels_of(self.data)

    def from_features(self, grad: torch.Tensor) -> torch.Tensor:
        """A gradient ``(K, b, …)`` of :meth:`features` in this stack's own form."""
        return _channels_of(grad) if self.channels else grad

    def from_channels(self, grad: torch.Tensor) -> torch.Tensor:
        """A gradient ``(b, K·C, H, W)`` of :meth:`as_channels` in this stack's own form."""
        return grad if self.channels else _features_of(grad, self.n_models)


class StackedLayer(ABC):
    """One leaf layer of the K models: a forward pass that keeps what its backward pass
    needs, and the backward pass."""

    @abstractmethod
    def forward(self, x: Stack, params: Params, keep: bool) -> tuple[Stack, Context]:
        """The outputs, and (when ``keep``) the context of :meth:`backward`."""

    @abstractmethod
    def backward(
        self, context: Context, grad: torch.Tensor, input_grad: bool
    ) -> tuple[torch.Tensor | None, Params]:
        """From ``grad``, the gradient of the loss with respect to the outputs (in their
        form): that with respect to the inputs (in theirs; None unless ``input_grad``) and
        those of the layer's parameters by name, ``(K, *shape)`` each."""


@dataclass
class _Linear(StackedLayer):
    layer: nn.Linear
    name: str  # the parameters' prefix, with its trailing dot

    def _inputs(self, x: Stack) -> torch.Tensor:
        """The inputs ``(K, b, …, in)`` whose last dimension the layer maps."""
        return x.features()

    def _input_grad(self, x: Stack, grad: torch.Tensor) -> torch.Tensor:
        """A gradient of :meth:`_inputs` in ``x``'s own form."""
        return x.from_features(grad)

    def _weight(self, weight: torch.Tensor, x: Stack) -> torch.Tensor:
        """The weights ``(K, out, in)`` with their columns in the order of :meth:`_inputs`."""
        return weight

    def _weight_grad(self, grad: torch.Tensor, x: Stack) -> torch.Tensor:
        """A gradient of :meth:`_weight` in the parameter's own order."""
        return grad

    def forward(self, x: Stack, params: Params, keep: bool) -> tuple[Stack, Context]:
        inputs = self._inputs(x)
        flat = inputs.flatten(1, -2)  # (K, m, in)
        weight = self._weight(params[f"{self.name}weight"], x)  # (K, out, in)
        if self.layer.bias is None:
            out = torch.bmm(flat, weight.transpose(1, 2))
        else:
            bias = params[f"{self.name}bias"][:, None, :]
            out = torch.baddbmm(bias, flat, weight.transpose(1, 2))
        context = (x, inputs.shape, flat, weight) if keep else None
        return Stack(out.view(*inputs.shape[:-1], -1), False, x.n_models, fresh=True), context

    def backward(
        self, context: Context, grad: torch.Tensor, input_grad: bool
    ) -> tuple[torch.Tensor | None, Params]:
        x, shape, flat, weight = context
        grad = grad.flatten(1, -2)  # (K, m, out)
        weight_grad = self._weight_grad(torch.bmm(grad.transpose(1, 2), flat), x)
        grads = {f"{self.name}weight": weight_grad}
        if self.layer.bias is not None:
            grads[f"{self.name}bias"] = grad.sum(dim=1)
        if not input_grad:
            return None, grads
        return self._input_grad(x, torch.bmm(grad, weight).view(shape)), grads


class _FlattenLinear(_Linear):
    """``nn.Flatten()`` then ``nn.Linear``. On the channels form each model's maps are read
    in the (H, W, C) order of their channels-last memory and the weight's columns permuted
    to match, instead of the maps reordered to (C, H, W): digits_cnn's head, 17 models, 15 and
    24 against 60 and 89 µs for the two reorderings of a step."""

    def _inputs(self, x: Stack) -> torch.Tensor:
        if not x.channels:
            return x.features().flatten(2)
        b, _, h, w = x.data.shape
        maps = x.data.permute(0, 2, 3, 1).view(b, h, w, x.n_models, -1)  # its memory
        return maps.permute(3, 0, 1, 2, 4).reshape(x.n_models, b, -1)

    def _input_grad(self, x: Stack, grad: torch.Tensor) -> torch.Tensor:
        if not x.channels:
            return grad.view(x.data.shape)
        b, channels, h, w = x.data.shape
        maps = grad.view(x.n_models, b, h, w, -1).permute(1, 2, 3, 0, 4)
        return maps.reshape(b, h, w, channels).permute(0, 3, 1, 2)

    def _maps(self, x: Stack) -> tuple[int, int, int]:
        """Each model's channels, height and width on the channels form."""
        _, channels, h, w = x.data.shape
        return channels // x.n_models, h, w

    def _weight(self, weight: torch.Tensor, x: Stack) -> torch.Tensor:
        if not x.channels:
            return weight
        k, out, _ = weight.shape
        return weight.view(k, out, *self._maps(x)).permute(0, 1, 3, 4, 2).reshape(k, out, -1)

    def _weight_grad(self, grad: torch.Tensor, x: Stack) -> torch.Tensor:
        if not x.channels:
            return grad
        c, h, w = self._maps(x)
        k, out, _ = grad.shape
        return grad.view(k, out, h, w, c).permute(0, 1, 4, 2, 3).reshape(k, out, -1)


def _channels_last(weight: torch.Tensor) -> torch.Tensor:
    """The K models' convolution weights ``(K, C_out, C_in/groups, kh, kw)`` as one grouped
    convolution's ``(K·C_out, C_in/groups, kh, kw)`` in channels-last memory: one copy
    (flattening the models' rows of θ and then reordering them would take two)."""
    k, c_out, c_in, kh, kw = weight.shape
    return weight.permute(0, 1, 3, 4, 2).reshape(k * c_out, kh, kw, c_in).permute(0, 3, 1, 2)


def _padding(layer: nn.Conv2d) -> tuple[int, int] | None:
    """The convolution's zero padding per side, or None when ``"same"`` pads unevenly."""
    if layer.padding == "valid":
        return (0, 0)
    if layer.padding == "same":
        totals = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size, strict=True)]
        if any(total % 2 for total in totals):
            return None
        return (totals[0] // 2, totals[1] // 2)
    return tuple(layer.padding)


@dataclass
class _Conv2d(StackedLayer):
    layer: nn.Conv2d
    name: str
    padding: tuple[int, int]

    def _groups(self, x: Stack) -> int:
        return self.layer.groups * x.n_models

    def forward(self, x: Stack, params: Params, keep: bool) -> tuple[Stack, Context]:
        inputs = x.as_channels()
        weight = _channels_last(params[f"{self.name}weight"])
        layer = self.layer
        bias = None if layer.bias is None else params[f"{self.name}bias"].reshape(-1)
        out = F.conv2d(
            inputs, weight, bias, layer.stride, self.padding, layer.dilation, self._groups(x)
        )
        return Stack(out, True, x.n_models, fresh=True), ((x, inputs, weight) if keep else None)

    def backward(
        self, context: Context, grad: torch.Tensor, input_grad: bool
    ) -> tuple[torch.Tensor | None, Params]:
        x, inputs, weight = context
        layer = self.layer
        inputs_grad, weight_grad, _ = torch.ops.aten.convolution_backward(
            grad,
            inputs,
            weight,
            None,
            layer.stride,
            self.padding,
            layer.dilation,
            False,
            (0, 0),
            self._groups(x),
            # The bias's gradient apart: oneDNN's takes longer than a sum of the outputs'
            # gradient (0.35–0.7 against 0.02–0.04 ms, 68 CNNs).
            (input_grad, True, False),
        )
        grads = {f"{self.name}weight": weight_grad.view(x.n_models, -1, *weight_grad.shape[1:])}
        if layer.bias is not None:
            grads[f"{self.name}bias"] = grad.sum(dim=(0, 2, 3)).view(x.n_models, -1)
        return (x.from_channels(inputs_grad) if input_grad else None), grads


class _ReLU(StackedLayer):
    """``nn.ReLU``, in place on a fresh input; its backward pass masks the gradient by the
    outputs, in place (the gradient is the backward passes' own)."""

    def forward(self, x: Stack, params: Params, keep: bool) -> tuple[Stack, Context]:
        out = torch.relu_(x.data) if x.fresh else torch.relu(x.data)
        return Stack(out, x.channels, x.n_models), (out if keep else None)

    def backward(
        self, context: Context, grad: torch.Tensor, input_grad: bool
    ) -> tuple[torch.Tensor | None, Params]:
        return torch.ops.aten.threshold_backward.grad_input(grad, context, 0, grad_input=grad), {}


@dataclass
class _Autograd(StackedLayer):
    """A parameter-free layer (an activation, a pooling) whose backward pass is autograd's
    over that layer alone; ``channels``: it runs on the channels form."""

    layer: nn.Module
    channels: bool

    def forward(self, x: Stack, params: Params, keep: bool) -> tuple[Stack, Context]:
        inputs = x.as_channels() if self.channels else x.data
        if not keep:
            return Stack(self.layer(inputs), x.channels or self.channels, x.n_models), None
        inputs = inputs.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.layer(inputs)
        return Stack(out.detach(), x.channels or self.channels, x.n_models), (x, inputs, out)

    def backward(
        self, context: Context, grad: torch.Tensor, input_grad: bool
    ) -> tuple[torch.Tensor | None, Params]:
        x, inputs, out = context
        (inputs_grad,) = torch.autograd.grad(out, inputs, grad)
        return (x.from_channels(inputs_grad) if self.channels else inputs_grad), {}


@dataclass
class _Reshape(StackedLayer):
    """Flattening or unflattening dimensions of each model's activations (features form)."""

    reshape: Callable[[torch.Tensor], torch.Tensor]
    whole: bool = False  # flattens all of an example's dimensions into one

    def forward(self, x: Stack, params: Params, keep: bool) -> tuple[Stack, Context]:
        inputs = x.features()
        return Stack(self.reshape(inputs), False, x.n_models), ((x, inputs.shape) if keep else None)

    def backward(
        self, context: Context, grad: torch.Tensor, input_grad: bool
    ) -> tuple[torch.Tensor | None, Params]:
        x, shape = context
        return x.from_features(grad.reshape(shape)), {}


def _model_dim(dim: int) -> int:
    """A dimension of one model's activations ``(b, …)`` in the features form ``(K, b, …)``;
    negative dimensions count from the end in both."""
    return dim + 1 if dim >= 0 else dim


def _flatten(layer: nn.Flatten) -> _Reshape:
    start, end = _model_dim(layer.start_dim), _model_dim(layer.end_dim)
    return _Reshape(lambda x: x.flatten(start, end), whole=start == 2 and end == -1)


def _unflatten(layer: nn.Unflatten) -> _Reshape:
    dim, sizes = _model_dim(layer.dim), layer.unflattened_size
    return _Reshape(lambda x: x.unflatten(dim, sizes))


def _layer(layer: nn.Module, name: str) -> StackedLayer | None:
    """The stacked form of one leaf layer named ``name`` (with its trailing dot), or None."""
    kind = type(layer)
    if kind is nn.Linear:
        return _Linear(layer, name)
    if kind is nn.Conv2d and layer.padding_mode == "zeros":
        padding = _padding(layer)
        return None if padding is None else _Conv2d(layer, name, padding)
    if kind in POOLING and not getattr(layer, "return_indices", False):
        return _Autograd(layer, channels=True)
    if kind is nn.ReLU:
        return _ReLU()
    if kind in ELEMENTWISE:
        return _Autograd(layer, channels=False)
    # Flattening or splitting the example dimension would mix the examples of a model.
    if kind is nn.Flatten and layer.start_dim >= 1:
        return _flatten(layer)
    if kind is nn.Unflatten and (layer.dim >= 1 or layer.dim == -1):
        return _unflatten(layer)
    return None


def _layers(module: nn.Module, prefix: str) -> list[StackedLayer] | None:
    """The stacked forms of ``module``'s leaf layers in order, or None if one has none."""
    if type(module) is nn.Sequential:
        layers: list[StackedLayer] = []
        for child_name, child in module.named_children():
            child_layers = _layers(child, f"{prefix}{child_name}.")
            if child_layers is None:
                return None
            layers += child_layers
        return layers
    layer = _layer(module, prefix)
    return None if layer is None else [layer]


@dataclass
class StackedModule:
    """K copies of a module of standard layers (see the module docstring), each with its
    own parameters ``params`` (name -> ``(K, *shape)``, the names of
    ``module.named_parameters()``) and model k on its own inputs ``X[k]``."""

    layers: list[StackedLayer]
    # The first layer with parameters: the inputs' gradient is wanted down to it.
    first: int = field(init=False)

    def __post_init__(self) -> None:
        self.first = next(i for i, layer in enumerate(self.layers) if _has_params(layer))

    def _forward(self, params: Params, X: torch.Tensor, keep: bool) -> tuple[Stack, list[Context]]:
        """The last layer's outputs on ``X (K, b, p)`` and each layer's context (None each
        unless ``keep``)."""
        x = Stack(X, False, X.shape[0])
        contexts = []
        for layer in self.layers:
            x, context = layer.forward(x, params, keep)
            contexts.append(context)
        return x, contexts

    def outputs(self, params: Params, X: torch.Tensor) -> torch.Tensor:
        """The K models' outputs ``(K, b, c)`` on ``X (K, b, p)``."""
        return self._forward(params, X, keep=False)[0].features()

    def vjp(
        self, params: Params, X: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], Params]]:
        """The K models' outputs ``(K, b, c)`` on ``X (K, b, p)``, and the function that maps
        a loss's gradient with respect to them (same shape; it may be overwritten) to its
        gradients with respect to ``params`` (by name, ``(K, *shape)`` each): the layers'
        backward passes in reverse order."""
        last, contexts = self._forward(params, X, keep=True)

        def pullback(output_grad: torch.Tensor) -> Params:
            grad = last.from_features(output_grad)
            grads: Params = {}
            for i in range(len(self.layers) - 1, self.first - 1, -1):
                input_grad = i > self.first
                grad, layer_grads = self.layers[i].backward(contexts[i], grad, input_grad)
                grads |= layer_grads
            return grads

        return last.features(), pullback


def _has_params(layer: StackedLayer) -> bool:
    return isinstance(layer, (_Linear, _Conv2d))


def _fused(layers: list[StackedLayer]) -> list[StackedLayer]:
    """``layers`` with each whole flattening that a linear layer follows fused into it."""
    fused: list[StackedLayer] = []
    for layer in layers:
        previous = fused[-1] if fused else None
        if type(layer) is _Linear and isinstance(previous, _Reshape) and previous.whole:
            fused[-1] = _FlattenLinear(layer.layer, layer.name)
        else:
            fused.append(layer)
    return fused


def stacked_module(module: nn.Module) -> StackedModule | None:
    """The stacked form of ``module``, or None if it is not of the supported layers (or has
    no parameters)."""
    layers = _layers(module, "")
    if layers is None or not any(_has_params(layer) for layer in layers):
        return None
    return StackedModule(_fused(layers))
