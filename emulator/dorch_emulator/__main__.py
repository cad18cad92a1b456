"""``python -m dorch_emulator --config FILE [--host H] [--port N]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from functools import partial

from dorch_emulator.config import EmulatorConfig, EmulatorConfigError
from dorch_emulator.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dorch_emulator",
                                     description="Serve an emulated Discord REST API on 127.0.0.1.")
    parser.add_argument("--config", help="emulator config (TOML); default: the built-in example world")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    args = parser.parse_args(argv)
    try:
        config = EmulatorConfig.load(args.config) if args.config else EmulatorConfig.default()
    except EmulatorConfigError as exc:
        print(f"dorch emulator: error: {exc}", file=sys.stderr)
        return 78
    try:
        asyncio.run(serve(config, args.host, args.port, partial(print, flush=True)))
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        print(f"dorch emulator: error: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 75
    return 0


def run() -> None:
    """The ``dorch-emulator`` script (and ``dorch emulator``, which runs this module)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
