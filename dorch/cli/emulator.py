"""``dorch emulator``: serve an emulated Discord API for offline tests, benchmarks and demos."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Annotated

import typer

from dorch.cli import EXIT_TEMPFAIL, app, fail, handles_errors


@app.command()
@handles_errors
def emulator(
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="Emulator world (TOML: guild, channels, bots, users, limits, faults); "
        "default: the built-in example.", show_default=False)] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (keep it on 127.0.0.0/8).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 0,
) -> None:
    """Serve Discord's REST API (the endpoints dorch uses) from memory until Ctrl-C.

    Prints its URL first; set dorch's [discord] api_base to the printed api_base. Humans post,
    faults are injected and the request log is read through the control API under /_emulator
    (GET /_emulator/state lists the ids and bot tokens).
    """
    from dorch.discord.emulator.config import EmulatorConfig
    from dorch.discord.emulator.server import serve

    world = EmulatorConfig.load(config) if config else EmulatorConfig.default()
    try:
        asyncio.run(serve(world, host, port, partial(typer.echo, err=False)))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", EXIT_TEMPFAIL)
