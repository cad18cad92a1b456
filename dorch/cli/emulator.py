"""``dorch emulator``: serve an emulated Discord API for offline tests, benchmarks and demos.

The emulator is a separate distribution (``emulator/`` in the source tree, not in dorch's wheel or
.deb); this command runs it as its own program where it is installed and says how to get it where
it is not. Nothing of it is imported here.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Annotated

import typer

from dorch.cli import app, fail
from dorch.errors import ExitCode


@app.command()
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
    (GET /_emulator/state lists the ids and bot tokens). Needs the dorch-emulator package.
    """
    if importlib.util.find_spec("dorch_emulator") is None:
        fail("the Discord emulator is not installed here (it is a separate package, kept off servers): "
             "from a dorch checkout run `pip install ./emulator` in this environment, then try again",
             ExitCode.CONFIG)
    # -P: the current directory never shadows the emulator (a dorch_emulator/ there is not run)
    argv = [sys.executable, "-P", "-m", "dorch_emulator", "--host", host, "--port", str(port)]
    if config:
        argv += ["--config", config]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
