"""Discord's REST routes that dorch uses: path templates, rate-limit buckets, and handlers.

A handler gets a ``Call`` (the acting bot, path parameters, query, body, files) and returns
``(status, json)``; it runs under the world's lock and raises ``ApiError`` for Discord's errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from dorch_emulator.config import MemberSpec
from dorch_emulator.state import ApiError, Attachment, World, as_id

Result = tuple[int, Any]


@dataclass
class Call:
    world: World
    actor: MemberSpec
    params: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)
    files: list[Attachment] = field(default_factory=list)

    def id(self, name: str) -> int:
        return as_id(self.params[name], name)


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    bucket: str  # a name in [ratelimit.routes]; "default" routes each get a bucket of their own
    handler: Callable[[Call], Result]
    pattern: re.Pattern[str]
    auth: bool = True  # False: no bot token needed (a webhook's URL is its credential)

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def identity(self) -> str:
        """What the bucket hash is made of: routes sharing a named bucket share the hash."""
        return self.bucket if self.bucket != "default" else self.key

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return {k: unquote(v) for k, v in found.groupdict().items()} if found else None

    def major(self, params: dict[str, str]) -> str:
        return params.get("channel_id") or params.get("guild_id") or params.get("webhook_id") or ""


# -- handlers ------------------------------------------------------------------------------------

def _me(c: Call) -> Result:
    return 200, c.world.me_json(c.actor)


def _my_guilds(c: Call) -> Result:
    w = c.world
    return 200, [{"id": str(w.config.guild_id), "name": w.config.guild_name, "icon": None, "owner": False,
                  "permissions": str(c.actor.permissions), "features": []}]


def _user(c: Call) -> Result:
    member = c.world.members.get(c.id("user_id"))
    if member is None:
        raise ApiError(404, 10013, "Unknown User")
    return 200, c.world.user_json(member)


def _application(c: Call) -> Result:
    return 200, c.world.application_json(c.actor)


def _get_channel(c: Call) -> Result:
    channel, _ = c.world.channel(c.actor, c.id("channel_id"))
    return 200, c.world.channel_json(channel)


def _modify_channel(c: Call) -> Result:
    return 200, c.world.modify_channel(c.actor, c.id("channel_id"), c.body)


def _list_messages(c: Call) -> Result:
    return 200, c.world.list_messages(c.actor, c.id("channel_id"), c.query)


def _create_message(c: Call) -> Result:
    return 200, c.world.create_message(c.actor, c.id("channel_id"), c.body, c.files)


def _bulk_delete(c: Call) -> Result:
    c.world.bulk_delete(c.actor, c.id("channel_id"), c.body)
    return 204, None


def _get_message(c: Call) -> Result:
    return 200, c.world.get_message(c.actor, c.id("channel_id"), c.id("message_id"))


def _edit_message(c: Call) -> Result:
    return 200, c.world.edit_message(c.actor, c.id("channel_id"), c.id("message_id"), c.body, c.files)


def _delete_message(c: Call) -> Result:
    c.world.delete_message(c.actor, c.id("channel_id"), c.id("message_id"))
    return 204, None


def _start_thread(c: Call) -> Result:
    return 201, c.world.start_thread(c.actor, c.id("channel_id"), c.id("message_id"), c.body)


def _clear_reactions(c: Call) -> Result:
    c.world.clear_reactions(c.actor, c.id("channel_id"), c.id("message_id"))
    return 204, None


def _list_reactions(c: Call) -> Result:
    return 200, c.world.list_reactions(c.actor, c.id("channel_id"), c.id("message_id"), c.params["emoji"],
                                       c.query)


def _add_reaction(c: Call) -> Result:
    c.world.add_reaction(c.actor, c.id("channel_id"), c.id("message_id"), c.params["emoji"])
    return 204, None


def _remove_own_reaction(c: Call) -> Result:
    c.world.remove_reaction(c.actor, c.id("channel_id"), c.id("message_id"), c.params["emoji"], None)
    return 204, None


def _remove_reaction(c: Call) -> Result:
    c.world.remove_reaction(c.actor, c.id("channel_id"), c.id("message_id"), c.params["emoji"],
                            c.id("user_id"))
    return 204, None


def _create_webhook(c: Call) -> Result:
    return 200, c.world.create_webhook(c.actor, c.id("channel_id"), c.body)


def _channel_webhooks(c: Call) -> Result:
    return 200, c.world.channel_webhooks(c.actor, c.id("channel_id"))


def _execute_webhook(c: Call) -> Result:
    msg = c.world.execute_webhook(c.id("webhook_id"), c.params["webhook_token"], c.query, c.body,
                                  c.files)
    return (204, None) if msg is None else (200, msg)


def _guild(c: Call) -> Result:
    return 200, c.world.guild_json(c.id("guild_id"))


def _guild_channels(c: Call) -> Result:
    return 200, c.world.channels_json(c.id("guild_id"))


def _guild_roles(c: Call) -> Result:
    return 200, c.world.roles_json(c.id("guild_id"))


def _guild_member(c: Call) -> Result:
    return 200, c.world.member_json(c.id("guild_id"), c.id("user_id"))


def _active_threads(c: Call) -> Result:
    return 200, c.world.active_threads(c.actor, c.id("guild_id"))


# -- the table -----------------------------------------------------------------------------------

_M = "/channels/{channel_id}/messages"
_R = _M + "/{message_id}/reactions"
_WEBHOOK = "/webhooks/{webhook_id}/{webhook_token}"

_TABLE: list[tuple[str, str, str, Callable[[Call], Result]]] = [
    ("GET", "/users/@me", "default", _me),
    ("GET", "/users/@me/guilds", "default", _my_guilds),
    ("GET", "/users/{user_id}", "default", _user),
    ("GET", "/applications/@me", "default", _application),
    ("GET", "/oauth2/applications/@me", "default", _application),
    ("GET", "/channels/{channel_id}", "default", _get_channel),
    ("PATCH", "/channels/{channel_id}", "modify_channel", _modify_channel),
    ("GET", _M, "default", _list_messages),
    ("POST", _M, "create_message", _create_message),
    ("POST", _M + "/bulk-delete", "bulk_delete", _bulk_delete),
    ("GET", _M + "/{message_id}", "default", _get_message),
    ("PATCH", _M + "/{message_id}", "edit_message", _edit_message),
    ("DELETE", _M + "/{message_id}", "delete_message", _delete_message),
    ("POST", _M + "/{message_id}/threads", "start_thread", _start_thread),
    ("POST", "/channels/{channel_id}/webhooks", "default", _create_webhook),
    ("GET", "/channels/{channel_id}/webhooks", "default", _channel_webhooks),
    ("POST", _WEBHOOK, "execute_webhook", _execute_webhook),
    ("DELETE", _R, "default", _clear_reactions),
    ("GET", _R + "/{emoji}", "default", _list_reactions),
    ("PUT", _R + "/{emoji}/@me", "reactions", _add_reaction),
    ("DELETE", _R + "/{emoji}/@me", "reactions", _remove_own_reaction),
    ("DELETE", _R + "/{emoji}/{user_id}", "reactions", _remove_reaction),
    ("GET", "/guilds/{guild_id}", "default", _guild),
    ("GET", "/guilds/{guild_id}/channels", "default", _guild_channels),
    ("GET", "/guilds/{guild_id}/roles", "default", _guild_roles),
    ("GET", "/guilds/{guild_id}/members/{user_id}", "default", _guild_member),
    ("GET", "/guilds/{guild_id}/threads/active", "default", _active_threads),
]


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(regex)


ROUTES = [Route(m, t, b, h, _compile(t), auth=t != _WEBHOOK) for m, t, b, h in _TABLE]


def resolve(method: str, raw_path: str) -> tuple[Route | None, dict[str, str], bool]:
    """(route, params, path_known) for METHOD on RAW_PATH (percent-encoded, without /api/vN).

    The first template that matches wins, so ``bulk-delete`` and ``@me`` come before the
    parameters they would otherwise match; ``path_known`` tells a 405 from a 404.
    """
    path_known = False
    for route in ROUTES:
        params = route.match(raw_path)
        if params is None:
            continue
        if route.method == method:
            return route, params, True
        path_known = True
    return None, {}, path_known
