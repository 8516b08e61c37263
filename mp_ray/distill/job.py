"""The distillation stage: groups, retrained ground truth, synsets, validation, saving.

Usage (the CLI and ``jobs/distill.py`` call the same function)::

    from mp_ray.config import load_experiment
    from mp_ray.distill import run_distill, load_distilled
    model, report = run_distill(load_experiment("configs/quickstart.yaml"))
    model = load_distilled(load_experiment("configs/quickstart.yaml"))  # later, elsewhere

Runs on the driver (no Ray actors: the retrained ground truth is G + R models, a few
batches of ``fit_batch``), on the learner's device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mp_ray.baselines import InfluenceFunction, full_data_params
from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset
from mp_ray.distill.groups import draw_unions, group_classes, partition, single_removals
from mp_ray.distill.groups import removal_masks as group_removal_masks
from mp_ray.distill.matching import distil
from mp_ray.distill.model import DistilledDatamodel
from mp_ray.distill.report import DistillReport, RemovalSet, score_methods
from mp_ray.distill.storage import open_destination, read_distilled, write_distilled
from mp_ray.distill.supervision import GroundTruth, retrain_ground_truth
from mp_ray.distill.synset import initial_synsets
from mp_ray.learners import Learner
from mp_ray.loaded import dataset_of, learner_of
from mp_ray.store import ExperimentStore, StoreNotFoundError
from mp_ray.store.identity import SEEDED_UNREAD
from mp_ray.store.rows import TEST, split_blocks


def _learner(
    config: ExperimentConfig,
    dataset: Dataset,
    learner: Learner | None,
    device: torch.device | str,
) -> Learner:
    if dataset.task != "classification":
        raise ValueError(
            f"the distilled datamodel needs a classification dataset; {dataset.name} is a "
            "regression task"
        )
    return learner_of(config, dataset, learner, device)


def run_distill(
    config: ExperimentConfig,
    dataset: Dataset | None = None,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int], None] | None = None,
    learner: Learner | None = None,
) -> tuple[DistilledDatamodel, DistillReport]:
    """Fit, validate and save the experiment's distilled datamodel (``config.distill``);
    ``on_progress`` is called with 1 after each distillation iteration. ``dataset`` and
    ``learner``: the config's, when already loaded (``device`` then goes unused); else
    loaded here."""
    config = config.with_absolute_paths()
    settings = config.distill
    dataset = dataset_of(config, dataset)
    learner = _learner(config, dataset, learner, device)
    destination = open_destination(config, dataset.fingerprint, write=True)  # fail early
    rows = store_test_rows(config, dataset.fingerprint, settings.validation_rows)
    seconds: dict[str, float] = {}

    began = time.perf_counter()
    groups = partition(
        dataset.X_train, dataset.y_train, dataset.n_classes, settings.groups_per_class, config.seed
    )
    theta = full_data_params(learner)
    seconds["groups and θ*"] = time.perf_counter() - began

    unions = draw_unions(
        group_classes(groups, dataset.y_train),
        settings.holdout_removals,
        settings.holdout_union,
        config.seed,
    )
    if len(unions) < 3:
        raise ValueError(
            f"only {len(unions)} held-out unions of {settings.holdout_union} groups exist; "
            "use more groups per class or a smaller distill.holdout_union"
        )
    began = time.perf_counter()
    truth = retrain_ground_truth(learner, groups, unions)
    seconds["retraining"] = time.perf_counter() - began

    start = initial_synsets(
        learner, theta, groups, settings.synthetic_per_group, settings.init, config.seed
    )
    distillation = distil(
        learner,
        theta,
        truth.single - theta,
        start,
        settings.iterations,
        settings.lr,
        settings.learn_step,
        on_progress,
    )
    seconds["distillation"] = distillation.seconds

    began = time.perf_counter()
    model = DistilledDatamodel(learner, theta, groups, distillation.synsets, distillation.eta)
    model.attribution(dataset.X_test, dataset.y_test, settings.objective)
    seconds["online attribution"] = time.perf_counter() - began

    report = DistillReport(
        dataset=dataset.name,
        n_train=dataset.n_train,
        n_groups=model.n_groups,
        group_sizes=model.sizes.tolist(),
        per_group=settings.synthetic_per_group,
        eta=model.eta,
        residual=distillation.residual,
        objective=settings.objective,
        retrained_models=len(truth.single) + len(truth.union_params),
        seconds=seconds,
        uri=_describe(config),
    )
    report.table = validate(config, dataset, model, truth, rows)
    write_distilled(
        destination,
        model,
        truth,
        dataset.fingerprint,
        {
            "dataset_name": dataset.name,
            "root_seed": config.seed,
            "learner": config.learner.model_dump(mode="json"),
            "distill": settings.model_dump(mode="json"),
            "report": report.to_json(),
        },
    )
    return model, report


def validate(
    config: ExperimentConfig,
    dataset: Dataset,
    model: DistilledDatamodel,
    truth: GroundTruth,
    rows: tuple[np.ndarray, torch.Tensor] | None = None,
) -> dict[str, dict[str, Any]]:
    """The table of :mod:`mp_ray.distill.report` on the supervised single-group removals,
    the held-out unions and, when given, retrained store ``rows`` (masks, params)."""
    learner, groups = model.learner, model.groups
    sets = [
        RemovalSet(
            "single groups",
            group_removal_masks(groups, single_removals(model.n_groups)),
            truth.single,
            held_out=False,
        ),
        RemovalSet(
            f"unions of {config.distill.holdout_union} groups",
            group_removal_masks(groups, truth.unions),
            truth.union_params,
            held_out=True,
        ),
    ]
    if rows is not None:
        sets.append(RemovalSet("store test rows", *rows, held_out=True))
    influence = InfluenceFunction(learner)
    methods = {model.name: model, influence.name: influence}
    return score_methods(
        learner,
        model.theta,
        sets,
        methods,
        dataset.X_test,
        dataset.y_test,
        config.distill.objective,
    )


def store_test_rows(
    config: ExperimentConfig, fingerprint: str, limit: int
) -> tuple[np.ndarray, torch.Tensor] | None:
    """Up to ``limit`` test rows of the experiment's store (the store's split, done
    blocks, non-degenerate) as ``masks (R, n)`` and ``params (R, d)``; None when there is no
    store or fewer than 3 such rows. A store made with another identity is an error."""
    if limit == 0:
        return None
    try:
        store = ExperimentStore.open_for(config, fingerprint, SEEDED_UNREAD)
    except StoreNotFoundError:
        return None
    masks, params, count = [], [], 0
    done = np.flatnonzero(store.done_blocks()).tolist()
    splits = config.splits
    for rows in split_blocks(store, TEST, splits.val_fraction, splits.test_fraction, done):
        kept = min(len(rows), limit - count)
        masks.append(rows.masks[:kept])
        params.append(rows.params[:kept])
        count += kept
        if count == limit:
            break  # the blocks after it are never read
    if count < 3:
        return None
    return np.concatenate(masks), torch.as_tensor(np.concatenate(params))


def load_distilled(
    config: ExperimentConfig,
    dataset: Dataset | None = None,
    device: torch.device | str = "cpu",
    learner: Learner | None = None,
) -> DistilledDatamodel:
    """The experiment's saved distilled datamodel over its dataset's learner (``dataset``
    and ``learner``: the config's, when already loaded; else loaded here)."""
    config = config.with_absolute_paths()
    dataset = dataset_of(config, dataset)
    learner = _learner(config, dataset, learner, device)
    group = open_destination(config, dataset.fingerprint, write=False)
    return read_distilled(group, learner, dataset.fingerprint)[0]


def _describe(config: ExperimentConfig) -> str:
    """Where the distilled datamodel is saved, for messages."""
    return config.distill.uri or f"{config.store.uri} (group 'distill')"
