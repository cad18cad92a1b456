"""``dorch doctor`` for the Discord bus: is the bot set up so that dorch can work?

Checks the token (401), that it is a bot, the MESSAGE_CONTENT intent (application flags), the
guild, and every configured channel: it exists, the bot can see it, it is a text channel of
the guild, and the bot holds every permission dorch uses there. Each failure carries its fix.

Permissions are computed the way Discord clients compute them, from REST reads only (nothing is
posted): the guild-level permissions of the bot (``GET /users/@me/guilds``, which already
combines @everyone and the bot's roles; ADMINISTRATOR or ownership means everything), then the
channel's ``permission_overwrites``: @everyone's, the bot's roles' (from its member object),
then its own. Harmless probes could not tell most of these apart (reading history without the
permission just returns an empty list) and posting would leave traces, so none are made;
seeing the channel is confirmed by fetching it (403 50001 otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dorch.bus import BusConfigError
from dorch.discord import errors
from dorch.discord.client import DiscordClient

if TYPE_CHECKING:
    from dorch.bus.discord.host_state import HostState
    from dorch.config import Config

ADD_REACTIONS = 1 << 6
ADMINISTRATOR = 1 << 3
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
MANAGE_THREADS = 1 << 34
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL = (1 << 53) - 1

NAMES = {
    VIEW_CHANNEL: "View Channel",
    SEND_MESSAGES: "Send Messages",
    READ_MESSAGE_HISTORY: "Read Message History",
    ADD_REACTIONS: "Add Reactions",
    CREATE_PUBLIC_THREADS: "Create Public Threads",
    SEND_MESSAGES_IN_THREADS: "Send Messages in Threads",
    MANAGE_MESSAGES: "Manage Messages",
    MANAGE_THREADS: "Manage Threads",
    ATTACH_FILES: "Attach Files",
}

# What dorch does in each channel: tasks are claimed by starting a thread, answered in the
# thread (long output attached), marked with reactions; reapers delete other workers' stale
# claim receipts (Manage Messages) and archive the threads other bots started (Manage Threads).
# #results and #worker-pool only get posts and edits.
NEEDED: dict[str, tuple[int, ...]] = {
    "task_channel": (VIEW_CHANNEL, SEND_MESSAGES, READ_MESSAGE_HISTORY, ADD_REACTIONS,
                     CREATE_PUBLIC_THREADS, SEND_MESSAGES_IN_THREADS, MANAGE_MESSAGES,
                     MANAGE_THREADS, ATTACH_FILES),
    "results_channel": (VIEW_CHANNEL, SEND_MESSAGES, READ_MESSAGE_HISTORY),
    "pool_channel": (VIEW_CHANNEL, SEND_MESSAGES, READ_MESSAGE_HISTORY),
}
INVITE_PERMISSIONS = sum({bit for bits in NEEDED.values() for bit in bits})
MESSAGE_CONTENT_FLAGS = (1 << 18) | (1 << 19)  # GATEWAY_MESSAGE_CONTENT(_LIMITED)
TEXT_CHANNELS = (0, 5)  # text, announcement: threads can be started on their messages
PORTAL = "https://discord.com/developers/applications"


@dataclass(frozen=True)
class Check:
    """One finding: NAME, whether it is OK, what was seen, and what to do when it is not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warn: bool = False  # works, but unsafe or incomplete: the fix says what to change

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        """How a listing marks it: ``FAIL``, ``warn`` or ``ok``, four characters wide."""
        return "FAIL" if not self.ok else "warn" if self.warn else "ok  "

    @property
    def needs_fix(self) -> bool:
        """Whether the listing shows its fix (a failure, or a warning)."""
        return bool(self.fix) and (not self.ok or self.warn)


def invite_url(application_id: str | int) -> str:
    return (f"https://discord.com/oauth2/authorize?client_id={application_id}&scope=bot"
            f"&permissions={INVITE_PERMISSIONS}")


def permission_names(bits: Iterable[int]) -> list[str]:
    return [NAMES.get(b, hex(b)) for b in bits]


def channel_permissions(base: int, overwrites: Sequence[dict[str, Any]], *, guild_id: int,
                        user_id: int, role_ids: Iterable[int]) -> int:
    """Discord's permission arithmetic: BASE (guild level), then the channel's overwrites for
    @everyone, for the member's roles together, then for the member."""
    if base & ADMINISTRATOR:
        return ALL
    by_id = {(int(o.get("id", 0)), int(o.get("type", 0))): o for o in overwrites}

    def bits(o: dict[str, Any] | None, key: str) -> int:
        return int(o.get(key, 0) or 0) if o else 0

    perms = base
    everyone = by_id.get((guild_id, 0))
    perms = (perms & ~bits(everyone, "deny")) | bits(everyone, "allow")
    allow = deny = 0
    for role in role_ids:
        o = by_id.get((int(role), 0))
        allow |= bits(o, "allow")
        deny |= bits(o, "deny")
    perms = (perms & ~deny) | allow
    member = by_id.get((user_id, 1))
    return (perms & ~bits(member, "deny")) | bits(member, "allow")


async def diagnose(config: Config, token: str, **client_options: Any) -> list[Check]:
    """Every check for CONFIG's Discord bus with TOKEN. Stops early only when the token (or
    Discord itself) fails, since nothing else can be checked then. Raises ``DiscordError``
    only for a host-wide stop (Cloudflare ban, too many invalid requests)."""
    from dorch.bus.discord.connect import open_client

    client_options.setdefault("max_tries", 3)
    async with open_client(config, token, **client_options) as client:
        return await run_checks(config, client)


async def run_checks(config: Config, client: DiscordClient, advice: bool = True) -> list[Check]:
    """The checks of ``diagnose`` with a client the caller already has (the bus's preflight,
    without ADVICE: the warnings that cost requests, such as who else may start threads)."""
    d = config.discord
    secret = d.get("token") or "discord-token"
    checks: list[Check] = []
    try:
        me = await client.me()
    except errors.Unauthorized:
        return [Check("token", False, "Discord rejected the bot token (HTTP 401): wrong, revoked "
                      "or reset", f"copy a new token ({PORTAL} -> your application -> Bot -> "
                      f"Reset Token) and store it: dorch token set {secret}")]
    except (errors.DiscordConnectionError, errors.ServerError) as exc:
        return [Check("discord reachable", False, str(exc),
                      f"check the network and [discord] api_base ({client.api_base})")]
    except errors.UnknownRoute as exc:
        checks.append(_unknown_route(client, exc))
        me = {}
    else:
        checks.append(Check("token", True, "accepted"))
    user_id = int(me.get("id") or 0)
    who = f"{me.get('username')} (id {user_id})"
    if me:
        checks.append(Check("bot user", bool(me.get("bot")), who if me.get("bot") else
                            f"{who} is not a bot account",
                            "" if me.get("bot") else "use a bot token (Developer Portal -> "
                            "Bot), never a user's token"))
        checks.append(_fleet_check(config, user_id))
    try:
        app = await client.application()
    except errors.UnknownRoute as exc:
        checks.append(_unknown_route(client, exc))
        app = None
    invite = invite_url(app.get("id", user_id) if app else user_id or "YOUR_APPLICATION_ID")
    if app is not None:
        intent = int(app.get("flags") or 0) & MESSAGE_CONTENT_FLAGS
        checks.append(Check(
            "message content intent", bool(intent),
            "enabled" if intent else "disabled: Discord blanks other users' messages, so the "
            "bot cannot read tasks", "" if intent else f"{PORTAL} -> your application -> Bot "
            "-> Privileged Gateway Intents -> enable MESSAGE CONTENT INTENT, save"))

    guild_id = int(d.get("guild_id") or 0)
    try:
        guilds: dict[int, dict[str, Any]] | None = {
            int(g["id"]): g for g in await client.my_guilds()}
    except errors.UnknownRoute as exc:
        checks.append(_unknown_route(client, exc))
        guilds = None
    guild = (guilds or {}).get(guild_id)
    base: int | None
    if guilds is None:
        base = None  # unknown: the channels' permissions cannot be computed
    elif guild is None:
        checks.append(Check("guild", False, f"the bot is not a member of guild {guild_id}",
                            f"invite it (as a server admin): {invite}; or fix [discord] guild_id"))
        base = 0
    else:
        checks.append(Check("guild", True, f"{guild.get('name')} (id {guild_id})"))
        base = ALL if guild.get("owner") else int(guild.get("permissions") or 0)
    roles: list[int] = []
    if guild is not None:
        try:
            member = await client.get_member(guild_id, user_id)
            roles = [int(r) for r in member.get("roles", [])]
        except errors.DiscordHTTPError:
            pass  # role overwrites then count as absent

    for key, needed in NEEDED.items():
        checks.extend(await _check_channel(client, key, int(d.get(key) or 0), needed, base,
                                           guild_id, user_id, roles, invite))
    if guild is not None and advice:
        with contextlib.suppress(errors.DiscordHTTPError):
            checks.append(await _thread_check(client, config, guild_id, user_id))
    return checks


def _fleet_check(config: Config, user_id: int) -> Check:
    """Is this bot one of ``[discord] fleet_bots``, the bots whose claims dorch believes?"""
    fleet = {int(b) for b in config.discord.get("fleet_bots") or []}
    add = f'fleet_bots = ["{user_id}", ...] in [discord], listing every bot that runs dorch ' \
          "workers, the same on every host (`dorch setup --fleet-bots`)"
    if not fleet:
        return Check("fleet", True, f"[discord] fleet_bots is not set (this bot is id {user_id}): "
                     "the bots of allowed_submitters are taken for the fleet", add, warn=True)
    if user_id not in fleet:
        return Check("fleet", True, f"this bot (id {user_id}) is not in [discord] fleet_bots: "
                     "it may submit tasks if allowed, but its workers will not start",
                     f'add "{user_id}" to fleet_bots on every host if it runs workers', warn=True)
    return Check("fleet", True, f"this bot (id {user_id}) is one of {len(fleet)} fleet bots")


async def _thread_check(client: DiscordClient, config: Config, guild_id: int,
                        user_id: int) -> Check:
    """Who outside the fleet may start threads in #task-queue: a thread on a task is how a
    worker claims it, so anyone else's blocks the task (re-posted, then ❌ blocked)."""
    from dorch.bus.discord.trust import Fleet  # the bus's own rule of who is the fleet

    d = config.discord
    channel = await client.get_channel(int(d.get("task_channel") or 0))
    fleet = set(Fleet.from_config(d, user_id).bots)
    fleet_roles: set[int] = set()
    for bot in sorted(fleet):
        with contextlib.suppress(errors.NotFound):
            fleet_roles.update(int(r) for r in (await client.get_member(guild_id, bot))["roles"])
    found = thread_openers(await client.guild_roles(guild_id),
                           channel.get("permission_overwrites") or [], guild_id=guild_id,
                           fleet_roles=fleet_roles, fleet_users=fleet)
    name = f"#{channel.get('name', 'task-queue')}"
    label = f"threads in {name}"
    if not found:
        return Check(label, True, "only the fleet's bots may start threads or post in them")
    return Check(
        label, True, f"{', '.join(found)} may start threads or post in threads: a thread "
        "they start on a task is no claim, the task is re-posted, and the third time it ends "
        "❌ blocked",
        f"in {name}'s settings -> Permissions: deny Create Public Threads and Send Messages in "
        "Threads to @everyone (and to the roles or members named), and allow both to the "
        "fleet's bot role (or to each fleet bot)", warn=True)


def thread_openers(roles: Sequence[dict[str, Any]], overwrites: Sequence[dict[str, Any]], *,
                   guild_id: int, fleet_roles: set[int], fleet_users: set[int]) -> list[str]:
    """@everyone, the roles and the members outside the fleet that may Create Public Threads
    or Send Messages in Threads in a channel with OVERWRITES, by Discord's arithmetic (guild
    permissions, then the channel's @everyone, role and member overwrites). Administrator
    roles are left out: they may do anything anywhere."""
    by_id = {(int(o.get("id", 0)), int(o.get("type", 0))): o for o in overwrites}

    def apply(perms: int, o: dict[str, Any] | None) -> int:
        return (perms & ~int(o.get("deny") or 0)) | int(o.get("allow") or 0) if o else perms

    threads = CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS
    everyone_base = next((int(r.get("permissions") or 0) for r in roles
                          if int(r["id"]) == guild_id), 0)
    everyone = apply(everyone_base, by_id.get((guild_id, 0)))
    found = ["@everyone"] if everyone & threads else []
    for role in roles:
        rid = int(role["id"])
        base = everyone_base | int(role.get("permissions") or 0)
        if rid == guild_id or rid in fleet_roles or base & ADMINISTRATOR:
            continue
        perms = apply(apply(base, by_id.get((guild_id, 0))), by_id.get((rid, 0)))
        if perms & threads and not everyone & threads:
            found.append(f"role {role.get('name', rid)}")
    found += [f"member {uid}" for (uid, kind), o in by_id.items()
              if kind == 1 and uid not in fleet_users and int(o.get("allow") or 0) & threads]
    return found


def _unknown_route(client: DiscordClient, exc: errors.DiscordHTTPError,
                   name: str = "discord api") -> Check:
    """A failed check for a route that answered 404 without a Discord code (a proxy, an API
    change): the other checks go on."""
    return Check(name, False, f"{exc.method} {exc.path} answered HTTP 404 without a Discord "
                 "error code: no such route there",
                 f"[discord] api_base ({client.api_base}) must point at Discord's API v10, or at "
                 "a proxy that forwards every route dorch uses")


async def _check_channel(client: DiscordClient, key: str, channel_id: int, needed: tuple[int, ...],
                         base: int | None, guild_id: int, user_id: int, roles: list[int],
                         invite: str) -> list[Check]:
    label = f"[discord] {key}"
    if not channel_id:
        return [Check(label, False, "not set", f"set [discord] {key} to the channel's id "
                      "(Discord: Settings -> Advanced -> Developer Mode; right-click the channel "
                      "-> Copy Channel ID)")]
    try:
        channel = await client.get_channel(channel_id)
    except errors.UnknownRoute as exc:
        return [_unknown_route(client, exc, label)]
    except errors.NotFound:
        return [Check(label, False, f"no channel {channel_id}",
                      f"copy the right id into [discord] {key} (Developer Mode -> Copy ID)")]
    except errors.Forbidden:
        return [Check(label, False, f"the bot cannot see channel {channel_id} (View Channel)",
                      f"in the channel's settings -> Permissions, allow the bot (or its role) "
                      f"View Channel and {', '.join(permission_names(needed[1:]))}")]
    name = f"#{channel.get('name', channel_id)}"
    if int(channel.get("guild_id") or 0) != guild_id:
        return [Check(label, False, f"{name} is not in guild {guild_id}",
                      "use a channel of the configured guild, or fix [discord] guild_id")]
    if channel.get("type") not in TEXT_CHANNELS:
        return [Check(label, False, f"{name} is not a text channel (type {channel.get('type')})",
                      "use a plain text channel (not a forum, voice or category)")]
    found = [Check(label, True, name)]
    if base is None:
        return found
    perms = channel_permissions(base, channel.get("permission_overwrites") or [],
                                guild_id=guild_id, user_id=user_id, role_ids=roles)
    missing = [bit for bit in needed if not perms & bit]
    if missing:
        names = ", ".join(permission_names(missing))
        found.append(Check(f"permissions in {name}", False, f"missing: {names}",
                           f"grant the bot's role {names} in {name} (channel settings -> "
                           f"Permissions), or re-invite the bot with {invite}"))
    else:
        found.append(Check(f"permissions in {name}", True,
                           ", ".join(permission_names(needed))))
    return found


PREFLIGHT_TTL = 3600.0  # s a passed permission check is trusted (per host and token)


async def preflight(config: Config, client: DiscordClient, state: HostState, now: float) -> None:
    """Once an hour per host and token, the checks of ``dorch doctor``: a bot that cannot
    read #task-queue (or lacks the intent) would otherwise see an empty queue forever."""
    if now - state.preflight_at() < PREFLIGHT_TTL:
        return
    failed = [c for c in await run_checks(config, client, advice=False) if not c.ok]
    if failed:
        if any(c.name == "token" for c in failed):
            raise errors.Unauthorized(401, 0, "the bot token was rejected")
        if any(c.name == "discord reachable" for c in failed):
            raise errors.DiscordConnectionError(failed[0].detail)
        raise BusConfigError("the bot cannot work in this server as configured: " + "; ".join(
            f"{c.name}: {c.detail} (fix: {c.fix})" for c in failed))
    state.set_preflight(now)
