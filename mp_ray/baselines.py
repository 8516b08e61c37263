"""Reference predictors of θ(S) that ModelPred is measured against.

- :class:`FullDataModel`: θ(D) for every subset (what you get without any prediction).
- :class:`InfluenceFunction`: first-order influence functions from θ(D) — one Newton step
  on the subset's own objective with the full-data Hessian::

      θ̂(S) = θ(D) − H_D⁻¹ ∇J_S(θ(D))

  For an objective R(θ) + C·Σ_{i∈S} ℓ_i this is θ(D) + C·H_D⁻¹ Σ_{i∉S} ∇ℓ_i(θ(D)), the sum of
  the removed points' influences (Koh & Liang). H_D is formed exactly from Hessian-vector
  products when d ≤ ``exact_max_dim`` and pseudo-inverted (it is singular along the
  softmax's common intercept shift, where the gradients vanish); otherwise each solve runs
  conjugate gradients (batched over subsets), which stay in H_D's range from a zero start.
  Forming H_D costs d products, each a pass over the training set; conjugate gradients
  cost tens of products per predicted subset, so the exact inverse pays for itself after
  d / (iterations) subsets: for the digits CNN (d = 3,818, 50 iterations at λ = 0.01)
  after 76, where an LDS table predicts thousands. The products are taken in chunks of
  basis vectors whose passes hold at most ``HVP_CHUNK_BYTES``.
  With ``damping`` λ > 0 every solve is with H_D + λI instead (Koh & Liang's damping for
  non-convex models, whose H_D at θ(D) has small or negative eigenvalues). Conjugate
  gradients need H_D + λI positive definite; the exact pseudo-inverse takes any λ.
  Points outside the ground set take the same step on the enlarged subset's objective
  (:meth:`InfluenceFunction.predict_with_points`): for D plus new points A this is
  θ(D) − C·H_D⁻¹ Σ_{a∈A} ∇ℓ_a(θ(D)), the first-order up-weighting of A.

Both are parameter methods (:class:`~mp_ray.methods.ParameterMethod`: ``predict(masks
(B, n)) -> params (B, d)``), as the fitted predictor is, and so are the baselines fitted on
the store's training rows (:mod:`mp_ray.store_baselines`: the mean θ and ridge regression on the
subset mask).
"""

from __future__ import annotations

import numpy as np
import torch

from mp_ray.learners import Learner, with_points
from mp_ray.learners.capabilities import INFLUENCE_FUNCTIONS, missing
from mp_ray.learners.memory import MIB, chunk_slices, rows_per_chunk
from mp_ray.methods import Masks, check_masks

# Intermediates of one chunk of Hessian-vector products while H_D is formed: each product
# is a double backward pass over the training set, about four copies of its per-example
# intermediates (forward outputs, their gradients, the gradients' tangents, temporaries).
HVP_CHUNK_BYTES = 512 * MIB
HVP_COPIES = 4


def full_data_params(learner: Learner) -> torch.Tensor:
    """θ(D), the learner trained on the whole ground set, ``(d,)``."""
    return learner.fit_batch(torch.ones(1, learner.n_train, dtype=torch.bool))[0]


class ConstantParams:
    """Predicts one parameter vector ``theta (d,)`` whatever subset of the ``n_train``
    points."""

    name = "constant θ"

    def __init__(self, theta: torch.Tensor, n_train: int) -> None:
        self.theta = theta
        self.n_train = n_train

    def predict(self, masks: Masks) -> torch.Tensor:
        """``theta`` for each of ``masks (B, n)``, ``(B, d)``."""
        masks = check_masks(masks, self.n_train)
        return self.theta.expand(len(masks), -1).clone()


class FullDataModel(ConstantParams):
    """Predicts θ(D) whatever the subset."""

    name = "full data θ(D)"

    def __init__(self, learner: Learner) -> None:
        super().__init__(full_data_params(learner), learner.n_train)


class InfluenceFunction:
    """First-order influence functions from θ(D); see the module docstring."""

    name = "influence functions"

    def __init__(
        self,
        learner: Learner,
        exact_max_dim: int = 4096,
        cg_tol: float = 1e-8,
        cg_iter: int = 500,
        damping: float = 0.0,
    ) -> None:
        self.learner = learner
        self.damping = damping
        self.n_train = learner.n_train
        self.theta = full_data_params(learner)
        self._full = torch.ones(1, learner.n_train, dtype=torch.bool)
        self.cg_tol, self.cg_iter = cg_tol, cg_iter
        self.inverse: torch.Tensor | None = None
        if learner.n_params <= exact_max_dim:
            # Pseudo-inverse: over-parametrised models (the softmax's common intercept shift)
            # have a singular H_D, and the gradients have no component in its null space.
            self.inverse = torch.linalg.pinv(self.hessian(), hermitian=True)

    def hessian(self) -> torch.Tensor:
        """H_D + damping·I, ``(d, d)``, symmetrised: its products with the basis vectors in
        chunks of :data:`HVP_CHUNK_BYTES`."""
        learner = self.learner
        d = learner.n_params
        floats = HVP_COPIES * learner.n_train * learner.loss_floats()
        chunk = rows_per_chunk(HVP_CHUNK_BYTES, 1, floats, learner.dtype.itemsize)
        eye = torch.eye(d, dtype=learner.dtype, device=learner.device)
        rows = torch.cat([self._hvp(eye[part]) for part in chunk_slices(d, chunk)])
        return 0.5 * (rows + rows.T)

    def _hvp(self, v: torch.Tensor) -> torch.Tensor:
        """(H_D + damping·I) · v for each row of ``v (B, d)``."""
        rows = v.shape[0]
        hv = self.learner.hvp(self.theta.expand(rows, -1), self._full.expand(rows, -1), v)
        return hv + self.damping * v if self.damping else hv

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """(H_D + damping·I)⁻¹ · rhs for each row of ``rhs (B, d)``."""
        if self.inverse is not None:
            return rhs @ self.inverse
        return self._conjugate_gradients(rhs)

    def _conjugate_gradients(self, rhs: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(rhs)
        r = rhs.clone()
        p = r.clone()
        rr = (r * r).sum(1)
        stop = self.cg_tol**2 * rr.clamp(min=1e-300)
        for _ in range(self.cg_iter):
            if bool((rr <= stop).all()):
                break
            hp = self._hvp(p)
            step = rr / (p * hp).sum(1).clamp(min=1e-300)
            x += step[:, None] * p
            r -= step[:, None] * hp
            rr_new = (r * r).sum(1)
            p = r + (rr_new / rr.clamp(min=1e-300))[:, None] * p
            rr = rr_new
        return x

    def newton_step(
        self,
        params: torch.Tensor,
        masks: Masks,
        learner: Learner | None = None,
    ) -> torch.Tensor:
        """θ − H_D⁻¹ ∇J_S(θ) from each row of ``params (B, d)`` on the objective of the
        subsets ``masks (B, n')`` of ``learner``'s set (default: the ground set's learner),
        ``(B, d)``: one step of Newton's method on J_S with the full-data Hessian. Masks may
        be fractional weights; the step is differentiable in them and in ``params``."""
        learner = learner or self.learner
        masks = masks if torch.is_tensor(masks) else torch.as_tensor(np.asarray(masks))
        return params - self.solve(learner.objective_grad(params, masks))

    def _step(self, learner: Learner, masks: Masks) -> torch.Tensor:
        """θ(D) − H_D⁻¹ ∇J_S(θ(D)) for the subsets ``masks (B, n')`` of ``learner``'s set."""
        return self.newton_step(self.theta.expand(len(masks), -1), masks, learner)

    def predict(self, masks: Masks) -> torch.Tensor:
        """Parameters ``(B, d)`` for ``masks (B, n)``: the step from θ(D)."""
        return self._step(self.learner, check_masks(masks, self.n_train))

    def predict_with_points(
        self,
        masks: Masks,
        X_new: np.ndarray,
        y_new: np.ndarray,
        new_masks: Masks,
    ) -> torch.Tensor:
        """Parameters ``(B, d)`` for ``masks (B, n)`` of the ground set plus ``new_masks
        (B, m)`` of the points ``X_new (m, p)``, ``y_new (m,)``: the same step from θ(D)."""
        joined = np.concatenate([np.asarray(masks), np.asarray(new_masks)], axis=1)
        return self._step(with_points(self.learner, X_new, y_new), joined)


def influence_baseline(
    learner: Learner, damping: float = 0.0
) -> tuple[InfluenceFunction | None, str | None]:
    """Influence functions for ``learner`` (with ``damping``) and None, or, for a learner
    without the methods they need (:data:`~mp_ray.learners.capabilities.INFLUENCE_FUNCTIONS`),
    None and a note saying so: a comparison table leaves them out rather than fail."""
    lacking = missing(learner, INFLUENCE_FUNCTIONS)
    if not lacking:
        return InfluenceFunction(learner, damping=damping), None
    return None, (
        f"{InfluenceFunction.name} left out: learner {learner.name} does not implement "
        + ", ".join(lacking)
    )
