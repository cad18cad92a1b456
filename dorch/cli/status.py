"""The status commands: status (once), watch (refreshed in place)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dorch.cli import ConfigOption, JsonOption, app, handles_errors, load_config, print_json, run_on_bus
from dorch.cli.output import age, columns, short, view_to_dict
from dorch.errors import ExitCode

if TYPE_CHECKING:
    from dorch.bus import Bus
    from dorch.config import Config
    from dorch.model import Status


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

    st: Status = run_on_bus(cfg, go)
    if as_json:
        print_json(_status_dict(cfg, st))
    else:
        typer.echo(_status_text(st))
    if st.error:
        raise typer.Exit(ExitCode.TEMPFAIL)


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
        run_on_bus(cfg, go)


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
                f" (last error: {short(d.last_error, 60)})" if d.last_error else "")
            rows.append([str(d.id), d.kind, age(d.created), str(d.tries), d.what + note])
        lines += columns(["#", "KIND", "AGE", "TRIES", "WHAT"], rows, right=(0, 2, 3))
    if status.running:
        lines.append("\nrunning:")
        rows = [[v.task.id, v.worker or "?", age(v.started_at), short(v.task.spec.prompt)]
                for v in status.running]
        lines += columns(["ID", "WORKER", "AGE", "PROMPT"], rows, right=(2,))
    if status.recent:
        lines.append("\nrecent results:")
        rows = [[v.task.id, v.state.value, v.worker or "-",
                 f"{v.result.duration:.1f}s" if v.result else "-", short(v.task.spec.prompt)]
                for v in status.recent]
        lines += columns(["ID", "STATE", "WORKER", "TOOK", "PROMPT"], rows, right=(3,))
    if status.dead:
        lines.append("\ndead (gave up after max_attempts):")
        rows = [[v.task.id, str(v.task.attempt), short(v.task.spec.prompt)] for v in status.dead]
        lines += columns(["ID", "ATTEMPT", "PROMPT"], rows, right=(1,))
    if status.workers:
        lines.append("\nworkers:")
        rows = [[w.worker, w.state, w.task_id or "-", w.host or "-", str(w.pid or "-"),
                 str(w.tasks_done), f"{age(w.updated_at)} ago"] for w in status.workers]
        lines += columns(["WORKER", "STATE", "TASK", "HOST", "PID", "DONE", "SEEN"], rows,
                          right=(4, 5))
    return "\n".join(lines)


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
