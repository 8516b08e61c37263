"""Data valuation: leave-one-out, TMC-Shapley, Beta-Shapley and Data Banzhaf (MSR), over a
utility of retrained or predicted models, or a learned one (:class:`LearnedUtility`)."""

from mp_ray.apps.valuation.result import ValuationResult
from mp_ray.apps.valuation.semivalues import (
    Convergence,
    banzhaf_msr,
    beta_shapley,
    leave_one_out,
    permutation_semivalue,
    tmc_shapley,
)
from mp_ray.apps.valuation.utility_learning import LearnedUtility, UtilityFitReport

__all__ = [
    "Convergence",
    "LearnedUtility",
    "UtilityFitReport",
    "ValuationResult",
    "banzhaf_msr",
    "beta_shapley",
    "leave_one_out",
    "permutation_semivalue",
    "tmc_shapley",
]
