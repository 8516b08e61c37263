"""What each stage needs of a learner beyond training it, checked before the stage starts.

A learner always trains subsets and gives its outputs (the four required methods of
:class:`~mp_ray.learners.base.Learner`); the loss, the objective and their derivatives are
optional capabilities (:meth:`~mp_ray.learners.base.Learner.provides`). A stage that needs
one calls :func:`require` first, so a learner without it is refused at the stage's start
with an error naming the learner, the missing methods and the stage, not part-way through;
a stage that can do without one (a baseline of a table) asks :func:`missing` and leaves
that part out. The table of stages and their needs is in :mod:`mp_ray.learners.plugin`.
"""

from __future__ import annotations

from mp_ray.learners.base import Learner, LearnerCapabilityError

# What each stage calls on a learner besides training it and its outputs.
GLOBAL_REGULARISER = ("objective_grad",)  # predictor.lambda_global: ‖∇J_S(θ̂)‖
LOCAL_REGULARISER = ("per_sample_loss",)  # predictor.lambda_local: L_S(θ̂) − L_S(θ)
NEWTON_STEPS = ("objective", "objective_grad", "hvp")  # predictor.newton_steps (and convex)
INFLUENCE_FUNCTIONS = ("objective_grad", "hvp")  # θ(D) − H_D⁻¹ ∇J_S(θ(D))


def missing(learner: Learner, methods: tuple[str, ...]) -> list[str]:
    """The ``methods`` that ``learner`` does not provide, in their order."""
    return [method for method in methods if not learner.provides(method)]


def require(learner: Learner, *methods: str, stage: str) -> None:
    """Refuse ``stage`` unless ``learner`` provides every one of ``methods``.

    Raises :class:`~mp_ray.learners.base.LearnerCapabilityError` naming the learner, the
    methods it lacks and the stage."""
    lacking = missing(learner, methods)
    if lacking:
        raise LearnerCapabilityError(
            f"{stage} needs {', '.join(lacking)} of the learner; learner {learner.name} does "
            f"not implement {'it' if len(lacking) == 1 else 'them'} (see Bring your own model "
            "in README.md)"
        )
