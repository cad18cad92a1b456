"""The ``dorch`` command line. A thin layer: every command calls into the library.

Sub-command modules register themselves in ``_register`` below (one import line each) and use
``ConfigOption``/``load_config``/``fail`` from here so options and errors look the same everywhere.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from dorch import __version__
from dorch.errors import DorchError, ExitCode, InputError

if TYPE_CHECKING:
    from dorch.bus import Bus
    from dorch.config import Config

EPILOG = (
    "Exit codes: " + "; ".join(f"{code.value} {code.meaning}" for code in ExitCode) + ". "
    "Config: --config FILE, else $DORCH_CONFIG, else the user config dir, else "
    "/etc/dorch/config.toml, else built-in defaults (a local queue)."
)

app = typer.Typer(
    name="dorch",
    help="Run AI-agent tasks on one-task-per-process workers, over a local queue or Discord.",
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_root_config: str | None = None

ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Config file (overrides $DORCH_CONFIG and the defaults).",
                 show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dorch {__version__}")
        raise typer.Exit()


@app.callback(epilog=EPILOG)
def _root(
    config: ConfigOption = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """dorch: distribute AI-agent tasks to worker processes, one fresh process per task."""
    global _root_config
    _root_config = config


def fail(message: str, code: ExitCode = ExitCode.FAILED) -> NoReturn:
    """Print ``dorch: error: MESSAGE`` on stderr and exit with CODE."""
    from dorch.log import redact

    typer.echo(f"dorch: error: {redact(message)}", err=True)
    raise typer.Exit(code)


def load_config(path: str | None = None) -> Config:
    from dorch import config

    return config.load(path or _root_config)


T = TypeVar("T")


def run_on_bus(config: Config, action: Callable[[Bus], Awaitable[T]]) -> T:
    """ACTION run on the configured bus in a fresh event loop; the bus closed after."""

    async def go() -> T:
        from dorch.bus import open_bus

        bus = open_bus(config)
        try:
            return await action(bus)
        finally:
            await bus.close()

    return asyncio.run(go())


def print_json(data: Any, compact: bool = False) -> None:
    """DATA as JSON on stdout: indented, or on one line (COMPACT, for a stream of objects)."""
    typer.echo(json.dumps(data, indent=None if compact else 2, ensure_ascii=False, default=str))


F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(func: F) -> F:
    """Turn dorch's errors into one clear line on stderr and the error's own exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            fail(f"bad task: {exc}", exc.exit_code)
        except DorchError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(ExitCode.INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


# The order `dorch --help` lists the commands in: the way a user meets them, not the modules'.
HELP_ORDER = ("submit", "worker", "up", "status", "watch", "result", "cancel", "stop", "demo",
              "doctor", "emulator", "setup", "queue", "config", "token")


def _register() -> None:
    from dorch.cli import (
        config,  # noqa: F401  (dorch config show)
        demo,  # noqa: F401  (dorch demo)
        doctor,  # noqa: F401  (dorch doctor)
        emulator,  # noqa: F401  (dorch emulator)
        setup,  # noqa: F401  (dorch setup)
        status,  # noqa: F401  (dorch status|watch)
        tasks,  # noqa: F401  (dorch submit|result|cancel, dorch queue clear)
        token,  # noqa: F401  (dorch token set|get|delete)
        workers,  # noqa: F401  (dorch worker|up|stop)
    )

    def place(name: str | None) -> int:
        return HELP_ORDER.index(name) if name in HELP_ORDER else len(HELP_ORDER)

    app.registered_commands.sort(key=lambda c: place(c.name or getattr(c.callback, "__name__", "")))
    app.registered_groups.sort(key=lambda g: place(g.name))


def main() -> None:
    _register()
    app()
    sys.exit(0)
