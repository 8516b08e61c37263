"""The ModelPred training loss, every term batched over the B subsets of a minibatch.

With θ(S) the retrained parameters of subset S (from the store), θ̂(S) = f(S) the predicted
ones, J_S the learner's own regularised training objective on S (stated exactly in the
learner's docstring; for L2 logistic regression J_S(W, b) = ½‖W‖² + C·Σ_{i∈S} ℓ_i) and
L_S(θ) = (1/|S|)·Σ_{i∈S} ℓ_i(θ) the mean training loss on S (``Learner.mean_subset_loss``)::

    loss = (1/(B·d)) Σ_S ‖ẑ(S) − z(S)‖²                                 parameter regression
         + λ_global · (1/B') Σ_{S'} (‖∇_W J_{S'}(θ̂(S'))‖ + ‖∇_b J_{S'}(θ̂(S'))‖)    global
         + λ_local  · (1/B) Σ_S |L_S(θ̂(S)) − L_S(θ(S))|                    local
         + λ_1 · Σ_W ‖W‖₁ + λ_2 · Σ_W ‖W‖_F                             predictor weights

ẑ, z are the predicted and retrained parameters in the coordinates the set function
predicts (:mod:`mp_ray.predictor.scaling`: output-space or standardised; the parameters
themselves for ``targets: raw``); W runs over the predictor's weight matrices. The global term
is the first-order (KKT) optimality residual of the learner at the prediction, split into
its weight and intercept blocks as in the reference code of Zeng et al.; it needs no
retrained θ, so S' ranges over the B labelled subsets and B_u extra sampled subsets without
ground truth (B' = B + B_u). Every strength 0 switches its term off (and skips its
computation).

That is the ``"mean"`` aggregation; the ``"batch_norm"`` one (the reference code's) takes the
global term as ‖G_W‖_F + ‖G_b‖_F, the Frobenius norms of the gradient blocks stacked over the
B' subsets, and the local term as the Euclidean norm of the B loss gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from mp_ray.learners import Learner
from mp_ray.predictor.scaling import Scaler

if TYPE_CHECKING:
    from mp_ray.config import PredictorConfig


@dataclass(frozen=True)
class LossWeights:
    """Strengths of the regularisers (0 switches a term off), and how the global and local
    terms combine the subsets of a batch (``"mean"`` or ``"batch_norm"``)."""

    global_kkt: float = 0.0
    local_utility: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    aggregation: Literal["mean", "batch_norm"] = "mean"

    @classmethod
    def of(cls, settings: PredictorConfig) -> LossWeights:
        """The strengths and aggregation of resolved predictor settings (no ``auto`` left)."""
        return cls(
            global_kkt=float(settings.lambda_global),
            local_utility=settings.lambda_local,
            l1=settings.l1,
            l2=settings.l2,
            aggregation=settings.aggregation,
        )


def kkt_blocks(
    learner: Learner, params: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖∇_W J_S(θ)‖, ‖∇_b J_S(θ)‖) per subset; ``params (B, d)``, ``masks (B, n)`` → two (B,)."""
    grad = learner.objective_grad(params, masks)
    intercept = learner.intercept_mask()
    norm = torch.linalg.vector_norm
    return norm(grad[:, ~intercept], dim=1), norm(grad[:, intercept], dim=1)


def kkt_residual(learner: Learner, params: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """‖∇_W J_S(θ)‖ + ‖∇_b J_S(θ)‖ per subset; ``params (B, d)``, ``masks (B, n)`` → (B,)."""
    weights_part, intercept_part = kkt_blocks(learner, params, masks)
    return weights_part + intercept_part


def _global_term(
    learner: Learner, params: torch.Tensor, masks: torch.Tensor, aggregation: str
) -> torch.Tensor:
    if aggregation == "mean":
        return kkt_residual(learner, params, masks).mean()
    weights_part, intercept_part = kkt_blocks(learner, params, masks)
    norm = torch.linalg.vector_norm
    return norm(weights_part) + norm(intercept_part)  # Frobenius norms over the batch


def weight_penalties(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_W ‖W‖₁, Σ_W ‖W‖_F) over the model's weight matrices (biases excluded)."""
    matrices = [p for p in model.parameters() if p.ndim == 2]
    l1 = torch.stack([w.abs().sum() for w in matrices]).sum()
    l2 = torch.stack([torch.linalg.matrix_norm(w) for w in matrices]).sum()
    return l1, l2


def modelpred_loss(
    model: nn.Module,
    learner: Learner,
    scaler: Scaler,
    elements: torch.Tensor,
    masks: torch.Tensor,
    targets: torch.Tensor,
    unlabelled: torch.Tensor | None,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss (scalar) and its terms, for one minibatch.

    ``model`` is a :class:`SetFunction` (or a data-parallel wrapper of one: it is called
    once, on all subsets together); ``elements (n, e)`` are the ground set's set elements,
    ``masks (B, n)`` the labelled subsets with retrained ``targets (B, d)`` in parameter
    units, ``unlabelled (B_u, n)`` extra subsets for the global term (or None).
    """
    extra = unlabelled if weights.global_kkt and unlabelled is not None else masks[:0]
    outputs = model(torch.cat([masks, extra]), elements)
    predicted_std = outputs[: len(masks)]
    mse = torch.mean((predicted_std - scaler.transform(targets)) ** 2)
    terms = {"mse": mse}
    total = mse
    predicted = scaler.inverse(outputs).to(learner.dtype)
    if weights.global_kkt:
        kkt_masks = torch.cat([masks, extra])
        terms["global"] = _global_term(learner, predicted, kkt_masks, weights.aggregation)
        total = total + weights.global_kkt * terms["global"]
    if weights.local_utility:
        gap = learner.mean_subset_loss(predicted[: len(masks)], masks) - learner.mean_subset_loss(
            targets.to(learner.dtype), masks
        )
        terms["local"] = (
            gap.abs().mean() if weights.aggregation == "mean" else torch.linalg.vector_norm(gap)
        )
        total = total + weights.local_utility * terms["local"]
    if weights.l1 or weights.l2:
        l1, l2 = weight_penalties(model)
        terms["l1"], terms["l2"] = l1, l2
        total = total + weights.l1 * l1 + weights.l2 * l2
    return total, terms
