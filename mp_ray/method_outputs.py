"""Model outputs on the target examples, predicted by any method from a batch of subsets.

Every method scored by :mod:`mp_ray.scores` is an :data:`OutputFn`:
``masks (K, n) bool -> outputs (K, T)``, the learner's output (correct-class margin, the
store's ``outputs``) on the T target examples of the models trained on the K subsets.
Parameter predictors (ModelPred, influence functions, the distilled datamodel, retraining
itself) become one with :class:`ParameterOutputs`; datamodels predict outputs directly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mp_ray.learners import Learner

OutputFn = Callable[[np.ndarray], np.ndarray]  # masks (K, n) bool -> outputs (K, T) float64
ParamsFn = Callable[[np.ndarray], torch.Tensor]  # masks (K, n) bool -> params (K, d)


class ParameterOutputs:
    """The outputs of the parameters a method predicts, evaluated by the learner.

    ``predict`` maps masks ``(B, n)`` to parameters ``(B, d)``; subsets are passed in
    blocks of ``block`` rows to bound memory.
    """

    def __init__(
        self,
        predict: ParamsFn,
        learner: Learner,
        X_targets: np.ndarray,
        y_targets: np.ndarray,
        block: int = 1024,
    ) -> None:
        self.predict = predict
        self.learner = learner
        self.X_targets = learner.as_tensor(X_targets)
        self.y_targets = y_targets
        self.block = block

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 2 or masks.shape[1] != self.learner.n_train:
            raise ValueError(
                f"masks must have shape (K, {self.learner.n_train}), got {masks.shape}"
            )
        parts = []
        for start in range(0, len(masks), self.block):
            params = self.predict(masks[start : start + self.block])
            params = params.to(device=self.learner.device, dtype=self.learner.dtype)
            margins = self.learner.margin(params, self.X_targets, self.y_targets)
            parts.append(margins.detach().cpu().double().numpy())
        if not parts:
            return np.zeros((0, len(self.y_targets)))
        return np.concatenate(parts)
