"""The online half of the distilled datamodel: models without groups from the reverse steps.

With θ* the full-data model and s_k = η ∇_θ L(synset_k; θ*) the reverse step of group k
(``steps (G, d)``, computed once from the synsets):

- :meth:`DistilledDatamodel.without` — a removal of groups R: θ̂_{−R} = θ* + Σ_{k∈R} s_k;
- :meth:`DistilledDatamodel.predict` — any subset S (``masks (B, n)``): θ̂(S) = θ* + Σ_k f_k s_k,
  f_k = the fraction of group k's points that S leaves out (a removal of whole groups gives
  the same as :meth:`without`);
- :meth:`DistilledDatamodel.attribution` — A[k, j] = E(θ̂_{−k}; x_j) − E(θ*; x_j) for an
  evaluation objective E (the learner's correct-class margin, or its per-example loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from mp_ray.distill.synset import Synsets, synset_gradients
from mp_ray.learners import Learner
from mp_ray.learners.base import ArrayLike

Objective = Literal["margin", "loss"]


class DistilledDatamodel:
    """θ*, the groups (``(n,)`` ids) and each group's synset with the shared step size η."""

    name = "distilled datamodel"

    def __init__(
        self,
        learner: Learner,
        theta: torch.Tensor,
        groups: np.ndarray,
        synsets: Synsets,
        eta: float,
    ) -> None:
        groups = np.asarray(groups, dtype=np.int64)
        if groups.shape != (learner.n_train,):
            raise ValueError(
                f"groups must give one group per training point, shape ({learner.n_train},), "
                f"got {groups.shape}"
            )
        n_groups = int(groups.max()) + 1
        if synsets.n_groups != n_groups or np.bincount(groups).min() == 0:
            raise ValueError(
                f"the groups use ids 0..{n_groups - 1} but there are {synsets.n_groups} synsets "
                "(every group needs points and a synset)"
            )
        if theta.shape != (learner.n_params,):
            raise ValueError(f"θ* must have shape ({learner.n_params},), got {tuple(theta.shape)}")
        self.learner = learner
        self.theta = theta.detach().to(device=learner.device, dtype=learner.dtype)
        self.groups = groups
        self.synsets = synsets.to(learner.device, learner.dtype)
        self.eta = float(eta)
        self.sizes = np.bincount(groups, minlength=n_groups)
        self._members = torch.nn.functional.one_hot(
            torch.as_tensor(groups, device=learner.device), n_groups
        ).to(learner.dtype)  # (n, G)
        with torch.no_grad():
            self.steps = self.eta * synset_gradients(learner, self.theta, self.synsets)

    @property
    def n_train(self) -> int:
        return self.learner.n_train

    @property
    def n_groups(self) -> int:
        return int(self.sizes.size)

    def removals(self, removed: ArrayLike | Sequence[Sequence[int]]) -> torch.Tensor:
        """Removals as a float ``(R, G)`` indicator, from ``(R, G)`` bool or R lists of group
        ids; unknown ids are an error."""
        if isinstance(removed, np.ndarray | torch.Tensor) and removed.dtype in (
            np.bool_,
            torch.bool,
        ):
            indicator = torch.as_tensor(removed, device=self.learner.device)
            if indicator.ndim != 2 or indicator.shape[1] != self.n_groups:
                raise ValueError(
                    f"removal flags must have shape (R, {self.n_groups}), one column per group, "
                    f"got {tuple(indicator.shape)}"
                )
            return indicator.to(self.learner.dtype)
        indicator = torch.zeros(len(removed), self.n_groups, dtype=self.learner.dtype)
        for row, ids in enumerate(removed):
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            bad = ids[(ids < 0) | (ids >= self.n_groups)]
            if bad.size:
                raise ValueError(
                    f"removal {row} names unknown groups {bad.tolist()}; groups are "
                    f"0..{self.n_groups - 1}"
                )
            indicator[row, ids] = 1.0
        return indicator.to(self.learner.device)

    def without(self, removed: ArrayLike | Sequence[Sequence[int]]) -> torch.Tensor:
        """θ̂ without each removal of whole groups, ``(R, d)``: θ* + Σ_{k∈R} s_k."""
        return self.theta + self.removals(removed) @ self.steps

    def removed_fractions(self, masks: ArrayLike) -> torch.Tensor:
        """The share of each group that each subset leaves out, ``(B, G)`` for ``masks (B, n)``."""
        kept = self.learner.masks_tensor(masks)  # checks the shape (B, n)
        return 1.0 - (kept @ self._members) / torch.as_tensor(
            self.sizes, dtype=kept.dtype, device=kept.device
        )

    def predict(self, masks: ArrayLike) -> torch.Tensor:
        """θ̂(S) for subsets ``masks (B, n)`` bool, ``(B, d)``: θ* + Σ_k f_k s_k."""
        return self.theta + self.removed_fractions(masks) @ self.steps

    def attribution(
        self, X: ArrayLike, y: ArrayLike, objective: Objective = "margin"
    ) -> torch.Tensor:
        """A[k, j] = E(θ̂_{−k}; x_j) − E(θ*; x_j), ``(G, T)``, for targets ``X (T, p)``,
        ``y (T,)``."""
        if len(X) != len(y):
            raise ValueError(f"{len(X)} target rows but {len(y)} target labels")
        with torch.no_grad():
            after = evaluate(self.learner, self.theta + self.steps, X, y, objective)
            before = evaluate(self.learner, self.theta[None], X, y, objective)
        return after - before


def evaluate(
    learner: Learner, params: torch.Tensor, X: ArrayLike, y: ArrayLike, objective: Objective
) -> torch.Tensor:
    """E(θ; x_j) of ``params (K, d)`` on targets ``X (T, p)``, ``y (T,)``, ``(K, T)``."""
    if objective == "margin":
        return learner.margin(params, X, y)
    if objective == "loss":
        return learner.per_sample_loss(params, X, y)
    raise ValueError(f"unknown objective {objective!r}: use 'margin' or 'loss'")
