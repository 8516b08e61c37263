"""How far to trust a predictor's answer: the same question put to retraining on a few
cases, within a small budget of retrained models.

Every application answered by a predictor (:class:`~mp_ray.apps.models.PredictedModels`)
rests on the predicted *change* of something when points join or leave a subset. A check
draws cases the application itself meets, computes that change from the predictor and by
retraining the learner (:class:`~mp_ray.apps.models.RetrainedModels`), and reports how well
they agree:

- :func:`check_contributions` — valuation and memorisation. G base subsets S (drawn as the
  estimator draws them), m points c each; the change of an output when c joins S:
  U(S ∪ {c}) − U(S) for values, the point's own score for memorisation (for leave-one-out
  S = D and the points leave it). Headline: Spearman's ρ across the m points of a subset,
  averaged over subsets — what ranks points against each other, free of the subset-size
  effect that dominates a correlation pooled over sizes. G·(1 + m) models are retrained.
- :func:`check_subsets` — selection. The chosen subset, variants of it with a share of its
  points swapped, and random subsets of the same size: Spearman's ρ between predicted and
  retrained utilities across them, and where the chosen one ranks by retraining.
- :func:`check_removals` — counterfactuals. The user's removal set and random removal sets
  of the same size: the share of (removal, target) pairs where the predicted margin change
  has the retrained change's sign (pairs whose retrained change is below ``tiny`` are left
  out), beside Spearman's ρ per target across removals.
- :func:`check_spread` — calibration. A few ensemble members: Spearman's ρ across test
  points between the members' spread (standard deviation of the correct-class probability)
  predicted and retrained — the ensemble's uncertainty is what the predictor contributes.

A statistic that is undefined (a predictor whose answer never varies, such as θ(D) for
every subset) is NaN, and NaN never passes. Cases come from (seed, a stream of this module)
alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from mp_ray.apps.models import SubsetModels
from mp_ray.outputs import json_ready
from mp_ray.scores import cell, columnwise_correlation, paired_correlation

STREAM = 0xF1DE  # the seed stream of the check's cases
PER_SUBSET = 8  # points per base subset in contribution checks
DEFAULT_BUDGET = 72  # retrained models a check may spend (8 subsets × 9 models)
SCALE = "scale (1: retraining's)"  # Σ predicted·retrained / Σ retrained², a detail's name

# Output of a batch of models, (B,) (one number per model) or (B, n) (one per training point).
Output = Callable[[torch.Tensor], np.ndarray]


@dataclass
class Fidelity:
    """Agreement of a predictor's answer with retraining on ``cases`` checked cases.

    ``statistic`` names the headline ``value`` (NaN when undefined), which passes when it
    is at least ``threshold``; ``details`` holds the other agreements, ``notes`` anything
    the user should read beside them."""

    check: str
    statistic: str
    value: float
    threshold: float
    cases: int
    models_retrained: int
    details: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.value) and self.value >= self.threshold)

    def line(self) -> str:
        """Lines for the terminal: the agreement, whether it passes, and the other figures."""
        shown = "undefined (the predicted answer does not vary)"
        if np.isfinite(self.value):
            shown = f"{self.value:.3f}"
        verdict = "ok" if self.passed else "WARNING"
        text = (
            f"fidelity [{verdict}]: {self.statistic} {shown} (threshold {self.threshold:g}), "
            f"predicted against retrained {self.check}: {self.cases} cases, "
            f"{self.models_retrained} models retrained"
        )
        if self.details:
            text += "\n  also: " + ", ".join(
                f"{name} {cell(v, 0)}" for name, v in self.details.items()
            )
        if not self.passed:
            text += (
                "\n  below the threshold: do not rely on this answer without retraining "
                "(run without --predictor, or fit a better predictor)"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["value"] = json_ready(float(self.value))
        data["details"] = {name: json_ready(float(v)) for name, v in self.details.items()}
        data["passed"] = self.passed
        return data


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAM])


def groups_for(budget: int, per_subset: int = PER_SUBSET) -> int:
    """Base subsets a contribution check affords within ``budget`` retrained models."""
    return budget // (per_subset + 1)


def sample_contribution_cases(
    n: int,
    sizes: np.ndarray,
    per_subset: int,
    seed: int,
    remove: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Base subsets ``(G, n)`` of the given ``sizes (G,)``, each uniform among subsets of
    its size, and ``per_subset`` distinct points of each ``(G, m)``: outside the subset
    (inside with ``remove``)."""
    rng = _rng(seed)
    bases = np.zeros((len(sizes), n), dtype=bool)
    points = np.zeros((len(sizes), per_subset), dtype=np.int64)
    for g, size in enumerate(sizes):
        order = rng.permutation(n)
        bases[g, order[:size]] = True
        pool = order[:size] if remove else order[size:]
        if len(pool) < per_subset:
            raise ValueError(
                f"a base subset of {size} of {n} points leaves fewer than {per_subset} points "
                "to check"
            )
        points[g] = rng.choice(pool, per_subset, replace=False)
    return bases, points


def contribution_changes(
    models: SubsetModels, bases: np.ndarray, points: np.ndarray, output: Output
) -> np.ndarray:
    """Per base subset g and point c = ``points[g, j]``: output(S_g ∪ {c}) − output(S_g ∖ {c}),
    ``(G, m)``; the output of point c itself where ``output`` gives one per training point."""
    groups, per = points.shape
    rows = np.repeat(bases, per + 1, axis=0).reshape(groups, per + 1, -1)
    toggled = rows[:, 1:, :]
    g_index, j_index = np.meshgrid(np.arange(groups), np.arange(per), indexing="ij")
    toggled[g_index, j_index, points] ^= True
    with torch.no_grad():
        values = output(models.predict(rows.reshape(groups * (per + 1), -1)))
    values = np.asarray(values, dtype=np.float64).reshape(groups, per + 1, *values.shape[1:])
    if values.ndim == 3:  # one output per training point: that of the toggled point
        base = values[g_index, 0, points]
        moved = values[g_index, j_index + 1, points]
    else:
        base, moved = values[:, :1], values[:, 1:]
    inside = bases[g_index, points]
    return np.where(inside, base - moved, moved - base)


def agreement(
    predicted: np.ndarray, exact: np.ndarray, floor: float | None = None
) -> dict[str, float]:
    """Agreement of paired changes ``(G, m)``: mean within-row Spearman's ρ (over the
    ``defined`` rows, where neither side is constant), pooled Pearson's r, the share of
    pairs with the exact change's sign (pairs whose exact change is at most ``floor`` left
    out; default 1e-9 times the largest) and the scale Σ p·e / Σ e² (1 when the predicted
    changes have retraining's size)."""
    predicted, exact = np.asarray(predicted, float), np.asarray(exact, float)
    within = columnwise_correlation(predicted.T, exact.T)
    defined = within[np.isfinite(within)]
    flat_p, flat_e = predicted.ravel(), exact.ravel()
    pearson = paired_correlation(flat_p, flat_e)[0] if flat_p.size >= 3 else float("nan")
    if floor is None:
        floor = 1e-9 * max(np.abs(flat_e).max(initial=0.0), 1e-300)
    moving = np.abs(flat_e) > floor
    signs = np.sign(flat_p[moving]) == np.sign(flat_e[moving])
    energy = float((flat_e**2).sum())
    return {
        "spearman": float(defined.mean()) if defined.size else float("nan"),
        "defined": float(defined.size),
        "Pearson": pearson,
        "sign agreement": float(signs.mean()) if signs.size else float("nan"),
        SCALE: float((flat_p * flat_e).sum() / energy) if energy > 0 else float("nan"),
    }


def check_contributions(
    predicted: SubsetModels,
    retrained: SubsetModels,
    output: Output,
    sizes: np.ndarray,
    what: str,
    seed: int = 0,
    per_subset: int = PER_SUBSET,
    remove: bool = False,
    threshold: float = 0.5,
) -> Fidelity:
    """Contribution check (module docstring) on base subsets of ``sizes (G,)``."""
    bases, points = sample_contribution_cases(
        predicted.n_train, np.asarray(sizes), per_subset, seed, remove
    )
    guess = contribution_changes(predicted, bases, points, output)
    exact = contribution_changes(retrained, bases, points, output)
    scores = agreement(guess, exact)
    defined, groups = int(scores.pop("defined")), len(bases)
    return Fidelity(
        check=what,
        statistic="Spearman across points",
        value=scores.pop("spearman"),
        threshold=threshold,
        cases=guess.size,
        models_retrained=groups * (per_subset + 1),
        details=scores,
        notes=[]
        if defined == groups
        else [
            f"the Spearman is defined on {defined} of the {groups} subsets (elsewhere a side "
            "does not vary)"
        ],
    )


def check_subsets(
    predicted_utility: Callable[[np.ndarray], np.ndarray],
    retrained_utility: Callable[[np.ndarray], np.ndarray],
    chosen: np.ndarray,
    budget: int = DEFAULT_BUDGET,
    swap_share: float = 0.1,
    seed: int = 0,
    threshold: float = 0.5,
    metric: str = "utility",
) -> Fidelity:
    """Selection check: the chosen mask ``(n,)``, variants with ``swap_share`` of its points
    swapped for others, and random subsets of its size — ``budget`` subsets in all, scored by
    both utilities (whose ``metric`` names the details)."""
    if budget < 4:
        raise ValueError(f"a selection check needs a budget of at least 4 models, got {budget}")
    chosen = np.asarray(chosen, dtype=bool)
    n, size = len(chosen), int(chosen.sum())
    rng = _rng(seed)
    masks = np.zeros((budget, n), dtype=bool)
    masks[0] = chosen
    swaps = max(1, math.ceil(swap_share * size))
    inside, outside = np.nonzero(chosen)[0], np.nonzero(~chosen)[0]
    variants = (budget - 1) // 2 if len(outside) else 0
    for row in range(1, budget):
        if row <= variants:
            masks[row] = chosen
            masks[row, rng.choice(inside, min(swaps, size), replace=False)] = False
            masks[row, rng.choice(outside, min(swaps, len(outside)), replace=False)] = True
        else:
            masks[row, rng.choice(n, size, replace=False)] = True
    guess, exact = predicted_utility(masks), retrained_utility(masks)
    spearman = columnwise_correlation(guess[:, None], exact[:, None])[0]
    rank = 1 + int((exact[1:] > exact[0]).sum())
    return Fidelity(
        check=f"{metric} of the chosen subset and alternatives of its size",
        statistic="Spearman across subsets",
        value=float(spearman),
        threshold=threshold,
        cases=budget,
        models_retrained=budget,
        details={
            f"chosen subset's retrained {metric}": float(exact[0]),
            "random subsets' (mean)": float(exact[variants + 1 :].mean())
            if budget > variants + 1
            else float("nan"),
        },
        notes=[f"by retraining, the chosen subset ranks {rank} of {budget}"],
    )


def check_removals(
    predicted_changes: Callable[[list[np.ndarray]], np.ndarray],
    retrained_changes: Callable[[list[np.ndarray]], np.ndarray],
    n: int,
    removal: np.ndarray,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
    threshold: float = 0.9,
    tiny: float = 1e-6,
) -> tuple[Fidelity, np.ndarray]:
    """Counterfactual check: the user's ``removal`` (training indices) and random removal
    sets of its size, ``budget − 1`` sets in all (one more model for θ(D)); the changes
    functions map removal sets to margin changes ``(R, T)``. Returns the check and the
    retrained changes of the user's removal ``(T,)``."""
    removal = np.asarray(removal, dtype=np.int64)
    count = max(1, budget - 1)
    rng = _rng(seed)
    removals = [removal] + [rng.choice(n, len(removal), replace=False) for _ in range(count - 1)]
    guess, exact = predicted_changes(removals), retrained_changes(removals)
    scores = agreement(guess.T, exact.T, floor=tiny)  # rows: targets, across removals
    across = scores["spearman"] if count >= 3 else float("nan")
    fidelity = Fidelity(
        check="margin changes of the targets under removal sets of this size",
        statistic="sign agreement",
        value=scores["sign agreement"],
        threshold=threshold,
        cases=int(guess.size),
        models_retrained=count + 1,
        details={"Spearman across removals": across, SCALE: scores[SCALE]},
    )
    return fidelity, exact[0]


def check_spread(
    predicted: SubsetModels,
    retrained: SubsetModels,
    member_masks: np.ndarray,
    probability: Callable[[torch.Tensor], np.ndarray],
    threshold: float = 0.5,
) -> Fidelity:
    """Calibration check on ensemble members ``member_masks (K, n)``: Spearman's ρ across
    test points between the predicted and retrained spread of ``probability(params)``
    ``(K, m)`` (the correct-class probability), and the mean absolute difference of the
    members' mean probabilities."""
    with torch.no_grad():
        guess = probability(predicted.predict(member_masks))
        exact = probability(retrained.predict(member_masks))
    spread = columnwise_correlation(guess.std(axis=0)[:, None], exact.std(axis=0)[:, None])[0]
    return Fidelity(
        check="spread of the ensemble members' probabilities over test points",
        statistic="Spearman across test points",
        value=float(spread),
        threshold=threshold,
        cases=int(guess.shape[1]),
        models_retrained=len(member_masks),
        details={
            "mean |Δ probability|": float(np.abs(guess.mean(axis=0) - exact.mean(axis=0)).mean())
        },
    )
