"""Discord's permission bits that dorch needs, and parsing them from names in the config."""

from __future__ import annotations

from collections.abc import Iterable

ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
MANAGE_WEBHOOKS = 1 << 29
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
USE_EXTERNAL_APPS = 1 << 50

BY_NAME: dict[str, int] = {
    "ADD_REACTIONS": ADD_REACTIONS,
    "VIEW_CHANNEL": VIEW_CHANNEL,
    "SEND_MESSAGES": SEND_MESSAGES,
    "MANAGE_MESSAGES": MANAGE_MESSAGES,
    "EMBED_LINKS": EMBED_LINKS,
    "ATTACH_FILES": ATTACH_FILES,
    "READ_MESSAGE_HISTORY": READ_MESSAGE_HISTORY,
    "MENTION_EVERYONE": MENTION_EVERYONE,
    "MANAGE_WEBHOOKS": MANAGE_WEBHOOKS,
    "USE_APPLICATION_COMMANDS": USE_APPLICATION_COMMANDS,
    "MANAGE_THREADS": MANAGE_THREADS,
    "CREATE_PUBLIC_THREADS": CREATE_PUBLIC_THREADS,
    "SEND_MESSAGES_IN_THREADS": SEND_MESSAGES_IN_THREADS,
    "USE_EXTERNAL_APPS": USE_EXTERNAL_APPS,
}

#: What a bot gets unless its config says otherwise: everything dorch uses.
DEFAULT_BOT = (ADD_REACTIONS | VIEW_CHANNEL | SEND_MESSAGES | MANAGE_MESSAGES | EMBED_LINKS
               | ATTACH_FILES | READ_MESSAGE_HISTORY | MANAGE_THREADS | CREATE_PUBLIC_THREADS
               | SEND_MESSAGES_IN_THREADS)
#: What a human member gets: @everyone's defaults on Discord, without moderation rights (so a
#: member may start a thread on any message, and run apps whose answers post in the channel).
DEFAULT_USER = (ADD_REACTIONS | VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES
                | READ_MESSAGE_HISTORY | CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS
                | USE_APPLICATION_COMMANDS | USE_EXTERNAL_APPS)


def parse(names: Iterable[str], where: str) -> int:
    """OR together permission NAMES; an unknown name is a ValueError naming WHERE and the choices."""
    bits = 0
    for name in names:
        key = str(name).upper()
        if key not in BY_NAME:
            raise ValueError(f"{where}: unknown permission {name!r}; use one of {', '.join(BY_NAME)}")
        bits |= BY_NAME[key]
    return bits


def names(bits: int) -> list[str]:
    return [name for name, bit in BY_NAME.items() if bits & bit]
