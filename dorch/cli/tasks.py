"""The task commands: submit, result, cancel, queue clear."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dorch.cli import (
    ConfigOption,
    JsonOption,
    app,
    fail,
    handles_errors,
    load_config,
    print_json,
    run_on_bus,
)
from dorch.cli.output import print_view
from dorch.errors import ExitCode

if TYPE_CHECKING:
    from dorch.bus import Bus
    from dorch.model import TaskView

queue_app = typer.Typer(help="Manage the queue of waiting tasks.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")


@app.command()
@handles_errors
def submit(
    text: Annotated[str | None, typer.Argument(
        metavar="TEXT", help="The prompt, with optional inline tags [model:X] [thinking:Y]; - reads stdin.",
        show_default=False)] = None,
    model_pos: Annotated[str | None, typer.Argument(
        metavar="MODEL", help="Model (as in the original scripts' positional form).",
        show_default=False)] = None,
    thinking_pos: Annotated[str | None, typer.Argument(
        metavar="THINKING", help="Thinking level.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model or alias from [models]; wins over tags.")] = None,
    thinking: Annotated[str | None, typer.Option(
        "--thinking", "-t", help="off|minimal|low|medium|high|xhigh|adaptive|max|ultra.")] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="Read the prompt from a file (- for stdin).")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait and print the result.")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --wait: give up after N s.")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Queue a task and print its id.

    Example: dorch submit "Write a sort function [model:gpt-4o] [thinking:medium]" --wait
    """
    from dorch.model import parse_task

    cfg = load_config(config)
    spec = parse_task(
        _read_prompt(text, file), model=model or model_pos, thinking=thinking or thinking_pos
    )

    async def go(bus: Bus) -> tuple[str, TaskView | None]:
        task_id = await bus.submit(spec, submitter=_whoami())
        if not wait:
            return task_id, None
        if not as_json:
            typer.echo(f"task {task_id} queued", err=True)
        return task_id, await wait_for_result(bus, task_id, timeout)

    task_id, view = run_on_bus(cfg, go)
    spooled = task_id.startswith("outbox-")
    if spooled:
        typer.echo("dorch: Discord cannot be reached; the task is kept in this machine's outbox "
                   "and posted by the next dorch command run here (`dorch status` retries now "
                   "and lists what waits)", err=True)
    if not wait:
        if as_json:
            print_json({"id": task_id, "delivered": not spooled, "prompt": spec.prompt,
                        "model": spec.model, "thinking": spec.thinking})
        else:
            typer.echo(task_id)
        return
    if view is None:
        fail(f"task {task_id}: no result within {timeout} s (it stays queued)", ExitCode.FAILED)
    raise typer.Exit(print_view(view, as_json))


def _read_prompt(text: str | None, file: Path | None) -> str:
    if file is not None and text not in (None, ""):
        fail("give the prompt either as TEXT or with --file, not both", ExitCode.USAGE)
    if file is not None:
        if str(file) == "-":
            return sys.stdin.read()
        try:
            return file.read_text(encoding="utf-8")
        except FileNotFoundError:
            fail(f"{file}: no such file", ExitCode.USAGE)
        except UnicodeDecodeError:
            fail(f"{file}: not UTF-8 text; dorch prompts are text", ExitCode.USAGE)
    if text == "-":
        return sys.stdin.read()
    if text is None:
        fail("no prompt: give TEXT, --file PATH, or - to read stdin", ExitCode.USAGE)
    return text


def _whoami() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def wait_for_result(bus: Bus, task_id: str, timeout: float | None) -> TaskView | None:
    """Poll (every ``bus.wait_interval``) until the task finishes; None on timeout. Shows a
    spinner on a terminal."""
    spinner = "|/-\\"
    tty = sys.stderr.isatty()
    deadline = None if timeout is None else time.monotonic() + timeout
    turn = 0
    try:
        while True:
            view = await bus.get(task_id)
            if view is None or view.state.finished:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if tty:
                label = f"{view.state.value} {view.worker}".strip()
                sys.stderr.write(f"\r{spinner[turn % 4]} task {task_id}: {label}   ")
                sys.stderr.flush()
                turn += 1
            pause = bus.wait_interval
            if deadline is not None:
                pause = min(pause, max(deadline - time.monotonic(), 0.05))
            await asyncio.sleep(pause)
    finally:
        if tty:
            sys.stderr.write("\r\033[K")


@app.command()
@handles_errors
def result(
    task_id: Annotated[str, typer.Argument(help="The id printed by `dorch submit`.")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait until it finishes.")] = False,
    timeout: Annotated[float | None, typer.Option(help="With --wait: give up after N s.")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Print a task's result (exit 0 if it succeeded, 1 otherwise or if not finished)."""
    cfg = load_config(config)

    async def go(bus: Bus) -> TaskView | None:
        if wait:
            return await wait_for_result(bus, task_id, timeout)
        return await bus.get(task_id)

    view = run_on_bus(cfg, go)
    if view is None:
        if wait and timeout is not None:
            fail(f"task {task_id}: not finished within {timeout} s", ExitCode.FAILED)
        fail(f"no task with id {task_id!r}; `dorch status` lists recent ones", ExitCode.FAILED)
    if not view.state.finished and not as_json:
        fail(f"task {task_id} is {view.state.value}; use --wait to wait for it", ExitCode.FAILED)
    raise typer.Exit(print_view(view, as_json))


@app.command()
@handles_errors
def cancel(
    task_id: Annotated[str, typer.Argument(help="The task to cancel.")],
    config: ConfigOption = None,
) -> None:
    """Cancel a task: a queued one is never run; a running one has its agent stopped."""
    cfg = load_config(config)

    async def go(bus: Bus) -> bool:
        return await bus.cancel(task_id)

    if not run_on_bus(cfg, go):
        fail(f"task {task_id} cannot be cancelled (unknown or already finished)", ExitCode.FAILED)
    typer.echo(f"task {task_id}: cancel requested")


@queue_app.command("clear")
@handles_errors
def queue_clear(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
) -> None:
    """Remove every task still waiting in the queue (running tasks are not touched)."""
    cfg = load_config(config)
    if not yes:
        if not sys.stdin.isatty():
            fail("refusing to clear the queue without confirmation: add --yes", ExitCode.USAGE)
        typer.confirm("Remove every queued task?", abort=True)

    async def go(bus: Bus) -> int:
        return await bus.clear()

    typer.echo(f"removed {run_on_bus(cfg, go)} queued task(s)")
