"""The identity of an experiment: the settings that fix every row of its store.

Flattened, one value per field::

    dataset.fingerprint   the content fingerprint of the dataset (its three splits)
    learner.kind          and learner.<setting> for each setting that kind reads
    sampler.kind          and sampler.<setting> for each setting that kind reads
    seed                  the root seed

A store records it in its spec; a predictor checkpoint records the identity of the store it
was fitted on. Every command that reads a store or a predictor compares the config's identity
with theirs (:func:`check_identity`) and refuses a difference in one line naming each field
and both values. A command skips only the fields it does not take from the config, where a
difference cannot change its answer:

==================================  =================  ================================
commands                            fields not read    why
==================================  =================  ================================
fit, tune                           learner.dtype      the fit trains in float32 always
evaluate, explain, value, select,   sampler.*, seed    subsets come from the store, the
memorization, calibrate,                               command's options or the request;
counterfactual, serve; every                           a predictor's store chose only
predictor in any command                               which subsets it learned from
lds, distill                        sampler.*          subsets come from the store; the
                                                       seed draws their own removals
datamodels                          learner.*,         fitted on the store's subsets and
                                    sampler.*, seed    outputs alone
==================================  =================  ================================

Settings a learner or sampler kind does not read (``alpha`` of a logistic learner, which a
store written before each kind had its own config model records) are not part of its
identity. A field one side does not record (a checkpoint written before the identity was
recorded holds only the dataset and the learner) is unknown and not compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from mp_ray.errors import MpRayError

if TYPE_CHECKING:
    from mp_ray.config import ExperimentConfig

Identity = dict[str, Any]

# The settings each kind reads (besides ``kind``); see the learners and mp_ray.sampling.
TORCH_SETTINGS = (
    "factory",
    "factory_kwargs",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "epochs",
    "batch_size",
    "lr_schedule",
    "dtype",
)
LEARNER_SETTINGS: dict[str, tuple[str, ...]] = {
    "logistic": ("C", "tol", "max_iter", "dtype"),
    "svm": ("C", "tol", "max_iter", "dtype"),
    "ridge": ("alpha", "dtype"),
    "mlp": ("hidden", "epochs", "lr", "batch_size", "weight_decay", "dtype"),
    "torch": TORCH_SETTINGS,
    "custom": ("target", "options", "dtype"),
    "sklearn": ("estimator", "params", "extractor", "decision", "sample_weight", "dtype"),
}
SAMPLER_SETTINGS: dict[str, tuple[str, ...]] = {
    "bernoulli": ("alpha",),
    "fixed_size": ("alpha",),
    "uniform_size": ("min_size", "max_size"),
    "leave_one_out": (),
    "permutation": (),
}
_SETTINGS = {"learner": LEARNER_SETTINGS, "sampler": SAMPLER_SETTINGS}

# Fields each command does not read from the config (a section name covers all its fields);
# see the module docstring.
FIT_UNREAD = ("learner.dtype",)
MODELS_UNREAD = ("sampler", "seed")
SEEDED_UNREAD = ("sampler",)
DATAMODELS_UNREAD = ("learner", "sampler", "seed")

_FINGERPRINT = "dataset.fingerprint"
_VERBS = {"store": ("built from", "made with"), "predictor": ("fitted on", "fitted with")}


class StoreMismatchError(MpRayError, ValueError):
    """A store or predictor was made with other settings than the config (or an existing
    store was declared differently)."""


def section(name: str, settings: Mapping[str, Any]) -> Identity:
    """``{name}.kind`` and ``{name}.<setting>`` for the settings its kind reads (every
    recorded setting for a kind this version does not know)."""
    kind = settings.get("kind")
    keys = _SETTINGS[name].get(kind, tuple(settings)) if kind is not None else tuple(settings)
    return {f"{name}.{key}": settings[key] for key in ("kind", *keys) if key in settings}


def make_identity(
    fingerprint: str | None,
    learner: Mapping[str, Any],
    sampler: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> Identity:
    """The flattened identity; parts given as None are unknown and left out."""
    identity: Identity = {} if fingerprint is None else {_FINGERPRINT: fingerprint}
    identity.update(section("learner", learner))
    identity.update(section("sampler", sampler or {}))
    if seed is not None:
        identity["seed"] = seed
    return identity


def config_identity(config: ExperimentConfig, fingerprint: str) -> Identity:
    """The identity ``config`` asks for over a dataset with ``fingerprint``."""
    return make_identity(
        fingerprint,
        config.learner.model_dump(mode="json"),
        config.sampler.model_dump(mode="json"),
        config.seed,
    )


def show(field: str, value: Any) -> str:
    """A field's value for messages: a fingerprint cut to 12 characters, None as "none"."""
    if field == _FINGERPRINT and isinstance(value, str):
        return value[:12] + "…"
    return "none" if value is None else str(value)


def differences(
    recorded: Mapping[str, Any],
    wanted: Mapping[str, Any],
    role: str,
    unread: Iterable[str] = (),
) -> list[str]:
    """``"field: <role> a, config b"`` for each field both record with different values,
    except fields in ``unread`` (a name or a section's prefix)."""
    skipped = tuple(unread)
    return [
        f"{field}: {role} {show(field, recorded[field])}, config {show(field, value)}"
        for field, value in wanted.items()
        if field in recorded
        and recorded[field] != value
        and not any(field == skip or field.startswith(f"{skip}.") for skip in skipped)
    ]


def check_identity(
    recorded: Mapping[str, Any],
    config: ExperimentConfig,
    fingerprint: str,
    role: Literal["store", "predictor"],
    uri: str,
    unread: Iterable[str] = (),
) -> None:
    """Refuse the store or predictor at ``uri``, made with identity ``recorded``, for
    ``config`` over the dataset with ``fingerprint`` when a compared field differs.

    Raises :class:`StoreMismatchError` with one line naming each field and both values."""
    diffs = differences(recorded, config_identity(config, fingerprint), role, unread)
    if not diffs:
        return
    verbs = _VERBS[role]
    dataset = any(diff.startswith(f"{_FINGERPRINT}:") for diff in diffs)
    how = f"{verbs[0]} another dataset" if dataset else f"{verbs[1]} other settings"
    raise StoreMismatchError(f"{role} {uri} was {how} than {config.source}: " + "; ".join(diffs))
