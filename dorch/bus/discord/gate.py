"""Whom the Discord bus obeys, and what a message of #task-queue is.

A task counts only from someone dorch obeys (``allowed_submitters``, ``allowed_roles``, a fleet
bot); a thread on it is a claim only when a fleet bot started it (``trust.py``); dorch's own
status and result posts are never tasks. ``classify`` sorts a polled message into one of the
kinds the poller, the claimer and the reaper act on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from dorch.bus import BusConfigError
from dorch.bus.discord import formats, trust
from dorch.bus.discord.connect import Settings
from dorch.bus.discord.guild import UNREACHABLE, Guild
from dorch.bus.discord.host_state import HostState
from dorch.discord.types import Channel, Message, Reaction, User

log = logging.getLogger("dorch.bus.discord")

ROLE_TTL = 60.0  # s a member's roles are cached (a removed role stops tasks within a minute)
_TASK_TYPES = (0, 19)  # default and reply messages; everything else is a system message
# Bot-written markers that are never a task, even if one lands in #task-queue.
_NOT_TASKS = (formats.RECEIPT, formats.RESULT, formats.SUMMARY, formats.BOARD, formats.REJECTED,
              formats.REQUEUE_NOTE, formats.DEAD_NOTE, formats.CANCELLED_QUEUED)

# What a message of #task-queue is:
QUEUED = "queued"  # a task nobody claimed
STOP = "stop"  # queued, with a 🛑 to check
RUNNING = "running"  # claimed: a fleet bot's thread, not archived
SQUATTED = "squatted"  # a thread someone outside the fleet started: no claim
DONE = "done"  # finished, or not a task
WAITING = (QUEUED, STOP)  # tasks to claim
PENDING = (QUEUED, STOP, SQUATTED)  # entries that keep the cursor before them


def msg_id(msg: Message) -> int:
    return int(msg["id"])


def reaction(msg: Message, emoji: str) -> Reaction | None:
    for found in msg.get("reactions") or []:
        name = (found.get("emoji") or {}).get("name") or ""
        if formats.same_emoji(name, emoji):
            return found
    return None


def archived(thread: Channel) -> bool:
    return bool((thread.get("thread_metadata") or {}).get("archived"))


def thread_created(thread: Channel) -> float:
    meta = thread.get("thread_metadata") or {}
    return trust.epoch(meta.get("create_timestamp")) or trust.epoch(meta.get("archive_timestamp"))


@dataclass
class Entry:
    """A message of #task-queue as the poll classified it."""

    msg: Message
    kind: str  # QUEUED, STOP, RUNNING, SQUATTED or DONE

    @property
    def id(self) -> int:
        return msg_id(self.msg)


class Gate:
    """Who is obeyed and believed, for one bot in one server."""

    def __init__(self, guild: Guild, settings: Settings, state: HostState,
                 clock: Callable[[], float]) -> None:
        self.guild = guild
        self.client = guild.client
        self.settings = settings
        self.state = state
        self.clock = clock
        self._fleet: trust.Fleet | None = None

    async def fleet(self) -> trust.Fleet:
        """The bots whose threads, receipts and notes dorch believes ([discord] fleet_bots)."""
        if self._fleet is None:
            self._fleet = self.settings.fleet(await self.guild.me())
        return self._fleet

    async def trusted(self, user: User) -> bool:
        """Whether dorch obeys USER: allowed_submitters, an allowed role, or a fleet bot."""
        uid = int(user["id"])
        if uid in self.settings.allowed_users or (user.get("bot") and uid in await self.fleet()):
            return True
        return await self.allowed_role(uid)

    async def allowed_role(self, uid: int) -> bool:
        """Whether UID holds one of allowed_roles (roles cached ROLE_TTL on the host)."""
        if not self.settings.allowed_roles:
            return False
        now = self.clock()
        roles = self.state.roles(uid, now, ROLE_TTL)
        if roles is None:
            roles = await self.guild.member_roles(uid)
            self.state.set_roles(uid, roles, now)
        return bool(self.settings.allowed_roles.intersection(roles))

    async def stopped(self, msg: Message, channel: int | None = None) -> bool:
        """A 🛑 on MSG from a user dorch obeys."""
        if reaction(msg, formats.STOP) is None:
            return False
        users = await self.client.list_reactions(channel or self.settings.task_channel,
                                                 msg["id"], formats.STOP)
        for user in users:
            if await self.trusted(user):
                return True
        return False

    async def submitter(self, msg: Message) -> str:
        """Who submitted the task MSG carries: a task the fleet posted says so in its header
        (another bot's header is not believed), anyone else's task is theirs."""
        if (await self.fleet()).wrote(msg):
            return formats.submitter_of(msg.get("content") or "")
        return str((msg.get("author") or {}).get("username") or "")

    def log_ignored(self, msg: Message, why: str) -> None:
        """Log an ignored message once per message id (per host)."""
        if not self.state.first_ignore(msg["id"]):
            return
        author = msg.get("author") or {}
        log.warning("ignoring message %s in #task-queue from %s (id %s): %s", msg["id"],
                    author.get("username", "?"), author.get("id", "?"), why)

    async def classify(self, msg: Message) -> Entry:
        if msg.get("type", 0) not in _TASK_TYPES:
            return Entry(msg, DONE)
        author = msg.get("author") or {}
        if trust.is_app_message(msg):  # webhooks and apps: their own id must be allowed
            if not trust.sender_ids(msg) & self.settings.allowed_users:
                self.log_ignored(msg, "a webhook's or an app's message (its webhook or "
                                      "application id is not in [discord] allowed_submitters)")
                return Entry(msg, DONE)
        elif not await self.trusted(author):
            self.log_ignored(msg, "not in [discord] allowed_submitters, allowed_roles or "
                                  "fleet_bots")
            return Entry(msg, DONE)
        thread = msg.get("thread")
        if thread and (await self.fleet()).owns(thread):
            return Entry(msg, DONE if archived(thread) else RUNNING)
        if author.get("bot") and any(p.match(msg.get("content") or "") for p in _NOT_TASKS):
            self.log_ignored(msg, "a dorch status or result post, not a task")
            return Entry(msg, DONE)
        if not author.get("bot") and not (msg.get("content") or "").strip() \
                and not msg.get("attachments"):
            self.log_ignored(msg, "its content is empty: enable the MESSAGE_CONTENT intent "
                                  "of this bot in the Developer Portal (`dorch doctor`)")
            return Entry(msg, DONE)
        if thread:
            return Entry(msg, SQUATTED)  # a member's or a stranger's thread: no claim
        return Entry(msg, STOP if reaction(msg, formats.STOP) else QUEUED)

    async def check_in_fleet(self) -> None:
        """A worker whose bot is not in fleet_bots would see its own claims taken for squats
        by the rest of the fleet: it does not start (exit 78)."""
        me = await self.guild.me()
        if self.settings.fleet_bots and me not in self.settings.fleet_bots:
            raise BusConfigError(
                f"this bot (user id {me}) is not in [discord] fleet_bots, so the fleet would not "
                "believe its workers' claims. Add its id to fleet_bots on every host (`dorch "
                "doctor` shows it), or run these workers with a fleet bot's token")

    async def check_submitter(self) -> None:
        """Refuse to queue a task no worker would obey (exit 78) instead of letting it wait
        for ever: this bot must be a fleet bot, an allowed submitter or hold an allowed role."""
        try:
            me = await self.guild.me()
        except UNREACHABLE:
            return  # Discord cannot say now: the outbox keeps the task, as for any outage
        if me in self.settings.allowed_users or me in self.settings.fleet():
            return
        if await self.allowed_role(me):
            return
        raise BusConfigError(
            f"this bot (user id {me}) is not in [discord] fleet_bots or allowed_submitters and "
            "holds no role of allowed_roles, so no worker would run its tasks. Add its id to "
            "fleet_bots (if its workers are part of the fleet) or to allowed_submitters, on "
            "every host of the fleet, then submit again")

    async def in_fleet(self) -> bool:
        """Whether this bot is one of the configured fleet (whose threads are claims)."""
        return await self.guild.me() in self.settings.fleet()
