"""What every ``mp-ray`` command shares: the Typer app, the console, config loading and
failing with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from mp_ray.config import ConfigError, ExperimentConfig, load_experiment
from mp_ray.errors import MpRayError, one_line

console = Console(stderr=True, soft_wrap=True)
DEBUG_KEY = "debug"


class ErrorBoundary(TyperGroup):
    """The command group's one error boundary: an expected failure (:class:`MpRayError`)
    becomes one ``error:`` line on stderr and exit status 2; ``--debug`` keeps its
    traceback. Any other exception is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MpRayError as err:
            if (ctx.obj or {}).get(DEBUG_KEY):
                raise
            fail(one_line(err))


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=ErrorBoundary)


@app.callback()
def _options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an expected failure too.")
    ] = False,
) -> None:
    ctx.ensure_object(dict)[DEBUG_KEY] = debug


ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Experiment YAML file.")]
ProgressOption = Annotated[
    bool, typer.Option(help="Show progress on stderr (a bar, or a line every few seconds).")
]
StorageOption = Annotated[
    str | None,
    typer.Option("--endpoint-url", help="S3 endpoint for s3:// stores (e.g. a MinIO server)."),
]


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with status 2."""
    console.print(f"[bold red]error:[/] {one_line(message)}", markup=True, highlight=False)
    raise typer.Exit(code=2)


def load_config(config: Path, overrides: dict[str, Any]) -> ExperimentConfig:
    """The experiment config with the given overrides (None values skipped), or fail."""
    try:
        return load_experiment(config, {k: v for k, v in overrides.items() if v is not None})
    except ConfigError as err:
        fail(str(err))


def storage_options(endpoint_url: str | None) -> dict[str, Any]:
    return {"endpoint_url": endpoint_url} if endpoint_url else {}


def labelled_predictors(uris: list[str]) -> dict[str, str]:
    """Method names for predictor URIs: "ModelPred" for one, "ModelPred (LABEL)" for
    ``LABEL=URI``, else numbered."""
    named = {}
    for index, value in enumerate(uris, start=1):
        label, sep, uri = value.partition("=")
        if not sep or "/" in label or ":" in label:
            label, uri = (str(index) if len(uris) > 1 else ""), value
        named[f"ModelPred ({label})" if label else "ModelPred"] = uri
    return named
