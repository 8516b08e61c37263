"""K models of one ``nn.Module`` architecture run at once, layer by layer, with each layer's
own batched operation: the fast path of ``kind: torch``'s training steps and outputs for
modules built from standard layers.

``torch.func.vmap`` over ``functional_call`` (the general path) turns each layer of the K
models into one batched operation too, but in layouts of its own choosing: on a CPU, a
convolution becomes a grouped convolution on channels-first inputs, which oneDNN runs several
times slower than on channels-last ones, and a ReLU's backward pass then mixes the two
layouts. Here the activations of the K models are held as

- *features*: ``(K, b, …)``, model-major, each model's ``(b, …)`` stacked (linear layers,
  flattening), or
- *channels*: ``(b, K·C, H, W)`` in channels-last memory, the K models' C channels side by
  side (convolutions as one grouped convolution with K·groups groups, pooling),

converted only where a layer needs the other. Gradients are autograd's through these
operations: model k's loss depends on model k's parameters alone, so the gradient of the
sum of the K losses holds each model's own gradient.

Supported, each by its exact class (a subclass may compute anything): ``nn.Sequential``
(nested) of ``nn.Linear``, ``nn.Conv2d`` (zero padding), the parameter-free activations of
``ELEMENTWISE`` (``nn.Dropout`` among them: off, the learner runs modules in eval mode),
``nn.MaxPool2d`` (without indices) / ``nn.AvgPool2d``, ``nn.Flatten`` from dimension 1 on and
``nn.Unflatten`` of dimension ≥ 1 or −1 (never the example dimension).
:func:`stacked_forward` returns None for any other module, and the learner keeps vmap for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
StackedForward = Callable[[Params, torch.Tensor], torch.Tensor]


def _features_of(x: torch.Tensor, n_models: int) -> torch.Tensor:
    """Channels-last ``(b, K·C, H, W)`` as a contiguous ``(K, b, C, H, W)``."""
    b, _, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h, w, n_models, -1).permute(3, 0, 4, 1, 2).contiguous()


def _channels_of(x: torch.Tensor) -> torch.Tensor:
    """``(K, b, C, H, W)`` as channels-last ``(b, K·C, H, W)`` (whose memory is
    ``(b, H, W, K, C)``)."""
    k, b, c, h, w = x.shape
    return x.permute(1, 3, 4, 0, 2).contiguous().view(b, h, w, k * c).permute(0, 3, 1, 2)


class _ChannelsToFeatures(torch.autograd.Function):
    """:func:`_features_of`, whose gradient goes back in channels-last memory: a ReLU's
    backward pass on a gradient in another layout than its output's runs several times
    slower."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, n_models: int):
        return _features_of(x, n_models)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        return _channels_of(grad), None


class _FeaturesToChannels(torch.autograd.Function):
    """:func:`_channels_of`, whose gradient goes back contiguous."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor):
        ctx.n_models = x.shape[0]
        return _channels_of(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        return _features_of(grad, ctx.n_models)


@dataclass
class Stack:
    """The K models' activations: ``data`` in the features ``(K, b, …)`` or, when
    ``channels``, the channels ``(b, K·C, H, W)`` form (module docstring)."""

    data: torch.Tensor
    channels: bool
    n_models: int

    def features(self) -> torch.Tensor:
        """The activations as ``(K, b, …)``."""
        if not self.channels:
            return self.data
        return _ChannelsToFeatures.apply(self.data, self.n_models)

    def as_channels(self) -> torch.Tensor:
        """The activations as ``(b, K·C, H, W)`` in channels-last memory; each model's must be
        ``(b, C, H, W)``."""
        if self.channels:
            return self.data
        if self.data.dim() != 5:
            shape = tuple(self.data.shape[1:])
            raise ValueError(f"a 2-d layer needs (b, C, H, W) inputs, got {shape}")
        return _FeaturesToChannels.apply(self.data)


def _linear(layer: nn.Linear, name: str) -> Callable[[Stack, Params], Stack]:
    def apply(x: Stack, params: Params) -> Stack:
        inputs = x.features()  # (K, b, …, in)
        flat = inputs.flatten(1, -2) if inputs.dim() > 3 else inputs
        weight = params[f"{name}weight"]  # (K, out, in)
        if layer.bias is None:
            out = torch.bmm(flat, weight.transpose(1, 2))
        else:
            out = torch.baddbmm(params[f"{name}bias"][:, None, :], flat, weight.transpose(1, 2))
        return Stack(out.view(*inputs.shape[:-1], -1), False, x.n_models)

    return apply


def _conv2d(layer: nn.Conv2d, name: str) -> Callable[[Stack, Params], Stack]:
    def apply(x: Stack, params: Params) -> Stack:
        weight = params[f"{name}weight"]  # (K, C_out, C_in/groups, kh, kw)
        weight = weight.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(
            x.as_channels(),
            weight,
            None,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups * x.n_models,
        )
        if layer.bias is not None:
            # Added apart: oneDNN's backward pass takes longer over the bias's gradient
            # than a sum of the output's gradient (0.35–0.7 against 0.02–0.04 ms, 68 CNNs).
            out = out + params[f"{name}bias"].reshape(1, -1, 1, 1)
        return Stack(out, True, x.n_models)

    return apply


def _pooling(layer: nn.Module) -> Callable[[Stack, Params], Stack]:
    def apply(x: Stack, params: Params) -> Stack:
        return Stack(layer(x.as_channels()), True, x.n_models)

    return apply


def _elementwise(layer: nn.Module) -> Callable[[Stack, Params], Stack]:
    def apply(x: Stack, params: Params) -> Stack:
        return Stack(layer(x.data), x.channels, x.n_models)

    return apply


def _model_dim(dim: int) -> int:
    """A dimension of one model's activations ``(b, …)`` in the features form ``(K, b, …)``;
    negative dimensions count from the end in both."""
    return dim + 1 if dim >= 0 else dim


def _flatten(layer: nn.Flatten) -> Callable[[Stack, Params], Stack]:
    start, end = _model_dim(layer.start_dim), _model_dim(layer.end_dim)

    def apply(x: Stack, params: Params) -> Stack:
        return Stack(x.features().flatten(start, end), False, x.n_models)

    return apply


def _unflatten(layer: nn.Unflatten) -> Callable[[Stack, Params], Stack]:
    dim = _model_dim(layer.dim)

    def apply(x: Stack, params: Params) -> Stack:
        return Stack(x.features().unflatten(dim, layer.unflattened_size), False, x.n_models)

    return apply


def _layer(layer: nn.Module, name: str) -> Callable[[Stack, Params], Stack] | None:
    """The stacked form of one leaf layer named ``name`` (with its trailing dot), or None."""
    if type(layer) is nn.Linear:
        return _linear(layer, name)
    if type(layer) is nn.Conv2d and layer.padding_mode == "zeros":
        return _conv2d(layer, name)
    if type(layer) in POOLING and not getattr(layer, "return_indices", False):
        return _pooling(layer)
    if type(layer) in ELEMENTWISE:
        return _elementwise(layer)
    # Flattening or splitting the example dimension would mix the examples of a model.
    if type(layer) is nn.Flatten and layer.start_dim >= 1:
        return _flatten(layer)
    if type(layer) is nn.Unflatten and (layer.dim >= 1 or layer.dim == -1):
        return _unflatten(layer)
    return None


def _layers(module: nn.Module, prefix: str) -> list[Callable[[Stack, Params], Stack]] | None:
    """The stacked forms of ``module``'s leaf layers in order, or None if one has none."""
    if type(module) is nn.Sequential:
        steps: list[Callable[[Stack, Params], Stack]] = []
        for child_name, child in module.named_children():
            child_steps = _layers(child, f"{prefix}{child_name}.")
            if child_steps is None:
                return None
            steps += child_steps
        return steps
    step = _layer(module, prefix)
    return None if step is None else [step]


def stacked_forward(module: nn.Module) -> StackedForward | None:
    """``(params, X (K, b, p)) -> outputs (K, b, c)`` of K copies of ``module`` with the
    stacked ``params`` (name -> ``(K, *shape)``, the names of ``module.named_parameters()``),
    model k on its own inputs ``X[k]``; None if the module is not of the supported layers."""
    steps = _layers(module, "")
    if steps is None:
        return None

    def forward(params: Params, X: torch.Tensor) -> torch.Tensor:
        x = Stack(X, False, X.shape[0])
        for step in steps:
            x = step(x, params)
        return x.features()

    return forward
