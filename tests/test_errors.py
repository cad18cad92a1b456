"""One error vocabulary: every dorch error is a DorchError whose exit_code is an ExitCode, the
CLI turns any of them into one line and that code, and --help lists exactly the ExitCode set."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest
import typer
from typer.testing import CliRunner

import dorch
from dorch import errors
from dorch.bus import BusConfigError, BusError
from dorch.cli import handles_errors
from dorch.discord.errors import UNKNOWN_CHANNEL, UNKNOWN_MESSAGE, NotFound, Unauthorized
from dorch.errors import ConfigError, DorchError, ExitCode
from dorch.executors import ExecutorConfigError
from dorch.model import TaskError
from dorch.runtime.stopper import NothingToStop
from tests.support.helpers import DorchHome


def _dorch_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a dorch module, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(dorch.__path__, "dorch."):
        if info.name.endswith("__main__"):  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_dorch_exception_is_a_dorch_error_with_an_exit_code() -> None:
    found = _dorch_exceptions()
    assert len(found) > 20  # the walk reached the whole package
    strays = sorted(name for name, cls in found.items() if not issubclass(cls, DorchError))
    assert strays == [], "derive these from dorch.errors.DorchError (or one of its bases)"
    for cls in found.values():
        assert isinstance(cls.exit_code, ExitCode), cls  # type: ignore[attr-defined]


def test_the_module_docstring_draws_every_public_error_with_its_exit_code() -> None:
    """The drawing in dorch/errors.py is the map a newcomer reads: no class missing, none
    invented, and the codes it shows are the classes' own."""
    drawn: dict[str, int | None] = {}
    for line in errors.__doc__.splitlines():  # type: ignore[union-attr]
        m = re.match(r"\s*[*x+\-·] (\w+)(?: \.+ (\d+))?", line)
        if m:
            drawn[m[1]] = int(m[2]) if m[2] else None
    public = {cls.__name__: cls for cls in _dorch_exceptions().values()
              if not cls.__name__.startswith("_")}
    assert set(drawn) == set(public)
    for name, code in drawn.items():
        if code is not None:
            assert public[name].exit_code == code, name  # type: ignore[attr-defined]


def test_exit_codes_follow_the_kind_of_error() -> None:
    # a bus that cannot work as configured is both a bus error and a configuration error
    assert issubclass(BusConfigError, BusError) and issubclass(BusConfigError, ConfigError)
    assert BusConfigError.exit_code == ExitCode.CONFIG and BusError.exit_code == ExitCode.TEMPFAIL
    assert ExecutorConfigError.exit_code == ExitCode.CONFIG
    assert TaskError.exit_code == ExitCode.DATAERR
    # Discord decides per answer: an unknown channel is configuration, a deleted message is not
    assert NotFound(404, UNKNOWN_CHANNEL).exit_code == ExitCode.CONFIG
    assert NotFound(404, UNKNOWN_MESSAGE).exit_code == ExitCode.TEMPFAIL


def _run_failing_command(exc: BaseException) -> tuple[int, str, str]:
    app = typer.Typer()

    @app.command()
    @handles_errors
    def boom() -> None:
        raise exc

    result = CliRunner().invoke(app, [])
    return result.exit_code, result.stderr, repr(result.exception)


@pytest.mark.parametrize(("exc", "code", "line"), [
    (ExecutorConfigError("[executor] openclaw: not found on PATH"), ExitCode.CONFIG,
     "dorch: error: [executor] openclaw: not found on PATH"),
    (NotFound(404, UNKNOWN_CHANNEL, "Unknown Channel"), ExitCode.CONFIG,
     "dorch: error: HTTP 404 (code 10003): Unknown Channel"),
    (Unauthorized(401, 0, "401: Unauthorized"), ExitCode.CONFIG,
     "dorch: error: HTTP 401: 401: Unauthorized"),
    (BusError("the queue is locked"), ExitCode.TEMPFAIL, "dorch: error: the queue is locked"),
    (TaskError("empty prompt"), ExitCode.DATAERR, "dorch: error: bad task: empty prompt"),
    (NothingToStop("no workers"), ExitCode.FAILED, "dorch: error: no workers"),
    (KeyboardInterrupt(), ExitCode.INTERRUPTED, "interrupted"),
])
def test_a_command_ends_with_one_line_and_the_errors_exit_code(
        exc: BaseException, code: ExitCode, line: str) -> None:
    got, stderr, raised = _run_failing_command(exc)
    assert (got, stderr.strip()) == (code, line), raised


def test_help_lists_exactly_the_exit_codes(home: DorchHome) -> None:
    out = " ".join(home.dorch("--help").stdout.split())  # --help re-wraps the epilog
    m = re.search(r"Exit codes: (.*?)\. Config:", out)
    assert m, out
    listed = dict(item.split(" ", 1) for item in m[1].split("; "))
    assert listed == {str(code.value): code.meaning for code in ExitCode}
