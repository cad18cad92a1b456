"""The ``dorch`` entry point: ``dorch worker`` starts without the CLI framework.

systemd (or ``dorch up``) starts a fresh worker process for every task, so whatever the worker
imports is paid once per task; typer alone (it brings pydantic) costs more than the rest of the
start-up together. A plain ``dorch [-c FILE] worker [--instance N] [-c FILE]`` is therefore run
directly; anything else (``--help``, a typo, every other command) goes to the full CLI in
``dorch.cli``, which also gives the usual error messages.
"""

from __future__ import annotations

import sys


def _worker_args(argv: list[str]) -> tuple[str | None, str | None] | None:
    """(config, instance) of a plain worker invocation, else None."""
    config = instance = None
    seen_worker = False
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in ("-c", "--config") or (seen_worker and name in ("-i", "--instance")):
            if not eq:
                value = next(args, "")
            elif not name.startswith("--"):
                return None  # -c=FILE: the CLI decides what that means
            if not value or value.startswith("-"):
                return None
            if name in ("-c", "--config"):
                config = value
            else:
                instance = value
        elif arg == "worker" and not seen_worker:
            seen_worker = True
        else:
            return None
    return (config, instance) if seen_worker else None


def _run_worker(config_path: str | None, instance: str | None) -> int:
    from dorch import config as configuration
    from dorch.errors import DorchError
    from dorch.runtime.worker import run_worker

    try:
        cfg = configuration.load(config_path)
    except DorchError as exc:
        print(f"dorch worker: configuration error: {exc}", file=sys.stderr)
        return exc.exit_code
    return run_worker(cfg, instance)


def main() -> None:
    plain = _worker_args(sys.argv[1:])
    if plain is not None:
        sys.exit(_run_worker(*plain))
    from dorch.cli import main as cli_main

    cli_main()
