"""The application commands of ``mp-ray``: each answers from a fitted predictor when
``--predictor`` is given, else by retraining the learner (exact, slower)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import typer

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
from mp_ray.indices import checked_points, parse_index_list
from mp_ray.outputs import atomic_output, write_json
from mp_ray.progress import Progress
from mp_ray.serve.ingress import Ingress

if TYPE_CHECKING:
    from mp_ray.apps.context import AppContext
    from mp_ray.apps.fidelity import Fidelity

PredictorOption = Annotated[
    str | None,
    typer.Option(help="Predictor checkpoint directory (or s3://); without it, retrain."),
]
MIN_STDERR_SAMPLES = 20  # samples before --stderr-tol may stop a run
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


def _context(config: Path, predictor: str | None) -> AppContext:
    from mp_ray.apps.context import app_context
    from mp_ray.store import StoreMismatchError

    experiment = load_config(config, {})
    try:
        return app_context(experiment, predictor, experiment.store.storage_options)
    except (ValueError, FileNotFoundError, StoreMismatchError) as err:
        fail(str(err))


def _answered_by(context: AppContext) -> str:
    return (
        f"models from the {'predictor' if context.source == 'predictor' else 'learner (retrained)'}"
    )


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


def _budget(check: int | None) -> int:
    """Retrained models of a fidelity check: ``--check``, else the checks' default."""
    from mp_ray.apps.fidelity import DEFAULT_BUDGET

    return DEFAULT_BUDGET if check is None else check


def _checking(context: AppContext, budget: int) -> bool:
    """Whether to check the answer against retraining: a predictor answered, and a budget."""
    return context.source == "predictor" and budget > 0


def _report(fidelity: Fidelity) -> None:
    """Print a fidelity check's lines beside the answer (standard output)."""
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
    seed: SeedOption = 0,
    check: CheckOption = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Write the values to this Parquet file.", callback=checked_output),
    ] = None,
    store_name: Annotated[
        str | None, typer.Option(help="Also save the values in the store under this name.")
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the value and removal-curve PNGs.",
            callback=checked_output_folder,
        ),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Value every training point; report noisy-label detection and removal curves."""
    from mp_ray.apps import Utility
    from mp_ray.apps.checks import check_budget, value_check
    from mp_ray.apps.plots import removal_curves, value_distribution
    from mp_ray.apps.valuation import (
        AbsoluteStandardError,
        MaxSamples,
        MinSamples,
        NoTruncation,
        RelativeTruncation,
        SamplingState,
        StoppingCriterion,
        banzhaf_msr,
        beta_shapley,
        leave_one_out,
        tmc_shapley,
    )
    from mp_ray.apps.valuation.tasks import noisy_label_detection, removal_curve
    from mp_ray.store import ExperimentStore
    from mp_ray.store.identity import MODELS_UNREAD

    budget = _budget(check)
    try:
        check_budget(method, budget)
    except ValueError as err:
        fail(str(err))
    context = _context(config, predictor)
    data = context.dataset
    # The values are saved in the store only if it was made with this config's learner.
    store = (
        ExperimentStore.open_for(context.config, data.fingerprint, MODELS_UNREAD, read_only=False)
        if store_name
        else None
    )
    utility = Utility(context.models, data.X_val, data.y_val, metric)
    # The budget, or the budget and, after MIN_STDERR_SAMPLES, the standard errors.
    stopping: StoppingCriterion = MaxSamples(max_samples)
    try:
        if stderr_tol is not None:
            guarded = MinSamples(MIN_STDERR_SAMPLES) & AbsoluteStandardError(stderr_tol)
            stopping = stopping | guarded
    except ValueError as err:
        fail(f"--stderr-tol: {err}")
    policy = RelativeTruncation(truncation) if truncation else NoTruncation()
    console.print(
        f"valuing {data.n_train} points of {data.name} by {method}, {_answered_by(context)}"
    )
    if method != "loo":
        console.print(f"stopping: {stopping}")
    unit = "subsets" if method == "banzhaf" else "permutations"
    # Leave-one-out is one batch of models: nothing to show until it ends.
    with Progress("value", max_samples, unit, enabled=progress and method != "loo") as bar:

        def advance(state: SamplingState) -> None:
            # The samples at which the criterion would be met, from its completion.
            completion = stopping.completion(state)
            total = round(state.samples / completion) if completion > 0 else None
            bar.update(state.samples, f"{utility.evaluations:,} models", total=total)

        if method == "loo":
            result = leave_one_out(utility)
        elif method == "tmc":
            result = tmc_shapley(utility, stopping, seed, policy, on_progress=advance)
        elif method == "beta":
            result = beta_shapley(utility, stopping, alpha, beta, seed, on_progress=advance)
        else:
            result = banzhaf_msr(utility, stopping, seed, on_progress=advance)
    result.params.update(dataset_fingerprint=data.fingerprint, models=context.source)
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
    if _checking(context, budget):
        fidelity = value_check(
            context.models,
            context.retrained,
            utility,
            method,
            budget,
            seed,
            alpha,
            beta,
            policy if method == "tmc" else NoTruncation(),
        )
        _report(fidelity)
        result.params["fidelity"] = fidelity.to_json()
    if len(data.flipped):
        detection = noisy_label_detection(result.values, data.flipped)
        print(
            f"noisy labels ({detection['flipped']} flipped): F1 {detection['f1']:.3f}, "
            f"AUC {detection['auc']:.3f}"
        )
    test_utility = Utility(context.retrained, data.X_test, data.y_test, "accuracy")
    curves = [removal_curve(test_utility, result.values, order) for order in ("high", "low")]
    shares = " ".join(f"{100 * f:>5.0f}%" for f in curves[0].fractions)
    print("retrained test accuracy after removing a share of the points:")
    print(f"  {'share removed':<28}{shares}")
    for curve in curves:
        steps = " ".join(f"{u:>6.3f}" for u in curve.utilities)
        print(f"  {curve.order + '-value points first':<28}{steps}")
    if output:
        result.to_parquet(str(output))
        console.print(f"values written to {output}")
    if store is not None:
        result.to_store(store, store_name)
        console.print(f"values saved in {store.uri} under valuation/{store_name}")
    if plots:
        value_distribution(result.values, plots / "values.png", data.flipped, result.method)
        removal_curves({result.method: curves}, plots / "removal.png", "test accuracy")
        console.print(f"plots written to {plots}/values.png and {plots}/removal.png")


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
        Path | None, typer.Option(help="Write the selection as JSON.", callback=checked_output)
    ] = None,
) -> None:
    """Choose a subset of a given size on the validation split; retrain it and compare its
    test accuracy with random subsets of the same size."""
    from mp_ray.apps import PredictedModels, Utility
    from mp_ray.apps.checks import check_budget, selection_check
    from mp_ray.apps.selection import compare_selections, greedy_selection, relaxed_selection
    from mp_ray.apps.valuation import ValuationResult

    budget = _budget(check)
    context = _context(config, predictor)
    data = context.dataset
    fidelity = None
    try:
        check_budget("selection", budget)
        if method == "relaxed":
            if not isinstance(context.models, PredictedModels):
                fail("--method relaxed needs --predictor (it differentiates through it)")
            result = relaxed_selection(context.models, data.X_val, data.y_val, size, seed=seed)
        else:
            utility = Utility(context.models, data.X_val, data.y_val, "accuracy")
            result = greedy_selection(
                utility, size, seed=seed, objective=objective, holdout=holdout
            )
        baseline = ValuationResult.from_parquet(str(values)).values if values else None
        test_utility = Utility(context.retrained, data.X_test, data.y_test, "accuracy")
        scores = compare_selections(test_utility, {method: result.mask}, size, baseline, seed=seed)
        if _checking(context, budget):
            fidelity = selection_check(
                context.models,
                context.retrained,
                data.X_val,
                data.y_val,
                result.mask,
                "neg_loss",
                budget,
                seed,
            )
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    console.print(
        f"selected {size} points by {method} in {result.seconds:.1f} s, {_answered_by(context)}"
    )
    if result.stop is not None:
        filled = size - int(result.stop) - (size - len(result.history))
        print(
            f"held-out rule: kept {result.stop} greedy points, {filled} drawn at random; "
            f"validation accuracy on the held-out part {result.utility:.4f}"
        )
    print("retrained test accuracy (share correct) of subsets of the same size:")
    for name, score in scores.items():
        print(f"  {name:<24} {score:.4f}")
    if fidelity is not None:
        _report(fidelity)
    if output:
        payload = {
            "method": method,
            "objective": objective if method == "greedy" else None,
            "holdout": holdout if method == "greedy" else None,
            "greedy_points_kept": result.stop,
            "indices": result.indices.tolist(),
            "test_accuracy": scores,
            "fidelity": fidelity.to_json() if fidelity else None,
        }
        write_json(output, payload)


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
            help="Write memorisation scores to this Parquet file.", callback=checked_output
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write the memorisation histogram PNG here.", callback=checked_output),
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Memorisation of each training point and its influence on the test points."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mp_ray.apps.checks import check_budget, memorization_check
    from mp_ray.apps.memorization import DEFAULT_SUBSETS
    from mp_ray.apps.memorization import memorization as estimate
    from mp_ray.apps.plots import value_distribution

    budget = _budget(check)
    context = _context(config, predictor)
    subsets = subsets or DEFAULT_SUBSETS[context.source]
    data = context.dataset
    fidelity = None
    try:
        check_budget("memorization", budget)
        with Progress("memorization", subsets, "models", enabled=progress) as bar:
            result = estimate(
                context.models,
                data.X_test,
                data.y_test,
                subsets,
                alpha,
                seed,
                on_progress=bar.advance,
                score=score,
            )
        if _checking(context, budget):
            fidelity = memorization_check(context.models, context.retrained, alpha, budget, seed)
    except ValueError as err:
        fail(str(err))
    console.print(f"{subsets} models in {result.seconds:.1f} s, {_answered_by(context)}")
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
    if fidelity is not None:
        _report(fidelity)
    if output:
        table = pa.table(
            {
                "index": np.arange(data.n_train),
                "memorization": result.memorization,
                "stderr": result.memorization_stderr,
                "max_influence": result.influence.max(axis=1),
            }
        )
        metadata = {"score": score, "subsets": str(subsets), "alpha": str(alpha)}
        if fidelity is not None:
            metadata["fidelity"] = json.dumps(fidelity.to_json())
        table = table.replace_schema_metadata({f"mp_ray.{k}": v for k, v in metadata.items()})
        with atomic_output(output) as partial:
            pq.write_table(table, partial)
    if plot:
        title = f"Memorisation over {subsets} subsets (α = {alpha})"
        value_distribution(result.memorization, plot, data.flipped, title, "memorisation")
        console.print(f"histogram written to {plot}")


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
        typer.Option(help="Write the reliability diagram PNG here.", callback=checked_output),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write the table as JSON.", callback=checked_output)
    ] = None,
) -> None:
    """Calibration of a subsampled ensemble against θ(D) and temperature scaling."""
    from mp_ray.apps.calibration import calibrate as run
    from mp_ray.apps.checks import calibration_check, check_budget
    from mp_ray.apps.plots import reliability_diagram

    context = _context(config, predictor)
    data = context.dataset
    fidelity, budget = None, _budget(check)
    try:
        check_budget("calibration", min(budget, models))
        result = run(
            context.models, data.X_val, data.y_val, data.X_test, data.y_test, models, fraction, seed
        )
        if _checking(context, budget):
            fidelity = calibration_check(
                context.models,
                context.retrained,
                data.X_test,
                data.y_test,
                fraction,
                models,
                budget,
                seed,
            )
    except ValueError as err:
        fail(str(err))
    console.print(f"calibrated in {result.seconds:.1f} s, {_answered_by(context)}")
    print(f"{'method':<40}{'ECE':>8}{'NLL':>8}{'accuracy':>10}")
    for name, row in result.rows.items():
        print(f"{name:<40}{row['ece']:>8.4f}{row['nll']:>8.4f}{row['accuracy']:>10.4f}")
    if fidelity is not None:
        _report(fidelity)
    if plot:
        reliability_diagram(result.diagrams, plot)
        console.print(f"reliability diagram written to {plot}")
    if output:
        write_json(
            output,
            {
                "methods": result.rows,
                "models": result.models,
                "fidelity": fidelity.to_json() if fidelity else None,
            },
        )


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
    from mp_ray.apps.checks import check_budget, counterfactual_check
    from mp_ray.apps.counterfactual import counterfactual_removal

    budget = _budget(check)
    try:
        check_budget("counterfactual", budget)
    except ValueError as err:
        fail(str(err))
    context = _context(config, predictor)
    data = context.dataset
    removed = checked_points(parse_index_list(remove, "--remove"), data.n_train, "--remove")
    targets = checked_points(target, len(data.y_test), "--target")
    X_target, y_target = data.X_test[targets], data.y_test[targets]
    result = counterfactual_removal(context.models, X_target, y_target, [removed.tolist()])
    fidelity, exact = None, None
    if _checking(context, budget):
        fidelity, exact = counterfactual_check(
            context.models, context.retrained, X_target, y_target, removed, budget, seed
        )
    console.print(f"removing {len(removed)} points, {_answered_by(context)}")
    kind = "probability" if "probability" in result.before else "margin"
    header = f"{'target':>7} {'label':>6} {kind + ' before':>18} {'after':>8} {'margin change':>14}"
    print(header + (f" {'retrained change':>17}" if exact is not None else ""))
    for k, t in enumerate(targets):
        line = (
            f"{t:>7} {data.y_test[t]:>6} {result.before[kind][k]:>18.4f} "
            f"{result.after[kind][0, k]:>8.4f} {result.change('margin')[0, k]:>14.4f}"
        )
        if exact is not None:
            line += f" {exact[k]:>17.4f}"
        print(line + ("  (prediction flips)" if result.flipped[0, k] else ""))
    print(
        "margin: log-odds of the target's label (several classes: its logit minus the largest "
        "other); a prediction flips when the predicted class changes"
    )
    if fidelity is not None:
        _report(fidelity)


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
        Path | None, typer.Option(help="Write the results as JSON.", callback=checked_output)
    ] = None,
) -> None:
    """What the model becomes if new points are added to the training set: ModelPred
    against influence functions (and retraining with --check), on the test split."""
    from mp_ray.apps.addition import add_points
    from mp_ray.data import read_points
    from mp_ray.errors import InputError

    if points is None and from_test is None:
        raise InputError("give the new points: --points FILE and/or --from-test K")
    if points and points.lower().endswith(".npy") and not labels:
        raise InputError(f"--points {points} is an .npy feature file: give --labels FILE")
    context = _context(config, predictor)
    data = context.dataset
    X_new = np.zeros((0, data.n_features), np.float32)
    y_new = data.y_test[:0]
    if points:
        X_new, y_new = read_points(data, context.config.dataset, points, labels)
    taken = from_test or 0
    if taken >= len(data.y_test):
        raise InputError(
            f"--from-test {taken}: the test split has {len(data.y_test)} points; "
            "leave at least one to score on"
        )
    X_new = np.concatenate([X_new, data.X_test[:taken]])
    y_new = np.concatenate([y_new, data.y_test[:taken]])
    X_eval, y_eval = data.X_test[taken:], data.y_test[taken:]
    result = add_points(context.models, X_new, y_new, X_eval, y_eval, retrain=check)
    console.print(
        f"adding {len(y_new)} points to the {data.n_train} training points of {data.name}; "
        f"scored on {len(y_eval)} test points"
    )
    score = "accuracy" if data.n_classes > 1 else "R²"
    print(
        f"{'method':<22}{score + ' before':>16}{'after':>8}{'change':>9}{'loss change':>13}"
        f"{'changed':>9}{'rel. error':>12}{'seconds':>9}"
    )
    summary = result.summary()
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
                for name, outcome in result.outcomes.items()
            },
        )


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
    import signal
    import time

    import ray

    from mp_ray.ray_session import connect
    from mp_ray.serve.ingress import use_ingress

    flags = {
        "host": host,
        "port": port,
        "replicas": replicas,
        "replica_cpus": replica_cpus,
        "batching": batching,
        "ingress": ingress,
    }
    settings = load_config(config, {f"serve.{key}": value for key, value in flags.items()}).serve
    host, port = settings.host, settings.port
    replicas, replica_cpus = settings.replicas, settings.replica_cpus
    cluster = not ray.is_initialized() and bool(os.environ.get("RAY_ADDRESS"))
    if not cluster and not ray.is_initialized():
        use_ingress(settings.ingress)  # before Serve is imported, here and in the Ray it starts
    from ray import serve as ray_serve

    from mp_ray.serve.app import API_KEY_ENV, APP_SETTINGS, build_app, cpus_needed
    from mp_ray.serve.service import load_service

    application = build_app(  # refuses to build without a key unless --insecure
        {
            "config": str(config.resolve()),
            "predictor": predictor,
            **settings.model_dump(include=set(APP_SETTINGS)),
            "insecure": insecure,
        }
    )
    try:  # what every replica loads, checked here first: a mismatch is one line, not a deploy
        load_service(str(config.resolve()), predictor)
    except FileNotFoundError as err:
        fail(str(err))
    if not os.environ.get(API_KEY_ENV):
        console.print(
            f"[bold yellow]warning:[/] {API_KEY_ENV} is not set (--insecure): every endpoint "
            f"is open to anyone who can reach {host}:{port}",
            markup=True,
            highlight=False,
        )
    connect()
    # A cluster may autoscale; a Ray on this machine cannot, and Serve would wait forever.
    if not cluster:
        needed = cpus_needed(replicas, replica_cpus)
        available = ray.cluster_resources().get("CPU", 0)
        if needed > available:
            fail(
                f"{replicas} model replica(s) × {replica_cpus:g} CPU + the gateway reserve "
                f"{needed:g} CPUs, this Ray has {available:g}: lower --replicas or "
                "--replica-cpus (serve.replicas, serve.replica_cpus)"
            )
    ray_serve.start(http_options={"host": host, "port": port})
    try:
        ray_serve.run(application, name="mp-ray", route_prefix="/", blocking=False)
    except Exception as err:  # a replica that cannot start (bad checkpoint, wrong dataset)
        fail(f"the service did not start: {err}")
    console.print(f"serving on http://{host}:{port}/v1 (OpenAPI at http://{host}:{port}/docs)")
    if not block:
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # stop as on Ctrl-C, not with Ray's exit
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut shutdown
        ray_serve.shutdown()
        console.print("stopped")
