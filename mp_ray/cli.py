"""The ``mp-ray`` command line: one sub-command per stage.

mp-ray retrain  -c configs/quickstart.yaml            # retrain models into the store
mp-ray inspect  runs/quickstart.zarr                  # what is in a store
mp-ray fit      -c configs/quickstart.yaml            # fit the predictor (Ray Train)
mp-ray tune     -c configs/quickstart.yaml            # search its hyperparameters (Ray Tune)
mp-ray evaluate -c configs/quickstart.yaml --predictor CKPT   # against retraining
mp-ray check-config configs/quickstart.yaml           # validate a config file

Applications (a fitted predictor with --predictor CKPT, else retraining):

mp-ray value        -c CONFIG --method tmc        # data values, removal curves, noisy labels
mp-ray select       -c CONFIG --size 100          # the best subset of a given size
mp-ray memorization -c CONFIG                     # memorisation and influence scores
mp-ray calibrate    -c CONFIG                     # ensemble calibration, reliability diagram
mp-ray counterfactual -c CONFIG --target 0 --remove 1,2,3   # prediction without points
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from mp_ray import cli_apps, cli_datamodels, cli_distill  # noqa: F401  (register commands)
from mp_ray.cli_support import (
    ConfigOption,
    ProgressOption,
    StorageOption,
    app,
    checked_output,
    console,
    fail,
    labelled_predictors,
    load_config,
    storage_options,
)
from mp_ray.outputs import atomic_output, json_ready, write_json
from mp_ray.progress import Progress

app.info.help = __doc__


@app.command()
def retrain(
    config: ConfigOption,
    store: Annotated[str | None, typer.Option(help="Override store.uri.")] = None,
    rows: Annotated[int | None, typer.Option(min=1, help="Override store.n_rows.")] = None,
    actors: Annotated[int | None, typer.Option(min=1, help="Override retrain.num_actors.")] = None,
    progress: ProgressOption = True,
    report_json: Annotated[
        Path | None,
        typer.Option(help="Also write the run report as JSON here.", callback=checked_output),
    ] = None,
) -> None:
    """Retrain models on sampled subsets with Ray actors and write them to the store."""
    from mp_ray.ray_session import connect
    from mp_ray.retrain import RetrainError, prepare_store, run_retrain
    from mp_ray.store import StoreMismatchError, format_summary, summarize

    experiment = load_config(
        config, {"store.uri": store, "store.n_rows": rows, "retrain.num_actors": actors}
    )
    try:
        store_handle, dataset = prepare_store(experiment)
    except (ValueError, FileNotFoundError, StoreMismatchError) as err:
        fail(str(err))
    pending_rows = sum(len(store_handle.block_rows(b)) for b in store_handle.pending_blocks())
    console.print(
        f"store {store_handle.uri}: {store_handle.spec.n_rows} rows, "
        f"{pending_rows} to train on dataset {dataset.name} (n={dataset.n_train})"
    )
    connect()
    try:
        with Progress("retrain", pending_rows, "models", enabled=progress) as bar:
            report = run_retrain(experiment, dataset, on_result=lambda r: bar.advance(r["rows"]))
    except RetrainError as err:
        fail(f"{err}\nrows already written are kept; rerun the same command to resume")
    except KeyboardInterrupt:
        done = store_handle.n_blocks - len(store_handle.pending_blocks())
        console.print(
            f"interrupted: {done}/{store_handle.n_blocks} blocks are done and kept; "
            "rerun the same command to resume"
        )
        raise typer.Exit(code=130) from None
    console.print(
        f"trained {report.rows_trained} models in {report.seconds:.1f} s "
        f"({report.models_per_second:,.0f} models/s); skipped {report.blocks_skipped} "
        f"finished blocks; retried {sum(report.retries.values())}"
    )
    if report_json:
        write_json(report_json, report.to_json())
    print(format_summary(summarize(store_handle)))


@app.command()
def fit(
    config: ConfigOption,
    name: Annotated[str, typer.Option(help="Run name; rerunning a name resumes it.")] = "predictor",
    storage_path: Annotated[
        str | None,
        typer.Option(
            help="Where Ray Train keeps runs and checkpoints (path or s3://; overrides "
            "fit.storage_path, default runs/train)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Data-parallel Ray Train workers (overrides fit.num_workers, default 2)."
        ),
    ] = None,
    gpu: Annotated[
        bool | None,
        typer.Option("--gpu/--no-gpu", help="Give each worker a GPU (overrides fit.use_gpu)."),
    ] = None,
    export: Annotated[
        str | None,
        typer.Option(help="Also copy the best predictor to this directory (path or s3://)."),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Fit the ModelPred predictor on the experiment's store with Ray Train.

    The run folder <fit.storage_path>/<name> (and --export) gets resolved_config.yaml: the
    config the fit ran with; `mp-ray fit -c` on it fits the same predictor again."""
    from ray.train import TrainingFailedError

    from mp_ray.config import write_resolved_config
    from mp_ray.predictor import Predictor
    from mp_ray.predictor.fit import fit_predictor
    from mp_ray.ray_session import connect
    from mp_ray.store import StoreMismatchError, StoreNotFoundError

    experiment = load_config(
        config,
        {"fit.storage_path": storage_path, "fit.num_workers": workers, "fit.use_gpu": gpu},
    )
    connect()
    try:
        with Progress("fit", experiment.predictor.steps, "steps", enabled=progress) as bar:
            outcome = fit_predictor(experiment, name, on_report=_fit_progress(bar))
            if not bar.completed:  # a finished run, resumed: no step left to train
                steps = outcome.metrics.get("step", 0)
                bar.update(steps, "already trained", skipped=steps)
    except (ValueError, StoreNotFoundError, StoreMismatchError, TrainingFailedError) as err:
        fail(str(err))
    metrics = outcome.metrics
    console.print(
        f"fitted {metrics.get('step')} steps; best validation relative parameter error "
        f"{metrics.get('best_val_rel_error', float('nan')):.4f}"
    )
    if export:
        Predictor.load(outcome.predictor_uri).save(export)
        write_resolved_config(outcome.config, export)
        console.print(f"best predictor exported to {export}")
    print(outcome.predictor_uri)


def _fit_progress(bar: Progress) -> Callable[[dict[str, Any]], None]:
    """Shows a fit's metrics at each validation on ``bar``."""

    def show(metrics: dict[str, Any]) -> None:
        bar.update(
            metrics["step"],
            f"validation error {metrics['val_rel_error']:.4f} "
            f"(best {metrics['best_val_rel_error']:.4f})",
            skipped=metrics["resumed_from_step"],
        )

    return show


def _trial_progress(bar: Progress, ended: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    """Counts a search's ended trials on ``bar``, with the best validation error so far;
    ``ended``: the last results of the trials that had ended before this run (a resumed
    search)."""
    best = min((result.get("best_val_rel_error", math.inf) for result in ended), default=math.inf)

    def note() -> str | None:
        return f"best validation error {best:.4f}" if best < math.inf else None

    if ended:
        bar.update(len(ended), note(), skipped=len(ended))

    def show(result: dict[str, Any]) -> None:
        nonlocal best
        best = min(best, result.get("best_val_rel_error", math.inf))
        bar.advance(1, note())

    return show


@app.command()
def tune(
    config: ConfigOption,
    name: Annotated[
        str, typer.Option(help="Name of the search; running an unfinished one again resumes it.")
    ] = "search",
    storage_path: Annotated[
        str | None,
        typer.Option(
            help="Where Tune and its trials keep results (path or s3://; overrides "
            "tune.storage_path, default runs/tune)."
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(min=1, help="Number of trials (overrides tune.num_samples, default 8)."),
    ] = None,
    workers_per_trial: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Ray Train workers per trial (overrides tune.workers_per_trial, default 1).",
        ),
    ] = None,
    max_concurrent_trials: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Trials run at once (overrides tune.max_concurrent_trials, default no "
            "limit: waiting trials are the demand an autoscaler adds nodes for).",
        ),
    ] = None,
    gpu: Annotated[
        bool | None,
        typer.Option(
            "--gpu/--no-gpu",
            help="Give each trial's Train workers a GPU (overrides tune.use_gpu, default "
            "fit.use_gpu).",
        ),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Search the predictor's hyperparameters (tune.search_space; by default its
    regularisation strengths, learning rate and width) with ASHA.

    <tune.storage_path>/<name> gets resolved_config.yaml (the search's config), best/ the
    best predictor with the config its fit ran with, and the trials as trials.json and
    trials.parquet (Ray Tune's results table). Interrupted, the same command resumes it."""
    from mp_ray.ray_session import connect
    from mp_ray.tuning import SearchInterrupted, ended_trials, search_folder, tune_predictor

    experiment = load_config(
        config,
        {
            "tune.storage_path": storage_path,
            "tune.num_samples": samples,
            "tune.workers_per_trial": workers_per_trial,
            "tune.max_concurrent_trials": max_concurrent_trials,
            "tune.use_gpu": gpu,
        },
    )
    connect()
    total = experiment.tune.num_samples
    try:
        ended = ended_trials(experiment, name)
        if ended is not None:
            console.print(
                f"resuming search {name} in {search_folder(experiment, name)}: "
                f"{len(ended)} of {total} trials had ended"
            )
        with Progress("tune", total, "trials", enabled=progress) as bar:
            outcome = tune_predictor(experiment, name, on_trial=_trial_progress(bar, ended or []))
    except SearchInterrupted as err:
        console.print(f"interrupted: {err}; rerun the same command to resume")
        raise typer.Exit(code=130) from None
    except (ValueError, RuntimeError) as err:
        fail(str(err))
    columns = [*experiment.tune.search_space, "steps", "val_rel_error"]
    print(" ".join(f"{c:>14}" for c in columns))
    for row in outcome.trials:
        print(" ".join(_cell(row.get(c, float("nan"))) for c in columns))
    console.print(f"best predictor exported to {outcome.predictor_uri}")


def _cell(value: Any) -> str:
    """One cell of the trial table: numbers to 4 significant digits."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return f"{value:>14.4g}" if number else f"{value!s:>14}"


@app.command()
def evaluate(
    config: ConfigOption,
    predictor: Annotated[
        list[str],
        typer.Option(
            help="Predictor checkpoint directory (or s3://); repeat to compare several, "
            "optionally labelled as LABEL=URI."
        ),
    ],
    output: Annotated[
        Path | None, typer.Option(help="Also write the table as JSON.", callback=checked_output)
    ] = None,
) -> None:
    """Compare predicted with retrained models on the store's held-out test rows."""
    from mp_ray.predictor.evaluation import evaluate_on_store, format_table
    from mp_ray.store import StoreMismatchError, StoreNotFoundError

    experiment = load_config(config, {})
    try:
        table = evaluate_on_store(experiment, labelled_predictors(predictor))
    except (ValueError, FileNotFoundError, StoreNotFoundError, StoreMismatchError) as err:
        fail(str(err))
    print(format_table(table))
    if output:
        write_json(output, table)


@app.command()
def inspect(
    store: Annotated[str, typer.Argument(help="Store URI: a path or s3://bucket/key.zarr.")],
    endpoint_url: StorageOption = None,
    parquet: Annotated[
        str | None, typer.Option(help="Export the scalar columns to this Parquet file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    resolved_config: Annotated[
        Path | None,
        typer.Option(
            help="Write the config the store's latest retraining ran with to this YAML file "
            "(`mp-ray retrain -c` on it retrains the same store).",
            callback=checked_output,
        ),
    ] = None,
) -> None:
    """Summarise a store: counts, shapes, the experiment identity it was made with (dataset
    fingerprint, learner, sampler, seed), metric statistics, and the artifacts saved in it
    (datamodels, distilled datamodel, data values): complete or not, with key facts."""
    from mp_ray.config import config_yaml, parse_experiment
    from mp_ray.store import ExperimentStore, export_parquet, format_artifacts, format_summary
    from mp_ray.store import summarize as summarize_store

    options = storage_options(endpoint_url)
    handle = ExperimentStore.open(store, options)
    summary = {**summarize_store(handle), "artifacts": handle.artifacts.list()}
    if as_json:
        print(json.dumps(json_ready(summary), indent=2, allow_nan=False))
    else:
        print(format_summary(summary) + "\n" + format_artifacts(summary["artifacts"]))
    if parquet:
        count = export_parquet(handle, parquet, options)
        console.print(f"wrote {count} rows to {parquet}")
    if resolved_config:
        recorded = handle.recorded_config()
        if recorded is None:
            fail(f"store {store} records no config: it was retrained before configs were kept")
        with atomic_output(resolved_config) as partial:
            partial.write_text(config_yaml(parse_experiment(recorded, f"store {store}")))
        console.print(f"wrote the store's config to {resolved_config}")


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Argument(help="Experiment YAML file.")]) -> None:
    """Validate an experiment config and print it with every default filled in."""
    experiment = load_config(config, {})
    print(json.dumps(experiment.model_dump(mode="json"), indent=2))


if __name__ == "__main__":
    app(prog_name="mp-ray")
