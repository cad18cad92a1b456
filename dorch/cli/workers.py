"""The worker commands: worker (one process, one task), up (N of them in the foreground), stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from dorch.cli import ConfigOption, app, fail, handles_errors, load_config
from dorch.errors import ExitCode


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
    code = asyncio.run(supervise(workers, str(Path(path).resolve()) if path else None,
                          pidfile_path(paths.private_dir()), stop_timeout))
    raise typer.Exit(code)


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
