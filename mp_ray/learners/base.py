"""The learner interface: the algorithm A whose trained parameters mp-ray predicts.

A learner is built once per process over the training split ``X (n, p)``, ``y (n,)`` and a
torch device, then trains **batches** of subsets: ``fit_batch(masks (K, n) bool)`` returns
``params (K, d)``, one flattened parameter vector per subset, trained as one vectorised
computation (masks enter as sample weights). Everything later stages need is expressed on
batches of flattened parameter vectors.

Passes over the whole training set take its rows in chunks under the learner's memory
budget when it has one (a CUDA device: :mod:`mp_ray.learners.memory`), all at once else.

Four methods make a learner (:attr:`~Learner.n_params`, :meth:`~Learner._fit` or
:meth:`~Learner.fit_batch`, :meth:`~Learner.decision`, :meth:`~Learner.intercept_mask`);
the loss, the objective and their derivatives are capabilities that later stages need and
a learner may lack (:meth:`Learner.provides`, :mod:`mp_ray.learners.capabilities`; the
table of which stage needs which is in :mod:`mp_ray.learners.plugin`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property, partial
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel

from mp_ray.config import LearnerConfig
from mp_ray.errors import MpRayError
from mp_ray.learners.allocator import retain_freed_memory
from mp_ray.learners.memory import chunk_slices, device_budget, rows_per_chunk
from mp_ray.learners.threads import model_groups, run_single_threaded
from mp_ray.methods import mask_tensor

ArrayLike = np.ndarray | torch.Tensor


def _writable(array: ArrayLike) -> ArrayLike:
    """A read-only numpy array (e.g. one from Ray's object store) copied; anything else as is."""
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        return array.copy()
    return array


# The optional methods whose base versions derive them from others (by autograd or a pass
# over the training set): a learner provides one when it overrides it or provides all these.
DERIVED_FROM: dict[str, tuple[str, ...]] = {
    "objective_grad": ("objective",),
    "objective_and_grad": ("objective", "objective_grad"),
    "objective_grad_and_loss": ("objective_and_grad", "mean_subset_loss"),
    "hvp": ("objective_grad",),
    "per_sample_grads": ("per_sample_loss",),
    "weighted_loss": ("per_sample_loss",),
    "mean_subset_loss": ("weighted_loss",),
}


class LearnerCapabilityError(MpRayError, NotImplementedError):
    """A stage needs a method the learner does not implement; the message names the
    learner, the methods and the stage."""


class Learner(ABC):
    """A deterministic training algorithm over a fixed ground set.

    Shapes: K models, n training points, m evaluation points, p features, d parameters,
    c output columns (1 for binary classification and regression, else the class count).
    ``memory_budget``: the bytes a pass over the training set may hold in intermediates;
    None derives it from the device (:func:`~mp_ray.learners.memory.device_budget`).
    """

    name: str
    convex: bool = False  # a convex objective: one global optimum, a PSD Hessian
    # A plug-in's own settings (``learner.options`` of kind custom), validated at config load.
    Options: ClassVar[type[BaseModel] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "name", None), str):
            cls.name = cls.__name__  # a plug-in that names itself by its class

    def __init__(
        self,
        config: LearnerConfig,
        X: ArrayLike,
        y: ArrayLike,
        n_classes: int,
        device: torch.device | str = "cpu",
        memory_budget: int | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        if self.device.type == "cpu":
            retain_freed_memory()  # the process's allocator keeps freed memory for reuse
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        self.n_classes = n_classes
        self.X = self.as_tensor(X)
        self.y = self.labels(y)
        # Bytes a pass's intermediates may take: as given, else derived on a CUDA device
        # (the whole GPU's share), else None (no budget).
        self.memory_budget = device_budget(self.device) if memory_budget is None else memory_budget

    @cached_property
    def options(self) -> BaseModel:
        """``learner.options`` as this class's :attr:`Options` model (kind custom)."""
        if self.Options is None:
            raise TypeError(f"learner {self.name} declares no Options model")
        return self.Options.model_validate(getattr(self.config, "options", {}))

    @classmethod
    def provides(cls, method: str) -> bool:
        """Whether this learner implements ``method`` (an optional capability): it overrides
        the base version, or the base version derives it from methods it provides
        (:data:`DERIVED_FROM`). Required methods are always provided."""
        if getattr(cls, method) is not getattr(Learner, method):
            return True
        derived = DERIVED_FROM.get(method)
        return derived is not None and all(cls.provides(name) for name in derived)

    def lacks(self, method: str, stage: str = "this stage") -> LearnerCapabilityError:
        """The error for a call of ``method``, which this learner does not implement."""
        return LearnerCapabilityError(
            f"learner {self.name} does not implement {method}, which {stage} needs "
            "(see Bring your own model in README.md)"
        )

    def as_tensor(self, array: ArrayLike) -> torch.Tensor:
        """Convert an array to this learner's device and floating dtype."""
        return torch.as_tensor(_writable(array)).to(device=self.device, dtype=self.dtype)

    @property
    def n_train(self) -> int:
        return int(self.X.shape[0])

    @property
    @abstractmethod
    def n_params(self) -> int:
        """d, the length of the flattened parameter vector."""

    def output_metric(self) -> torch.Tensor | None:
        """For a model linear in its parameters per output column: ``M (p + 1, p + 1)``,
        float64, such that δᵀ M δ is the mean squared change of an output over the training
        points when that output's ``p + 1`` parameters change by δ. None for other models."""
        return None

    def fit_batch(self, masks: ArrayLike, seeds: ArrayLike | None = None) -> torch.Tensor:
        """Train K models, one per row of ``masks (K, n) bool``; returns ``params (K, d)``.

        ``seeds (K,) int64`` drive any randomness of the algorithm (ignored by convex
        learners). The result for a row depends only on (data, mask, seed). On a CPU, a
        learner whose :meth:`_min_group` allows it trains the rows in groups, one per
        intra-op thread, concurrently (:mod:`mp_ray.learners.threads`).
        """
        weights = self.masks_tensor(masks)
        groups = model_groups(weights.shape[0], self.device, self._min_group())
        if len(groups) == 1:
            return self._fit(weights, seeds)
        self._prepare(weights)
        tasks = [
            partial(self._fit, weights[rows], None if seeds is None else seeds[rows])
            for rows in groups
        ]
        return torch.cat(run_single_threaded(tasks))

    @abstractmethod
    def _fit(self, weights: torch.Tensor, seeds: ArrayLike | None) -> torch.Tensor:
        """:meth:`fit_batch` on masks given as sample ``weights (K, n)``; may run on several
        threads at once, each with its own rows."""

    def _min_group(self) -> int | None:
        """The fewest rows worth a thread of their own in :meth:`fit_batch`; None (here):
        the rows are never split, each operation uses all intra-op threads instead."""
        return None

    def _prepare(self, weights: torch.Tensor) -> None:
        """Fill whatever the rows of ``weights (K, n)`` share and :meth:`_fit` caches, before
        groups of them are trained concurrently; learners without such caches need nothing."""
        return None

    @property
    def n_outputs(self) -> int:
        """c: one output for binary classification and regression, else one per class."""
        return 1 if self.n_classes <= 2 else self.n_classes

    @abstractmethod
    def decision(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        """Raw outputs (logits or regression values) ``(K, m, c)`` for ``params (K, d)``."""

    def per_sample_loss(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """Unregularised loss of each example under each model, ``(K, m)`` (optional)."""
        raise self.lacks("per_sample_loss")

    def objective(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """The exact regularised training objective on each subset, ``(K,)`` (optional)."""
        raise self.lacks("objective")

    @abstractmethod
    def intercept_mask(self) -> torch.Tensor:
        """Which of the d parameters are intercepts / biases, bool ``(d,)``."""

    def labels(self, y: ArrayLike) -> torch.Tensor:
        """Labels on this learner's device: int64 class ids, or floats for regression."""
        y = torch.as_tensor(_writable(y), device=self.device)
        return y.to(self.dtype) if self.n_classes == 1 else y.long()

    def masks_tensor(self, masks: ArrayLike) -> torch.Tensor:
        """Masks as a float tensor of sample weights on this learner's device, ``(K, n)``;
        the shape checked (:func:`~mp_ray.methods.mask_tensor`)."""
        return mask_tensor(masks, self.n_train).to(device=self.device, dtype=self.dtype)

    def predict(self, params: torch.Tensor, X: ArrayLike) -> torch.Tensor:
        """Predicted class ids (int64) or regression values, shape ``(K, m)``."""
        return self.predictions_from_outputs(self.decision(params, X))

    def predictions_from_outputs(self, out: torch.Tensor) -> torch.Tensor:
        """:meth:`predict` from the outputs ``(K, m, c)`` of :meth:`decision`."""
        if self.n_classes == 1:
            return out[..., 0]
        if self.n_classes == 2:
            return (out[..., 0] > 0).long()
        # max's indices equal argmax's (the first maximum) and came 4–6× faster on the
        # (K, m, c) views of linear learners' outputs here.
        return out.max(dim=-1).indices

    def margin(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """The output datamodels predict, ``(K, m)``: the correct-class margin.

        Binary: (2y − 1)·logit; multiclass: logit_y − max_{k≠y} logit_k; regression:
        −|ŷ − y| (larger is better in every case).
        """
        return self.margin_from_outputs(self.decision(params, X), y)

    def margin_from_outputs(self, out: torch.Tensor, y: ArrayLike) -> torch.Tensor:
        """:meth:`margin` from the outputs ``(K, m, c)`` of :meth:`decision`."""
        y = self.labels(y)
        if self.n_classes == 1:
            return -(out[..., 0] - y).abs()
        if self.n_classes == 2:
            return (2 * y - 1).to(out.dtype) * out[..., 0]
        index = y.expand(out.shape[0], -1).unsqueeze(-1)
        correct = out.gather(-1, index).squeeze(-1)
        others = out.scatter(-1, index, float("-inf")).amax(dim=-1)
        return correct - others

    def loss_from_outputs(self, out: torch.Tensor, y: ArrayLike) -> torch.Tensor:
        """:meth:`per_sample_loss` from the outputs ``(K, m, c)`` of :meth:`decision`, ``(K,
        m)`` (optional: for a learner whose loss is a function of its outputs, so that a set's
        outputs, accuracies and losses take one pass over it)."""
        raise self.lacks("loss_from_outputs")

    def budget_chunks(self, n_models: int, floats_per_model: int) -> list[slice]:
        """Consecutive training rows in chunks for a pass over ``n_models`` models that holds
        ``floats_per_model`` floats per row and model: chunks that fit :attr:`memory_budget`
        when there is one, else all rows at once."""
        if self.memory_budget is None:
            return [slice(0, self.n_train)]
        size = rows_per_chunk(self.memory_budget, n_models, floats_per_model, self.dtype.itemsize)
        return chunk_slices(self.n_train, size)

    def loss_floats(self) -> int:
        """Floats per example and model that :meth:`per_sample_loss` holds at its peak, for
        sizing chunks of rows: its c outputs, two transforms of them and a few per-example
        values (learners with wider intermediates add theirs)."""
        return 3 * self.n_outputs + 6

    def weighted_loss(self, params: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_i m_i ℓ_i(θ) over the training set for ``params (K, d)`` and sample ``weights
        (K, n)``, (K,): one pass in chunks of rows (:meth:`budget_chunks`)."""
        chunks = self.budget_chunks(weights.shape[0], self.loss_floats())
        return sum(
            (self.per_sample_loss(params, self.X[rows], self.y[rows]) * weights[:, rows]).sum(1)
            for rows in chunks
        )

    def mean_subset_loss(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """L_S(θ): the mean per-sample training loss over each subset, (K,); 0 when S is empty."""
        weights = self.masks_tensor(masks)
        return self.weighted_loss(params, weights) / weights.sum(dim=1).clamp(min=1.0)

    def score(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """Accuracy (classification) or R² (regression) of each model, ``(K,)``."""
        return self.score_from_outputs(self.decision(params, X), y)

    def score_from_outputs(self, out: torch.Tensor, y: ArrayLike) -> torch.Tensor:
        """:meth:`score` from the outputs ``(K, m, c)`` of :meth:`decision`."""
        y = self.labels(y)
        predicted = self.predictions_from_outputs(out)
        if self.n_classes > 1:
            return (predicted == y).to(self.dtype).mean(dim=1)
        residual = ((predicted - y) ** 2).sum(dim=1)
        total = ((y - y.mean()) ** 2).sum().clamp(min=torch.finfo(self.dtype).tiny)
        return 1 - residual / total

    def objective_grad(self, params: torch.Tensor, masks: ArrayLike) -> torch.Tensor:
        """Gradient of :meth:`objective` (the first-order optimality residual), ``(K, d)``.

        Differentiable in ``params`` (by autograd here; learners may give it in closed form).
        """
        with torch.enable_grad():
            theta = params if params.requires_grad else params.detach().requires_grad_(True)
            value = self.objective(theta, masks).sum()
            return torch.autograd.grad(value, theta, create_graph=params.requires_grad)[0]

    def objective_and_grad(
        self, params: torch.Tensor, masks: ArrayLike
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`objective` ``(K,)`` and :meth:`objective_grad` ``(K, d)`` at once (a learner
        may compute both in one pass)."""
        return self.objective(params, masks), self.objective_grad(params, masks)

    def objective_grad_and_loss(
        self, params: torch.Tensor, masks: ArrayLike
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`objective_and_grad` and :meth:`mean_subset_loss` at once, ``(K,)``,
        ``(K, d)`` and ``(K,)`` (the retraining job's metrics): a learner whose pass for the
        objective gives the mean loss too may override it."""
        objective, grad = self.objective_and_grad(params, masks)
        return objective, grad, self.mean_subset_loss(params, masks)

    def hvp(self, params: torch.Tensor, masks: ArrayLike, v: torch.Tensor) -> torch.Tensor:
        """Hessian of :meth:`objective` times ``v (K, d)``, ``(K, d)``."""
        with torch.enable_grad():
            theta = params.detach().requires_grad_(True)
            grad = self.objective_grad(theta, masks)
            return torch.autograd.grad((grad * v).sum(), theta)[0]

    def per_sample_grads(self, params: torch.Tensor, X: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """Gradient of each example's loss under one model ``params (d,)``, ``(m, d)``."""
        X, y = self.as_tensor(X), self.labels(y)
        return torch.func.jacrev(lambda theta: self.per_sample_loss(theta[None], X, y)[0])(
            params.detach().to(self.dtype)
        )

    def degenerate(self, masks: ArrayLike) -> torch.Tensor:
        """Subsets with no well-defined optimum, bool ``(K,)``: empty ones, and for
        classification those missing a class; their result is documented per learner."""
        weights = self.masks_tensor(masks)
        if self.n_classes == 1:
            return weights.sum(dim=1) == 0
        counts = weights @ torch.nn.functional.one_hot(self.y.long(), self.n_classes).to(
            weights.dtype
        )
        return (counts == 0).any(dim=1)
