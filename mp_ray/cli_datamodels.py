"""The datamodel commands of ``mp-ray``: fit datamodels on a store, explain one target with
them, and score every method's predicted behaviour against retraining (the LDS table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from mp_ray.cli_support import (
    ConfigOption,
    ProgressOption,
    app,
    checked_output,
    console,
    fail,
    labelled_predictors,
    load_config,
)
from mp_ray.outputs import write_json
from mp_ray.progress import Progress

NameOption = Annotated[
    str, typer.Option("--name", help="Datamodels name inside the store (datamodels/NAME).")
]


@app.command()
def datamodels(
    config: ConfigOption, name: NameOption = "default", progress: ProgressOption = True
) -> None:
    """Fit linear datamodels for every test target of the store (Ray tasks, one per shard of
    targets; GPU if the config reserves one) and write them into the store."""
    from mp_ray.datamodels.job import fit_shape, run_datamodels
    from mp_ray.ray_session import connect

    experiment = load_config(config, {})
    fit_rows, points, targets = fit_shape(experiment)
    if fit_rows < points:
        console.print(
            f"warning: {fit_rows:,} rows (training + validation) for {points:,} points: every "
            "datamodel is underdetermined (its weights rest on the L1 penalty alone); "
            "retrain with more store.n_rows",
            markup=False,
            highlight=False,
        )
    connect()
    with Progress("datamodels", targets, "targets", enabled=progress) as bar:
        summary = run_datamodels(experiment, name, bar.advance)
    rows = summary["rows"]
    console.print(
        f"datamodels/{name}: {summary['n_targets']} targets × {summary['n_train']} points from "
        f"{rows['train']} + {rows['val']} rows in {summary['fit_seconds']:.2f} s on "
        f"{summary['device']}; mean non-zero weights {summary['mean_nonzero']:.1f}"
    )
    if "test_lds" in summary:
        lds = summary["test_lds"]
        console.print(
            f"LDS on {rows['test']} held-out rows: {'–' if lds is None else f'{lds:.3f}'} (mean "
            f"over the {summary['test_lds_targets']} of {summary['n_targets']} targets whose "
            "correlation is defined)"
        )
    print(f"{summary['store']}/datamodels/{name}")


@app.command()
def explain(
    config: ConfigOption,
    target: Annotated[int, typer.Option(min=0, help="Index of the target in the test split.")],
    top: Annotated[
        int, typer.Option(min=1, help="How many supporters, opponents, neighbours.")
    ] = 10,
    max_k: Annotated[
        int, typer.Option(min=1, help="Brittleness: largest support set tried before giving up.")
    ] = 100,
    name: NameOption = "default",
) -> None:
    """A target through its datamodel: top supporters and opponents, the smallest removal
    predicted to flip it (checked by retraining), and its nearest targets."""
    from mp_ray.apps.context import app_context
    from mp_ray.datamodels.apps import brittleness, nearest_targets, support
    from mp_ray.datamodels.storage import DatamodelsNotFoundError, read_datamodels
    from mp_ray.method_outputs import ParameterOutputs
    from mp_ray.store import ExperimentStore, StoreMismatchError, StoreNotFoundError
    from mp_ray.store.identity import MODELS_UNREAD

    experiment = load_config(config, {})
    try:
        context = app_context(experiment, None, experiment.store.storage_options)
        store = ExperimentStore.open_for(experiment, context.dataset.fingerprint, MODELS_UNREAD)
        model, _ = read_datamodels(store, name)
        found = support(model, target, top)
        neighbours, similarity = nearest_targets(model, target, top)
    except (ValueError, DatamodelsNotFoundError, StoreNotFoundError, StoreMismatchError) as err:
        fail(str(err))
    data = context.dataset
    retrained = ParameterOutputs(context.retrained, context.learner, data.X_test, data.y_test)
    flip = brittleness(model, retrained, np.array([target]), max_k)
    console.print(
        f"target {target} (label {data.y_test[target]}), full-data margin "
        f"{flip.full_margin[0]:+.3f}"
    )
    console.print(f"supporters: {_pairs(found.supporters, found.supporter_weights)}")
    console.print(f"opponents:  {_pairs(found.opponents, found.opponent_weights)}")
    if flip.predicted_k[0]:
        verdict = "flips" if flip.confirmed[0] else "does not flip"
        console.print(
            f"removing its top {flip.predicted_k[0]} supporters is predicted to flip it; "
            f"retrained without them its margin is {flip.retrained_margin[0]:+.3f} ({verdict})"
        )
    else:
        console.print(f"no removal of ≤ {max_k} top supporters is predicted to flip it")
    console.print(f"nearest targets: {_pairs(neighbours, similarity)}")


def _pairs(indices: np.ndarray, values: np.ndarray) -> str:
    return ", ".join(f"{i} ({v:+.3g})" for i, v in zip(indices, values, strict=True)) or "none"


@app.command()
def lds(
    config: ConfigOption,
    predictor: Annotated[
        list[str] | None,
        typer.Option(help="ModelPred checkpoint (or LABEL=URI); repeat to compare several."),
    ] = None,
    name: NameOption = "default",
    distilled: Annotated[
        bool, typer.Option(help="Also score the saved distilled datamodel (mp-ray distill).")
    ] = False,
    loo: Annotated[
        int, typer.Option(min=0, help="Points removed one at a time and retrained.")
    ] = 40,
    counterfactual: Annotated[
        int, typer.Option(min=0, help="Targets retrained without their top supporters.")
    ] = 30,
    output: Annotated[
        Path | None, typer.Option(help="Also write the table as JSON.", callback=checked_output)
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Score every method's predicted outputs against retraining on the store's held-out
    rows: LDS, leave-one-out correlation and the counterfactual removal test."""
    from mp_ray.datamodels.storage import DatamodelsNotFoundError
    from mp_ray.distill import DistilledNotFoundError
    from mp_ray.evaluation.compare import format_behaviour_table
    from mp_ray.experiment import Experiment
    from mp_ray.store import StoreMismatchError, StoreNotFoundError

    experiment = Experiment(load_config(config, {}))  # the dataset and learner loaded once
    try:
        with Progress("lds retraining", None, "models", enabled=progress) as bar:
            report = experiment.lds(
                labelled_predictors(predictor or []),
                name,
                distilled,
                n_loo=loo,
                n_counterfactual=counterfactual,
                on_progress=lambda done, total: bar.update(done, total=total),
            )
    except (
        ValueError,
        DatamodelsNotFoundError,
        DistilledNotFoundError,
        StoreNotFoundError,
        StoreMismatchError,
    ) as err:
        fail(str(err))
    info = report.info
    console.print(
        f"{info['test_rows']} held-out rows of {info['store_rows']} ({info['sampler']['kind']}, "
        f"α = {info['sampler'].get('alpha')}), {info['n_train']} points, "
        f"{info['n_targets']} targets; {info['loo_points']} leave-one-out removals, "
        f"{info['counterfactual_targets']} counterfactual targets (top {info['support_size']})"
    )
    print(format_behaviour_table(report.table))
    for note in info["notes"]:
        console.print(f"note: {note}")
    if output:
        write_json(output, {"info": info, "table": report.table})
