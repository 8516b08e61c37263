"""What every refused command must show: exit status 2, exactly one ``error:`` line naming
the cause and the object, and no traceback."""

from __future__ import annotations

from typer.testing import Result


def refused_output(exit_code: int, output: str, *names: str) -> str:
    """Assert a refusal in ``output`` (stdout and stderr) naming each of ``names``; returns
    the error line."""
    assert exit_code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def refused(result: Result, *names: str) -> str:
    """:func:`refused_output` for a command run by ``typer.testing.CliRunner``."""
    return refused_output(result.exit_code, result.output, *names)
