"""``dorch doctor``: check the Discord setup and say how to fix every problem."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from dorch.cli import ConfigOption, JsonOption, app, fail, handles_errors, load_config, print_json
from dorch.errors import ExitCode


def _token(name: str) -> str:
    """The bot token through dorch.secrets (credential, keyring, then environment)."""
    from dorch.secrets import lookup_secret

    return lookup_secret(name)


def _isolation(cfg: Any) -> str:
    """How this host's workers will isolate their agents ([executor] isolation)."""
    from dorch.runtime.sandbox import SandboxError, from_config

    try:
        return from_config(cfg).describe()
    except SandboxError as exc:
        return f"none: the workers will not start: {exc}"


@app.command()
@handles_errors
def doctor(config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Check the Discord bus: token, bot user, MESSAGE_CONTENT intent, guild, channels and
    permissions. Prints a fix for every failure; exits 1 if anything failed (75: Discord could
    not be asked; 78: no token, or Discord rejected it)."""
    from dorch.bus.discord.doctor import diagnose
    from dorch.discord.errors import DiscordError

    cfg = load_config(config)
    isolation = _isolation(cfg)
    if cfg.bus_kind != "discord":
        if json_out:
            print_json({"bus": cfg.bus_kind, "ok": True, "checks": [], "isolation": isolation})
        else:
            typer.echo(f"agent isolation: {isolation}")
            typer.echo(f"bus: {cfg.bus_kind} (no Discord to check; set [bus] kind = \"discord\")")
        return
    if not json_out:
        typer.echo(f"agent isolation: {isolation}")
    token = _token(str(cfg.discord["token"]))
    try:
        checks = asyncio.run(diagnose(cfg, token))
    except DiscordError as exc:
        fail(str(exc), exc.exit_code)
    ok = all(c.ok for c in checks)
    if json_out:
        print_json({"bus": "discord", "ok": ok, "checks": [c.as_dict() for c in checks],
                    "isolation": isolation})
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            typer.echo(f"{c.label}  {c.name:<{width}}  {c.detail}")
            if c.needs_fix:
                typer.echo(f"      {'':<{width}}  fix: {c.fix}")
        failed = sum(not c.ok for c in checks)
        warned = sum(c.ok and c.warn for c in checks)
        typer.echo(("all checks passed" if ok else f"{failed} check(s) failed")
                   + (f", {warned} warning(s)" if warned else ""))
    if not ok:
        raise typer.Exit(ExitCode.CONFIG if checks[0].name == "token" and not checks[0].ok
                         else ExitCode.FAILED)
