"""The ``dorch`` command line. A thin layer: every command calls into the library.

Exit codes: 0 ok; 1 failed (e.g. the task failed, --wait); 2 usage error; 64 bad input (task);
75 temporary failure (try again); 78 configuration error.
Sub-command modules register themselves in ``_register`` below (one line each).
"""

from __future__ import annotations

import typer

from dorch import __version__

EPILOG = (
    "Exit codes: 0 ok, 1 task failed/not found, 2 usage error, 64 bad task input, "
    "75 temporary failure (retry later), 78 configuration error."
)

app = typer.Typer(
    name="dorch",
    help="Run AI-agent tasks on one-task-per-process workers, over a local queue or Discord.",
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dorch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """dorch: distribute AI-agent tasks to worker processes."""


def _register() -> None:
    from dorch.cli import core  # noqa: F401  (submit, worker, up, status, ...)


def main() -> None:
    _register()
    app()
