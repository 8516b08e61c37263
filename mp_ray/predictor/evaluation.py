"""Predicted models against retrained ones, on held-out store rows, broken down by size.

For each held-out subset S with retrained θ(S) and a method's prediction θ̂(S):

- ``rel_error``: ‖θ̂ − θ‖ / ‖θ‖;
- ``agreement``: share of test points on which the two models predict the same label;
- ``accuracy_gap``: test accuracy of θ̂ minus that of θ;
- test losses of both, summarised per group by their Spearman and Pearson correlation
  within strata of nearly one subset size (:func:`within_size_correlations`); undefined
  (NaN, printed "–", null in JSON) where no stratum has losses that vary on both sides.

Every method is a :class:`~mp_ray.methods.ParameterMethod`: the fitted
:class:`~mp_ray.predictor.predictor.Predictor` and the baselines — the mean θ and ridge on
the subset mask (:mod:`mp_ray.store_baselines`, fitted on the predictor's training rows),
the full-data model θ(D) and influence functions (:mod:`mp_ray.baselines`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from mp_ray.baselines import FullDataModel, InfluenceFunction, influence_baseline
from mp_ray.config import ExperimentConfig
from mp_ray.data import Dataset
from mp_ray.learners import Learner
from mp_ray.loaded import dataset_of, learner_of
from mp_ray.methods import ParameterMethod
from mp_ray.predictor.predictor import load_predictor_for
from mp_ray.predictor.refine import with_set_function_alone
from mp_ray.scores import cell, paired_correlation, relative_errors
from mp_ray.store import ExperimentStore
from mp_ray.store.identity import MODELS_UNREAD
from mp_ray.store.rows import Rows, held_out_blocks
from mp_ray.store_baselines import MaskRidge, MeanParams, fit_store_baselines

SIZE_EDGES = (0.0, 0.1, 0.3, 0.5, 0.7, 1.0)  # subset size as a fraction of n
ROWS_PER_STRATUM = 20  # rows of nearly equal subset size per loss-correlation stratum


def compare_models(
    learner: Learner, predicted: torch.Tensor, actual: torch.Tensor, dataset: Dataset
) -> dict[str, np.ndarray]:
    """Per-row comparison of ``predicted`` and ``actual`` parameters ``(B, d)``: each
    array ``(B,)``; ``square_error`` is the mean over coordinates, ``actual_low`` and
    ``actual_high`` the smallest and largest actual coordinate."""
    predicted, actual = predicted.to(learner.dtype), actual.to(learner.dtype)
    X, y = dataset.X_test, dataset.y_test
    same = (learner.predict(predicted, X) == learner.predict(actual, X)).double().mean(dim=1)
    return {
        "rel_error": relative_errors(predicted.cpu().numpy(), actual.cpu().numpy()),
        "square_error": ((predicted - actual) ** 2).mean(dim=1).cpu().numpy(),
        "actual_low": actual.min(dim=1).values.cpu().numpy(),
        "actual_high": actual.max(dim=1).values.cpu().numpy(),
        "agreement": same.cpu().numpy(),
        "accuracy_gap": (learner.score(predicted, X, y) - learner.score(actual, X, y))
        .cpu()
        .numpy(),
        "loss_predicted": _mean_loss(learner, predicted, X, y),
        "loss_actual": _mean_loss(learner, actual, X, y),
    }


def _mean_loss(learner: Learner, params: torch.Tensor, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The mean loss of each model ``params (B, d)`` on ``X``, ``y``, ``(B,)``: NaN for a
    learner without a per-sample loss (its loss correlations are then not shown)."""
    if not learner.provides("per_sample_loss"):
        return np.full(len(params), np.nan)
    return learner.per_sample_loss(params, X, y).mean(dim=1).cpu().numpy()


def _loss_correlations(values: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson correlation of predicted and actual test loss over ``rows``
    (indices); none where undefined (fewer than 3 rows, or a constant side)."""
    if len(rows) < 3:
        return {}
    pearson, spearman = paired_correlation(
        values["loss_predicted"][rows], values["loss_actual"][rows]
    )
    if not np.isfinite(spearman):  # a constant side
        return {}
    return {"loss_spearman": spearman, "loss_pearson": pearson}


def size_strata(
    sizes: np.ndarray, keep: np.ndarray, per_stratum: int = ROWS_PER_STRATUM
) -> list[np.ndarray]:
    """The rows ``keep`` selects (bool ``(B,)``), ordered by subset size ``sizes (B,)`` and
    cut into consecutive runs of about ``per_stratum`` rows: subsets of nearly one size."""
    chosen = np.flatnonzero(keep)
    ordered = chosen[np.argsort(sizes[chosen], kind="stable")]
    return np.array_split(ordered, max(1, len(ordered) // per_stratum))


LOSS_CORRELATIONS = ("loss_spearman", "loss_pearson")


def within_size_correlations(
    values: Mapping[str, np.ndarray], strata: list[np.ndarray]
) -> dict[str, float]:
    """The loss correlations within each stratum of nearly equal subset size (row
    indices), averaged over the strata where they are defined with the strata's row counts
    as weights (NaN where none is); ``loss_strata`` of ``strata`` counts those strata.
    Subset size alone cannot make them high, as it makes the correlation over all rows
    (≥ 0.99 under permutation prefixes for any model whose loss falls with size)."""
    found = [(len(rows), _loss_correlations(values, rows)) for rows in strata]
    found = [(count, correlations) for count, correlations in found if correlations]
    total = sum(count for count, _ in found)
    means = {
        name: sum(count * correlations[name] for count, correlations in found) / total
        if found
        else float("nan")
        for name in LOSS_CORRELATIONS
    }
    return {**means, "loss_strata": len(found), "strata": len(strata)}


def _summary(values: Mapping[str, np.ndarray], keep: np.ndarray) -> dict[str, float]:
    count = int(keep.sum())
    row: dict[str, float] = {"rows": count}
    if count == 0:
        return row
    row["rel_error"] = float(values["rel_error"][keep].mean())
    spread = values["actual_high"][keep].max() - values["actual_low"][keep].min()
    if spread > 0:  # the ModelPred paper's NRMSE: RMSE over the range of the actual θ
        row["nrmse"] = float(np.sqrt(values["square_error"][keep].mean()) / spread)
    row["agreement"] = float(values["agreement"][keep].mean())
    row["accuracy_gap"] = float(values["accuracy_gap"][keep].mean())
    return row


def compare_parts(
    learner: Learner,
    methods: Mapping[str, ParameterMethod],
    parts: Iterable[Rows],
    dataset: Dataset,
) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Retrained rows given a part at a time: their subset sizes ``(K,)`` and, per method,
    :func:`compare_models` of its predictions with them (each array ``(K,)``), in the order
    of the parts. Each part's masks and parameters are let go once every method is
    compared on them."""
    sizes: list[np.ndarray] = []
    values: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in methods}
    for rows in filter(len, parts):
        sizes.append(rows.masks.sum(axis=1))
        actual = torch.as_tensor(rows.params)
        for name, method in methods.items():
            values[name].append(
                compare_models(learner, method.predict(rows.masks), actual, dataset)
            )
    joined = {
        name: {key: np.concatenate([part[key] for part in found]) for key in found[0]}
        for name, found in values.items()
        if found
    }
    return (np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)), joined


def evaluation_table(
    learner: Learner,
    methods: Mapping[str, ParameterMethod],
    rows: Rows | Iterable[Rows],
    dataset: Dataset,
    edges: tuple[float, ...] = SIZE_EDGES,
) -> list[dict[str, Any]]:
    """One table row per (method, non-empty size group), "all" first for each method, on
    retrained ``rows`` (or their parts, read one at a time: :func:`compare_parts`). Loss
    correlations are taken among subsets of nearly equal size and averaged
    (:func:`within_size_correlations`), so they say whether a method ranks subsets of one
    size, not whether it knows that larger subsets have lower loss."""
    sizes, compared = compare_parts(
        learner, methods, [rows] if isinstance(rows, Rows) else rows, dataset
    )
    fraction = sizes / learner.n_train
    groups = {"all": np.ones(len(sizes), dtype=bool)}
    for low, high in itertools.pairwise(edges):
        groups[f"{low:.0%}–{high:.0%}"] = (fraction > low) & (fraction <= high)
    table = []
    for name, values in compared.items():
        for group, keep in groups.items():
            if keep.any():
                row = within_size_correlations(values, size_strata(sizes, keep))
                table.append(
                    {"method": name, "subset size": group, **_summary(values, keep), **row}
                )
    return table


def format_table(table: list[dict[str, Any]]) -> str:
    """A fixed-width text rendering of :func:`evaluation_table`."""
    columns = ["rel_error", "nrmse", "agreement", "accuracy_gap", "loss_spearman", "loss_pearson"]
    width = max([22, *(len(row["method"]) + 2 for row in table)])
    header = f"{'method':<{width}}{'subset size':<12}{'rows':>6}"
    lines = [header + "".join(f"{c:>14}" for c in columns)]
    for row in table:
        cells = "".join(cell(row.get(c), 14, ".4f") for c in columns)
        lines.append(f"{row['method']:<{width}}{row['subset size']:<12}{row['rows']:>6}{cells}")
    short = [
        f"{row['method']} {row['subset size']} {row['loss_strata']} of {row['strata']}"
        for row in table
        if row["loss_strata"] < row["strata"]
    ]
    lines.append(
        f"loss correlations: means over strata of about {ROWS_PER_STRATUM} rows of nearly one "
        "subset size, those where both losses vary: "
        + (", ".join(short) if short else "all of them in every row")
    )
    return "\n".join(lines)


def evaluate_on_store(
    config: ExperimentConfig,
    predictor_uris: Mapping[str, str],
    dataset: Dataset | None = None,
    learner: Learner | None = None,
    store: ExperimentStore | None = None,
) -> list[dict[str, Any]]:
    """The evaluation table of fitted predictors (method name → checkpoint URI) and the
    baselines on the store's test rows (the rows no fit or search ever sees), read one
    block at a time. ``dataset``, ``learner`` and ``store``: the config's, when already
    loaded (the store opened and checked against the config); else loaded here."""
    config = config.with_absolute_paths()
    dataset = dataset_of(config, dataset)
    if store is None:
        store = ExperimentStore.open_for(config, dataset.fingerprint, MODELS_UNREAD, complete=True)
    options = config.store.storage_options
    settings = config.predictor
    learner = learner_of(config, dataset, learner)
    # A baseline, and the predictors' Newton step (None: the learner cannot give them).
    influence, _ = influence_baseline(learner)
    predictors: dict[str, ParameterMethod] = {}
    for name, uri in predictor_uris.items():
        predictor = load_predictor_for(uri, config, dataset.fingerprint, options)
        predictors |= with_set_function_alone(
            name, predictor, learner, settings.newton_steps, influence
        )
    splits = config.splits
    mean, ridge = fit_store_baselines(store, splits.val_fraction, splits.test_fraction)
    methods = {
        **predictors,
        MeanParams.name: mean,
        MaskRidge.name: ridge,
        FullDataModel.name: FullDataModel(learner),
        **({} if influence is None else {InfluenceFunction.name: influence}),
    }
    table = evaluation_table(learner, methods, held_out_blocks(store, splits), dataset)
    if not table:
        raise ValueError(f"store {store.uri} has no test rows; raise splits.test_fraction")
    return table
