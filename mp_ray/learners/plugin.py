"""Bring your own model: the plug-in protocol, the one way to add a learner to mp-ray.

Subclass :class:`~mp_ray.learners.base.Learner` in a module of your own and name it by import
path in the config::

    learner: {kind: custom, target: "mypkg.models:NearestMeans", options: {shrink: 0.5}}

The module must be importable wherever a stage runs: the command's process and Ray's
workers (``PYTHONPATH``, or an installed package). The class may declare its own settings
as a pydantic model, ``Options = MyOptions``: ``learner.options`` is validated against it
when the config is loaded (errors under ``learner.options``; a class without one takes no
options), stored with its defaults filled in, part of the store's identity (a store made
with other options is refused), and read in the learner as ``self.options``. The learner
is built as ``Learner(config, X (n, p), y (n,), n_classes, device, memory_budget)``; the
base ``__init__`` keeps ``self.X``, ``self.y`` as tensors on ``self.device`` in ``self.dtype``.

What to implement. Required, for every stage (shapes: K models, n training points, m
points, p features, d parameters, c outputs = 1 for binary classification and regression,
else one per class):

- ``n_params`` (property): d;
- ``_fit(weights (K, n), seeds (K,) | None) -> params (K, d)``: train one model per row of
  0/1 sample weights (``fit_batch`` calls it; deterministic given data, mask and seed);
- ``decision(params (K, d), X (m, p)) -> (K, m, c)``: the raw outputs (logits or values),
  from which predictions, accuracy and the correct-class margin (the store's outputs, what
  datamodels and the LDS compare) follow;
- ``intercept_mask() -> (d,) bool``: which parameters are intercepts.

Optional capabilities, each needed by some stages only. A stage that needs one the learner
lacks is refused at its start with an error naming the method
(:func:`~mp_ray.learners.capabilities.require`); ``objective_grad``, ``hvp`` and
``per_sample_grads`` have autograd versions in the base class, so ``objective`` (and
``per_sample_loss``) written in differentiable torch give them all:

======================================  ==========================  =========================
stage                                   needs                       without it
======================================  ==========================  =========================
retrain: the store's params, outputs    the required methods        —
retrain: metrics objective, grad_norm   objective (objective_grad)  not in the store
retrain: metrics *_loss                 per_sample_loss             not in the store
datamodels, explain                     the store's outputs only    —
fit, predictor.lambda_global > 0        objective_grad              auto is 0; a value > 0
                                                                    is refused
fit, predictor.lambda_local > 0         per_sample_loss             refused
Newton steps (predictor.newton_steps;   objective, objective_grad,  auto is 0; a count > 0
fit, evaluate, lds, applications)       hvp, and ``convex = True``  is refused
influence functions (evaluate, lds)     objective_grad, hvp         left out of the table,
                                                                    with a note
evaluate: loss correlations             per_sample_loss             not shown (–)
predictor.targets: outputs              output_metric()             standardised targets
applications: retrain_below default     ``convex = True``           0 (no retraining)
utility neg_loss, counterfactual,       per_sample_loss             an error naming it
selection, distill
======================================  ==========================  =========================

``per_sample_grads`` (the gradient of each example's loss under one model) is no stage's
need; the logistic learner uses it inside its solver. ``objective_and_grad`` and
``objective_grad_and_loss`` (the retraining job's objective, gradient and mean training
loss) default to those methods one after the other; a learner that gets them from one pass
over the training set may override them (``kind: torch`` does). ``loss_from_outputs(out,
y)``, the per-example loss as a function of :meth:`decision`'s outputs, lets the retraining
job take a validation or test set's accuracies, losses and margins from one pass over it.
``output_metric()``, for a model linear in its parameters per output column, lets the
predictor fit in output space.

``kind: sklearn`` (:mod:`mp_ray.learners.sklearn_learner`) is a ready-made plug-in over any
scikit-learn estimator. This module also loads what configs name by import path
(``module:name``) and says clearly what is wrong with a bad one.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pydantic import ValidationError

from mp_ray.config import CustomLearnerConfig
from mp_ray.errors import MpRayError
from mp_ray.learners.base import ArrayLike, Learner


class PluginError(MpRayError, ValueError):
    """An import path in a config names nothing usable; the message says why."""


def import_object(path: str) -> Any:
    """The object at ``path``, ``module:name`` (name may be dotted: ``module:Outer.Inner``)."""
    module_name, sep, name = path.partition(":")
    if not sep or not module_name or not name:
        raise PluginError(f"{path!r} is not an import path module:name")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise PluginError(
            f"cannot import {path!r}: {err} (is it on PYTHONPATH where every stage runs?)"
        ) from None
    except Exception as err:  # the user's module failed while importing
        raise PluginError(
            f"importing {module_name!r} failed: {type(err).__name__}: {err}"
        ) from None
    found: Any = module
    for part in name.split("."):
        if not hasattr(found, part):
            raise PluginError(f"cannot import {path!r}: {module_name} has no {name!r}")
        found = getattr(found, part)
    return found


def learner_class(path: str) -> type[Learner]:
    """The concrete :class:`Learner` subclass at ``path``."""
    found = import_object(path)
    if not (inspect.isclass(found) and issubclass(found, Learner)):
        raise PluginError(f"{path!r} is not a subclass of mp_ray.learners.Learner")
    if inspect.isabstract(found):
        unimplemented = ", ".join(sorted(found.__abstractmethods__))
        raise PluginError(f"{path!r} does not implement {unimplemented}")
    return found


def estimator_class(path: str) -> type:
    """The estimator class at ``path``: a class with a ``fit`` method."""
    found = import_object(path)
    if not (inspect.isclass(found) and callable(getattr(found, "fit", None))):
        raise PluginError(f"{path!r} is not an estimator class (a class with a fit method)")
    return found


def function(path: str) -> Callable[..., Any]:
    """The callable at ``path``."""
    found = import_object(path)
    if not callable(found):
        raise PluginError(f"{path!r} is not callable")
    return found


def estimator(path: str, params: Mapping[str, Any]) -> Any:
    """A new estimator of the class at ``path`` built with ``params``."""
    cls = estimator_class(path)
    try:
        return cls(**params)
    except Exception as err:
        raise PluginError(f"{cls.__name__}(**params) failed: {type(err).__name__}: {err}") from None


def validated_options(target: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` validated by the ``Options`` model of the learner class at ``target`` and
    dumped with its defaults filled in; unknown ones refused."""
    cls = learner_class(target)
    if cls.Options is None:
        if options:
            raise PluginError(
                f"{cls.__name__} declares no Options model, so it takes no options; got "
                + ", ".join(options)
            )
        return {}
    unknown = [name for name in options if name not in cls.Options.model_fields]
    if unknown:
        raise PluginError("; ".join(f"{name}: not an option of {cls.__name__}" for name in unknown))
    try:
        return cls.Options.model_validate(dict(options)).model_dump(mode="json")
    except ValidationError as err:
        raise PluginError(
            "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or '(options)'}: {item['msg']}"
                for item in err.errors()
            )
        ) from None


def custom_learner(
    config: CustomLearnerConfig,
    X: ArrayLike,
    y: ArrayLike,
    n_classes: int,
    device: torch.device | str = "cpu",
    memory_budget: int | None = None,
) -> Learner:
    """The learner of kind custom: ``config.target``'s class over ``X (n, p)``, ``y (n,)``."""
    return learner_class(config.target)(config, X, y, n_classes, device, memory_budget)
