"""Secrets (bot tokens): where dorch looks for them, in order, and how it keeps them out of logs.

1. ``$CREDENTIALS_DIRECTORY/<name>``: a systemd credential (``LoadCredentialEncrypted=``), the
   way on servers. Only the unit's user can read it; it is never in the environment.
2. The OS keyring (Python ``keyring``, service ``dorch``, username ``<name>``): the way on
   desktops (``dorch token set NAME``). A box without one (a server) is skipped, not an error.
3. ``$DORCH_SECRET_<NAME>`` (``discord-token`` -> ``DORCH_SECRET_DISCORD_TOKEN``): the least safe,
   every process started with that environment inherits it; a warning says so.

Every value found is registered with ``dorch.log.register_secret``. ``keyring`` is imported only
when the credentials directory does not have the secret: it costs most of a second at start-up.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dorch.errors import ConfigError
from dorch.log import register_secret

log = logging.getLogger(__name__)

SERVICE = "dorch"
ENV_PREFIX = "DORCH_SECRET_"
CREDSTORE = Path("/etc/credstore.encrypted")

# Sources, in lookup order.
CREDENTIALS = "credentials"
KEYRING = "keyring"
ENVIRONMENT = "environment"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# an agent's secret ([executor] secrets) is named like the environment variable it becomes
_AGENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")


class SecretError(ConfigError):
    """A secret cannot be read or stored as asked; the text says what to do. Exit 78."""


class SecretNotFound(SecretError):
    """No place has the secret; the text names every place looked and how to store it."""


class KeyringUnavailable(SecretError):
    """No usable keyring on this machine (a server, or a locked/missing Secret Service)."""


@dataclass(frozen=True)
class Place:
    """One place looked: SOURCE, a human LOCATION, and VALUE if it is there, else a NOTE why not."""

    source: str
    location: str
    value: str | None = field(default=None, repr=False)
    note: str = ""


def check_name(name: str) -> str:
    """NAME if it can name a secret (a file name for systemd, a keyring username), else SecretError."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise SecretError(
            f"{name!r} is not a valid secret name: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit), e.g. discord-token"
        )
    return name


def agent_secret_name(name: str) -> bool:
    """Whether NAME can name an agent's secret: an environment variable name."""
    return bool(_AGENT_NAME.fullmatch(name))


def env_var(name: str) -> str:
    """The environment variable for NAME: ``discord-token`` -> ``DORCH_SECRET_DISCORD_TOKEN``."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def lookup_secret(name: str) -> str:
    """The secret NAME from the first place that has it (see the module doc); else SecretNotFound."""
    places: list[Place] = []
    for place in _places(check_name(name)):
        if place.value is not None:
            return place.value
        places.append(place)
    raise SecretNotFound(not_found_message(name, places))


def find_secret(name: str, warn: bool = True, keyring: bool = True) -> tuple[str, str] | None:
    """``(source, value)`` from the first place that has NAME, or None. Sources: see ``CREDENTIALS``.

    WARN: log the warning about the environment; KEYRING: also look there (it costs a second)."""
    for place in _places(check_name(name), warn, keyring):
        if place.value is not None:
            return place.source, place.value
    return None


def survey(name: str) -> list[Place]:
    """Every place, in lookup order, with the value where there is one (for ``dorch token get``)."""
    return list(_places(check_name(name), warn=False))


def not_found_message(name: str, places: list[Place]) -> str:
    lines = [f"secret {name!r} not found. Looked in, in this order:"]
    lines += [f"  {i}. {p.location}: {p.note}" for i, p in enumerate(places, 1)]
    lines.append(
        f"Store it: on a desktop `dorch token set {name}` (the keyring); on a server "
        f"`sudo dorch token set {name} --systemd` (an encrypted systemd credential, loaded by the "
        f"unit with LoadCredentialEncrypted={name}); or, least safe, set ${env_var(name)}."
    )
    return "\n".join(lines)


def _places(name: str, warn: bool = True, keyring: bool = True) -> Iterator[Place]:
    yield _from_credentials(name)
    if keyring:
        yield _from_keyring(name)
    yield _from_environment(name, warn)


def _found(place: Place, raw: str) -> Place:
    value = raw.rstrip("\r\n")
    if not value:
        return Place(place.source, place.location, None, "present but empty")
    register_secret(value)
    return Place(place.source, place.location, value)


def _from_credentials(name: str) -> Place:
    directory = os.environ.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        return Place(CREDENTIALS, "systemd credential $CREDENTIALS_DIRECTORY/" + name,
                     note="$CREDENTIALS_DIRECTORY is not set (not a systemd unit with "
                          f"LoadCredentialEncrypted={name})")
    path = Path(directory) / name
    place = Place(CREDENTIALS, f"systemd credential {path}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Place(place.source, place.location, note="no such file (the unit loads no "
                     f"credential {name!r}: add LoadCredentialEncrypted={name})")
    except OSError as exc:
        # There but unreadable is a broken set-up, not "look elsewhere": say so instead of
        # quietly using an older token from the keyring or the environment.
        raise SecretError(f"{path}: cannot read the credential: {exc.strerror}") from None
    try:
        return _found(place, data.decode("utf-8"))
    except UnicodeDecodeError:
        raise SecretError(f"{path}: the credential is not UTF-8 text") from None


def _from_keyring(name: str) -> Place:
    location = f'keyring (service "{SERVICE}", username "{name}")'
    try:
        backend, value = _keyring_get(name)
    except KeyringUnavailable as exc:
        log.debug("keyring skipped for %r: %s", name, exc)
        return Place(KEYRING, location, note=str(exc))
    location = f'keyring {backend} (service "{SERVICE}", username "{name}")'
    if value is None:
        return Place(KEYRING, location, note="not stored")
    return _found(Place(KEYRING, location), value)


def _from_environment(name: str, warn: bool) -> Place:
    var = env_var(name)
    place = Place(ENVIRONMENT, f"environment variable {var}")
    raw = os.environ.get(var)
    if raw is None:
        return Place(place.source, place.location, note="not set")
    found = _found(place, raw)
    if warn and found.value is not None:
        log.warning(
            "secret %r comes from $%s, the least safe place: every process started from this "
            "environment inherits it. Prefer `dorch token set %s` (keyring) or a systemd "
            "credential (`dorch token set %s --systemd`).", name, var, name, name,
        )
    return found


# -- the keyring ---------------------------------------------------------------------------------

def _backend() -> object:
    """The keyring backend, or KeyringUnavailable when there is none that can work here."""
    try:
        import keyring
        from keyring.backends import fail

        backend = keyring.get_keyring()
    except Exception as exc:  # not installed, or a broken keyringrc/backend
        raise KeyringUnavailable(f"cannot load a keyring backend: {type(exc).__name__}: {exc}") from None
    if isinstance(backend, fail.Keyring):
        raise KeyringUnavailable(
            "no keyring backend available (no Secret Service on the D-Bus session bus: normal "
            "on a server)"
        )
    if os.environ.get(ALLOW_PLAINTEXT_KEYRING) == "1":
        return backend
    # A chain (several viable backends, best first) would also read and write the plain-text
    # ones: use the best encrypted backend alone, and refuse only when there is none.
    chain = list(getattr(backend, "backends", [backend]))
    kept = [b for b in chain if not _plain_text(b)]
    if kept and len(kept) < len(chain):
        return kept[0]
    if not kept:
        raise KeyringUnavailable(
            "no keyring backend available that keeps secrets encrypted: "
            f"{type(chain[0]).__module__}.{type(chain[0]).__name__} stores them in plain text "
            "(anyone who can read your files gets them), so dorch does not use it. Use a Secret "
            "Service keyring, a systemd credential (`dorch token set NAME --systemd`) or "
            f"$DORCH_SECRET_<NAME>; {ALLOW_PLAINTEXT_KEYRING}=1 allows it anyway"
        )
    return backend


ALLOW_PLAINTEXT_KEYRING = "DORCH_ALLOW_PLAINTEXT_KEYRING"


def _plain_text(backend: object) -> bool:
    """The keyrings.alt file backends: secrets in a file of the user's (plain, or under a
    password nobody types on a server)."""
    return type(backend).__module__.startswith(("keyrings.alt.file", "keyrings.alt.pyfs"))


def backend_name() -> str:
    """A name for the keyring in use (e.g. "SecretService Keyring"); KeyringUnavailable if none."""
    backend = _backend()
    return str(getattr(backend, "name", type(backend).__name__))


def _keyring_get(name: str) -> tuple[str, str | None]:
    backend = _backend()
    try:
        value = backend.get_password(SERVICE, name)  # type: ignore[attr-defined]
    except Exception as exc:  # a locked, broken or vanished Secret Service: never a crash
        raise KeyringUnavailable(_keyring_failure(exc)) from None
    return str(getattr(backend, "name", type(backend).__name__)), value


def keyring_set(name: str, value: str) -> str:
    """Store VALUE as NAME in the keyring; returns the backend's name. KeyringUnavailable if none."""
    check_name(name)
    backend = _backend()
    try:
        backend.set_password(SERVICE, name, value)  # type: ignore[attr-defined]
    except Exception as exc:
        raise KeyringUnavailable(_keyring_failure(exc)) from None
    register_secret(value)
    return str(getattr(backend, "name", type(backend).__name__))


def keyring_delete(name: str) -> bool:
    """Remove NAME from the keyring; False when it was not there. KeyringUnavailable if none."""
    import keyring.errors

    check_name(name)
    backend = _backend()
    try:
        if backend.get_password(SERVICE, name) is None:  # type: ignore[attr-defined]
            return False
        backend.delete_password(SERVICE, name)  # type: ignore[attr-defined]
    except keyring.errors.PasswordDeleteError:
        return False
    except Exception as exc:
        raise KeyringUnavailable(_keyring_failure(exc)) from None
    return True


def _keyring_failure(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"the keyring failed: {type(exc).__name__}: {text} (is the Secret Service unlocked?)"


# -- what a Discord bot token looks like ---------------------------------------------------------

_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def discord_token_problems(token: str) -> list[str]:
    """What makes TOKEN unlike a Discord bot token (``<user id>.<timestamp>.<hmac>``, base64url).

    An empty list means it looks right; it may still be revoked (only Discord can tell).
    """
    if token.lower().startswith("bot "):
        return ["it starts with 'Bot ': store the token alone, without the prefix"]
    if any(c.isspace() for c in token):
        return ["it contains whitespace (a stray space or line break from copying?)"]
    parts = token.split(".")
    if len(parts) != 3:
        return [f"it has {len(parts)} dot-separated part(s); a bot token has 3 "
                "(user id, timestamp, signature): copy it again from the Developer Portal, "
                "Bot -> Reset Token"]
    problems = []
    for label, part in zip(("first", "second", "third"), parts, strict=True):
        if not part:
            problems.append(f"the {label} part is empty")
        elif not _B64URL.fullmatch(part):
            problems.append(f"the {label} part has characters outside base64url (A-Z a-z 0-9 - _)")
    if problems:
        return problems
    if discord_token_bot_id(token) is None:
        problems.append("the first part does not decode to a Discord user id (digits)")
    if not 4 <= len(parts[1]) <= 8:
        problems.append(f"the second part (timestamp) is {len(parts[1])} characters; Discord's is 6")
    if len(parts[2]) < 25:
        problems.append(f"the third part (signature) is {len(parts[2])} characters; Discord's has "
                        "27 or more (truncated when copied?)")
    return problems


def discord_token_bot_id(token: str) -> int | None:
    """The bot's user id encoded in TOKEN's first part, or None if it does not decode to one."""
    first = token.split(".", 1)[0]
    try:
        text = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        return None
    return int(text) if text.isdigit() and 15 <= len(text) <= 20 else None


# Never passed, even when asked for: dorch's own settings and secrets (DORCH_*, including
# DORCH_SECRET_*), and systemd's per-unit channels (credentials, sd_notify socket, watchdog,
# socket activation), which belong to the worker, not its agent. Names like a token are passed
# only as declared secrets ([executor] secrets), never copied from the worker's environment.
_FORBIDDEN = re.compile(
    r"^(DORCH_.*|CREDENTIALS_DIRECTORY|NOTIFY_SOCKET|WATCHDOG_.*|LISTEN_(FDS|PID|FDNAMES))$",
    re.IGNORECASE,
)


def forbidden_env_name(name: str, secret: bool = False) -> bool:
    """True for names that never reach a child (see ``_FORBIDDEN``), and for names containing
    TOKEN unless SECRET (a declared agent secret, whose value dorch looked up itself)."""
    return bool(_FORBIDDEN.match(name)) or (not secret and "TOKEN" in name.upper())
