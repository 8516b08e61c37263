"""The application commands of ``mp-ray``: each answers from a fitted predictor when
``--predictor`` is given, else by retraining the learner (exact, slower). Each builds the
request of its options, asks the application service (:mod:`mp_ray.apps.service`) and
prints, plots and writes its answer. Beside each output (a file ``X.ext``: ``X.config.yaml``;
a folder of plots: its ``resolved_config.yaml``) goes the config the command ran with, whole,
headed by the command's request: ``-c`` on it, with the same options, answers the same."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import numpy as np
import typer
from pydantic import BaseModel, ValidationError

from mp_ray.cli_support import (
    ConfigOption,
    ProgressOption,
    app,
    checked_output,
    checked_output_folder,
    console,
    fail,
    load_config,
    option_check,
)
from mp_ray.config import RESOLVED_CONFIG
from mp_ray.defaults import MIN_STDERR_SAMPLES
from mp_ray.indices import parse_index_list
from mp_ray.outputs import atomic_output, write_json
from mp_ray.progress import Progress
from mp_ray.serve.ingress import Ingress

if TYPE_CHECKING:
    from mp_ray.apps.fidelity import Fidelity
    from mp_ray.apps.service import AppService

PredictorOption = Annotated[
    str | None,
    typer.Option(help="Predictor checkpoint directory (or s3://); without it, retrain."),
]
SeedOption = Annotated[int, typer.Option(min=0, help="Root seed of the sampled subsets.")]
CheckOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        show_default=False,
        help="With --predictor: models retrained to check the answer against retraining on "
        "cases of its own kind, reported beside it (default 72; 0: no check).",
    ),
]
# Request fields whose option is not named ``--field-with-dashes``.
OPTIONS = {"targets": "--target"}
Request = TypeVar("Request", bound=BaseModel)
# What an output's help adds: where the config the command ran with is written.
BESIDE = "The config it ran with is written beside it, as NAME.config.yaml for NAME.ext."
# Request fields of feature rows (read from a file): left out of a written config's header.
ROWS = {"inputs", "labels", "predict_on"}


def _service(config: Path, predictor: str | None) -> AppService:
    from mp_ray.apps.context import app_context
    from mp_ray.apps.service import AppService
    from mp_ray.store import StoreMismatchError

    experiment = load_config(config, {})
    try:
        return AppService(app_context(experiment, predictor, experiment.store.storage_options))
    except (ValueError, FileNotFoundError, StoreMismatchError) as err:
        fail(str(err))


def _config_beside(output: Path) -> Path:
    """Where the config a command ran with goes beside ``output``: ``X.config.yaml`` for a
    file ``X.ext``, ``resolved_config.yaml`` inside a folder."""
    if output.is_dir():
        return output / RESOLVED_CONFIG
    return output.with_name(f"{output.stem}.config.yaml")


def _write_config(
    service: AppService,
    predictor: str | None,
    command: str,
    request: BaseModel,
    *outputs: Path | None,
) -> None:
    """Write the config ``command`` ran with (paths made absolute) beside each of its
    ``outputs`` (None: not asked for), headed by its predictor and the request it
    answered (the fields set otherwise than by default)."""
    from mp_ray.config import config_yaml

    asked = request.model_dump_json(exclude_defaults=True, exclude=ROWS)
    source = f"--predictor {predictor}" if predictor else "(by retraining)"
    header = f"# mp-ray {command} {source}; request {asked}\n"
    text = header + config_yaml(service.context.config.with_absolute_paths())
    for output in outputs:
        if output is not None:
            path = _config_beside(output)
            with atomic_output(path) as partial:
                partial.write_text(text)
            console.print(f"config written to {path}")


def _option(field: str) -> str:
    """The command-line option of a request field."""
    return OPTIONS.get(field, "--" + field.replace("_", "-"))


def _request(kind: type[Request], **options: Any) -> Request:
    """The request of a command's options; one the service would refuse (a value out of its
    range, a check too small for its kind) fails naming the option, before any work."""
    try:
        return kind(**options)
    except ValidationError as err:
        error = err.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        fail(f"{_option(str(error['loc'][0]))}: {message}" if error["loc"] else message)


@contextmanager
def _refusals() -> Iterator[None]:
    """Fail with the message of a request the service refuses, its field named as the
    option."""
    from mp_ray.apps.service import RequestError

    try:
        yield
    except RequestError as err:
        named = err.message.startswith(err.field)
        fail(_option(err.field) + err.message[len(err.field) :] if named else err.message)


def _answered_by(service: AppService) -> str:
    source = service.context.source
    return f"models from the {'predictor' if source == 'predictor' else 'learner (retrained)'}"


def _utility_unit(metric: str, n_classes: int) -> str:
    """What a change of the validation utility ``metric`` is measured in."""
    if metric == "accuracy":
        what = "R²" if n_classes == 1 else "accuracy (share correct)"
        return f"change of the validation {what} a point brings"
    loss = "squared error" if n_classes == 1 else "cross-entropy, nats"
    return f"change of minus the mean validation loss ({loss}) a point brings"


def _truncation_line(params: dict) -> str:
    """How much a truncated Monte-Carlo valuation cut, from its result's ``params``."""
    rule = (
        f"rule: within {params['truncation_rtol']:.0%} of the utility range "
        f"|U(D) − U(∅)| = {params['utility_range']:.3g} of U(D)"
    )
    if params["mean_truncation_prefix"] is None:
        return f"truncation: no permutation truncated ({rule})"
    return (
        f"truncation: {params['truncated_share']:.0%} of permutations cut, after "
        f"{params['mean_truncation_prefix']:.0%} of the points on average ({rule})"
    )


def _report(fidelity: Fidelity | None) -> None:
    """Print a fidelity check's lines beside the answer (standard output), if one ran."""
    if fidelity is None:
        return
    print(fidelity.line())
    for note in fidelity.notes:
        print(f"  {note}")


@app.command()
def value(
    config: ConfigOption,
    predictor: PredictorOption = None,
    method: Annotated[
        Literal["tmc", "beta", "banzhaf", "loo"], typer.Option(help="Valuation method.")
    ] = "tmc",
    metric: Annotated[
        Literal["accuracy", "neg_loss"], typer.Option(help="Utility on the validation split.")
    ] = "neg_loss",
    max_samples: Annotated[
        int, typer.Option(min=1, help="Budget: permutations (tmc, beta) or subsets (banzhaf).")
    ] = 500,
    stderr_tol: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Also stop once every standard error is at most this (after "
            f"{MIN_STDERR_SAMPLES} samples).",
        ),
    ] = None,
    truncation: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="tmc: stop a permutation once its prefix is within this share of the utility "
            "range |U(D) − U(∅)| of U(D) (0 disables).",
        ),
    ] = 0.01,
    alpha: Annotated[float, typer.Option(help="beta: the Beta(α, β) weights' α.")] = 16.0,
    beta: Annotated[float, typer.Option(help="beta: the Beta(α, β) weights' β.")] = 1.0,
    retrain_below: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="tmc, beta from a predictor: retrain permutation prefixes of fewer points "
            "than this (default: a fifth of the points for convex learners; 0: never).",
        ),
    ] = None,
    seed: SeedOption = 0,
    check: CheckOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help=f"Write the values to this Parquet file. {BESIDE}", callback=checked_output
        ),
    ] = None,
    store_name: Annotated[
        str | None, typer.Option(help="Also save the values in the store under this name.")
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the value and removal-curve PNGs (and resolved_config.yaml, "
            "the config it ran with).",
            callback=checked_output_folder,
        ),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Value every training point; report noisy-label detection and removal curves."""
    from mp_ray.apps.plots import removal_curves, value_distribution
    from mp_ray.apps.service import ValueRequest

    request = _request(
        ValueRequest,
        method=method,
        metric=metric,
        max_samples=max_samples,
        stderr_tol=stderr_tol,
        truncation=truncation,
        alpha=alpha,
        beta=beta,
        retrain_below=retrain_below,
        seed=seed,
        check=check,
    )
    service = _service(config, predictor)
    data = service.context.dataset
    console.print(
        f"valuing {data.n_train} points of {data.name} by {method}, {_answered_by(service)}"
    )
    below = service.retrained_prefixes(request)
    if below:
        console.print(f"prefixes of fewer than {below} points retrained (--retrain-below)")
    if method != "loo":
        console.print(f"stopping: {request.stopping()}")
    unit = "subsets" if method == "banzhaf" else "permutations"
    # Leave-one-out is one batch of models: nothing to show until it ends.
    with Progress("value", max_samples, unit, enabled=progress and method != "loo") as bar:

        def advance(samples: int, total: int | None, models: int) -> None:
            bar.update(samples, f"{models:,} models", total=total)

        with _refusals():
            answer = service.value(request, advance, store_name)
    result = answer.result
    console.print(
        f"{result.n_evaluations:,} models in {result.seconds:.1f} s; "
        f"converged: {result.converged}; largest standard error {result.stderr.max():.3g}"
    )
    if result.params.get("truncation_rtol"):
        print(_truncation_line(result.params))
    order = result.ranking()
    print(f"values: {_utility_unit(metric, data.n_classes)}; stderr: Monte-Carlo standard error")
    print(f"{'rank':>5} {'index':>6} {'value':>12} {'stderr':>10}")
    for rank in [*range(5), *range(len(order) - 5, len(order))]:
        i = order[rank]
        print(f"{rank + 1:>5} {i:>6} {result.values[i]:>12.5f} {result.stderr[i]:>10.5f}")
    _report(answer.fidelity)
    if answer.noisy_labels is not None:
        detection = answer.noisy_labels
        print(
            f"noisy labels ({detection['flipped']} flipped): F1 {detection['f1']:.3f}, "
            f"AUC {detection['auc']:.3f}"
        )
    curves = answer.curves
    shares = " ".join(f"{100 * f:>5.0f}%" for f in curves[0].fractions)
    print("retrained test accuracy after removing a share of the points:")
    print(f"  {'share removed':<28}{shares}")
    for curve in curves:
        steps = " ".join(f"{u:>6.3f}" for u in curve.utilities)
        print(f"  {curve.order + '-value points first':<28}{steps}")
    if output:
        result.to_parquet(str(output))
        console.print(f"values written to {output}")
    if answer.saved_in is not None:
        console.print(f"values saved in {answer.saved_in} under valuation/{store_name}")
    if plots:
        value_distribution(result.values, plots / "values.png", data.flipped, result.method)
        removal_curves({result.method: curves}, plots / "removal.png", "test accuracy")
        console.print(f"plots written to {plots}/values.png and {plots}/removal.png")
    _write_config(service, predictor, "value", request, output, plots)


@app.command()
def select(
    config: ConfigOption,
    size: Annotated[int, typer.Option(min=1, help="How many training points to keep.")],
    predictor: PredictorOption = None,
    method: Annotated[
        Literal["greedy", "relaxed"],
        typer.Option(help="greedy forward selection, or the predictor's continuous relaxation."),
    ] = "greedy",
    objective: Annotated[
        Literal["neg_loss", "accuracy"],
        typer.Option(
            help="greedy: what it maximises on the validation split — minus the log loss "
            "(moves with every point), or the accuracy (flat and tied: overfits)."
        ),
    ] = "neg_loss",
    holdout: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="greedy: share of the validation split held out to choose how many greedy "
            "points to keep (the rest random); 0: greedy on the whole split.",
        ),
    ] = 0.0,
    values: Annotated[
        Path | None, typer.Option(help="Parquet values (mp-ray value) for a top-k baseline.")
    ] = None,
    seed: SeedOption = 0,
    check: CheckOption = None,
    output: Annotated[
        Path | None,
        typer.Option(help=f"Write the selection as JSON. {BESIDE}", callback=checked_output),
    ] = None,
) -> None:
    """Choose a subset of a given size on the validation split; retrain it and compare its
    test accuracy with random subsets of the same size."""
    from mp_ray.apps.service import SelectRequest
    from mp_ray.apps.valuation import ValuationResult

    request = _request(
        SelectRequest,
        size=size,
        method=method,
        objective=objective,
        holdout=holdout,
        seed=seed,
        check=check,
    )
    service = _service(config, predictor)
    try:
        baseline = ValuationResult.from_parquet(str(values)).values if values else None
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    with _refusals():
        answer = service.select(request, baseline)
    result = answer.result
    console.print(
        f"selected {size} points by {method} in {result.seconds:.1f} s, {_answered_by(service)}"
    )
    if result.stop is not None:
        filled = size - int(result.stop) - (size - len(result.history))
        print(
            f"held-out rule: kept {result.stop} greedy points, {filled} drawn at random; "
            f"validation accuracy on the held-out part {result.utility:.4f}"
        )
    print("retrained test accuracy (share correct) of subsets of the same size:")
    for name, score in answer.scores.items():
        print(f"  {name:<24} {score:.4f}")
    _report(answer.fidelity)
    if output:
        payload = {
            "method": method,
            "objective": objective if method == "greedy" else None,
            "holdout": holdout if method == "greedy" else None,
            "greedy_points_kept": result.stop,
            "indices": result.indices.tolist(),
            "test_accuracy": answer.scores,
            "fidelity": answer.fidelity.to_json() if answer.fidelity else None,
        }
        write_json(output, payload)
    _write_config(service, predictor, "select", request, output)


@app.command()
def memorization(
    config: ConfigOption,
    predictor: PredictorOption = None,
    subsets: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sampled subsets (models); default 20,000 from a predictor (about a second), "
            "2,000 by retraining.",
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Probability of keeping each point.")
    ] = 0.7,
    top: Annotated[
        int, typer.Option(min=0, help="How many of the most memorised points to print.")
    ] = 10,
    score: Annotated[
        Literal["probability", "correct"],
        typer.Option(
            help="probability: of each point's own label (keeps small effects); correct: 0/1 "
            "correctness (Feldman's definition)."
        ),
    ] = "probability",
    seed: SeedOption = 0,
    check: CheckOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help=f"Write memorisation scores to this Parquet file. {BESIDE}",
            callback=checked_output,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help=f"Write the memorisation histogram PNG here. {BESIDE}", callback=checked_output
        ),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Memorisation of each training point and its influence on the test points."""
    import pyarrow.parquet as pq

    from mp_ray.apps.plots import value_distribution
    from mp_ray.apps.service import MemorizationRequest

    request = _request(
        MemorizationRequest,
        subsets=subsets,
        alpha=alpha,
        score=score,
        seed=seed,
        check=check,
    )
    service = _service(config, predictor)
    subsets = service.memorization_subsets(request)
    data = service.context.dataset
    with Progress("memorization", subsets, "models", enabled=progress) as bar, _refusals():
        answer = service.memorization(request, bar.advance)
    result, fidelity = answer.result, answer.fidelity
    console.print(f"{subsets} models in {result.seconds:.1f} s, {_answered_by(service)}")
    what = "own-label probability" if score == "probability" else "0/1 correctness"
    print(
        f"memorisation: mean {what} of a point when trained on it minus when not; top "
        f"influence: the same on the test point it moves most"
    )
    print(f"{'index':>6} {'label':>6} {'memorisation':>13} {'stderr':>8} {'top influence':>14}")
    for i in np.argsort(-result.memorization, kind="stable")[:top]:
        j = int(np.argmax(result.influence[i]))
        print(
            f"{i:>6} {data.y_train[i]:>6} {result.memorization[i]:>13.3f} "
            f"{result.memorization_stderr[i]:>8.3f} {result.influence[i, j]:>8.3f} (test {j})"
        )
    _report(fidelity)
    if output:
        with atomic_output(output) as partial:
            pq.write_table(answer.to_arrow(), partial)
    if plot:
        title = f"Memorisation over {subsets} subsets (α = {alpha})"
        value_distribution(result.memorization, plot, data.flipped, title, "memorisation")
        console.print(f"histogram written to {plot}")
    _write_config(service, predictor, "memorization", request, output, plot)


@app.command()
def calibrate(
    config: ConfigOption,
    predictor: PredictorOption = None,
    models: Annotated[int, typer.Option(min=1, help="Ensemble size.")] = 100,
    fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Each member's share of the training set.")
    ] = 0.8,
    seed: SeedOption = 0,
    check: CheckOption = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help=f"Write the reliability diagram PNG here. {BESIDE}", callback=checked_output
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help=f"Write the table as JSON. {BESIDE}", callback=checked_output),
    ] = None,
) -> None:
    """Calibration of a subsampled ensemble against θ(D) and temperature scaling."""
    from mp_ray.apps.plots import reliability_diagram
    from mp_ray.apps.service import CalibrateRequest

    request = _request(CalibrateRequest, models=models, fraction=fraction, seed=seed, check=check)
    service = _service(config, predictor)
    with _refusals():
        answer = service.calibrate(request)
    result = answer.result
    console.print(f"calibrated in {result.seconds:.1f} s, {_answered_by(service)}")
    print(f"{'method':<40}{'ECE':>8}{'NLL':>8}{'accuracy':>10}")
    for name, row in result.rows.items():
        print(f"{name:<40}{row['ece']:>8.4f}{row['nll']:>8.4f}{row['accuracy']:>10.4f}")
    _report(answer.fidelity)
    if plot:
        reliability_diagram(result.diagrams, plot)
        console.print(f"reliability diagram written to {plot}")
    if output:
        write_json(
            output,
            {
                "methods": result.rows,
                "models": result.models,
                "fidelity": answer.fidelity.to_json() if answer.fidelity else None,
            },
        )
    _write_config(service, predictor, "calibrate", request, plot, output)


@app.command()
def counterfactual(
    config: ConfigOption,
    target: Annotated[list[int], typer.Option(help="Test-split index of a target (repeat).")],
    remove: Annotated[
        str,
        typer.Option(
            help="Training indices to remove, comma-separated.",
            callback=option_check(parse_index_list),
        ),
    ],
    predictor: PredictorOption = None,
    check: CheckOption = None,
    seed: SeedOption = 0,
) -> None:
    """How the targets' predictions change when the given training points are removed.

    The margin is the correct-class margin: the log-odds of the target's label for a binary
    model, the label's logit minus the largest other logit for several classes (−|error|
    for regression); a prediction flips when the predicted class changes."""
    from mp_ray.apps.service import CounterfactualRequest

    removed = parse_index_list(remove, "--remove")
    request = _request(
        CounterfactualRequest, remove=removed, targets=target, check=check, seed=seed
    )
    service = _service(config, predictor)
    with _refusals():
        answer = service.counterfactual(request)
    result, exact = answer.result, answer.retrained_change
    console.print(f"removing {len(answer.removed)} points, {_answered_by(service)}")
    kind = "probability" if "probability" in result.before else "margin"
    header = f"{'target':>7} {'label':>6} {kind + ' before':>18} {'after':>8} {'margin change':>14}"
    print(header + (f" {'retrained change':>17}" if exact is not None else ""))
    for k, t in enumerate(answer.targets if answer.targets is not None else []):
        line = (
            f"{t:>7} {answer.labels[k]:>6} {result.before[kind][k]:>18.4f} "
            f"{result.after[kind][0, k]:>8.4f} {result.change('margin')[0, k]:>14.4f}"
        )
        if exact is not None:
            line += f" {exact[k]:>17.4f}"
        print(line + ("  (prediction flips)" if result.flipped[0, k] else ""))
    print(
        "margin: log-odds of the target's label (several classes: its logit minus the largest "
        "other); a prediction flips when the predicted class changes"
    )
    _report(answer.fidelity)


@app.command()
def add(
    config: ConfigOption,
    predictor: Annotated[str, typer.Option(help="Predictor checkpoint directory (or s3://).")],
    points: Annotated[
        str | None,
        typer.Option(
            help="New points in the dataset's raw units: Parquet/CSV with its feature columns "
            "and label column, .npz (X, y) or .npy with --labels; local or s3://."
        ),
    ] = None,
    labels: Annotated[str | None, typer.Option(help="Labels .npy of an .npy --points.")] = None,
    from_test: Annotated[
        int | None,
        typer.Option(min=1, help="Add the first K test points (scored on the rest)."),
    ] = None,
    check: Annotated[bool, typer.Option(help="Also retrain, and compare with it.")] = False,
    output: Annotated[
        Path | None,
        typer.Option(help=f"Write the results as JSON. {BESIDE}", callback=checked_output),
    ] = None,
) -> None:
    """What the model becomes if new points are added to the training set: ModelPred
    against influence functions (and retraining with --check), on the test split."""
    from mp_ray.apps.service import AddRequest
    from mp_ray.data import read_points
    from mp_ray.errors import InputError

    if points is None and from_test is None:
        raise InputError("give the new points: --points FILE and/or --from-test K")
    if points and points.lower().endswith(".npy") and not labels:
        raise InputError(f"--points {points} is an .npy feature file: give --labels FILE")
    service = _service(config, predictor)
    data = service.context.dataset
    rows: dict[str, Any] = {}
    if points:
        X_new, y_new = read_points(data, service.context.config.dataset, points, labels)
        rows = {"inputs": X_new.tolist(), "labels": y_new.tolist()}
    request = _request(AddRequest, **rows, from_test=from_test, check=check)
    with _refusals():
        answer = service.add(request)
    console.print(
        f"adding {answer.n_added} points to the {data.n_train} training points of {data.name}; "
        f"scored on {answer.n_scored} test points"
    )
    score = "accuracy" if data.n_classes > 1 else "R²"
    print(
        f"{'method':<22}{score + ' before':>16}{'after':>8}{'change':>9}{'loss change':>13}"
        f"{'changed':>9}{'rel. error':>12}{'seconds':>9}"
    )
    summary = answer.addition.summary()
    for name, row in summary.items():
        error = "–" if row["rel_error"] is None else f"{row['rel_error']:.4f}"
        print(
            f"{name:<22}{row['accuracy_before']:>16.4f}{row['accuracy_after']:>8.4f}"
            f"{row['accuracy_change']:>+9.4f}{row['loss_change']:>+13.4f}"
            f"{row['predictions_changed']:>9.1%}{error:>12}{row['seconds']:>9.3f}"
        )
    if output:
        write_json(
            output,
            {
                name: {**summary[name], "params_after": outcome.after[0].tolist()}
                for name, outcome in answer.addition.outcomes.items()
            },
        )
    _write_config(service, predictor, "add", request, output)


@app.command()
def serve(
    config: ConfigOption,
    predictor: Annotated[str, typer.Option(help="Predictor checkpoint directory (or s3://).")],
    host: Annotated[
        str | None,
        typer.Option(help="HTTP host (overrides serve.host, default 127.0.0.1: loopback)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="HTTP port (overrides serve.port, default 8000)."),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(min=1, help="Model replicas (overrides serve.replicas, default 1)."),
    ] = None,
    replica_cpus: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Logical CPUs each model replica reserves (overrides serve.replica_cpus, "
            "default 1).",
        ),
    ] = None,
    batching: Annotated[
        bool | None,
        typer.Option(
            "--batching/--no-batching",
            help="Share predictor calls (@serve.batch; overrides serve.batching, default on).",
        ),
    ] = None,
    block: Annotated[bool, typer.Option(help="Keep serving until Ctrl-C or SIGTERM.")] = True,
    insecure: Annotated[
        bool,
        typer.Option(help="Serve open endpoints when MP_RAY_API_KEY is not set (else refused)."),
    ] = False,
    ingress: Annotated[
        Ingress | None,
        typer.Option(
            help="An embedded Ray's HTTP ingress: HAProxy in front of the replicas with gRPC "
            "between deployments (Ray's high-throughput mode), or Serve's Python proxy. A "
            "cluster keeps its own setting (overrides serve.ingress, default haproxy)."
        ),
    ] = None,
) -> None:
    """Serve the predictor and the applications over HTTP with Ray Serve.

    Starts an embedded Ray on this machine, or deploys to the cluster at RAY_ADDRESS. Needs
    MP_RAY_API_KEY in the environment (every request then needs it in an X-API-Key header)
    unless --insecure. The config's serve section sets the rest (max_batch_size,
    batch_wait_ms)."""
    import os

    from mp_ray.serve.start import deploy, prepare, serve_until_stopped

    flags = {
        "host": host,
        "port": port,
        "replicas": replicas,
        "replica_cpus": replica_cpus,
        "batching": batching,
        "ingress": ingress,
    }
    settings = load_config(config, {f"serve.{key}": value for key, value in flags.items()}).serve
    application = prepare(config, predictor, settings, insecure)
    from mp_ray.serve.app import API_KEY_ENV  # imports Serve: after prepare chose the ingress

    if not os.environ.get(API_KEY_ENV):
        console.print(
            f"[bold yellow]warning:[/] {API_KEY_ENV} is not set (--insecure): every endpoint "
            f"is open to anyone who can reach {settings.host}:{settings.port}",
            markup=True,
            highlight=False,
        )
    deploy(application, settings)
    host, port = settings.host, settings.port
    console.print(f"serving on http://{host}:{port}/v1 (OpenAPI at http://{host}:{port}/docs)")
    if block:
        serve_until_stopped()
        console.print("stopped")
