"""``dorch setup``: a first run that asks (or takes flags), checks, stores the token, writes the config.

On a terminal it asks every question not answered by a flag. Without one (a script, CI, a pipe
into --token-stdin) it never asks: a missing answer is an error that lists the flags to add.
Confirmations then take their default, and ``--yes`` answers yes to them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from dorch.cli import app, fail, handles_errors
from dorch.cli.answers import QUESTIONS, Answers
from dorch.errors import ExitCode

T = TypeVar("T")


class _Session:
    """Asks on a terminal; without one, records what is missing instead of asking."""

    def __init__(self, interactive: bool, yes: bool) -> None:
        self.interactive = interactive
        self.yes = yes

    def ask(self, key: str, parse: Callable[[str], T], default: str | None = None) -> T:
        def proc(text: str) -> T:
            try:
                return parse(text)
            except ValueError as exc:  # click says "Error: ..." and asks again
                raise typer.BadParameter(str(exc)) from None

        value: T = typer.prompt(QUESTIONS[key].prompt, default=default, value_proc=proc)
        return value

    def confirm(self, text: str, default: bool) -> bool:
        if self.yes:
            return True
        if not self.interactive:
            return default
        return typer.confirm(text, default=default)

    def secret(self, prompt: str) -> str:
        return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True)).strip()


def _given(flag: str, raw: str | None, parse: Callable[[str], T]) -> T | None:
    if raw is None:
        return None
    try:
        return parse(raw)
    except ValueError as exc:
        fail(f"{flag}: {exc}", ExitCode.USAGE)


@app.command()
@handles_errors
def setup(
    bus: Annotated[str | None, typer.Option(
        "--bus", help="local (a SQLite queue on this machine) or discord.", show_default=False)] = None,
    local_path: Annotated[str | None, typer.Option(
        "--local-path", help="Local bus: the queue file (default: the data dir).",
        show_default=False)] = None,
    guild_id: Annotated[str | None, typer.Option(
        "--guild-id", help="Discord: the server (guild) id.", show_default=False)] = None,
    task_channel: Annotated[str | None, typer.Option(
        "--task-channel", help="Discord: id of the channel tasks are posted in.",
        show_default=False)] = None,
    results_channel: Annotated[str | None, typer.Option(
        "--results-channel", help="Discord: id of the results channel.", show_default=False)] = None,
    pool_channel: Annotated[str | None, typer.Option(
        "--pool-channel", help="Discord: id of the worker-board channel.", show_default=False)] = None,
    allowed_submitters: Annotated[str | None, typer.Option(
        "--allowed-submitters", help="Discord: user ids allowed to submit, comma-separated "
        "(default: none).", show_default=False)] = None,
    allowed_roles: Annotated[str | None, typer.Option(
        "--allowed-roles", help="Discord: role ids allowed to submit, comma-separated "
        "(default: none).", show_default=False)] = None,
    fleet_bots: Annotated[str | None, typer.Option(
        "--fleet-bots", help="Discord: user ids of the bots that run dorch workers, comma-"
        "separated, the same on every host (`dorch doctor` prints this bot's id).",
        show_default=False)] = None,
    token_name: Annotated[str | None, typer.Option(
        "--token-name", help="Discord: name of the secret holding the bot token "
        "(default: discord-token).", show_default=False)] = None,
    token_stdin: Annotated[bool, typer.Option(
        "--token-stdin", help="Discord: read the bot token from stdin and store it in the keyring "
        "(implies no questions).")] = False,
    no_token: Annotated[bool, typer.Option(
        "--no-token", help="Discord: store no token now (e.g. you will run `sudo dorch token set "
        "NAME --systemd` on the server).")] = False,
    api_base: Annotated[str | None, typer.Option(
        "--api-base", help="Discord: REST base URL (a proxy or the emulator).",
        show_default=False)] = None,
    check: Annotated[bool, typer.Option(
        "--check/--no-check", help="Discord: check the token, guild, channels and permissions "
        "live before writing.")] = True,
    path: Annotated[Path | None, typer.Option(
        "--path", help="Where to write the config (default: the user config dir).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing config file.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Answer yes to confirmations (write without asking, keep going after "
        "a warning or a failed live check).")] = False,
) -> None:
    """Create the config file: choose the bus; for Discord the server, channels, who may
    submit, and the bot token (into the keyring); checks what it can, then writes the file.

    Asks on a terminal; with flags for every answer it runs unattended, e.g.
    `dorch setup --bus discord --guild-id G --task-channel T --results-channel R --pool-channel P
    --allowed-roles ROLE --token-stdin < token.txt`.
    """
    from dorch import paths
    from dorch.cli import answers as logic

    target = (path or paths.config_dir() / "config.toml").expanduser()
    if target.exists() and not force:
        fail(f"{target} exists; --force replaces it (or --path writes elsewhere)", ExitCode.FAILED)
    if token_stdin and no_token:
        fail("--token-stdin and --no-token exclude each other", ExitCode.USAGE)
    session = _Session(interactive=sys.stdin.isatty() and not token_stdin, yes=yes)

    a = Answers(
        bus=_given("--bus", bus, logic.parse_bus),
        local_path=local_path,
        guild_id=_given("--guild-id", guild_id, logic.parse_id),
        task_channel=_given("--task-channel", task_channel, logic.parse_id),
        results_channel=_given("--results-channel", results_channel, logic.parse_id),
        pool_channel=_given("--pool-channel", pool_channel, logic.parse_id),
        allowed_submitters=_given("--allowed-submitters", allowed_submitters, logic.parse_ids),
        allowed_roles=_given("--allowed-roles", allowed_roles, logic.parse_ids),
        fleet_bots=_given("--fleet-bots", fleet_bots, logic.parse_ids),
        token_name=_given("--token-name", token_name, logic.parse_token_name),
        api_base=api_base,
    )
    if not session.interactive:
        _require_flags(a, token_stdin or no_token)
    else:
        _ask_all(session, a)
    a.fill_defaults()
    for problem in logic.problems(a):
        fail(problem, ExitCode.USAGE)
    for warning in logic.warnings(a):
        typer.echo(f"warning: {warning}", err=True)

    token: str | None = None
    store = False
    if a.bus == "discord":
        token, store = _token(session, a, token_stdin, no_token)
        config = logic.to_config(a, target)
        if check and token is not None:
            _live_check(session, config, token)

    text = logic.render(a)
    typer.echo(f"\n{target}:\n\n{text}")
    if session.interactive and not session.confirm("Write it?", default=True):
        fail("nothing written", ExitCode.FAILED)
    if store and token is not None:
        _store_token(a.token_name or logic.DEFAULT_TOKEN_NAME, token)
    _write(target, text)
    _next_steps(a, target)


def _require_flags(a: Answers, token_decided: bool) -> None:
    missing = [QUESTIONS[k].flag for k in a.missing()]
    if a.bus == "discord" and not token_decided:
        from dorch.secrets import find_secret

        if find_secret(a.token_name or "discord-token") is None:
            missing.append("--token-stdin (or --no-token)")
    if missing:
        fail("no terminal to ask on, and these answers are missing: " + " ".join(missing)
             + "\n(dorch setup --help describes each; run it on a terminal to be asked)", ExitCode.USAGE)


def _ask_all(session: _Session, a: Answers) -> None:
    from dorch import paths
    from dorch.cli import answers as logic

    if a.bus is None:
        a.bus = session.ask("bus", logic.parse_bus, default="local")
    if a.bus == "local":
        if a.local_path is None:
            default = str(paths.default_queue())
            answer = session.ask("local_path", str, default=default)
            a.local_path = None if answer == default else answer
        return
    if a.guild_id is None:
        a.guild_id = session.ask("guild_id", logic.parse_id)
    for key in logic.CHANNELS:
        if getattr(a, key) is None:
            setattr(a, key, session.ask(key, logic.parse_id))
    for key in ("allowed_submitters", "allowed_roles"):
        if getattr(a, key) is None:
            setattr(a, key, session.ask(key, logic.parse_ids, default=""))
    if a.token_name is None:
        a.token_name = session.ask("token_name", logic.parse_token_name, default=logic.DEFAULT_TOKEN_NAME)


def _token(session: _Session, a: Answers, from_stdin: bool, no_token: bool) -> tuple[str | None, bool]:
    """The bot token to check with, and whether to store it in the keyring."""
    from dorch.secrets import KeyringUnavailable, backend_name, discord_token_problems, survey

    name = a.token_name or "discord-token"
    if no_token:
        return None, False
    existing = next((p for p in survey(name) if p.value is not None), None)
    keep = f"A token {name!r} is already in the {existing and existing.location}. Keep it?"
    if not from_stdin and existing is not None and (
            not session.interactive or session.confirm(keep, default=True)):
        typer.echo(f"using the token {name!r} from the {existing.location}")
        return existing.value, False
    try:
        backend_name()
    except KeyringUnavailable as exc:
        fail(f"cannot store the bot token in the keyring: {exc}.\nOn a server: rerun with "
             f"--no-token, then `sudo dorch token set {name} --systemd`. On a desktop: install and "
             "unlock a Secret Service (GNOME Keyring, KWallet).", ExitCode.CONFIG)
    while True:
        if from_stdin:
            token = sys.stdin.read().strip()
            if not token:
                fail("--token-stdin: nothing on stdin", ExitCode.USAGE)
        else:
            token = session.secret("Bot token (Developer Portal -> your application -> Bot; "
                                   "not shown)")
        found = discord_token_problems(token)
        if not found:
            return token, True
        typer.echo(f"warning: this does not look like a Discord bot token: {'; '.join(found)}",
                   err=True)
        if session.confirm("Use it anyway?", default=False):
            return token, True
        if not session.interactive:
            fail("--token-stdin: not a Discord bot token (--yes stores it anyway)", ExitCode.USAGE)


def _live_check(session: _Session, config: Any, token: str) -> None:
    """Ask Discord (or the configured api_base) whether all of this works, through ``dorch doctor``."""
    try:
        from dorch.bus.discord.doctor import diagnose
    except ImportError:
        typer.echo("live check skipped: this dorch has no Discord diagnostics (dorch.bus.discord.doctor)")
        return
    from dorch.discord.errors import DiscordError

    typer.echo(f"checking with Discord ({config.discord['api_base']}) ...")
    checks: list[Any] | None = None
    try:
        result = diagnose(config, token)
        checks = list(asyncio.run(result) if inspect.isawaitable(result) else result)
    except DiscordError as exc:
        typer.echo(f"  FAIL discord: {exc}")
    else:
        for c in checks:
            typer.echo(f"  {c.label} {c.name}: {c.detail}")
            if c.needs_fix:
                typer.echo(f"       fix: {c.fix}")
    if checks is not None and all(c.ok for c in checks):
        return
    if not session.confirm("The live check failed. Write the config anyway?", default=False):
        fail("the live check failed; nothing written (fix the above, or --yes to write anyway, "
             "--no-check to skip the check)", ExitCode.CONFIG)


def _store_token(name: str, token: str) -> None:
    from dorch.secrets import keyring_set

    backend = keyring_set(name, token)
    typer.echo(f"stored the bot token as {name!r} in the keyring ({backend})")


def _write(target: Path, text: str) -> None:
    from dorch import config

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.new")
    tmp.write_text(text, encoding="utf-8")
    try:
        config.load(tmp)  # never leave a file dorch itself cannot read
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    typer.echo(f"wrote {target}")


def _next_steps(a: Answers, target: Path) -> None:
    from dorch import paths

    env = os.environ.get("DORCH_CONFIG")
    default = paths.config_dir() / "config.toml"
    if env and Path(env).expanduser() != target:
        typer.echo(f"note: $DORCH_CONFIG names {env}, which dorch reads instead of {target}")
    elif target != default:
        typer.echo(f"note: dorch reads it with --config {target} or DORCH_CONFIG={target}")
    if a.bus == "discord":
        typer.echo("next: `dorch doctor` checks the bot; `dorch up` starts workers here")
    else:
        typer.echo("next: `dorch up` starts workers; `dorch submit \"...\"` queues a task")
