"""Any scikit-learn estimator as a learner (``learner.kind: sklearn``).

The estimator class is named by import path and built with ``learner.params`` for every
subset, then fitted on that subset alone: with the subset as fit's ``sample_weight`` (1
inside, 0 outside, all n rows) where fit accepts one and ``learner.sample_weight`` is
true, else on the subset's rows alone. The answer is the user's estimator exactly; subsets
are fitted one after another in an actor (no batching: slower than the batched learners),
in parallel over the retraining actors.

Parameters, one flattened vector per subset:

- a linear estimator (``coef_``, ``intercept_``: LogisticRegression, LinearSVC, Ridge,
  LinearDiscriminantAnalysis, …): the layout of :class:`~mp_ray.learners.linear.LinearLearner`,
  ``(c, p + 1)`` flattened (binary: p + 1, the second class's score), with its outputs,
  intercept mask and output metric;
- any other estimator: ``learner.extractor(estimator) -> (d,)`` reads them and
  ``learner.decision(params (K, d), X (m, p)) -> (K, m, c)`` gives the outputs from them
  (numpy float64); d is the extractor's length on the estimator fitted on every point.
  No parameter is marked an intercept.

Subsets that are empty or, for classification, miss a class are not fitted: θ = 0 and the
row is flagged ``degenerate``, as for every learner. Any other failure of the estimator's
fit is an error naming it. The estimator's objective is not known here, so the optional
capabilities (objective, its gradient and Hessian, the per-sample loss) are absent, and
the estimator is not taken to be convex (:mod:`mp_ray.learners.plugin` says what that
leaves out). Seeds are not passed on: fix ``random_state`` in ``learner.params``.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Callable
from functools import cached_property

import numpy as np
import torch

from mp_ray.config import SklearnLearnerConfig
from mp_ray.errors import MpRayError
from mp_ray.learners.base import ArrayLike, Learner
from mp_ray.learners.linear import LinearLearner
from mp_ray.learners.plugin import estimator, estimator_class, function


class EstimatorError(MpRayError, RuntimeError):
    """The estimator could not be fitted on a subset, or gave unusable parameters."""


class SklearnLearner(Learner):
    """Fits ``config.estimator`` on one subset at a time; subclasses read its parameters."""

    config: SklearnLearnerConfig
    convex = False  # the estimator's objective is not known here

    def __init__(
        self,
        config: SklearnLearnerConfig,
        X: ArrayLike,
        y: ArrayLike,
        n_classes: int,
        device: torch.device | str = "cpu",
        memory_budget: int | None = None,
    ) -> None:
        super().__init__(config, X, y, n_classes, device, memory_budget)
        self.estimator_class = estimator_class(config.estimator)
        self.name = f"sklearn {self.estimator_class.__name__}"
        accepts = "sample_weight" in inspect.signature(self.estimator_class.fit).parameters
        self.weighted = config.sample_weight and accepts
        self.X_numpy = self.X.detach().cpu().double().numpy()
        self.y_numpy = self.y.detach().cpu().numpy()

    def fitted(self, mask: np.ndarray) -> object:
        """The estimator fitted on the subset ``mask (n,) bool``."""
        model = estimator(self.config.estimator, self.config.params)
        try:
            if self.weighted:
                model.fit(self.X_numpy, self.y_numpy, sample_weight=mask.astype(np.float64))
            else:
                model.fit(self.X_numpy[mask], self.y_numpy[mask])
        except Exception as err:
            raise EstimatorError(
                f"{self.name} failed to fit a subset of {int(mask.sum())} points: "
                f"{type(err).__name__}: {err}"
            ) from err
        return model

    @abstractmethod
    def read_params(self, estimator: object) -> np.ndarray:
        """The flattened parameters ``(d,)`` of a fitted estimator."""

    def _fit(self, weights: torch.Tensor, seeds: ArrayLike | None) -> torch.Tensor:
        masks = (weights > 0).cpu().numpy()
        skipped = self.degenerate(weights).cpu().numpy()
        params = np.zeros((len(masks), self.n_params))
        for row in np.flatnonzero(~skipped):
            params[row] = self.read_params(self.fitted(masks[row]))
        return torch.as_tensor(params, dtype=self.dtype, device=self.device)


class LinearSklearnLearner(SklearnLearner, LinearLearner):
    """A linear estimator, read from ``coef_`` and ``intercept_`` in the linear layout."""

    def read_params(self, estimator: object) -> np.ndarray:
        c, p = self.n_outputs, self.n_features
        if not hasattr(estimator, "coef_"):
            raise EstimatorError(
                f"{self.name} has no coef_ after fitting, so it is not read as a linear model; "
                "give learner.extractor and learner.decision for it"
            )
        coef = np.asarray(estimator.coef_, dtype=np.float64)
        if coef.size != c * p:
            raise EstimatorError(
                f"{self.name}'s coef_ has shape {coef.shape}; the linear layout needs {c} × {p} "
                "(one row per output column); give learner.extractor and learner.decision"
            )
        intercept = np.asarray(getattr(estimator, "intercept_", 0.0), dtype=np.float64)
        columns = [coef.reshape(c, p), np.broadcast_to(intercept, (c,)).reshape(c, 1)]
        return np.concatenate(columns, axis=1).reshape(-1)


class ExtractedSklearnLearner(SklearnLearner):
    """Any estimator, its parameters read by ``config.extractor`` and its outputs given by
    ``config.decision``."""

    @cached_property
    def extractor(self) -> Callable[[object], np.ndarray]:
        """``config.extractor``: a fitted estimator's parameters ``(d,)``."""
        return function(str(self.config.extractor))

    @cached_property
    def decide(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``config.decision``: outputs ``(K, m, c)`` of ``params (K, d)`` on ``X (m, p)``."""
        return function(str(self.config.decision))

    @cached_property
    def n_params(self) -> int:
        """d: the extractor's length on the estimator fitted on every training point."""
        return int(np.asarray(self.extractor(self.fitted(np.ones(self.n_train, bool)))).size)

    def read_params(self, estimator: object) -> np.ndarray:
        params = np.asarray(self.extractor(estimator), dtype=np.float64)
        if params.shape != (self.n_params,):
            raise EstimatorError(
                f"{self.config.extractor} gave parameters of shape {params.shape} for "
                f"{self.name}; expected ({self.n_params},), as on the whole training set"
            )
        return params

    def decision(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        X = self.as_tensor(X)
        wanted = (params.shape[0], X.shape[0], self.n_outputs)
        out = np.asarray(
            self.decide(params.detach().cpu().double().numpy(), X.detach().cpu().double().numpy())
        )
        if out.shape != wanted:
            raise EstimatorError(
                f"{self.config.decision} gave outputs of shape {out.shape}; expected {wanted} "
                "(models, points, output columns)"
            )
        return torch.as_tensor(out, dtype=self.dtype, device=self.device)

    def intercept_mask(self) -> torch.Tensor:
        return torch.zeros(self.n_params, dtype=torch.bool, device=self.device)


def sklearn_learner(
    config: SklearnLearnerConfig,
    X: ArrayLike,
    y: ArrayLike,
    n_classes: int,
    device: torch.device | str = "cpu",
    memory_budget: int | None = None,
) -> SklearnLearner:
    """The learner of kind sklearn over ``X (n, p)``, ``y (n,)``: linear without an extractor."""
    kind = LinearSklearnLearner if config.extractor is None else ExtractedSklearnLearner
    return kind(config, X, y, n_classes, device, memory_budget)
