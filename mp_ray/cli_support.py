"""What every ``mp-ray`` command shares: the Typer app, the console, config loading and
failing with a clear message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer._click.exceptions import UsageError  # the class Typer's parser raises
from typer.core import TyperGroup

from mp_ray.config import ExperimentConfig, load_experiment
from mp_ray.errors import MpRayError, one_line
from mp_ray.outputs import check_output, check_output_folder

console = Console(stderr=True, soft_wrap=True)
DEBUG_KEY = "debug"


class ErrorBoundary(TyperGroup):
    """The command group's one error boundary: an expected failure (:class:`MpRayError`)
    or a malformed option becomes one ``error:`` line on stderr and exit status 2;
    ``--debug`` keeps an expected failure's traceback. Any other exception is a bug and
    keeps its traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MpRayError as err:
            if (ctx.obj or {}).get(DEBUG_KEY):
                raise
            fail(one_line(getattr(err, "cause", None) or err))  # a Ray task's: its cause
        except UsageError as err:  # a sub-command's options
            command = err.ctx.command_path if err.ctx else ctx.command_path
            fail(f"{err.format_message()} (see {command} --help)")


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
    console.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False)
    raise typer.Exit(code=2)


def option_check(check: Callable[[Any, str], object]) -> Callable[..., Any]:
    """An option callback that runs ``check(value, "--option")`` while the options are
    parsed, so a bad value is refused (an :class:`MpRayError` naming the option) before any
    work; None (an option not given) is not checked."""

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is not None and not ctx.resilient_parsing:
            check(value, param.opts[0])
        return value

    return callback


checked_output = option_check(check_output)  # a result file that cannot be written
checked_output_folder = option_check(check_output_folder)  # a result folder, likewise


def load_config(config: Path, overrides: dict[str, Any]) -> ExperimentConfig:
    """The experiment config with the command's flags as overrides: ``overrides`` maps each
    config field a flag sets (dotted, ``fit.num_workers``) to the flag's value, None when
    the flag was not given. A given flag wins over the file; an absent one leaves the file's
    value (or the field's default). A bad value is a
    :class:`~mp_ray.config.ConfigError` naming the field."""
    return load_experiment(config, {k: v for k, v in overrides.items() if v is not None})


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
