"""The fidelity check of each application (:mod:`mp_ray.apps.fidelity`), its cases drawn
as the application draws its own: ``--check`` on the command line, ``budget`` retrained
models here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from mp_ray.apps.calibration import subsample_masks
from mp_ray.apps.counterfactual import counterfactual_removal
from mp_ray.apps.fidelity import (
    DEFAULT_BUDGET,
    PER_SUBSET,
    Fidelity,
    check_contributions,
    check_removals,
    check_spread,
    check_subsets,
    groups_for,
    sample_contribution_cases,
)
from mp_ray.apps.memorization import label_scores
from mp_ray.apps.models import SubsetModels
from mp_ray.apps.utility import Utility, class_probabilities
from mp_ray.apps.valuation.semivalues import NO_TRUNCATION, beta_weights
from mp_ray.apps.valuation.truncation import Truncation

ValueMethod = Literal["tmc", "beta", "banzhaf", "loo"]


# The fewest retrained models each check can use (0 turns a check off).
MIN_BUDGET = {
    "tmc": PER_SUBSET + 1,
    "beta": PER_SUBSET + 1,
    "banzhaf": PER_SUBSET + 1,
    "loo": 4,
    "memorization": PER_SUBSET + 1,
    "selection": 4,
    "counterfactual": 4,
    "calibration": 3,
}


def check_budget(kind: str, budget: int) -> None:
    """Refuse a budget too small for the ``kind`` of check (before any work is done)."""
    need = MIN_BUDGET[kind]
    if 0 < budget < need:
        raise ValueError(f"--check {budget}: a {kind} check needs at least {need} models")


def value_sizes(
    method: ValueMethod,
    n: int,
    groups: int,
    seed: int,
    alpha: float = 16.0,
    beta: float = 1.0,
    per_subset: int = PER_SUBSET,
) -> np.ndarray:
    """Sizes ``(groups,)`` of the subsets S whose marginal contributions ``method`` averages:
    permutation prefixes (uniform size for TMC, Beta-Shapley's weights for beta), Bernoulli(½)
    for Banzhaf; each leaves ``per_subset`` points outside."""
    rng = np.random.default_rng([seed, 0x51E5])
    largest = n - per_subset
    if method == "banzhaf":
        return np.minimum(rng.binomial(n - 1, 0.5, groups), largest)
    if method == "beta":
        weights = beta_weights(n, alpha, beta)[: largest + 1]
        return rng.choice(largest + 1, groups, p=weights / weights.sum())
    return rng.integers(0, largest + 1, groups)


def value_check(
    models: SubsetModels,
    retrained: SubsetModels,
    utility: Utility,
    method: ValueMethod,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
    alpha: float = 16.0,
    beta: float = 1.0,
    truncation: Truncation = NO_TRUNCATION,
) -> Fidelity:
    """Marginal contributions U(S ∪ {c}) − U(S) on S drawn as ``method`` draws them
    (leave-one-out: U(D) − U(D ∖ {c}) for ``budget − 1`` points c). With a TMC
    ``truncation`` policy that cuts, also how many of the checked subsets each side would
    truncate at, burn-in aside (a note; G + 2 more models retrained)."""
    check_budget(method, budget)
    n = models.n_train
    if method == "loo":
        per_subset, sizes, remove = min(budget - 1, n), np.array([n]), True
    else:
        per_subset, remove = PER_SUBSET, False
        sizes = value_sizes(method, n, groups_for(budget), seed, alpha, beta)
    what = "leave-one-out values" if remove else "marginal contributions U(S ∪ {i}) − U(S)"
    fidelity = check_contributions(
        models,
        retrained,
        utility.of_params,
        sizes,
        f"{what} ({utility.metric} on the validation split)",
        seed,
        per_subset,
        remove,
    )
    if truncation.cuts and not remove:
        bases, _ = sample_contribution_cases(n, sizes, per_subset, seed)
        near = [_near_full(source, utility, bases, truncation) for source in (models, retrained)]
        fidelity.models_retrained += len(bases) + 2
        fidelity.notes.append(
            f"truncation: {near[0]:.0%} of the checked subsets lie within the truncation "
            f"tolerance of U(D) by the predictor, {near[1]:.0%} by retraining"
        )
    return fidelity


def _near_full(
    models: SubsetModels, base: Utility, bases: np.ndarray, truncation: Truncation
) -> float:
    """Share of ``bases (G, n)`` whose utility lies within the ``truncation`` policy's
    tolerance of U(D), with ``models`` answering."""
    utility = Utility(models, base.X.cpu().numpy(), base.y.cpu().numpy(), base.metric)
    n = models.n_train
    empty, full = utility(np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]))
    tolerance = truncation.tolerance(float(full), float(empty))
    return float(np.mean(np.abs(utility(bases) - full) <= (tolerance or 0.0)))


def memorization_check(
    models: SubsetModels,
    retrained: SubsetModels,
    alpha: float,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
) -> Fidelity:
    """The change of a point's own-label probability when it joins S, S kept Bernoulli(α)
    as memorisation samples it (the probability whatever the estimate's score: 0/1
    correctness barely moves on one point)."""
    check_budget("memorization", budget)
    learner = models.learner
    n = models.n_train
    rng = np.random.default_rng([seed, 0x3E3])
    sizes = np.minimum(rng.binomial(n, alpha, groups_for(budget)), n - PER_SUBSET)

    def own_probability(params: torch.Tensor) -> np.ndarray:
        return label_scores(learner, params, learner.X, learner.y, "probability")

    return check_contributions(
        models,
        retrained,
        own_probability,
        sizes,
        "changes of a point's own-label probability when it joins the subset",
        seed,
    )


def selection_check(
    models: SubsetModels,
    retrained: SubsetModels,
    X: np.ndarray,
    y: np.ndarray,
    chosen: np.ndarray,
    metric: Literal["accuracy", "neg_loss"] = "accuracy",
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
) -> Fidelity:
    """Utilities on ``(X, y)`` of the chosen mask ``(n,)`` and alternatives of its size."""
    check_budget("selection", budget)
    return check_subsets(
        Utility(models, X, y, metric),
        Utility(retrained, X, y, metric),
        chosen,
        budget,
        seed=seed,
        metric=f"validation {metric}",
    )


def counterfactual_check(
    models: SubsetModels,
    retrained: SubsetModels,
    X_target: np.ndarray,
    y_target: np.ndarray,
    removal: np.ndarray,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
) -> tuple[Fidelity, np.ndarray]:
    """Margin changes of the targets under the user's removal set and random ones of its
    size; also the retrained margin changes of the user's set ``(T,)``."""
    check_budget("counterfactual", budget)

    def changes(source: SubsetModels) -> Callable[[list[np.ndarray]], np.ndarray]:
        def of(removals: list[np.ndarray]) -> np.ndarray:
            return counterfactual_removal(source, X_target, y_target, removals).change("margin")

        return of

    return check_removals(
        changes(models), changes(retrained), models.n_train, removal, budget, seed
    )


def calibration_check(
    models: SubsetModels,
    retrained: SubsetModels,
    X_test: np.ndarray,
    y_test: np.ndarray,
    fraction: float,
    members: int,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
) -> Fidelity:
    """The spread of the first ``min(budget, members)`` ensemble members (the ones the
    ensemble used), predicted against retrained."""
    count = min(budget, members)
    check_budget("calibration", count)
    learner = models.learner
    labels = learner.labels(y_test)

    def probability(params: torch.Tensor) -> np.ndarray:
        probs = class_probabilities(learner, params, X_test)
        chosen = probs.gather(-1, labels.expand(len(params), -1)[..., None])[..., 0]
        return chosen.double().cpu().numpy()

    masks = subsample_masks(models.n_train, count, fraction, seed)
    return check_spread(models, retrained, masks, probability)
