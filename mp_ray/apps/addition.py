"""Adding data: what does the model become if given new points are acquired?

For base subsets S_1..S_B of the ground set D (all of D by default) and sets A_1..A_B of new
points — outside the ground set, so the predictor never saw them — the model trained on
S_b ∪ A_b, answered three ways:

- ``ModelPred``: the new points enter the predictor's pooled sum through their own φ, as
  ground-set points do (the set function takes raw (x, y): no retraining, no refit);
- ``influence functions``: one Newton step from θ(D) on the objective of S_b ∪ A_b with
  the full-data Hessian (for S_b = D, the first-order up-weighting of A_b);
- ``retraining`` (on request): the learner trained on S_b ∪ A_b, the ground truth.

Each way reports its parameters before (on S_b) and after (on S_b ∪ A_b), their
predictions, accuracy (R² for regression) and mean loss on evaluation points, and, when
retraining ran, each after-model's relative parameter error ‖θ̂ − θ‖ / ‖θ‖ against the
retrained one.

New points are given as the dataset's splits are: features scaled by the training split's
scaling, labels as class ids (:func:`mp_ray.data.read_points` prepares raw points).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mp_ray.apps.models import PredictedModels, RetrainedModels
from mp_ray.apps.utility import Utility
from mp_ray.baselines import InfluenceFunction

MODELPRED, INFLUENCE, RETRAINING = "ModelPred", "influence functions", "retraining"


@dataclass
class AdditionOutcome:
    """One way's answer for B additions: parameters ``(B, d)`` on the base subsets
    (``before``) and with the new points (``after``); predictions of each on the k
    evaluation points ``(B, k)``, accuracy and mean loss ``(B,)``; seconds taken; relative
    error of ``after`` against retraining ``(B,)`` (None until compared)."""

    before: torch.Tensor
    after: torch.Tensor
    predictions_before: np.ndarray
    predictions_after: np.ndarray
    accuracy_before: np.ndarray
    accuracy_after: np.ndarray
    loss_before: np.ndarray
    loss_after: np.ndarray
    seconds: float
    rel_error: np.ndarray | None = None

    def summary(self) -> dict[str, float | None]:
        """Means over the B additions: accuracy before / after and their change, the change
        of the mean loss, the share of evaluation predictions that change, the relative
        error (None without retraining) and the seconds."""
        changed = self.predictions_after != self.predictions_before
        return {
            "accuracy_before": float(self.accuracy_before.mean()),
            "accuracy_after": float(self.accuracy_after.mean()),
            "accuracy_change": float((self.accuracy_after - self.accuracy_before).mean()),
            "loss_change": float((self.loss_after - self.loss_before).mean()),
            "predictions_changed": float(changed.mean()),
            "rel_error": None if self.rel_error is None else float(self.rel_error.mean()),
            "seconds": self.seconds,
        }


@dataclass
class Addition:
    """Every way's :class:`AdditionOutcome`, by name (ModelPred, influence functions and,
    when asked, retraining)."""

    outcomes: dict[str, AdditionOutcome]

    def summary(self) -> dict[str, dict[str, float | None]]:
        """:meth:`AdditionOutcome.summary` of each way, by name."""
        return {name: outcome.summary() for name, outcome in self.outcomes.items()}


def add_points(
    models: PredictedModels,
    X_new: np.ndarray,
    y_new: np.ndarray,
    X_eval: np.ndarray,
    y_eval: np.ndarray,
    masks: np.ndarray | None = None,
    new_masks: np.ndarray | None = None,
    retrain: bool = False,
    influence: bool = True,
) -> Addition:
    """The models trained on ``masks (B, n)`` of the ground set plus ``new_masks (B, m)`` of
    the new points ``X_new (m, p)``, ``y_new (m,)``, scored on ``X_eval (k, p)``,
    ``y_eval (k,)``. Without ``masks``, every base is the whole ground set; without
    ``new_masks``, every addition is all m points (B = 1 when neither is given). Influence
    functions answer too unless ``influence`` is False; retraining does with ``retrain``."""
    X_new, y_new = np.atleast_2d(X_new), np.atleast_1d(y_new)
    if len(X_new) != len(y_new) or not len(y_new):
        raise ValueError(
            f"new points must be non-empty and aligned, got {len(X_new)} / {len(y_new)}"
        )
    if masks is None:
        masks = np.ones((1 if new_masks is None else len(new_masks), models.n_train), bool)
    if new_masks is None:
        new_masks = np.ones((len(masks), len(y_new)), bool)
    learner = models.learner
    accuracy = Utility(models, X_eval, y_eval, "accuracy")
    neg_loss = Utility(models, X_eval, y_eval, "neg_loss")

    def outcome(answer: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> AdditionOutcome:
        start = time.perf_counter()
        before, after = answer()
        seconds = time.perf_counter() - start
        return AdditionOutcome(
            before,
            after,
            learner.predict(before, X_eval).cpu().numpy(),
            learner.predict(after, X_eval).cpu().numpy(),
            accuracy.of_params(before),
            accuracy.of_params(after),
            -neg_loss.of_params(before),
            -neg_loss.of_params(after),
            seconds,
        )

    def influence_functions() -> tuple[torch.Tensor, torch.Tensor]:
        baseline = InfluenceFunction(learner)
        return baseline.predict(masks), baseline.predict_with_points(masks, X_new, y_new, new_masks)

    def retrained() -> tuple[torch.Tensor, torch.Tensor]:
        truth = RetrainedModels(learner)
        return truth.predict(masks), truth.predict_with_points(masks, X_new, y_new, new_masks)

    outcomes = {
        MODELPRED: outcome(
            lambda: (
                models.predict(masks),
                models.predict_with_points(masks, X_new, y_new, new_masks),
            )
        ),
    }
    if influence:
        outcomes[INFLUENCE] = outcome(influence_functions)
    if retrain:
        truth = outcomes[RETRAINING] = outcome(retrained)
        for result in outcomes.values():
            error = (result.after - truth.after).norm(dim=1) / truth.after.norm(dim=1)
            result.rel_error = error.double().cpu().numpy()
    return Addition(outcomes)
