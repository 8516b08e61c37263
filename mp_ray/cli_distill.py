"""The ``mp-ray distill`` command: fit the distilled datamodel and compare it with retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mp_ray.cli_support import (
    ConfigOption,
    ProgressOption,
    app,
    checked_output,
    console,
    fail,
    load_config,
)
from mp_ray.outputs import write_json
from mp_ray.progress import Progress


@app.command()
def distill(
    config: ConfigOption,
    groups_per_class: Annotated[
        int | None, typer.Option(min=1, help="Override distill.groups_per_class.")
    ] = None,
    per_group: Annotated[
        int | None, typer.Option(min=1, help="Override distill.synthetic_per_group.")
    ] = None,
    gpu: Annotated[bool, typer.Option(help="Run on a GPU when one is visible.")] = False,
    output: Annotated[
        Path | None, typer.Option(help="Also write the report as JSON.", callback=checked_output)
    ] = None,
    progress: ProgressOption = True,
) -> None:
    """Fit the distilled datamodel (per-group synthetic sets matched to leave-group-out
    retraining) and print its validation on held-out removals against retraining, beside
    the no-change baseline θ* and influence functions."""
    from mp_ray.distill import DistilledNotFoundError, format_report, run_distill
    from mp_ray.retrain.block import pick_device
    from mp_ray.store import StoreMismatchError, StoreNotFoundError

    experiment = load_config(
        config,
        {"distill.groups_per_class": groups_per_class, "distill.synthetic_per_group": per_group},
    )
    try:
        iterations = experiment.distill.iterations
        with Progress("distill", iterations, "iterations", enabled=progress) as bar:
            _, report = run_distill(experiment, device=pick_device(gpu), on_progress=bar.advance)
    except (
        ValueError,
        StoreNotFoundError,
        StoreMismatchError,
        DistilledNotFoundError,
    ) as err:
        fail(str(err))
    print(format_report(report))
    console.print(f"distilled datamodel saved to {report.uri}")
    if output:
        write_json(output, report.to_json())
