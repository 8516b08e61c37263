"""Data valuation: leave-one-out, TMC-Shapley, Beta-Shapley and Data Banzhaf (MSR)."""

from mp_ray.apps.valuation.result import ValuationResult
from mp_ray.apps.valuation.semivalues import (
    Convergence,
    banzhaf_msr,
    beta_shapley,
    leave_one_out,
    permutation_semivalue,
    tmc_shapley,
)

__all__ = [
    "Convergence",
    "ValuationResult",
    "banzhaf_msr",
    "beta_shapley",
    "leave_one_out",
    "permutation_semivalue",
    "tmc_shapley",
]
