"""The emulator's configuration: the guild, its channels, roles, bots and users, and the limits.

One TOML file (see ``example.toml`` next to this module) or a dict. Ids not given are derived
from each object's position, so the same file always yields the same ids: a dorch config written
for it once stays valid.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dorch_emulator import permissions as perms
from dorch_emulator.faults import Faults
from dorch_emulator.snowflake import from_time

EXAMPLE = Path(__file__).with_name("example.toml")
_ID_BASE_MS = 1704067200000  # 2024-01-01T00:00:00Z: configured objects predate every message

TEXT, FORUM = 0, 15
_CHANNEL_TYPES = {"text": TEXT, "forum": FORUM}


class EmulatorConfigError(ValueError):
    """A mistake in the emulator's config; the text names the key and what to write instead."""


@dataclass(frozen=True)
class RouteLimit:
    """A per-route bucket: LIMIT requests per PER seconds per bot and major parameter.

    ``hidden_limit``/``hidden_per`` add an undisclosed sub-limit: when it trips, the 429 comes
    with ``X-RateLimit-Remaining`` > 0, as Discord's hidden limits do.
    """

    limit: int
    per: float
    hidden_limit: int = 0
    hidden_per: float = 0.0


DEFAULT_ROUTE_LIMITS: dict[str, RouteLimit] = {
    "create_message": RouteLimit(5, 5.0),
    "edit_message": RouteLimit(5, 5.0),
    "delete_message": RouteLimit(5, 1.0),
    "bulk_delete": RouteLimit(1, 1.0),
    "reactions": RouteLimit(1, 0.25),
    "start_thread": RouteLimit(5, 5.0),
    "modify_channel": RouteLimit(5, 5.0),
    "execute_webhook": RouteLimit(5, 2.0),  # per webhook
    "default": RouteLimit(5, 1.0),
}


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    id: int
    type: int = TEXT
    topic: str = ""
    # role id (the guild's id for @everyone) -> the channel's overwrite for that role
    overwrites: dict[int, Override] = field(default_factory=dict)


@dataclass(frozen=True)
class RoleSpec:
    name: str
    id: int


@dataclass(frozen=True)
class Override:
    allow: int = 0
    deny: int = 0


@dataclass(frozen=True)
class MemberSpec:
    """A bot (``token`` set) or a human user of the guild."""

    name: str
    id: int
    bot: bool
    token: str = field(default="", repr=False)
    roles: tuple[int, ...] = ()
    permissions: int = perms.DEFAULT_USER
    overrides: dict[int, Override] = field(default_factory=dict)  # channel id -> override
    message_content: bool = True
    verified: bool = False


@dataclass
class EmulatorConfig:
    guild_id: int
    guild_name: str
    channels: list[ChannelSpec]
    roles: list[RoleSpec]
    bots: list[MemberSpec]
    users: list[MemberSpec]
    routes: dict[str, RouteLimit] = field(default_factory=lambda: dict(DEFAULT_ROUTE_LIMITS))
    global_limit: int = 50
    global_per: float = 1.0
    invalid_limit: int = 10_000
    invalid_window: float = 600.0
    ban_seconds: float = 3600.0
    nonce_window: float = 300.0
    max_active_threads: int = 1000
    max_files: int = 10
    max_file_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 25 * 1024 * 1024
    # the CDN sends an attachment in chunks and pauses after the first, as a real download
    # arrives over time: a reader must read to the end, not take what is buffered
    cdn_chunk_bytes: int = 64 * 1024
    cdn_first_pause: float = 0.1
    seed: int | None = None
    faults: Faults = field(default_factory=Faults)

    @classmethod
    def load(cls, path: str | Path) -> EmulatorConfig:
        """Read a TOML file (or JSON, if the name ends in .json); errors name the file."""
        path = Path(path)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except OSError as exc:
            raise EmulatorConfigError(f"{path}: cannot read the emulator config: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            kind = "JSON" if path.suffix == ".json" else "TOML"
            raise EmulatorConfigError(f"{path}: not valid {kind}: {exc}") from None
        try:
            return cls.from_dict(data)
        except EmulatorConfigError as exc:
            raise EmulatorConfigError(f"{path}: {exc}") from None

    @classmethod
    def default(cls) -> EmulatorConfig:
        """What ``example.toml`` describes (kept in code too, so no package data is needed)."""
        return cls.from_dict(DEFAULT)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmulatorConfig:
        try:
            return _build(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise EmulatorConfigError(str(exc).strip("'\"")) from None

    def channel(self, name_or_id: str | int) -> ChannelSpec:
        for ch in self.channels:
            if str(name_or_id) in (ch.name, str(ch.id), "#" + ch.name):
                return ch
        raise KeyError(f"no channel {name_or_id!r}; channels are {', '.join(c.name for c in self.channels)}")

    def member(self, name_or_id: str | int) -> MemberSpec:
        for m in [*self.bots, *self.users]:
            if str(name_or_id) in (m.name, str(m.id)):
                return m
        raise KeyError(f"no bot or user {name_or_id!r}")

    def bot(self, name_or_id: str | int) -> MemberSpec:
        member = self.member(name_or_id)
        if not member.bot:
            raise KeyError(f"{name_or_id!r} is a user, not a bot")
        return member

    def summary(self) -> dict[str, Any]:
        """Names and ids of everything (and bot tokens: the emulator's tokens are test fixtures)."""
        return {
            "guild": {"id": str(self.guild_id), "name": self.guild_name},
            "channels": {c.name: str(c.id) for c in self.channels},
            "roles": {r.name: str(r.id) for r in self.roles},
            "bots": {b.name: {"id": str(b.id), "token": b.token} for b in self.bots},
            "users": {u.name: {"id": str(u.id)} for u in self.users},
        }


#: The default world, the same as example.toml: guild "dorch", three channels, four worker bots
#: and a submitter bot (all with every permission and the MESSAGE_CONTENT intent), two humans.
DEFAULT: dict[str, Any] = {
    "guild": {"name": "dorch"},
    "channels": ["task-queue", "results", "worker-pool"],
    "roles": ["dorch-submitter"],
    "bots": [{"name": f"worker-{n}"} for n in range(1, 5)] + [{"name": "submitter"}],
    "users": [{"name": "alice", "roles": ["dorch-submitter"]}, {"name": "bob"}],
}

# -- building from a dict ------------------------------------------------------------------------

_SECTIONS = {"emulator", "guild", "channels", "roles", "bots", "users", "ratelimit", "faults"}
_EMULATOR_KEYS = {"invalid_limit", "invalid_window", "ban_seconds", "nonce_window",
                  "max_active_threads", "max_files", "max_file_bytes", "max_request_bytes",
                  "cdn_chunk_bytes", "cdn_first_pause", "seed"}


class _Ids:
    """Hands out the configured id, or a stable one derived from the object's position."""

    def __init__(self) -> None:
        self._n = 0
        self._used: dict[int, str] = {}

    def take(self, raw: Any, what: str) -> int:
        self._n += 1
        value = from_time(_ID_BASE_MS + self._n, worker=0) if raw is None else _snowflake(raw, what)
        if value in self._used:
            raise ValueError(f"{what}: id {value} is already used by {self._used[value]}")
        self._used[value] = what
        return value


def _snowflake(raw: Any, what: str) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: id must be a number, got {raw!r}") from None
    if value <= 0 or value >= 1 << 63:
        raise ValueError(f"{what}: id {value} is not a snowflake")
    return value


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; known keys are {', '.join(sorted(allowed))}")


def _overwrites(raw: Any, where: str, role_ids: dict[str, int]) -> dict[int, Override]:
    """A channel's role overwrites: ``{"@everyone" | ROLE: {"allow": [...], "deny": [...]}}``."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a table of roles")
    out = {}
    for role, ov in raw.items():
        _check_keys(ov, {"allow", "deny"}, f"{where}.{role}")
        if str(role) not in role_ids:
            raise ValueError(f"{where}: no role {role!r}; use @everyone or a role under [[roles]]")
        out[role_ids[str(role)]] = Override(perms.parse(ov.get("allow", []), f"{where}.{role}.allow"),
                                            perms.parse(ov.get("deny", []), f"{where}.{role}.deny"))
    return out


def _build(data: dict[str, Any]) -> EmulatorConfig:
    _check_keys(data, _SECTIONS, "config")
    ids = _Ids()
    guild = data.get("guild", {})
    _check_keys(guild, {"id", "name"}, "[guild]")
    guild_id = ids.take(guild.get("id"), "[guild]")

    channels: list[ChannelSpec] = []
    raw_channels = data.get("channels", ["task-queue", "results", "worker-pool"])
    for i, raw in enumerate(raw_channels):
        where = f"channels[{i}]"
        entry = {"name": raw} if isinstance(raw, str) else raw
        _check_keys(entry, {"name", "id", "type", "topic", "overwrites"}, where)
        name = str(entry["name"]).lstrip("#")
        kind = entry.get("type", "text")
        if kind not in _CHANNEL_TYPES:
            raise ValueError(f"{where}.type must be one of {', '.join(_CHANNEL_TYPES)}")
        channels.append(ChannelSpec(name, ids.take(entry.get("id"), where), _CHANNEL_TYPES[kind],
                                    str(entry.get("topic", ""))))
    if len({c.name for c in channels}) != len(channels):
        raise ValueError("channels: two channels have the same name")

    roles: list[RoleSpec] = []
    for i, raw in enumerate(data.get("roles", [])):
        where = f"roles[{i}]"
        entry = {"name": raw} if isinstance(raw, str) else raw
        _check_keys(entry, {"name", "id"}, where)
        roles.append(RoleSpec(str(entry["name"]), ids.take(entry.get("id"), where)))
    role_ids = {r.name: r.id for r in roles} | {str(r.id): r.id for r in roles}
    for i, raw in enumerate(raw_channels):
        overwrites = {} if isinstance(raw, str) else raw.get("overwrites", {})
        channels[i] = dataclasses.replace(channels[i], overwrites=_overwrites(
            overwrites, f"channels[{i}].overwrites", role_ids | {"@everyone": guild_id}))

    by_channel = {c.name: c.id for c in channels} | {str(c.id): c.id for c in channels}

    def member(entry: dict[str, Any], where: str, bot: bool) -> MemberSpec:
        keys = {"name", "id", "roles", "permissions", "allow", "deny", "channels"}
        if bot:
            keys |= {"token", "message_content", "verified"}
        _check_keys(entry, keys, where)
        name = str(entry["name"])
        token = str(entry.get("token") or (f"emulator-token-{name}" if bot else ""))
        base = perms.DEFAULT_BOT if bot else perms.DEFAULT_USER
        if "permissions" in entry:
            base = perms.parse(entry["permissions"], f"{where}.permissions")
        base = (base | perms.parse(entry.get("allow", []), f"{where}.allow")) & ~perms.parse(
            entry.get("deny", []), f"{where}.deny")
        overrides: dict[int, Override] = {}
        for ch_name, ov in entry.get("channels", {}).items():
            ov_where = f"{where}.channels.{ch_name}"
            _check_keys(ov, {"allow", "deny"}, ov_where)
            if str(ch_name).lstrip("#") not in by_channel:
                known = ", ".join(c.name for c in channels)
                raise ValueError(f"{ov_where}: no such channel; channels are {known}")
            overrides[by_channel[str(ch_name).lstrip("#")]] = Override(
                perms.parse(ov.get("allow", []), f"{ov_where}.allow"),
                perms.parse(ov.get("deny", []), f"{ov_where}.deny"))
        member_roles = []
        for role in entry.get("roles", []):
            if str(role) not in role_ids:
                raise ValueError(f"{where}.roles: no role {role!r}; declare it under [[roles]]")
            member_roles.append(role_ids[str(role)])
        return MemberSpec(name=name, id=ids.take(entry.get("id"), where), bot=bot, token=token,
                          roles=tuple(member_roles), permissions=base, overrides=overrides,
                          message_content=bool(entry.get("message_content", True)),
                          verified=bool(entry.get("verified", False)))

    bots = [member(b, f"bots[{i}]", True) for i, b in enumerate(data.get("bots", [{"name": "dorch-bot"}]))]
    users = [member(u, f"users[{i}]", False) for i, u in enumerate(data.get("users", [{"name": "alice"}]))]
    names = [m.name for m in [*bots, *users]]
    if len(set(names)) != len(names):
        raise ValueError("bots and users: two have the same name")
    tokens = [b.token for b in bots]
    if len(set(tokens)) != len(tokens):
        raise ValueError("bots: two bots have the same token")

    config = EmulatorConfig(guild_id=guild_id, guild_name=str(guild.get("name", "dorch")),
                            channels=channels, roles=roles, bots=bots, users=users)

    emulator = data.get("emulator", {})
    _check_keys(emulator, _EMULATOR_KEYS, "[emulator]")
    for key, value in emulator.items():
        default = getattr(config, key)
        if key == "seed":
            config.seed = int(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"[emulator].{key} must be a positive number")
        setattr(config, key, type(default)(value))

    ratelimit = data.get("ratelimit", {})
    _check_keys(ratelimit, {"global_limit", "global_per", "routes"}, "[ratelimit]")
    config.global_limit = int(ratelimit.get("global_limit", config.global_limit))
    config.global_per = float(ratelimit.get("global_per", config.global_per))
    if config.global_limit < 1 or config.global_per <= 0:
        raise ValueError("[ratelimit]: global_limit must be >= 1 and global_per > 0")
    for route, raw in ratelimit.get("routes", {}).items():
        where = f"[ratelimit.routes.{route}]"
        if route not in DEFAULT_ROUTE_LIMITS:
            raise ValueError(f"{where}: unknown route; known routes are {', '.join(DEFAULT_ROUTE_LIMITS)}")
        _check_keys(raw, {f.name for f in dataclasses.fields(RouteLimit)}, where)
        merged = dataclasses.asdict(DEFAULT_ROUTE_LIMITS[route]) | raw
        limit = RouteLimit(int(merged["limit"]), float(merged["per"]), int(merged["hidden_limit"]),
                           float(merged["hidden_per"]))
        if limit.limit < 1 or limit.per <= 0 or limit.hidden_limit < 0 or (
                limit.hidden_limit and limit.hidden_per <= 0):
            raise ValueError(f"{where}: limit >= 1 and per > 0 (hidden_per > 0 with a hidden_limit)")
        config.routes[route] = limit

    faults = data.get("faults", {})
    if not isinstance(faults, dict):
        raise ValueError("[faults] must be a table")
    config.faults.update(faults)
    return config
