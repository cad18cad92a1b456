"""The control API under ``/_emulator``: what tests, benchmarks and demos use to drive the
emulator from other processes (members posting, reacting, starting and archiving threads;
webhooks and apps posting; faults, the request log, stats).

Discord never uses this prefix, and faults, tokens and rate limits do not apply to it.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dorch_emulator.state import ApiError

if TYPE_CHECKING:
    from dorch_emulator.server import Emulator

PREFIX = "/_emulator"


def add_control_routes(app: web.Application, emu: Emulator) -> None:
    """Register the control endpoints of EMU on APP."""
    handlers = _Handlers(emu)
    r = app.router
    r.add_get(PREFIX + "/health", handlers.health)
    r.add_get(PREFIX + "/state", handlers.state)
    r.add_post(PREFIX + "/messages", handlers.post_message)
    r.add_get(PREFIX + "/messages", handlers.list_messages)
    r.add_put(PREFIX + "/reactions", handlers.react)
    r.add_delete(PREFIX + "/reactions", handlers.unreact)
    r.add_post(PREFIX + "/threads", handlers.start_thread)
    r.add_patch(PREFIX + "/threads/{thread_id}", handlers.modify_thread)
    r.add_post(PREFIX + "/webhooks", handlers.create_webhook)
    r.add_post(PREFIX + "/webhooks/{webhook_id}/{token}/messages", handlers.execute_webhook)
    r.add_post(PREFIX + "/app-messages", handlers.app_message)
    r.add_get(PREFIX + "/faults", handlers.get_faults)
    r.add_patch(PREFIX + "/faults", handlers.set_faults)
    r.add_get(PREFIX + "/requests", handlers.requests)
    r.add_delete(PREFIX + "/requests", handlers.clear_requests)
    r.add_get(PREFIX + "/stats", handlers.stats)
    r.add_post(PREFIX + "/reset", handlers.reset)
    r.add_post(PREFIX + "/clock", handlers.clock)


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "the body is not JSON"}',
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "the body must be a JSON object"}',
                                 content_type="application/json")
    return body


class _Handlers:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    async def health(self, request: web.Request) -> web.Response:
        return _ok({"ok": True})

    async def state(self, request: web.Request) -> web.Response:
        return _ok(self.emu.state())

    async def post_message(self, request: web.Request) -> web.Response:
        """``{"user", "channel", "content", "attachments": [{"filename", "text"|"base64"}], ...}``:
        further keys (``message_reference``, ``embeds``) go into the message payload."""
        body = await _body(request)
        extra = {k: v for k, v in body.items() if k not in ("user", "channel", "content", "attachments")}
        try:
            files = [control_file(a) for a in body.get("attachments") or []]
            msg = self.emu.post_as_user(body["user"], body["channel"], str(body.get("content", "")), files,
                                        **extra)
        except KeyError as exc:
            return _bad(f"{exc.args[0]}" if len(exc.args) else "missing field")
        except ApiError as exc:
            return _ok(exc.body(), exc.status)
        return _ok(msg)

    async def list_messages(self, request: web.Request) -> web.Response:
        """``?channel=NAME_OR_ID[&after=MESSAGE_ID]``."""
        after = request.query.get("after", "0")
        if not after.isdigit():
            return _bad("after must be a message id")
        try:
            return _ok(self.emu.messages(request.query["channel"], after))
        except KeyError as exc:
            return _bad(str(exc.args[0]) if exc.args else "channel is required", 404)

    async def start_thread(self, request: web.Request) -> web.Response:
        """``{"user", "channel", "message_id", "name"?}``: a member starts a thread."""
        body = await _body(request)
        return self._act(lambda: self.emu.start_thread_as_user(
            body["user"], body["channel"], body["message_id"], str(body.get("name") or "thread")), 201)

    async def modify_thread(self, request: web.Request) -> web.Response:
        """``{"user", "archived"?, "locked"?, "name"?}``: a member changes a thread."""
        body = await _body(request)
        changes = {k: v for k, v in body.items() if k != "user"}
        return self._act(lambda: self.emu.modify_thread_as_user(
            body["user"], request.match_info["thread_id"], **changes))

    async def create_webhook(self, request: web.Request) -> web.Response:
        """``{"channel", "name"?, "user"?}``: a webhook (without USER: made by the guild's
        owner); the answer has ``id``, ``token`` and ``url``."""
        body = await _body(request)
        return self._act(lambda: self.emu.create_webhook(
            body["channel"], str(body.get("name") or "Captain Hook"), body.get("user")))

    async def execute_webhook(self, request: web.Request) -> web.Response:
        """``{"content", "thread_id"?, "username"?, "attachments"?}``: post as the webhook."""
        body = await _body(request)
        hook = {"id": request.match_info["webhook_id"], "token": request.match_info["token"]}
        extra = {k: v for k, v in body.items() if k not in ("content", "thread_id", "attachments")}
        if not hook["id"].isdigit():
            return _bad("the webhook id must be a number", 404)
        return self._act(lambda: self.emu.execute_webhook(
            hook, str(body.get("content", "")), body.get("thread_id"),
            [control_file(a) for a in body.get("attachments") or []], **extra))

    async def app_message(self, request: web.Request) -> web.Response:
        """``{"app", "user", "channel", "content", "command"?}``: USER runs APP's command and
        the app answers publicly."""
        body = await _body(request)
        return self._act(lambda: self.emu.post_as_app(
            body["app"], body["user"], body["channel"], str(body.get("content", "")),
            str(body.get("command") or "run")))

    @staticmethod
    def _act(action: Any, status: int = 200) -> web.Response:
        """Run ACTION; Discord's errors come back as Discord sends them, unknown names as 400."""
        try:
            return _ok(action(), status)
        except KeyError as exc:
            return _bad(str(exc.args[0]) if exc.args else "missing field")
        except ApiError as exc:
            return _ok(exc.body(), exc.status)

    async def react(self, request: web.Request, remove: bool = False) -> web.Response:
        """``{"user", "channel", "message_id", "emoji"}``."""
        body = await _body(request)
        try:
            self.emu.react_as_user(body["user"], body["channel"], body["message_id"], body["emoji"], remove)
        except KeyError as exc:
            return _bad(str(exc.args[0]) if exc.args else "missing field")
        except ApiError as exc:
            return _ok(exc.body(), exc.status)
        return web.Response(status=204)

    async def unreact(self, request: web.Request) -> web.Response:
        return await self.react(request, remove=True)

    async def get_faults(self, request: web.Request) -> web.Response:
        return _ok(self.emu.faults.as_dict())

    async def set_faults(self, request: web.Request) -> web.Response:
        """Body: the fields of ``Faults`` to change, e.g. ``{"error_rate": 0.2}``."""
        try:
            faults = await self.emu.update_faults(**await _body(request))
        except ValueError as exc:
            return _bad(str(exc))
        return _ok(faults.as_dict())

    async def requests(self, request: web.Request) -> web.Response:
        """``?since=N``: records from index N on; ``next`` is the index to ask for next time."""
        since = int(request.query.get("since", "0") or 0)
        records, following = self.emu.log.since(since)
        return _ok({"next": following, "requests": [r.as_dict() for r in records]})

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.emu.log.clear()
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.Response:
        return _ok(self.emu.stats())

    async def reset(self, request: web.Request) -> web.Response:
        await self.emu.areset()
        return web.Response(status=204)

    async def clock(self, request: web.Request) -> web.Response:
        """``{"advance": seconds}``: move the emulated wall clock forward."""
        body = await _body(request)
        try:
            self.emu.advance_clock(float(body.get("advance", 0)))
        except (TypeError, ValueError):
            return _bad("advance must be a number of seconds")
        return web.Response(status=204)


def control_file(data: dict[str, Any]) -> tuple[str, bytes]:
    """A file from the control API: ``{"filename", "text"}`` or ``{"filename", "base64"}``."""
    name = str(data.get("filename") or "file.txt")
    if "base64" in data:
        return name, base64.b64decode(data["base64"])
    return name, str(data.get("text", "")).encode()
