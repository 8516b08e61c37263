"""Example model factories for ``learner.kind: torch`` (``factory: mp_ray.learners.zoo:mlp``).

Each is called as ``factory(n_features, n_outputs, **factory_kwargs)`` and returns a module
mapping inputs ``(m, n_features)`` to outputs ``(m, n_outputs)``.
"""

from __future__ import annotations

from torch import nn

DIGITS_SIDE = 8  # scikit-learn's digits are 8×8 images, 64 features


def mlp(n_features: int, n_outputs: int, hidden: int = 32) -> nn.Module:
    """One hidden ReLU layer of width ``hidden``."""
    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))


def digits_cnn(n_features: int, n_outputs: int, channels: int = 8) -> nn.Module:
    """A small CNN for the 8×8 digits: the 64 features as a 1×8×8 image, a 3×3 convolution to
    ``channels`` maps (8×8), one with stride 2 to 2·``channels`` maps (4×4), a ReLU after
    each, and a linear head."""
    if n_features != DIGITS_SIDE**2:
        raise ValueError(f"digits_cnn takes 8×8 images (64 features), got {n_features} features")
    quarter = (DIGITS_SIDE // 2) ** 2
    return nn.Sequential(
        nn.Unflatten(1, (1, DIGITS_SIDE, DIGITS_SIDE)),
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * channels * quarter, n_outputs),
    )
