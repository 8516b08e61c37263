"""The behaviour table of an experiment: every available method scored on one ground truth.

Methods: each fitted ModelPred checkpoint given (name → URI), the store's datamodels (when
fitted), any further parameter predictors passed in, and the baselines: the mean θ and
ridge on the subset mask (fitted on the predictor's training rows), the full-data model
θ(D) and first-order influence functions (left out, with a note in ``info["notes"]``, for
a learner without the methods they need). A constant prediction (the mean θ, θ(D)) ranks
no subsets and changes with no removal: its correlations are undefined (NaN, printed –).
Ground truth: the store's test rows (held out from every fit), ``n_loo`` single points
removed from the full set and retrained, and, with datamodels, ``n_counterfactual``
targets each retrained without its ``support_size`` top supporters. The points and targets
are drawn from the experiment's root seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mp_ray.apps.models import PredictedModels, RetrainedModels
from mp_ray.baselines import FullDataModel, InfluenceFunction, influence_baseline
from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset
from mp_ray.datamodels.apps import support
from mp_ray.datamodels.fit import Datamodels
from mp_ray.datamodels.storage import read_datamodels
from mp_ray.evaluation.compare import Removals, Truth, behaviour_table, predict_held_out
from mp_ray.learners import Learner
from mp_ray.loaded import dataset_of, learner_of
from mp_ray.method_outputs import ParameterOutputs
from mp_ray.methods import Masks, OutputMethod, ParameterMethod
from mp_ray.predictor.predictor import load_predictor_for
from mp_ray.predictor.refine import with_set_function_alone
from mp_ray.sampling import row_rng
from mp_ray.scores import output_changes, removal_masks
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import SEEDED_UNREAD
from mp_ray.store.rows import held_out_blocks
from mp_ray.store_baselines import MaskRidge, fit_store_baselines

EVALUATION_STREAM = 0xE7A1  # the draws of removed points and counterfactual targets


@dataclass
class BehaviourReport:
    """The table (one dict per method) and what it was measured on."""

    table: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)


def behaviour_report(
    config: ExperimentConfig,
    predictor_uris: dict[str, str] | None = None,
    datamodels_name: str | None = "default",
    extra: dict[str, ParameterMethod] | None = None,
    n_loo: int = 40,
    n_counterfactual: int = 30,
    support_size: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    dataset: Dataset | None = None,
    learner: Learner | None = None,
    store: ExperimentStore | None = None,
    influence_damping: float = 0.0,
) -> BehaviourReport:
    """Score every method of the experiment; see the module docstring. ``extra`` maps more
    method names to parameter methods (``predict(masks (B, n)) -> params (B, d)``); the default
    ``support_size`` is 5% of the training points. ``on_progress`` is called with the
    models retrained so far and in all as each batch of them is retrained. ``dataset``,
    ``learner`` and ``store``: the config's, when already loaded (the store opened and
    checked against the config); else loaded here. ``influence_damping``: the λ of influence
    functions' H_D + λI (and of the Newton step, which uses their solve)."""
    config = config.with_absolute_paths()
    dataset = dataset_of(config, dataset)
    if store is None:
        store = ExperimentStore.open_for(config, dataset.fingerprint, SEEDED_UNREAD, complete=True)
    learner = learner_of(config, dataset, learner)
    settings, splits = config.predictor, config.splits

    def outputs_of(method: ParameterMethod) -> OutputMethod:
        return ParameterOutputs(method, learner, dataset.X_test, dataset.y_test)

    start = time.perf_counter()
    # θ(D) and H_D⁻¹: a baseline, and the Newton step (None: the learner cannot give them)
    influence, note = influence_baseline(learner, influence_damping)
    influence_seconds = time.perf_counter() - start
    methods: dict[str, OutputMethod] = {}
    for name, uri in (predictor_uris or {}).items():
        predictor = load_predictor_for(
            uri, config, dataset.fingerprint, config.store.storage_options
        )
        shown = with_set_function_alone(name, predictor, learner, settings.newton_steps, influence)
        for label, method in shown.items():
            methods[label] = outputs_of(PredictedModels(method, learner))
    datamodels: Datamodels | None = None
    if datamodels_name is not None:
        datamodels, _ = read_datamodels(store, datamodels_name)
        methods["datamodels"] = datamodels
    for name, method in (extra or {}).items():
        methods[name] = outputs_of(method)
    start = time.perf_counter()
    mean, ridge = fit_store_baselines(store, splits.val_fraction, splits.test_fraction)
    setup_seconds = {
        MaskRidge.name: time.perf_counter() - start,  # with the mean θ, from the same pass
    }
    baselines: list[ParameterMethod] = [mean, ridge, FullDataModel(learner)]
    if influence is not None:
        setup_seconds[InfluenceFunction.name] = influence_seconds
        baselines.append(influence)
    for baseline in baselines:
        methods[baseline.name] = outputs_of(baseline)
    test = held_out_blocks(store, splits, with_outputs=True)
    outputs, predicted = predict_held_out(methods, ((rows.masks, rows.outputs) for rows in test))
    if len(outputs) < 3:
        raise ValueError(f"store {store.uri} has {len(outputs)} test rows; the LDS needs 3 or more")

    n = dataset.n_train
    rng = row_rng(config.seed, EVALUATION_STREAM, 0)
    points = np.sort(rng.choice(n, size=min(n_loo, n), replace=False))
    loo_masks = removal_masks(n, [np.array([i]) for i in points])
    k = support_size or max(1, round(0.05 * n))
    if datamodels is not None:
        n_targets = datamodels.n_targets
        targets = np.sort(
            rng.choice(n_targets, size=min(n_counterfactual, n_targets), replace=False)
        )
        removed = [support(datamodels, int(t), k).supporters for t in targets]
        cf_masks = removal_masks(n, removed)
    # Each set of removals is retrained with the full-data model (output_changes).
    total = len(loo_masks) + 1 + (0 if datamodels is None else len(cf_masks) + 1)
    retrained = outputs_of(_counted(RetrainedModels(learner), total, on_progress))
    truth = Truth(outputs, Removals(loo_masks, output_changes(retrained, loo_masks)))
    if datamodels is not None:
        truth.counterfactual = Removals(cf_masks, output_changes(retrained, cf_masks), targets)
    info = {
        "store": store.uri,
        "sampler": dict(store.spec.sampler),
        "store_rows": store.spec.n_rows,
        "test_rows": len(outputs),
        "n_train": n,
        "n_targets": store.spec.n_targets,
        "loo_points": len(points),
        "counterfactual_targets": 0 if truth.counterfactual is None else len(targets),
        "support_size": k,
        "setup_seconds": setup_seconds,
        "ridge_alpha": ridge.alpha,
        "notes": [] if note is None else [note],
    }
    return BehaviourReport(behaviour_table(methods, predicted, truth), info)


def _counted(
    method: ParameterMethod, total: int, on_progress: Callable[[int, int], None] | None
) -> ParameterMethod:
    """``method`` telling ``on_progress`` how many of ``total`` models it has given."""
    return method if on_progress is None else _Counted(method, total, on_progress)


class _Counted:
    """A parameter method that tells ``on_progress`` how many of ``total`` models it has
    given after each batch."""

    def __init__(
        self, method: ParameterMethod, total: int, on_progress: Callable[[int, int], None]
    ) -> None:
        self.method = method
        self.total = total
        self.on_progress = on_progress
        self.done = 0

    @property
    def n_train(self) -> int:
        return self.method.n_train

    def predict(self, masks: Masks) -> torch.Tensor:
        """The method's parameters ``(B, d)`` for ``masks (B, n)``."""
        params = self.method.predict(masks)
        self.done += len(masks)
        self.on_progress(self.done, self.total)
        return params
