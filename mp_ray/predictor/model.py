"""The ModelPred set function: a DeepSets network from a subset to trained parameters.

    s(S) = Σ_{i∈S} φ(z_i)                                z_i = [x_i, onehot(y_i)]
    f(S) = ρ( [ s(S) / n ,  s(S) / max(|S|, 1) ,  |S| / n ] )

φ is a bias-free 3-layer ELU MLP (as in the reference code, so a zero-padded element maps to
0 and the masked sum is exact). The pooling is the sum s(S); ρ reads it twice — divided by
the ground-set size n (a fixed constant: adding a point adds φ(z)/n) and by the subset size
(the mean embedding, which an MLP cannot easily form from the sum itself) — with the subset
fraction |S|/n. The mean view lowered the held-out parameter error on digits (d = 650,
20,000 rows) from 0.227 to 0.199 and raised test-prediction agreement from 96.7% to 97.1%.
ρ is a 3-layer ELU MLP (width, width, width/2) and a linear layer to the d standardised
parameter coordinates.

Because φ(z) does not depend on S, a batch of B subsets of one ground set costs one
``Φ = φ(Z)`` (n × width) and one matmul ``masks (B, n) @ Φ``. Points outside the ground set
(adding data) enter the same sum through their own φ.

Shapes: n ground-set points, e element features (p + c), w width, d parameters.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn


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
    """DeepSets f: (masks over a ground set, its element features) → standardised parameters."""

    def __init__(self, element_dim: int, n_params: int, width: int = 128) -> None:
        super().__init__()
        self.element_dim = element_dim
        self.n_params = n_params
        self.width = width
        self.phi = _mlp([element_dim, width, width, width], bias=False)
        self.rho = nn.Sequential(
            _mlp([2 * width + 1, width, width, width // 2], bias=True),
            nn.ELU(),
            nn.Linear(width // 2, n_params),
        )

    def embed(self, Z: torch.Tensor) -> torch.Tensor:
        """φ of each element, ``Z (m, e) -> (m, w)``."""
        return self.phi(Z)

    def pooled(self, masks: torch.Tensor, Phi: torch.Tensor, n: int) -> torch.Tensor:
        """ρ's input for each subset: ``[masks @ Φ / n, masks @ Φ / |S|, |S| / n]``,
        (B, 2w + 1); ``masks (B, m)`` may be fractional (soft masks)."""
        masks = masks.to(Phi.dtype)
        total = masks @ Phi
        size = masks.sum(dim=1, keepdim=True)
        return torch.cat([total / n, total / size.clamp(min=1), size / n], dim=1)

    def from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """ρ: pooled set representation ``(B, 2w + 1)`` → standardised parameters ``(B, d)``."""
        return self.rho(pooled)

    def forward(self, masks: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """``masks (B, n)`` over the elements ``Z (n, e)`` → standardised parameters (B, d).

        One φ pass over Z serves all B subsets."""
        return self.from_pooled(self.pooled(masks, self.embed(Z), Z.shape[0]))
