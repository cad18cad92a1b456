"""How the CLI shows tasks: one task as JSON or as its answer, and the aligned tables and
short cells of `dorch status` (cli/tasks.py and cli/status.py share them)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import typer

from dorch.cli import print_json
from dorch.errors import ExitCode

if TYPE_CHECKING:
    from dorch.model import TaskView


def view_to_dict(view: TaskView) -> dict[str, Any]:
    data = dataclasses.asdict(view)
    data["state"] = view.state.value
    if view.result is not None:
        data["result"]["state"] = view.result.state.value
    return data


def print_view(view: TaskView, as_json: bool) -> int:
    if as_json:
        print_json(view_to_dict(view))
    else:
        res = view.result
        if res is not None and res.output:
            typer.echo(res.output, nl=not res.output.endswith("\n"))
        if res is not None and res.usage.get("summary"):
            typer.echo(f"-- {res.usage['summary']}", err=True)
        if res is not None and view.state.value != "succeeded":
            typer.echo(f"task {view.task.id} {view.state.value}: {res.error}", err=True)
            if res.stderr_tail:
                typer.echo(f"--- stderr (tail) ---\n{res.stderr_tail}", err=True)
        elif res is None:
            typer.echo(f"task {view.task.id} {view.state.value}", err=True)
    return ExitCode.OK if view.state.value == "succeeded" else ExitCode.FAILED


def columns(headers: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    """Indented lines of a table whose columns fit their widest cell (a Discord task id has 19
    digits, a local one a few); columns in RIGHT are right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  " + "  ".join(padded).rstrip()

    return [line(headers), *map(line, rows)]


def short(text: str, width: int = 50) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def age(since: float | None) -> str:
    if not since:
        return "-"
    seconds = max(time.time() - since, 0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
