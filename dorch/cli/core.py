"""Core commands: submit, worker, up, status, watch, result, cancel, queue clear, stop, config show,
demo."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dorch.cli import ConfigOption, JsonOption, app, fail, handles_errors, load_config, print_json
from dorch.errors import ExitCode

if TYPE_CHECKING:
    from dorch.bus import Bus
    from dorch.config import Config
    from dorch.model import Status, TaskView

queue_app = typer.Typer(help="Manage the queue of waiting tasks.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_bus(config: Config, action: Any) -> Any:
    from dorch.bus import open_bus

    bus = open_bus(config)
    try:
        return await action(bus)
    finally:
        await bus.close()


def view_to_dict(view: TaskView) -> dict[str, Any]:
    data = dataclasses.asdict(view)
    data["state"] = view.state.value
    if view.result is not None:
        data["result"]["state"] = view.result.state.value
    return data


def _short(text: str, width: int = 50) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _age(since: float | None) -> str:
    if not since:
        return "-"
    seconds = max(time.time() - since, 0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


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


def _print_view(view: TaskView, as_json: bool) -> int:
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

    task_id, view = _run(_with_bus(cfg, go))
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
    raise typer.Exit(_print_view(view, as_json))


def _whoami() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@app.command()
def worker(
    instance: Annotated[str | None, typer.Option(
        "--instance", "-i", help="Instance number (systemd's %i); names the worker and its state.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run one worker process: wait for a task, run it, exit (0 done/idle, 75 retry, 78 config).

    Run it under systemd (dorch-worker@N) or `dorch up`, which start a fresh process per task.
    """
    from dorch.config import ConfigError

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"dorch worker: configuration error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    from dorch.runtime.worker import run_worker

    raise typer.Exit(run_worker(cfg, instance))


@app.command()
@handles_errors
def up(
    workers: Annotated[int, typer.Option("--workers", "-n", min=1, max=256,
                                         help="How many worker processes.")] = 3,
    config: ConfigOption = None,
) -> None:
    """Run N workers in the foreground, restarting each after every task (like systemd).

    Ctrl-C or SIGTERM stops them gracefully: running tasks are handed back, never lost.
    """
    from dorch import log, paths
    from dorch.cli import _root_config
    from dorch.runtime.supervisor import pidfile_path, supervise

    cfg = load_config(config)
    log.setup(cfg.worker["log_level"], name="up")
    path = config or _root_config
    stop_timeout = cfg.worker["stop_grace"] + 10
    typer.echo(f"dorch up: {workers} workers on the {cfg.bus_kind} bus; Ctrl-C stops", err=True)
    code = _run(supervise(workers, str(Path(path).resolve()) if path else None,
                          pidfile_path(paths.private_dir()), stop_timeout))
    raise typer.Exit(code)


def _columns(headers: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    """Indented lines of a table whose columns fit their widest cell (a Discord task id has 19
    digits, a local one a few); columns in RIGHT are right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  " + "  ".join(padded).rstrip()

    return [line(headers), *map(line, rows)]


def _status_text(status: Status) -> str:
    lines = []
    order = ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "dead"]
    if status.error:
        lines.append(f"the bus cannot be read right now: {status.error}")
    else:
        lines.append("tasks: " + ", ".join(f"{status.counts.get(s, 0)} {s}" for s in order))
    if status.deliveries:
        lines.append(f"\nwaiting in this machine's outbox to be delivered: {status.pending_delivery}")
        rows = []
        for d in status.deliveries:
            note = " (gave up: " + d.last_error + ")" if d.failed else (
                f" (last error: {_short(d.last_error, 60)})" if d.last_error else "")
            rows.append([str(d.id), d.kind, _age(d.created), str(d.tries), d.what + note])
        lines += _columns(["#", "KIND", "AGE", "TRIES", "WHAT"], rows, right=(0, 2, 3))
    if status.running:
        lines.append("\nrunning:")
        rows = [[v.task.id, v.worker or "?", _age(v.started_at), _short(v.task.spec.prompt)]
                for v in status.running]
        lines += _columns(["ID", "WORKER", "AGE", "PROMPT"], rows, right=(2,))
    if status.recent:
        lines.append("\nrecent results:")
        rows = [[v.task.id, v.state.value, v.worker or "-",
                 f"{v.result.duration:.1f}s" if v.result else "-", _short(v.task.spec.prompt)]
                for v in status.recent]
        lines += _columns(["ID", "STATE", "WORKER", "TOOK", "PROMPT"], rows, right=(3,))
    if status.dead:
        lines.append("\ndead (gave up after max_attempts):")
        rows = [[v.task.id, str(v.task.attempt), _short(v.task.spec.prompt)] for v in status.dead]
        lines += _columns(["ID", "ATTEMPT", "PROMPT"], rows, right=(1,))
    if status.workers:
        lines.append("\nworkers:")
        rows = [[w.worker, w.state, w.task_id or "-", w.host or "-", str(w.pid or "-"),
                 str(w.tasks_done), f"{_age(w.updated_at)} ago"] for w in status.workers]
        lines += _columns(["WORKER", "STATE", "TASK", "HOST", "PID", "DONE", "SEEN"], rows,
                          right=(4, 5))
    return "\n".join(lines)


@app.command()
@handles_errors
def status(
    recent: Annotated[int, typer.Option(help="How many recent results to show.")] = 10,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show queue depth, running tasks (worker, age), recent results, dead tasks and workers."""
    cfg = load_config(config)

    async def go(bus: Bus) -> Status:
        return await bus.status(recent)

    st: Status = _run(_with_bus(cfg, go))
    if as_json:
        print_json(_status_dict(cfg, st))
    else:
        typer.echo(_status_text(st))
    if st.error:
        raise typer.Exit(ExitCode.TEMPFAIL)


def _status_dict(cfg: Config, st: Status) -> dict[str, Any]:
    return {
        "bus": cfg.bus_kind,
        "error": st.error or None,
        "counts": st.counts,
        "running": [view_to_dict(v) for v in st.running],
        "recent": [view_to_dict(v) for v in st.recent],
        "dead": [view_to_dict(v) for v in st.dead],
        "workers": [dataclasses.asdict(w) for w in st.workers],
        "pending_delivery": st.pending_delivery,
        "deliveries": [dataclasses.asdict(d) for d in st.deliveries],
    }


@app.command()
@handles_errors
def watch(
    interval: Annotated[float, typer.Option(
        "--interval", "-n", min=0.2, help="Seconds between refreshes (each costs the Discord "
        "bus three requests).")] = 2.0,
    count: Annotated[int | None, typer.Option(
        help="Stop after N refreshes (default: until Ctrl-C).", min=1)] = None,
    recent: Annotated[int, typer.Option(help="How many recent results to show.")] = 10,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per refresh, one per line.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show `dorch status` live, refreshed in place, until Ctrl-C."""
    cfg = load_config(config)
    tty = sys.stdout.isatty() and not as_json

    async def go(bus: Bus) -> None:
        shown = 0
        while count is None or shown < count:
            if shown:
                await asyncio.sleep(interval)
            st = await bus.status(recent)
            shown += 1
            if as_json:
                print_json(_status_dict(cfg, st), compact=True)
                continue
            stamp = time.strftime("%H:%M:%S")
            head = f"dorch watch · {cfg.bus_kind} bus · every {interval:g} s · {stamp}"
            text = f"{head} (Ctrl-C to quit)\n\n{_status_text(st)}"
            if tty:
                sys.stdout.write("\033[H\033[2J" + text + "\n")
            else:
                sys.stdout.write(("\n" if shown > 1 else "") + text + "\n")
            sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one leaves: exit 0
        _run(_with_bus(cfg, go))


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

    view = _run(_with_bus(cfg, go))
    if view is None:
        if wait and timeout is not None:
            fail(f"task {task_id}: not finished within {timeout} s", ExitCode.FAILED)
        fail(f"no task with id {task_id!r}; `dorch status` lists recent ones", ExitCode.FAILED)
    if not view.state.finished and not as_json:
        fail(f"task {task_id} is {view.state.value}; use --wait to wait for it", ExitCode.FAILED)
    raise typer.Exit(_print_view(view, as_json))


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

    if not _run(_with_bus(cfg, go)):
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

    typer.echo(f"removed {_run(_with_bus(cfg, go))} queued task(s)")


@app.command()
@handles_errors
def stop(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the workers to stop.")] = 60,
) -> None:
    """Stop the local workers: dorch-workers.target under systemd, else the `dorch up` supervisor."""
    from dorch.runtime import stopper

    try:
        typer.echo(stopper.stop_local_workers(timeout))
    except (stopper.NothingToStop, TimeoutError) as exc:
        fail(str(exc), ExitCode.FAILED)


@app.command()
@handles_errors
def demo(
    workers: Annotated[int, typer.Option("--workers", "-n", min=1, max=16)] = 3,
    tasks: Annotated[int, typer.Option("--tasks", min=1, max=100)] = 6,
    delay: Annotated[float, typer.Option(help="Seconds each echo task takes.")] = 0.5,
) -> None:
    """Run everything on this machine: a temporary local queue, N supervised workers, a few tasks.

    Needs no config, no Discord, no OpenClaw (the echo executor answers with the prompt).
    """
    from dorch.runtime.demo import run_demo

    raise typer.Exit(_run(run_demo(workers, tasks, delay, typer.echo)))
