"""The ModelPred set function: a DeepSets network from a subset to trained parameters.

    s(S) = Σ_{i∈S} φ(z_i) = m_S · Φ                     z_i = [x_i, onehot(y_i)]
    v(m) = [ m·Φ / n ,  m·Φ / max(|m|, 1) ,  |m| / n ]     |m| = Σ_i m_i   ("views")
    f(S) = ρ( v(m_S) − v(m̄) )

φ is a bias-free 3-layer ELU MLP (as in the reference code, so a zero-padded element maps to
0 and the masked sum is exact). The pooling is the sum s(S); ρ reads it twice — divided by
the ground-set size n (a fixed constant: adding a point adds φ(z)/n) and by the subset size
(the mean embedding, which an MLP cannot easily form from the sum itself) — with the subset
fraction |S|/n. The mean view lowered the held-out parameter error on digits (d = 650,
20,000 rows) from 0.227 to 0.199 and raised test-prediction agreement from 96.7% to 97.1%.

The views are centred on those of the mean training mask m̄ (the mean of the training
rows' masks, kept as a buffer and saved with the weights): ρ reads how S differs from a
typical training subset. Permutation invariance is kept (m̄ permutes with the points) and
the form is the uncentred one up to a shift that does not depend on S (v(m̄) follows φ as
it trains, which a bias of ρ's first layer cannot). Without it, Bernoulli(½) subsets of
one ground set differ by a few per cent of a large common sum, and ρ needs thousands of
steps to amplify those differences; centred, the same budget reached a held-out
parameter error of 0.094 against 0.244 on breast_cancer (2,000 rows, 5,000 steps).
A model built without ``center`` (older checkpoints) reads v(m_S) itself. The ``"sum"``
pooling, v(m) = m·Φ alone, is the reference code's (ρ then reads a sum that grows with |S|).
ρ is a 3-layer ELU MLP (width, width, width/2) and a linear layer to the d target
coordinates (:mod:`mp_ray.predictor.scaling`).

Because φ(z) does not depend on S, a batch of B subsets of one ground set costs one
``Φ = φ(Z)`` (n × width) and one matmul ``masks (B, n) @ Φ``. Points outside the ground set
(adding data) enter the same sum through their own φ.

Shapes: n ground-set points, e element features (p + c), w width, d parameters.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import nn

Pooling = Literal["views", "sum"]


def element_features(
    X: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, n_classes: int
) -> torch.Tensor:
    """Set elements ``z = [x, onehot(y)]`` (classification) or ``[x, y]`` (regression), (m, e)."""
    X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y))
    if n_classes > 1:
        label = nn.functional.one_hot(y.long(), n_classes).to(torch.float32)
    else:
        label = y.to(torch.float32).reshape(-1, 1)
    return torch.cat([X, label], dim=1)


def _mlp(sizes: list[int], bias: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class SetFunction(nn.Module):
    """DeepSets f: (masks over a ground set, its element features) → parameters in target
    coordinates (:mod:`mp_ray.predictor.scaling`).

    ``center`` (n,) is the mean training mask m̄ (None: no centring, as in checkpoints
    written before it); it is a buffer, saved with the weights. ``pooling`` is ``"views"``
    (ρ reads the three views above, 2w + 1 values) or ``"sum"`` (ρ reads m·Φ, w values)."""

    center: torch.Tensor | None

    def __init__(
        self,
        element_dim: int,
        n_params: int,
        width: int = 128,
        center: torch.Tensor | None = None,
        pooling: Pooling = "views",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
        self.element_dim = element_dim
        self.n_params = n_params
        self.width = width
        self.pooling = pooling
        self.register_buffer("center", None if center is None else center.to(torch.float32))
        self.phi = _mlp([element_dim, width, width, width], bias=False)
        self.rho = nn.Sequential(
            _mlp([POOLINGS[pooling][1](width), width, width, width // 2], bias=True),
            nn.ELU(),
            nn.Linear(width // 2, n_params),
        )

    def embed(self, Z: torch.Tensor) -> torch.Tensor:
        """φ of each element, ``Z (m, e) -> (m, w)``."""
        return self.phi(Z)

    def pooled(self, masks: torch.Tensor, Phi: torch.Tensor, n: int) -> torch.Tensor:
        """ρ's input for each subset, (B, 2w + 1) for the views
        ``[masks @ Φ / n, masks @ Φ / |S|, |S| / n]`` or (B, w) for the sum ``masks @ Φ``,
        minus the same of the mean training mask m̄ when the model is centred.
        ``masks (B, m)`` may be fractional (soft masks); columns past the ground set's n
        (added points) have m̄ = 0."""
        pool = POOLINGS[self.pooling][0]
        pooled = pool(masks.to(Phi.dtype), Phi, n)
        if self.center is None:
            return pooled
        center = nn.functional.pad(self.center, (0, masks.shape[1] - self.center.shape[0]))
        return pooled - pool(center[None].to(Phi.dtype), Phi, n)

    def from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """ρ: pooled set representation ``(B, 2w + 1)`` or ``(B, w)`` → parameters in
        target coordinates ``(B, d)``."""
        return self.rho(pooled)

    def forward(self, masks: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """``masks (B, n)`` over the elements ``Z (n, e)`` → target coordinates (B, d).

        One φ pass over Z serves all B subsets."""
        return self.from_pooled(self.pooled(masks, self.embed(Z), Z.shape[0]))


def _views(masks: torch.Tensor, Phi: torch.Tensor, n: int) -> torch.Tensor:
    """``[masks @ Φ / n, masks @ Φ / |S|, |S| / n]`` for ``masks (B, m)``, ``Φ (m, w)``."""
    total = masks @ Phi
    size = masks.sum(dim=1, keepdim=True)
    return torch.cat([total / n, total / size.clamp(min=1), size / n], dim=1)


def _sum(masks: torch.Tensor, Phi: torch.Tensor, n: int) -> torch.Tensor:
    """``masks @ Φ`` for ``masks (B, m)``, ``Φ (m, w)`` (``n`` unused: the sum is unscaled)."""
    return masks @ Phi


# Each pooling's views of ``masks @ Φ`` and ρ's input width for φ's width w.
POOLINGS: dict[str, tuple[Callable[..., torch.Tensor], Callable[[int], int]]] = {
    "views": (_views, lambda w: 2 * w + 1),
    "sum": (_sum, lambda w: w),
}
