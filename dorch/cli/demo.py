"""``dorch demo``: everything on this machine, nothing configured."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from dorch.cli import app, handles_errors


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

    raise typer.Exit(asyncio.run(run_demo(workers, tasks, delay, typer.echo)))
