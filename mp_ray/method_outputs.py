"""Model outputs on the target examples, predicted by any parameter method.

Every method scored by :mod:`mp_ray.scores` is an :class:`~mp_ray.methods.OutputMethod`:
``outputs(masks (B, n)) -> (B, T)``, the learner's output (correct-class margin, the
store's ``outputs``) on the T target examples of the models trained on the B subsets.
Datamodels predict outputs directly; every :class:`~mp_ray.methods.ParameterMethod`
(ModelPred, influence functions, the distilled datamodel, retraining itself) becomes one
with :class:`ParameterOutputs`.
"""

from __future__ import annotations

import numpy as np

from mp_ray.learners import Learner
from mp_ray.methods import Masks, ParameterMethod, check_masks


class ParameterOutputs:
    """The outputs of the parameters ``method`` predicts, evaluated by the learner on the
    targets ``X_targets (T, p)``, ``y_targets (T,)``: an output method. Subsets are passed
    to ``method`` in blocks of ``block`` rows to bound memory."""

    def __init__(
        self,
        method: ParameterMethod,
        learner: Learner,
        X_targets: np.ndarray,
        y_targets: np.ndarray,
        block: int = 1024,
    ) -> None:
        self.method = method
        self.learner = learner
        self.X_targets = learner.as_tensor(X_targets)
        self.y_targets = y_targets
        self.block = block

    @property
    def n_train(self) -> int:
        return self.method.n_train

    def outputs(self, masks: Masks) -> np.ndarray:
        """Outputs ``(B, T)`` float64 of the models ``method`` gives for ``masks (B, n)``."""
        masks = check_masks(masks, self.n_train).cpu().numpy()
        parts = []
        for start in range(0, len(masks), self.block):
            params = self.method.predict(masks[start : start + self.block])
            params = params.to(device=self.learner.device, dtype=self.learner.dtype)
            margins = self.learner.margin(params, self.X_targets, self.y_targets)
            parts.append(margins.detach().cpu().double().numpy())
        if not parts:
            return np.zeros((0, len(self.y_targets)))
        return np.concatenate(parts)
