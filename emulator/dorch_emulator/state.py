"""The emulated guild in memory: channels, threads, messages, reactions, and Discord's rules on them.

Every operation takes the acting member and either returns Discord's JSON or raises ``ApiError``
with Discord's status and JSON code. Operations never await, and callers hold ``World.lock``
around each one, so concurrent requests race exactly as on Discord: of two start-thread calls on
one message, one gets the thread and the other 160004.
"""

from __future__ import annotations

import bisect
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dorch_emulator import permissions as perms
from dorch_emulator.config import FORUM, TEXT, EmulatorConfig, MemberSpec
from dorch_emulator.snowflake import Snowflakes, from_time, time_ms

PUBLIC_THREAD = 11
DEFAULT, REPLY, CHAT_INPUT_COMMAND = 0, 19, 20  # message types
APPLICATION_COMMAND = 2  # interaction type
WEBHOOK_INCOMING = 1
MAX_WEBHOOKS_PER_CHANNEL = 15
MAX_CONTENT = 2000
MAX_NONCE = 25
MAX_REACTION_EMOJIS = 20
ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)
BULK_DELETE_MAX_AGE = 14 * 24 * 3600
MESSAGE_CONTENT_LIMITED = 1 << 19
MESSAGE_CONTENT_VERIFIED = 1 << 18

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CUSTOM_EMOJI = re.compile(r"^(?:a:)?([\w-]{1,32}):(\d+)$")


class ApiError(Exception):
    """An error response as Discord sends it: HTTP STATUS and ``{"message", "code"[, "errors"]}``."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def form_error(path: str, code: str, message: str) -> ApiError:
    """50035 Invalid Form Body with Discord's ``errors`` tree for one field (``a.b`` nests)."""
    tree: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        tree = {part: tree}
    return ApiError(400, 50035, "Invalid Form Body", tree)


def unknown_channel() -> ApiError:
    return ApiError(404, 10003, "Unknown Channel")


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def missing_access() -> ApiError:
    return ApiError(403, 50001, "Missing Access")


def missing_permissions() -> ApiError:
    return ApiError(403, 50013, "Missing Permissions")


def archived_thread() -> ApiError:
    return ApiError(400, 50083, "Thread is archived")


def unknown_webhook() -> ApiError:
    return ApiError(404, 10015, "Unknown Webhook")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


@dataclass
class Attachment:
    id: int
    filename: str
    data: bytes = field(repr=False)
    content_type: str = "application/octet-stream"
    description: str = ""


@dataclass
class Message:
    id: int
    channel_id: int
    author_id: int
    content: str
    created: float
    nonce: str | int | None = None
    attachments: list[Attachment] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    mentions: list[int] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    reactions: dict[str, list[int]] = field(default_factory=dict)  # emoji key -> user ids, in order
    emojis: dict[str, dict[str, Any]] = field(default_factory=dict)  # emoji key -> emoji object
    edited: float | None = None
    reference: dict[str, Any] | None = None
    flags: int = 0
    webhook_id: int | None = None  # a webhook's message (author_id is the webhook's id) or an app's
    application_id: int | None = None  # an app's (interaction response) or an app-owned webhook's
    interaction: dict[str, Any] | None = None  # interaction_metadata of an app's answer
    username: str = ""  # the name a webhook message shows (the webhook's, or the one it was given)


@dataclass
class Webhook:
    """An incoming webhook of a text channel: anyone with its URL posts as it, no bot token."""

    id: int
    token: str = field(repr=False)
    channel_id: int
    name: str
    user_id: int  # who created it
    application_id: int | None = None  # the bot's application, when a bot created it


@dataclass
class Channel:
    id: int
    type: int
    name: str
    parent_id: int | None = None
    topic: str = ""
    messages: dict[int, Message] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # message ids, ascending
    # threads only
    owner_id: int = 0
    archived: bool = False
    locked: bool = False
    auto_archive_duration: int = 1440
    archive_timestamp: float = 0.0
    created: float = 0.0
    last_activity: float = 0.0
    total_sent: int = 0

    @property
    def is_thread(self) -> bool:
        return self.type == PUBLIC_THREAD

    @property
    def last_message_id(self) -> int | None:
        return self.order[-1] if self.order else None


class World:
    """The guild and everything in it. Hold ``lock`` around every call."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.ids = Snowflakes()
        self.clock_offset = 0.0  # tests move wall-clock time forward (auto-archive, 14-day rule)
        self.channels: dict[int, Channel] = {
            c.id: Channel(c.id, c.type, c.name, topic=c.topic) for c in config.channels}
        self.members: dict[int, MemberSpec] = {m.id: m for m in [*config.bots, *config.users]}
        self.nonces: dict[tuple[int, str], tuple[int, int, float]] = {}  # -> channel, message, time
        self.webhooks: dict[int, Webhook] = {}
        self.overwrites = {c.id: c.overwrites for c in config.channels}  # channel -> role -> Override

    def now(self) -> float:
        return time.time() + self.clock_offset

    # -- lookups and permissions ---------------------------------------------------------------

    def permissions(self, actor: MemberSpec, channel: Channel) -> int:
        """ACTOR's permissions in CHANNEL (threads inherit their parent's), by Discord's
        arithmetic: the member's own, then the channel's overwrites for @everyone, for the
        member's roles together, and for the member."""
        parent = channel.parent_id or channel.id
        bits = actor.permissions
        overwrites = self.overwrites.get(parent)
        if overwrites:
            everyone = overwrites.get(self.config.guild_id)
            if everyone is not None:
                bits = (bits & ~everyone.deny) | everyone.allow
            deny = allow = 0
            for role in actor.roles:
                if role in overwrites:
                    deny, allow = deny | overwrites[role].deny, allow | overwrites[role].allow
            bits = (bits & ~deny) | allow
        own = actor.overrides.get(parent)
        return (bits & ~own.deny) | own.allow if own else bits

    def channel(self, actor: MemberSpec, channel_id: int) -> tuple[Channel, int]:
        """The channel and ACTOR's permissions in it; 404 10003 or 403 50001 as Discord answers."""
        channel = self.channels.get(channel_id)
        if channel is None:
            raise unknown_channel()
        bits = self.permissions(actor, channel)
        if not bits & perms.VIEW_CHANNEL:
            raise missing_access()
        if channel.is_thread:
            self._maybe_auto_archive(channel)
        return channel, bits

    def message(self, channel: Channel, message_id: int) -> Message:
        msg = channel.messages.get(message_id)
        if msg is None:
            raise unknown_message()
        return msg

    def _maybe_auto_archive(self, thread: Channel) -> None:
        if not thread.archived and self.now() - thread.last_activity >= thread.auto_archive_duration * 60:
            thread.archived = True
            thread.archive_timestamp = thread.last_activity + thread.auto_archive_duration * 60

    def active_thread_count(self) -> int:
        count = 0
        for ch in self.channels.values():
            if ch.is_thread:
                self._maybe_auto_archive(ch)
                count += not ch.archived
        return count

    # -- serialisation -------------------------------------------------------------------------

    def user_json(self, member: MemberSpec) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": str(member.id), "username": member.name, "global_name": None if member.bot else member.name,
            "discriminator": f"{member.id % 10000:04d}" if member.bot else "0", "avatar": None,
            "public_flags": 0, "flags": 0, "banner": None, "accent_color": None,
            "avatar_decoration_data": None,
        }
        if member.bot:
            out["bot"] = True
        return out

    def channel_json(self, channel: Channel) -> dict[str, Any]:
        last = channel.last_message_id
        out: dict[str, Any] = {
            "id": str(channel.id), "type": channel.type, "guild_id": str(self.config.guild_id),
            "name": channel.name, "last_message_id": str(last) if last else None,
            "rate_limit_per_user": 0, "flags": 0,
        }
        if channel.is_thread:
            out |= {
                "parent_id": str(channel.parent_id), "owner_id": str(channel.owner_id),
                "message_count": len(channel.messages), "member_count": 1,
                "total_message_sent": channel.total_sent,
                "thread_metadata": {
                    "archived": channel.archived, "archive_timestamp": iso(channel.archive_timestamp),
                    "auto_archive_duration": channel.auto_archive_duration, "locked": channel.locked,
                    "create_timestamp": iso(channel.created),
                },
            }
        else:
            position = [c.id for c in self.config.channels].index(channel.id)
            # a member's channel override is a member overwrite (type 1), as Discord shows it
            overwrites = [{"id": str(r), "type": 0, "allow": str(o.allow), "deny": str(o.deny)}
                          for r, o in self.overwrites.get(channel.id, {}).items()]
            overwrites += [{"id": str(m.id), "type": 1, "allow": str(o.allow), "deny": str(o.deny)}
                           for m in self.members.values()
                           if (o := m.overrides.get(channel.id)) is not None]
            out |= {"parent_id": None, "position": position, "topic": channel.topic or None,
                    "nsfw": False, "permission_overwrites": overwrites}
        return out

    def message_json(self, msg: Message, viewer: MemberSpec, *, with_nonce: bool = False) -> dict[str, Any]:
        """The message as VIEWER gets it over REST (content blanked without the intent)."""
        hidden = (viewer.bot and not viewer.message_content and msg.author_id != viewer.id
                  and viewer.id not in msg.mentions)
        kind = CHAT_INPUT_COMMAND if msg.interaction else REPLY if msg.reference else DEFAULT
        out: dict[str, Any] = {
            "id": str(msg.id), "channel_id": str(msg.channel_id), "type": kind,
            "author": self.author_json(msg),
            "content": "" if hidden else msg.content,
            "timestamp": iso(msg.created),
            "edited_timestamp": iso(msg.edited) if msg.edited else None,
            "tts": False, "mention_everyone": msg.mention_everyone,
            "mentions": [self.user_json(self.members[u]) for u in msg.mentions],
            "mention_roles": [str(r) for r in msg.mention_roles],
            "attachments": [] if hidden else [self.attachment_json(msg, a) for a in msg.attachments],
            "embeds": [] if hidden else msg.embeds,
            "components": [],
            "pinned": False, "flags": msg.flags,
        }
        if msg.reactions:
            out["reactions"] = [
                {"emoji": msg.emojis[key], "count": len(users),
                 "count_details": {"burst": 0, "normal": len(users)},
                 "burst_colors": [], "me_burst": False, "burst_me": False, "burst_count": 0,
                 "me": viewer.id in users}
                for key, users in msg.reactions.items()
            ]
        if msg.reference:
            out["message_reference"] = msg.reference
            channel = self.channels.get(int(msg.reference["channel_id"]))
            ref = channel.messages.get(int(msg.reference["message_id"])) if channel else None
            out["referenced_message"] = self.message_json(ref, viewer) if ref else None
        thread = self.channels.get(msg.id)
        if thread is not None and thread.is_thread:
            out["thread"] = self.channel_json(thread)
        if (channel := self.channels.get(msg.channel_id)) and channel.is_thread:
            out["position"] = channel.order.index(msg.id) if msg.id in channel.messages else 0
        if with_nonce and msg.nonce is not None:
            out["nonce"] = msg.nonce
        if msg.webhook_id is not None:
            out["webhook_id"] = str(msg.webhook_id)
        if msg.application_id is not None:
            out["application_id"] = str(msg.application_id)
        if msg.interaction:
            out["interaction_metadata"] = msg.interaction
            out["interaction"] = {"id": msg.interaction["id"], "type": msg.interaction["type"],
                                  "name": msg.interaction["name"], "user": msg.interaction["user"]}
        return out

    def author_json(self, msg: Message) -> dict[str, Any]:
        """The message's author; a webhook's message shows the webhook as a bot user (its id,
        the name it posted under), as Discord does."""
        member = self.members.get(msg.author_id)
        if member is not None:
            return self.user_json(member)
        return {"id": str(msg.author_id), "username": msg.username, "global_name": None,
                "discriminator": "0000", "avatar": None, "public_flags": 0, "flags": 0, "bot": True}

    def attachment_json(self, msg: Message, att: Attachment) -> dict[str, Any]:
        path = f"/attachments/{msg.channel_id}/{att.id}/{att.filename}"
        out: dict[str, Any] = {"id": str(att.id), "filename": att.filename, "size": len(att.data),
                               "url": self.base_url + path, "proxy_url": self.base_url + path,
                               "content_type": att.content_type}
        if att.description:
            out["description"] = att.description
        return out

    base_url = ""  # set by the server once it listens: attachment urls point at it

    def attachment(self, channel_id: int, attachment_id: int) -> Attachment | None:
        channel = self.channels.get(channel_id)
        for msg in channel.messages.values() if channel else ():
            for att in msg.attachments:
                if att.id == attachment_id:
                    return att
        return None

    # -- reading -------------------------------------------------------------------------------

    def list_messages(self, actor: MemberSpec, channel_id: int,
                      query: dict[str, str]) -> list[dict[str, Any]]:
        channel, bits = self.channel(actor, channel_id)
        limit = _int_param(query, "limit", 50, 1, 100)
        anchors = [k for k in ("around", "before", "after") if k in query]
        if len(anchors) > 1:
            raise form_error(anchors[1], "BASE_TYPE_BAD", "around, before and after are mutually exclusive")
        if not bits & perms.READ_MESSAGE_HISTORY:
            return []
        ids = channel.order
        if not anchors:
            chosen = ids[-limit:]
        else:
            anchor = _snowflake_param(query, anchors[0])
            if anchors[0] == "before":
                end = bisect.bisect_left(ids, anchor)
                chosen = ids[max(0, end - limit):end]
            elif anchors[0] == "after":
                start = bisect.bisect_right(ids, anchor)
                chosen = ids[start:start + limit]
            else:
                middle = bisect.bisect_left(ids, anchor)
                start = max(0, middle - limit // 2)
                chosen = ids[start:start + limit]
        return [self.message_json(channel.messages[i], actor) for i in reversed(chosen)]

    def get_message(self, actor: MemberSpec, channel_id: int, message_id: int) -> dict[str, Any]:
        channel, bits = self.channel(actor, channel_id)
        if not bits & perms.READ_MESSAGE_HISTORY:
            raise missing_access()
        return self.message_json(self.message(channel, message_id), actor)

    # -- writing -------------------------------------------------------------------------------

    def create_message(self, actor: MemberSpec, channel_id: int, payload: dict[str, Any],
                       files: list[Attachment]) -> dict[str, Any]:
        channel, bits = self.channel(actor, channel_id)
        if channel.type == FORUM:
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        need = perms.SEND_MESSAGES_IN_THREADS if channel.is_thread else perms.SEND_MESSAGES
        if not bits & need or (files and not bits & perms.ATTACH_FILES):
            raise missing_permissions()
        if channel.is_thread and channel.archived and channel.locked and not bits & perms.MANAGE_THREADS:
            raise ApiError(400, 160005, "Thread is locked")
        content, embeds = _compose(payload, files)
        nonce = _nonce(payload.get("nonce"))
        now = self.now()
        if nonce is not None and payload.get("enforce_nonce"):
            self._expire_nonces(now)
            seen = self.nonces.get((actor.id, str(nonce)))
            if seen is not None:
                earlier_channel = self.channels.get(seen[0])
                earlier = earlier_channel.messages.get(seen[1]) if earlier_channel else None
                if earlier is None:  # deleted since: Discord answers Unknown Message, never a copy
                    raise unknown_message()
                return self.message_json(earlier, actor, with_nonce=True)
        reference = self._reference(channel, payload.get("message_reference"))
        msg = Message(id=self.ids.next(int(now * 1000)), channel_id=channel.id, author_id=actor.id,
                      content=content, created=now, nonce=nonce, attachments=files, embeds=embeds,
                      reference=reference, flags=int(payload.get("flags") or 0) & (1 << 2 | 1 << 12))
        self._store(channel, msg, payload.get("allowed_mentions"), bits)
        if nonce is not None and payload.get("enforce_nonce"):
            self.nonces[(actor.id, str(nonce))] = (channel.id, msg.id, now)
        return self.message_json(msg, actor, with_nonce=True)

    def _store(self, channel: Channel, msg: Message, allowed_mentions: Any, bits: int) -> None:
        """Add MSG to CHANNEL (a message in an archived thread unarchives it)."""
        if channel.is_thread and channel.archived:
            self._unarchive(channel, msg.created)
        self._apply_mentions(msg, allowed_mentions, bits)
        channel.messages[msg.id] = msg
        channel.order.append(msg.id)
        if channel.is_thread:
            channel.total_sent += 1
            channel.last_activity = msg.created

    # -- webhooks and apps ---------------------------------------------------------------------

    def create_webhook(self, actor: MemberSpec, channel_id: int, payload: dict[str, Any],
                       check: bool = True) -> dict[str, Any]:
        """A new incoming webhook of a text channel (MANAGE_WEBHOOKS; CHECK False: as the
        guild's owner would in the app)."""
        channel, bits = self.channel(actor, channel_id) if check else (self._any_channel(channel_id), 0)
        if check and not bits & perms.MANAGE_WEBHOOKS:
            raise missing_permissions()
        if channel.type != TEXT:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        name = payload.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 80:
            raise form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 80 in length.")
        if "clyde" in name.lower() or "discord" in name.lower():
            raise form_error("name", "USERNAME_INVALID_CONTAINS",
                             'Username cannot contain "clyde" or "discord"')
        if sum(w.channel_id == channel.id for w in self.webhooks.values()) >= MAX_WEBHOOKS_PER_CHANNEL:
            raise ApiError(400, 30007, f"Maximum number of webhooks reached ({MAX_WEBHOOKS_PER_CHANNEL})")
        hook_id = self.ids.next(int(self.now() * 1000))
        hook = Webhook(hook_id, secrets.token_urlsafe(51), channel.id, name, actor.id,
                       actor.id if actor.bot else None)
        self.webhooks[hook.id] = hook
        return self.webhook_json(hook) | {"token": hook.token}

    def webhook_json(self, hook: Webhook) -> dict[str, Any]:
        creator = self.members.get(hook.user_id)
        return {"id": str(hook.id), "type": WEBHOOK_INCOMING, "guild_id": str(self.config.guild_id),
                "channel_id": str(hook.channel_id), "name": hook.name, "avatar": None,
                "application_id": str(hook.application_id) if hook.application_id else None,
                "user": self.user_json(creator) if creator else None,
                "url": f"{self.base_url}/api/webhooks/{hook.id}/{hook.token}"}

    def channel_webhooks(self, actor: MemberSpec, channel_id: int) -> list[dict[str, Any]]:
        channel, bits = self.channel(actor, channel_id)
        if not bits & perms.MANAGE_WEBHOOKS:
            raise missing_permissions()
        return [self.webhook_json(w) | {"token": w.token}
                for w in self.webhooks.values() if w.channel_id == channel.id]

    def execute_webhook(self, webhook_id: int, token: str, query: dict[str, str],
                        payload: dict[str, Any], files: list[Attachment]) -> dict[str, Any] | None:
        """Post as the webhook in its channel, or in a thread of it (``thread_id``: unarchived
        by the post). No bot and no permission is involved: whoever has the URL posts. Returns
        the message with ``wait=true``, else None (Discord answers 204)."""
        hook = self.webhooks.get(webhook_id)
        if hook is None:
            raise unknown_webhook()
        if not secrets.compare_digest(hook.token, token):
            raise ApiError(401, 50027, "Invalid Webhook Token")
        channel = self.channels[hook.channel_id]
        if "thread_id" in query:
            thread = self.channels.get(_snowflake_param(query, "thread_id"))
            if thread is None or thread.parent_id != channel.id:
                raise unknown_channel()
            channel = thread
            if channel.archived and channel.locked:
                raise ApiError(400, 160005, "Thread is locked")
        content, embeds = _compose(payload, files)
        username = payload.get("username")
        if username is not None and (not isinstance(username, str) or not 1 <= len(username) <= 80):
            raise form_error("username", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 80 in length.")
        now = self.now()
        msg = Message(id=self.ids.next(int(now * 1000)), channel_id=channel.id, author_id=hook.id,
                      content=content, created=now, attachments=files, embeds=embeds,
                      flags=int(payload.get("flags") or 0) & (1 << 2 | 1 << 12), webhook_id=hook.id,
                      application_id=hook.application_id, username=username or hook.name)
        self._store(channel, msg, payload.get("allowed_mentions"), perms.MENTION_EVERYONE)
        if str(query.get("wait", "")).lower() not in ("true", "1"):
            return None
        return self.message_json(msg, MemberSpec("(webhook)", hook.id, bot=False))

    def app_message(self, app: MemberSpec, user: MemberSpec, channel_id: int, payload: dict[str, Any],
                    files: list[Attachment], command: str = "run") -> dict[str, Any]:
        """APP's public answer to USER's slash command /COMMAND in a channel USER can post in:
        authored by the app's bot user, with ``application_id``, ``webhook_id`` (the app's id:
        interaction answers go through its webhook) and ``interaction_metadata``; type 20.
        Neither the app's permissions nor its membership matter (a user-installed app answers
        wherever the member may use apps)."""
        channel, bits = self.channel(user, channel_id)
        if not bits & perms.USE_APPLICATION_COMMANDS or not bits & perms.USE_EXTERNAL_APPS:
            raise missing_permissions()
        if channel.type == FORUM:
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        content, embeds = _compose(payload, files)
        now = self.now()
        interaction = {"id": str(self.ids.next(int(now * 1000))), "type": APPLICATION_COMMAND,
                       "name": command, "user": self.user_json(user),
                       "authorizing_integration_owners": {"1": str(user.id)}}
        msg = Message(id=self.ids.next(int(now * 1000)), channel_id=channel.id, author_id=app.id,
                      content=content, created=now, attachments=files, embeds=embeds,
                      webhook_id=app.id, application_id=app.id, interaction=interaction)
        self._store(channel, msg, payload.get("allowed_mentions"), 0)
        return self.message_json(msg, user)

    def _any_channel(self, channel_id: int) -> Channel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise unknown_channel()
        return channel

    def _expire_nonces(self, now: float) -> None:
        window = self.config.nonce_window
        for key in [k for k, v in self.nonces.items() if now - v[2] > window]:
            del self.nonces[key]

    def _reference(self, channel: Channel, raw: Any) -> dict[str, Any] | None:
        if not raw:
            return None
        if not isinstance(raw, dict) or "message_id" not in raw:
            raise form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        target = as_id(raw["message_id"], "message_reference.message_id")
        ref_channel_id = as_id(raw.get("channel_id", channel.id), "message_reference.channel_id")
        ref_channel = self.channels.get(ref_channel_id)
        if ref_channel is None or target not in ref_channel.messages:
            if raw.get("fail_if_not_exists", True) is False:
                return None
            raise form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        return {"type": 0, "channel_id": str(ref_channel.id), "message_id": str(target),
                "guild_id": str(self.config.guild_id)}

    def _apply_mentions(self, msg: Message, allowed: Any, bits: int) -> None:
        """Discord fills ``mentions`` only with the mentions that ``allowed_mentions`` lets ping."""
        users = [int(u) for u in _USER_MENTION.findall(msg.content) if int(u) in self.members]
        roles = [int(r) for r in _ROLE_MENTION.findall(msg.content)]
        everyone = "@everyone" in msg.content or "@here" in msg.content
        if isinstance(allowed, dict):
            parse = allowed.get("parse") or []
            explicit_users = {int(u) for u in allowed.get("users") or []}
            explicit_roles = {int(r) for r in allowed.get("roles") or []}
            users = [u for u in users if "users" in parse or u in explicit_users]
            roles = [r for r in roles if "roles" in parse or r in explicit_roles]
            everyone = everyone and "everyone" in parse
        msg.mentions = list(dict.fromkeys(users))
        msg.mention_roles = list(dict.fromkeys(roles))
        msg.mention_everyone = everyone and bool(bits & perms.MENTION_EVERYONE)

    def edit_message(self, actor: MemberSpec, channel_id: int, message_id: int, payload: dict[str, Any],
                     files: list[Attachment]) -> dict[str, Any]:
        channel, bits = self.channel(actor, channel_id)
        msg = self.message(channel, message_id)
        if msg.author_id != actor.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        if channel.is_thread and channel.archived:
            raise archived_thread()
        if "content" in payload:
            content = "" if payload["content"] is None else str(payload["content"])
            if len(content) > MAX_CONTENT:
                raise _too_long()
            msg.content = content
            self._apply_mentions(msg, payload.get("allowed_mentions"), bits)
        if "embeds" in payload:
            msg.embeds = list(payload["embeds"] or [])
        if "attachments" in payload or files:
            keep = {int(a["id"]) for a in payload.get("attachments") or [] if str(a.get("id", "")).isdigit()}
            msg.attachments = [a for a in msg.attachments if a.id in keep or "attachments" not in payload]
            msg.attachments += files
        msg.edited = self.now()
        return self.message_json(msg, actor)

    def delete_message(self, actor: MemberSpec, channel_id: int, message_id: int) -> None:
        channel, bits = self.channel(actor, channel_id)
        msg = self.message(channel, message_id)
        if msg.author_id != actor.id and not bits & perms.MANAGE_MESSAGES:
            raise missing_permissions()
        if channel.is_thread and channel.archived:
            raise archived_thread()
        self._remove(channel, msg.id)

    def _remove(self, channel: Channel, message_id: int) -> None:
        del channel.messages[message_id]
        index = bisect.bisect_left(channel.order, message_id)
        del channel.order[index]

    def bulk_delete(self, actor: MemberSpec, channel_id: int, payload: dict[str, Any]) -> None:
        channel, bits = self.channel(actor, channel_id)
        if not bits & perms.MANAGE_MESSAGES:
            raise missing_permissions()
        raw = payload.get("messages")
        if not isinstance(raw, list) or not 2 <= len(raw) <= 100:
            raise ApiError(400, 50016, "You can only bulk delete between 2 and 100 messages.")
        ids = [as_id(m, "messages") for m in raw]
        if len(set(ids)) != len(ids):
            raise form_error("messages", "BASE_TYPE_DUPLICATE", "Duplicate values are not allowed.")
        now_ms = int(self.now() * 1000)
        if any(now_ms - time_ms(i) > BULK_DELETE_MAX_AGE * 1000 for i in ids):
            raise ApiError(400, 50034, "You can only bulk delete messages that are under 14 days old.")
        if channel.is_thread and channel.archived:
            raise archived_thread()
        for i in ids:
            if i in channel.messages:
                self._remove(channel, i)

    # -- reactions -----------------------------------------------------------------------------

    def add_reaction(self, actor: MemberSpec, channel_id: int, message_id: int, emoji: str) -> None:
        channel, bits = self.channel(actor, channel_id)
        msg = self.message(channel, message_id)
        key, obj = _emoji(emoji)
        if not bits & perms.READ_MESSAGE_HISTORY:
            raise missing_permissions()
        if channel.is_thread and channel.archived:
            raise archived_thread()
        users = msg.reactions.get(key)
        if users is None:
            if not bits & perms.ADD_REACTIONS:
                raise missing_permissions()
            if len(msg.reactions) >= MAX_REACTION_EMOJIS:
                raise ApiError(400, 30010, "Maximum number of reactions reached (20)")
            users = msg.reactions[key] = []
            msg.emojis[key] = obj
        if actor.id not in users:
            users.append(actor.id)

    def remove_reaction(self, actor: MemberSpec, channel_id: int, message_id: int, emoji: str,
                        user_id: int | None) -> None:
        """Remove ACTOR's reaction (USER_ID None) or another user's (needs MANAGE_MESSAGES)."""
        channel, bits = self.channel(actor, channel_id)
        msg = self.message(channel, message_id)
        key, _ = _emoji(emoji)
        if user_id is not None and user_id != actor.id and not bits & perms.MANAGE_MESSAGES:
            raise missing_permissions()
        if channel.is_thread and channel.archived:
            raise archived_thread()
        users = msg.reactions.get(key, [])
        target = actor.id if user_id is None else user_id
        if target in users:
            users.remove(target)
        if not users:
            msg.reactions.pop(key, None)
            msg.emojis.pop(key, None)

    def clear_reactions(self, actor: MemberSpec, channel_id: int, message_id: int) -> None:
        channel, bits = self.channel(actor, channel_id)
        msg = self.message(channel, message_id)
        if not bits & perms.MANAGE_MESSAGES:
            raise missing_permissions()
        msg.reactions.clear()
        msg.emojis.clear()

    def list_reactions(self, actor: MemberSpec, channel_id: int, message_id: int, emoji: str,
                       query: dict[str, str]) -> list[dict[str, Any]]:
        channel, bits = self.channel(actor, channel_id)
        if not bits & perms.READ_MESSAGE_HISTORY:
            raise missing_access()
        msg = self.message(channel, message_id)
        key, _ = _emoji(emoji)
        limit = _int_param(query, "limit", 25, 1, 100)
        after = _snowflake_param(query, "after") if "after" in query else 0
        users = sorted(u for u in msg.reactions.get(key, []) if u > after)[:limit]
        return [self.user_json(self.members[u]) for u in users]

    # -- threads -------------------------------------------------------------------------------

    def start_thread(self, actor: MemberSpec, channel_id: int, message_id: int,
                     payload: dict[str, Any]) -> dict[str, Any]:
        channel, bits = self.channel(actor, channel_id)
        if channel.type != TEXT:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        msg = self.message(channel, message_id)
        if not bits & perms.CREATE_PUBLIC_THREADS:
            raise missing_permissions()
        name = payload.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        duration = payload.get("auto_archive_duration") or 1440
        if duration not in ARCHIVE_DURATIONS:
            raise form_error("auto_archive_duration", "BASE_TYPE_CHOICES",
                             f"Value must be one of {ARCHIVE_DURATIONS}.")
        if msg.id in self.channels:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        if self.active_thread_count() >= self.config.max_active_threads:
            raise ApiError(400, 160006, "Maximum number of active threads reached")
        now = self.now()
        thread = Channel(id=msg.id, type=PUBLIC_THREAD, name=name, parent_id=channel.id, owner_id=actor.id,
                         auto_archive_duration=int(duration), archive_timestamp=now, created=now,
                         last_activity=now)
        self.channels[thread.id] = thread
        return self.channel_json(thread)

    def _unarchive(self, thread: Channel, now: float) -> None:
        if self.active_thread_count() >= self.config.max_active_threads:
            raise ApiError(400, 160006, "Maximum number of active threads reached")
        thread.archived = False
        thread.archive_timestamp = now
        thread.last_activity = now

    def modify_channel(self, actor: MemberSpec, channel_id: int, payload: dict[str, Any]) -> dict[str, Any]:
        channel, bits = self.channel(actor, channel_id)
        if not channel.is_thread:
            raise missing_permissions()  # MANAGE_CHANNELS: no emulated bot has it
        manager = bool(bits & perms.MANAGE_THREADS)
        # anyone who may post may unarchive an unlocked thread; its creator may also archive
        # and rename it; everything else (and locking) takes MANAGE_THREADS
        reopen = (set(payload) <= {"archived"} and payload.get("archived") is False
                  and not channel.locked and bool(bits & perms.SEND_MESSAGES))
        if not manager and not reopen and (actor.id != channel.owner_id or "locked" in payload):
            raise missing_permissions()
        if channel.locked and channel.archived and not manager:
            raise missing_permissions()
        if channel.archived and payload.get("archived") is not False:
            raise archived_thread()
        now = self.now()
        if "name" in payload:
            name = payload["name"]
            if not isinstance(name, str) or not 1 <= len(name) <= 100:
                raise form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            channel.name = name
        if "auto_archive_duration" in payload:
            if payload["auto_archive_duration"] not in ARCHIVE_DURATIONS:
                raise form_error("auto_archive_duration", "BASE_TYPE_CHOICES",
                                 f"Value must be one of {ARCHIVE_DURATIONS}.")
            channel.auto_archive_duration = int(payload["auto_archive_duration"])
        if "locked" in payload:
            channel.locked = bool(payload["locked"])
        if payload.get("archived") is False and channel.archived:
            self._unarchive(channel, now)
        elif payload.get("archived") is True and not channel.archived:
            channel.archived = True
            channel.archive_timestamp = now
        return self.channel_json(channel)

    def active_threads(self, actor: MemberSpec, guild_id: int) -> dict[str, Any]:
        self.guild(guild_id)
        threads = []
        for ch in self.channels.values():
            if ch.is_thread:
                self._maybe_auto_archive(ch)
                if not ch.archived and self.permissions(actor, ch) & perms.VIEW_CHANNEL:
                    threads.append(self.channel_json(ch))
        return {"threads": threads, "members": []}

    # -- guild ---------------------------------------------------------------------------------

    def guild(self, guild_id: int) -> None:
        if guild_id != self.config.guild_id:
            raise ApiError(404, 10004, "Unknown Guild")

    def guild_json(self, guild_id: int) -> dict[str, Any]:
        self.guild(guild_id)
        return {"id": str(guild_id), "name": self.config.guild_name, "icon": None, "owner_id": None,
                "features": [], "roles": self.roles_json(guild_id)}

    def roles_json(self, guild_id: int) -> list[dict[str, Any]]:
        self.guild(guild_id)
        everyone = {"id": str(guild_id), "name": "@everyone", "position": 0}
        roles = [everyone] + [{"id": str(r.id), "name": r.name, "position": i + 1}
                              for i, r in enumerate(self.config.roles)]
        # @everyone holds what members get by default (Create Public Threads included, as on
        # Discord); members' and bots' own permissions are set per member here
        everyone["permissions"] = str(perms.DEFAULT_USER)
        return [{"permissions": "0"} | r | {"color": 0, "hoist": False, "managed": False,
                                            "mentionable": False, "flags": 0, "icon": None,
                                            "unicode_emoji": None} for r in roles]

    def member_json(self, guild_id: int, user_id: int) -> dict[str, Any]:
        self.guild(guild_id)
        member = self.members.get(user_id)
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return {"user": self.user_json(member), "nick": None, "avatar": None,
                "roles": [str(r) for r in member.roles], "joined_at": iso(time_ms(member.id) / 1000),
                "premium_since": None, "deaf": False, "mute": False, "flags": 0, "pending": False,
                "communication_disabled_until": None}

    def channels_json(self, guild_id: int) -> list[dict[str, Any]]:
        self.guild(guild_id)
        return [self.channel_json(self.channels[c.id]) for c in self.config.channels]

    def application_json(self, bot: MemberSpec) -> dict[str, Any]:
        flags = 0
        if bot.message_content:
            flags = MESSAGE_CONTENT_VERIFIED if bot.verified else MESSAGE_CONTENT_LIMITED
        return {"id": str(bot.id), "name": bot.name, "icon": None, "description": "", "summary": "",
                "type": None, "bot_public": False, "bot_require_code_grant": False,
                "verify_key": f"{bot.id:064x}"[-64:], "flags": flags, "bot": self.user_json(bot),
                "owner": {"id": str(from_time(1704067200000, 2)), "username": "owner", "discriminator": "0",
                          "avatar": None, "global_name": "owner", "public_flags": 0, "flags": 0},
                "team": None, "approximate_guild_count": 1, "redirect_uris": [],
                "interactions_endpoint_url": None, "tags": []}

    def me_json(self, bot: MemberSpec) -> dict[str, Any]:
        return self.user_json(bot) | {"verified": True, "mfa_enabled": False, "email": None,
                                      "locale": "en-US", "premium_type": 0, "bio": ""}


def _compose(payload: dict[str, Any], files: list[Attachment]) -> tuple[str, list[dict[str, Any]]]:
    """The content and embeds of a new message, checked as Discord checks them."""
    content = payload.get("content")
    content = "" if content is None else str(content)
    if len(content) > MAX_CONTENT:
        raise _too_long()
    embeds = payload.get("embeds") or []
    if not isinstance(embeds, list) or len(embeds) > 10:
        raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    if not content.strip() and not embeds and not files and not payload.get("sticker_ids"):
        raise ApiError(400, 50006, "Cannot send an empty message")
    return content, embeds


def _too_long() -> ApiError:
    return form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")


def _int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        raise form_error(name, "NUMBER_TYPE_COERCE", f"Value \"{query[name]}\" is not int.") from None
    if not low <= value <= high:
        raise form_error(name, "NUMBER_TYPE_MAX" if value > high else "NUMBER_TYPE_MIN",
                         f"int value should be between {low} and {high}.")
    return value


def _snowflake_param(query: dict[str, str], name: str) -> int:
    return as_id(query[name], name)


def as_id(raw: Any, name: str) -> int:
    try:
        value = int(raw)
        if value < 0 or value >= 1 << 64:
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise form_error(name, "NUMBER_TYPE_COERCE", f"Value \"{raw}\" is not snowflake.") from None


def _nonce(raw: Any) -> str | int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise form_error("nonce", "BASE_TYPE_BAD", "Nonce must be an integer or a string.")
    if isinstance(raw, str) and len(raw) > MAX_NONCE:
        raise form_error("nonce", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_NONCE} or fewer in length.")
    return raw


def _emoji(raw: str) -> tuple[str, dict[str, Any]]:
    """The reaction key and emoji object for a path's emoji: a unicode emoji or ``name:id``."""
    custom = _CUSTOM_EMOJI.match(raw)
    if custom:
        return custom.group(2), {"id": custom.group(2), "name": custom.group(1)}
    if not raw or ":" in raw or raw.isascii():
        raise ApiError(400, 10014, "Unknown Emoji")
    return raw, {"id": None, "name": raw}
