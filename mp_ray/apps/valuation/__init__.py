"""Data valuation: leave-one-out, TMC-Shapley, Beta-Shapley and Data Banzhaf (MSR), over a
utility of retrained or predicted models, or a learned one (:class:`LearnedUtility`); runs
stop on composable criteria (``MaxSamples(10_000) | AbsoluteStandardError(0.01)``),
truncate by a policy (:class:`RelativeTruncation`), continue an earlier result
(``continue_from=``) and merge (``a + b``)."""

from mp_ray.apps.valuation.moments import Moments
from mp_ray.apps.valuation.result import ValuationResult
from mp_ray.apps.valuation.semivalues import (
    banzhaf_msr,
    beta_shapley,
    leave_one_out,
    permutation_semivalue,
    tmc_shapley,
)
from mp_ray.apps.valuation.stopping import (
    AbsoluteStandardError,
    AllOf,
    AnyOf,
    MaxSamples,
    MaxTime,
    MinSamples,
    SamplingState,
    StoppingCriterion,
)
from mp_ray.apps.valuation.truncation import NoTruncation, RelativeTruncation, Truncation
from mp_ray.apps.valuation.utility_learning import LearnedUtility, UtilityFitReport

__all__ = [
    "AbsoluteStandardError",
    "AllOf",
    "AnyOf",
    "LearnedUtility",
    "MaxSamples",
    "MaxTime",
    "MinSamples",
    "Moments",
    "NoTruncation",
    "RelativeTruncation",
    "SamplingState",
    "StoppingCriterion",
    "Truncation",
    "UtilityFitReport",
    "ValuationResult",
    "banzhaf_msr",
    "beta_shapley",
    "leave_one_out",
    "permutation_semivalue",
    "tmc_shapley",
]
