"""``dorch token set|get|delete``: secrets in the keyring or as systemd credentials.

Two kinds: the bot token (``[discord] token``, default ``discord-token``) and the agent's own
secrets (``[executor] secrets``, environment variable names such as ``ANTHROPIC_API_KEY``).

A token is never taken from the command line (``ps`` and shell history would keep it): it is
typed at a prompt that does not echo, or piped on stdin.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dorch.cli import JsonOption, app, fail, handles_errors, print_json
from dorch.credstore import UNIT_DIR, Layout
from dorch.errors import ExitCode
from dorch.secrets import CREDSTORE, KeyringUnavailable

token_app = typer.Typer(
    help="Store, check and remove secrets (the bot token, the agent's [executor] secrets): the "
    "keyring on desktops, encrypted systemd credentials on servers. Lookup order: "
    "$CREDENTIALS_DIRECTORY/NAME, the keyring (service \"dorch\"), $DORCH_SECRET_<NAME>.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")

NameArg = Annotated[str, typer.Argument(
    help="Secret name: discord-token ([discord] token), or an agent's secret named like its "
    "environment variable, e.g. ANTHROPIC_API_KEY ([executor] secrets).", show_default=False)]
SystemdOption = Annotated[bool, typer.Option(
    "--systemd", help="An encrypted systemd credential (systemd-creds, needs root) instead of the "
    "keyring: what a server's dorch-worker@ units load.")]
InstanceOption = Annotated[int | None, typer.Option(
    "--instance", min=1, help="With --systemd: only for dorch-worker@N (one token per instance).",
    show_default=False)]
CredstoreOption = Annotated[Path, typer.Option(
    "--credstore", help="With --systemd: directory of the encrypted credentials.")]
UnitDirOption = Annotated[Path, typer.Option(
    "--unit-dir", help="With --systemd: where unit drop-ins go.")]


def _read_value(name: str, from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        value = sys.stdin.read().strip()
        if not value:
            fail(f"no value for {name!r} on stdin (pipe it in, or run on a terminal to be asked)",
                 ExitCode.USAGE)
        return value
    value = typer.prompt(f"Value of {name} (not shown)", hide_input=True,
                         confirmation_prompt=True, err=True)
    return str(value).strip()


def _is_agent_secret(name: str) -> bool:
    return Layout(name).agent


def _warn_shape(name: str, value: str) -> None:
    from dorch.secrets import discord_token_problems

    if _is_agent_secret(name):
        if not discord_token_problems(value):
            typer.echo(f"warning: this looks like a Discord bot token: a worker refuses to start "
                       f"when an agent's secret ({name}) is the bot token", err=True)
        return
    if "discord" not in name.lower():
        return
    problems = discord_token_problems(value)
    if problems:
        typer.echo(f"warning: {name} does not look like a Discord bot token: {'; '.join(problems)}",
                   err=True)


@token_app.command("set")
@handles_errors
def set_(
    name: NameArg,
    source: Annotated[str | None, typer.Argument(
        help="'-' to read the value from stdin (also the default when stdin is not a terminal).",
        show_default=False, metavar="[-]")] = None,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the value from stdin.")] = False,
    systemd: SystemdOption = False,
    instance: InstanceOption = None,
    credstore: CredstoreOption = CREDSTORE,
    write_dropin: Annotated[bool, typer.Option(
        "--write-dropin", help="With --systemd: also write the drop-in that loads the credential "
        "(then: systemctl daemon-reload).")] = False,
    unit_dir: UnitDirOption = UNIT_DIR,
) -> None:
    """Store a secret: in the keyring, or with --systemd as an encrypted credential.

    The value is asked for without echo (twice) on a terminal, else read from stdin:
    `dorch token set discord-token`, or `pass show discord | dorch token set discord-token -`.
    """
    from dorch.secrets import check_name

    check_name(name)
    if source not in (None, "-"):
        fail("a secret is never given on the command line (ps and shell history would keep it): "
             f"pipe it (`... | dorch token set {name} -`) or let dorch ask for it", ExitCode.USAGE)
    if (instance or write_dropin) and not systemd:
        fail("--instance and --write-dropin go with --systemd", ExitCode.USAGE)
    if systemd:
        from dorch import credstore as cs

        cs.require_root()
        cs.systemd_creds()  # fail before asking for the value
        layout = Layout(name, instance, credstore, unit_dir)
        value = _read_value(name, stdin or source == "-")
        _warn_shape(name, value)
        path = cs.encrypt(layout, value)
        typer.echo(f"stored {name!r} encrypted in {path} (embedded name {name!r}, mode 0600)")
        if _is_agent_secret(name):
            typer.echo(f"the agent gets it as ${name} once the config lists it: "
                       f"[executor] secrets = [\"{name}\", ...]")
        if write_dropin:
            typer.echo(f"wrote {cs.write_dropin(layout)}; now: systemctl daemon-reload && "
                       f"systemctl restart 'dorch-worker@*'")
            return
        typer.echo(f"\nLoad it with this drop-in ({layout.dropin_path}; --write-dropin writes it):\n")
        typer.echo(layout.dropin())
        if name == "discord-token" and not instance and credstore == CREDSTORE:
            typer.echo("(dorch-worker@.service already loads /etc/credstore.encrypted/discord-token "
                       "by itself: the drop-in matters for another name or path.)")
        return

    from dorch.secrets import keyring_set

    value = _read_value(name, stdin or source == "-")
    _warn_shape(name, value)
    try:
        backend = keyring_set(name, value)
    except KeyringUnavailable as exc:
        fail(f"cannot store {name!r} in the keyring: {exc}.\n"
             f"On a server, store it as an encrypted systemd credential: "
             f"sudo dorch token set {name} --systemd\n"
             "On a desktop, install and unlock a Secret Service (GNOME Keyring, KWallet), "
             "then try again.", ExitCode.CONFIG)
    typer.echo(f"stored {name!r} in the keyring ({backend}, service \"dorch\")")
    if _is_agent_secret(name):
        typer.echo(f"the agent gets it as ${name} once the config lists it: "
                   f"[executor] secrets = [\"{name}\", ...]")


@token_app.command("get")
@handles_errors
def get(
    name: NameArg,
    reveal: Annotated[bool, typer.Option(
        "--reveal", help="Print the value too (on stdout, the report going to stderr).")] = False,
    as_json: JsonOption = False,
    credstore: CredstoreOption = CREDSTORE,
) -> None:
    """Say whether a secret is there, where, and whether it looks like a Discord bot token."""
    from dorch.secrets import discord_token_bot_id, discord_token_problems, not_found_message, survey

    places = survey(name)
    found = [p for p in places if p.value is not None]
    # Outside a unit, a server's token is sealed in the credstore: say it is there at least.
    sealed = str(credstore / name) if (credstore / name).is_file() else None
    sealed_note = (f"  an encrypted credential {sealed} exists: units load it into their "
                   "$CREDENTIALS_DIRECTORY (`sudo systemd-creds decrypt` reads it)") if sealed else ""
    if not found:
        if as_json:
            print_json({"name": name, "found": False, "encrypted_credential": sealed,
                        "looked": [{"source": p.source, "location": p.location, "note": p.note}
                                   for p in places]})
        else:
            typer.echo(not_found_message(name, places) + ("\n" + sealed_note if sealed else ""),
                       err=True)
        raise typer.Exit(ExitCode.FAILED)
    used, shadowed = found[0], found[1:]
    value = used.value or ""
    problems = discord_token_problems(value)
    bot_id = discord_token_bot_id(value)
    if as_json:
        data: dict[str, Any] = {
            "name": name, "found": True, "source": used.source, "location": used.location,
            "also_in": [p.location for p in shadowed],
            "encrypted_credential": sealed,
            "discord_token": {"looks_valid": not problems, "problems": problems, "bot_id": bot_id},
        }
        if reveal:
            data["value"] = value
        print_json(data)
        return
    lines = [f"{name}: found in the {used.location}"]
    if _is_agent_secret(name):
        if not problems:
            lines.append("  looks like a Discord bot token: a worker refuses to give it to an "
                         "agent")
    elif problems:
        lines.append(f"  does not look like a Discord bot token: {'; '.join(problems)}")
    else:
        lines.append(f"  looks like a Discord bot token (bot user id {bot_id}); only Discord can "
                     "tell whether it is still valid (`dorch doctor`)")
    lines += [f"  also in the {p.location} (not used: the first place wins)" for p in shadowed]
    if sealed and used.source != "credentials":
        lines.append(sealed_note)
    if not reveal:
        lines.append("  (the value is not shown: --reveal prints it)")
    typer.echo("\n".join(lines), err=reveal)
    if reveal:
        typer.echo(value)


@token_app.command("delete")
@handles_errors
def delete(
    name: NameArg,
    systemd: SystemdOption = False,
    instance: InstanceOption = None,
    credstore: CredstoreOption = CREDSTORE,
    unit_dir: UnitDirOption = UNIT_DIR,
) -> None:
    """Remove a secret from the keyring, or with --systemd its encrypted credential and drop-in."""
    from dorch.secrets import check_name, keyring_delete, survey

    check_name(name)
    if instance and not systemd:
        fail("--instance goes with --systemd", ExitCode.USAGE)
    if systemd:
        from dorch import credstore as cs

        cs.require_root()
        removed = cs.remove(Layout(name, instance, credstore, unit_dir))
        if not removed:
            fail(f"{name!r}: no {Layout(name, instance, credstore).file} to remove")
        for path in removed:
            typer.echo(f"removed {path}")
        typer.echo("now: systemctl daemon-reload && systemctl restart 'dorch-worker@*'")
        return
    try:
        gone = keyring_delete(name)
    except KeyringUnavailable as exc:
        fail(f"cannot reach the keyring: {exc}", ExitCode.CONFIG)
    if not gone:
        fail(f"{name!r} is not in the keyring (nothing removed)")
    typer.echo(f"removed {name!r} from the keyring")
    left = next((p for p in survey(name) if p.value is not None), None)
    if left is not None:
        typer.echo(f"note: {name!r} is still in the {left.location}, which dorch now uses", err=True)
