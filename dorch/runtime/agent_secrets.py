"""The agent's own secrets (``[executor] secrets``), read once when a worker starts.

Each NAME is looked up like the bot token (``dorch.secrets``: ``$CREDENTIALS_DIRECTORY/NAME``,
the keyring, ``$DORCH_SECRET_NAME``) and reaches the agent's environment only, as NAME: never the
worker's own environment, a log line or an argument vector. Every value is registered for
redaction (``dorch.redact``), and so is the bot token when this worker can know it.

A missing secret, or one whose value is the bot token, stops the worker before it claims a task
(exit 78, the unit does not restart): an agent started without its login fails every task, and
an agent holding the bot token could post tasks that every worker of the fleet obeys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dorch.secrets import SecretError, SecretNotFound, find_secret, lookup_secret

if TYPE_CHECKING:
    from dorch.config import Config


def load(config: Config) -> dict[str, str]:
    """NAME -> value for every ``[executor] secrets`` name; SecretError (exit 78) if one is
    missing or is the bot token. The text never holds a value."""
    names = list(config.values["executor"]["secrets"])
    bot = bot_token(config)
    found: dict[str, str] = {}
    for name in names:
        try:
            value = lookup_secret(name)
        except SecretNotFound as exc:
            raise SecretError(
                f"[executor] secrets: the agent's secret {name!r} is missing, so this worker "
                f"does not start. {exc}\nFor dorch-worker@ units: `sudo dorch token set {name} "
                "--systemd --write-dropin && sudo systemctl daemon-reload` (the drop-in loads "
                "the credential into every instance)") from None
        if bot is not None and value == bot:
            raise SecretError(
                f"[executor] secrets: {name!r} holds the Discord bot token ([discord] token): "
                "dorch never gives the bot token to an agent (with it, the agent could post tasks "
                f"that every worker obeys). Store the agent's own credential as {name!r} "
                f"(`dorch token set {name}`), or remove {name!r} from [executor] secrets"
            )
        found[name] = value
    return found


def bot_token(config: Config) -> str | None:
    """The bot token, when this worker can know it (and registered for redaction).

    On the Discord bus the worker needs it: looked up in every place, a missing one is the
    bus's error (SecretNotFound). On the local bus only a credential or the environment is
    looked at (the keyring costs a second at every start): a token there is redacted too.
    """
    name = str(config.discord["token"])
    if config.bus_kind == "discord":
        found = find_secret(name, warn=False)
    else:
        try:
            found = find_secret(name, warn=False, keyring=False)
        except SecretError:  # an odd name or an unreadable file: not this worker's business
            return None
    return found[1] if found else None
