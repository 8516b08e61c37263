"""Newton steps from the set function's prediction: ModelPred's answer refined on the
subset's own objective.

The set function f(S) places θ(S) coarsely; what it resolves least is how one point more
or less moves the model. One step of Newton's method on the subset's own objective J_S,
taken from f(S) with the full-data Hessian H_D,

    θ̂(S) = f(S) − H_D⁻¹ ∇J_S(f(S)),

adds that resolution at about the cost of influence functions (which take the same step
from θ(D) instead: :class:`~mp_ray.baselines.InfluenceFunction`): one pass over the
subset's points for the objective and its gradient, one product with H_D⁻¹, and one more
pass for the objective at the step's end (more when the step is halved). H_D is the
curvature of the whole data set, not of the subset at f(S): on small subsets the full step
can overshoot, so a step that does not lower J_S is halved (up to :data:`HALVINGS` times,
then not taken). On digits
(permutation prefixes, 10 removals each of 80% and 90% of the points) the unguarded step
raised J_S and doubled the parameter error; halved, it lowers J_S in every case. Each
further step costs as much again and moves closer to retraining: on digits the median
parameter error of subsets of 30% of the points falls from 0.19 (one step) to 0.14 (two)
and 0.11 (three), and most where the set function is least sure — small subsets, which
TMC's early prefixes are made of — so three steps are the default (``auto``). For convex
learners only: elsewhere H_D need not be positive definite and a Newton step need not
descend.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from mp_ray.baselines import InfluenceFunction
from mp_ray.learners import Learner, with_points
from mp_ray.learners.capabilities import NEWTON_STEPS, missing, require
from mp_ray.methods import Masks, check_masks
from mp_ray.predictor.predictor import Predictor, PredictorMeta

AUTO_NEWTON_STEPS = 3  # for convex learners; 0 for the others
SET_FUNCTION_ALONE = "set function alone"  # a table's name for the predictor without steps
HALVINGS = 8  # a step that does not lower the subset's objective is halved up to this often


def newton_steps_for(steps: int | Literal["auto"], learner: Learner) -> int:
    """``predictor.newton_steps`` decided for ``learner``: auto is
    :data:`AUTO_NEWTON_STEPS` for a convex learner that provides the steps' methods
    (:data:`~mp_ray.learners.capabilities.NEWTON_STEPS`), else 0; a positive count for a
    non-convex learner is an error, and for one without those methods a
    :class:`~mp_ray.learners.LearnerCapabilityError` naming them."""
    if steps == "auto":
        able = learner.convex and not missing(learner, NEWTON_STEPS)
        return AUTO_NEWTON_STEPS if able else 0
    if steps:
        require(learner, *NEWTON_STEPS, stage=f"predictor.newton_steps: {steps}")
    if steps and not learner.convex:
        raise ValueError(
            f"predictor.newton_steps: {steps} needs a convex learner; {learner.name} is not "
            "(its Hessian need not be positive definite); set it to 0 or auto"
        )
    return steps


class NewtonRefined:
    """A fitted :class:`~mp_ray.predictor.Predictor` followed by ``steps`` Newton steps on
    each subset's objective (module docstring); the predictor's interface. ``influence``
    supplies θ(D) and H_D⁻¹ when the caller has them already (default: formed here)."""

    def __init__(
        self,
        predictor: Predictor,
        learner: Learner,
        steps: int,
        influence: InfluenceFunction | None = None,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.predictor = predictor
        self.learner = learner
        self.steps = steps
        self.influence = influence or InfluenceFunction(learner)

    @property
    def n_train(self) -> int:
        return self.predictor.n_train

    @property
    def meta(self) -> PredictorMeta:
        return self.predictor.meta

    def _refined(self, params: torch.Tensor, masks: Masks, learner: Learner) -> torch.Tensor:
        params = params.to(self.learner.dtype)
        masks = masks if torch.is_tensor(masks) else torch.as_tensor(np.asarray(masks))
        for _ in range(self.steps):
            params = self._descending_step(params, masks, learner)
        return params

    def _descending_step(
        self, params: torch.Tensor, masks: torch.Tensor, learner: Learner
    ) -> torch.Tensor:
        """One Newton step ``(B, d)`` with H_D, halved per subset until it does not raise
        J_S (and not taken where no halving lowers it)."""
        value, gradient = learner.objective_and_grad(params, masks)
        direction = self.influence.solve(gradient)
        with torch.no_grad():
            length = torch.ones(len(params), dtype=params.dtype, device=params.device)
            for _ in range(HALVINGS):
                reached = learner.objective(params - length[:, None] * direction, masks)
                raised = ~(reached <= value)  # NaN counts as raised
                if not raised.any():
                    break
                length = torch.where(raised, length / 2, length)
            else:
                reached = learner.objective(params - length[:, None] * direction, masks)
                length = torch.where(reached <= value, length, torch.zeros_like(length))
        return params - length[:, None] * direction

    def predict(self, masks: Masks) -> torch.Tensor:
        """Parameters ``(B, d)`` for ``masks (B, n)``."""
        masks = check_masks(masks, self.n_train)
        return self._refined(self.predictor.predict(masks), masks, self.learner)

    def predict_soft(self, weights: torch.Tensor) -> torch.Tensor:
        """Parameters ``(B, d)`` for fractional memberships ``weights (B, n)`` in [0, 1],
        differentiable in ``weights``: the steps are on the weighted objective."""
        return self._refined(self.predictor.predict_soft(weights), weights, self.learner)

    def predict_with_points(
        self,
        masks: Masks,
        X_new: np.ndarray,
        y_new: np.ndarray,
        new_masks: Masks,
    ) -> torch.Tensor:
        """Parameters ``(B, d)`` for ``masks (B, n)`` of the ground set plus ``new_masks
        (B, m)`` of the points ``X_new (m, p)``, ``y_new (m,)``: the steps are on the enlarged
        subset's objective."""
        start = self.predictor.predict_with_points(masks, X_new, y_new, new_masks)
        joined = np.concatenate([np.asarray(masks), np.asarray(new_masks)], axis=1)
        return self._refined(start, joined, with_points(self.learner, X_new, y_new))


def refined(
    predictor: Predictor,
    learner: Learner,
    steps: int | Literal["auto"],
    influence: InfluenceFunction | None = None,
) -> Predictor | NewtonRefined:
    """``predictor`` as the applications use it: followed by ``steps`` Newton steps
    (``predictor.newton_steps``, decided by :func:`newton_steps_for`), or alone for 0;
    ``influence`` as for :class:`NewtonRefined`."""
    count = newton_steps_for(steps, learner)
    return NewtonRefined(predictor, learner, count, influence) if count else predictor


def with_set_function_alone(
    name: str,
    predictor: Predictor,
    learner: Learner,
    steps: int | Literal["auto"],
    influence: InfluenceFunction | None = None,
) -> dict[str, Predictor | NewtonRefined]:
    """The methods a comparison table shows for one fitted predictor: ``name`` as the
    applications use it (:func:`refined`) and, when that takes Newton steps, ``"{name}, set
    function alone"`` beside it, so that the table says what the steps add. A table that
    shows influence functions too passes its ``influence``, so H_D⁻¹ is formed once."""
    method = refined(predictor, learner, steps, influence)
    if method is predictor:
        return {name: predictor}
    return {name: method, f"{name}, {SET_FUNCTION_ALONE}": predictor}
