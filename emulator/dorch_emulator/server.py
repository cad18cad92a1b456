"""The emulator's HTTP server: Discord's API under ``/api/v10`` (and v9), the control API under
``/_emulator``, attachments under ``/attachments``.

Every API request passes, in order: the Cloudflare ban, injected faults, route lookup, the token,
the global and per-route rate limits, then the handler under the world's lock. Every one is
logged (``Emulator.requests``) with the response's rate-limit headers.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from aiohttp import BodyPartReader, web

from dorch_emulator.config import EmulatorConfig, MemberSpec
from dorch_emulator.faults import Faults
from dorch_emulator.ratelimit import InvalidRequests, RateLimiter
from dorch_emulator.records import RequestLog, RequestRecord
from dorch_emulator.routes import Call, resolve
from dorch_emulator.snowflake import from_time
from dorch_emulator.state import ApiError, Attachment, World, form_error

API_PREFIXES = ("/api/v10", "/api/v9")
CONTROL = "/_emulator"
VIA = "1.1 google"  # what Discord's API responses carry; a 429 without it came from Cloudflare
_LOGGED_REQUEST_HEADERS = ("User-Agent", "Content-Type", "X-Audit-Log-Reason")
_RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                 "X-RateLimit-Reset-After", "X-RateLimit-Bucket", "X-RateLimit-Global",
                 "X-RateLimit-Scope", "Retry-After", "Via")
_HTML = "<html><head><title>{title}</title></head><body><h1>{title}</h1>{extra}</body></html>"


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with ``Content-Type: application/json`` exactly, as Discord sends it
    (discord.py only parses the body as JSON when the header is exactly that)."""
    out = {"Content-Type": "application/json", **(headers or {})}
    if status == 204:
        out.pop("Content-Type")
        return web.Response(status=204, headers=out)
    return web.Response(status=status, body=json.dumps(data).encode(), headers=out)


def _html(status: int, title: str, extra: str = "", headers: dict[str, str] | None = None) -> web.Response:
    body = _HTML.format(title=title, extra=extra).encode()
    return web.Response(status=status, body=body, headers={"Content-Type": "text/html", **(headers or {})})


class Emulator:
    """Discord's REST API for dorch's endpoints, in memory, on 127.0.0.1.

    ``async with Emulator(cfg, port=0) as emu`` serves until the block ends; ``Emulator.running``
    does the same from synchronous code (a thread of its own). ``api_base`` is what dorch's
    ``[discord] api_base`` is set to.
    """

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or EmulatorConfig.default()
        self.host = host
        self.port = port
        self.faults = Faults()
        self.log = RequestLog()
        self._tokens = {b.token: b for b in self.config.bots}
        self._rng = random.Random(self.config.seed)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outage_task: asyncio.Task[None] | None = None
        self._listening = False
        self.reset()

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=self.config.max_request_bytes + 64 * 1024)
        app.router.add_route("*", "/api/{version}/{tail:.*}", self._api)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._attachment)
        from dorch_emulator.control import add_control_routes

        add_control_routes(app, self)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await self._listen()
        self.world.base_url = self.url
        await self._apply_outage()  # a config may start the emulator refusing connections

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            server = self._site._server
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]
        self._listening = True

    async def stop(self) -> None:
        if self._outage_task:
            self._outage_task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._listening = False

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def running(cls, config: EmulatorConfig | None = None, host: str = "127.0.0.1",
                port: int = 0) -> Iterator[Emulator]:
        """Serve from a thread with its own event loop, for synchronous tests and tools.

        The returned emulator's methods (``post_as_user``, ``stats``, ``faults`` ...) are safe to
        call from the calling thread.
        """
        emulator = cls(config, host, port)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(emulator.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(emulator.stop())
            loop.close()

        thread = threading.Thread(target=serve, name="discord-emulator", daemon=True)
        thread.start()
        if not ready.wait(30):
            raise RuntimeError("the Discord emulator did not start within 30 s")
        if failure:
            raise failure[0]
        try:
            yield emulator
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)

    # -- what tests use ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def requests(self) -> list[RequestRecord]:
        """Every API request so far (a snapshot), oldest first."""
        return self.log.records()

    def stats(self) -> dict[str, Any]:
        """Counts per route and status, 429s per scope, invalid requests per IP, bans."""
        with self.world.lock:
            out = self.log.counters()
            out["invalid_requests"] = self.invalid.counts()
            out["bans"] = self.invalid.bans()
            out["bans_total"] = self.invalid.bans_total
            return out

    def state(self) -> dict[str, Any]:
        return {"url": self.url, "api_base": self.api_base, **self.config.summary()}

    def reset(self) -> None:
        """Back to the configured world: no messages, fresh limits, empty log, configured faults.
        (From the emulator's own event loop: ``await areset()``.)"""
        self._reset_state()
        self.set_faults(**self.config.faults.as_dict())

    async def areset(self) -> None:
        self._reset_state()
        await self.update_faults(**self.config.faults.as_dict())

    def _reset_state(self) -> None:
        world = World(self.config)
        world.base_url = self.url if self.port else ""
        self.world = world
        self.limiter = RateLimiter(self.config.routes, self.config.global_limit, self.config.global_per)
        self.invalid = InvalidRequests(self.config.invalid_limit, self.config.invalid_window,
                                       self.config.ban_seconds)
        self.log.clear()

    def set_faults(self, **changes: Any) -> Faults:
        """Change faults (see ``Faults``) from any thread but the emulator's own; returns once
        they apply (``outage="refuse"`` has closed the listening socket). On the emulator's
        event loop, ``await update_faults(...)`` instead."""
        loop = self._loop
        if loop is None or not loop.is_running():
            self.faults.update(changes)
            return self.faults
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("on the emulator's event loop, use `await emulator.update_faults(...)`")
        return asyncio.run_coroutine_threadsafe(self.update_faults(**changes), loop).result(30)

    async def update_faults(self, **changes: Any) -> Faults:
        """Change faults from the emulator's event loop; returns once they apply."""
        self.faults.update(changes)
        await self._apply_outage()
        return self.faults

    def advance_clock(self, seconds: float) -> None:
        """Move the emulated wall clock forward (thread auto-archive, the 14-day rule)."""
        with self.world.lock:
            self.world.clock_offset += seconds

    def post_as_user(self, user: str | int, channel: str | int, content: str,
                     attachments: Sequence[tuple[str, bytes | str]] | None = None,
                     **payload: Any) -> dict[str, Any]:
        """A human (or any configured member) posts CONTENT in CHANNEL (a name or an id)."""
        member = self.config.member(user)
        files = [self._file(name, data) for name, data in attachments or []]
        with self.world.lock:
            return self.world.create_message(member, self._channel_id(channel),
                                             {"content": content, **payload}, files)

    def react_as_user(self, user: str | int, channel: str | int, message_id: int | str, emoji: str,
                      remove: bool = False) -> None:
        member = self.config.member(user)
        with self.world.lock:
            if remove:
                self.world.remove_reaction(member, self._channel_id(channel), int(message_id), emoji, None)
            else:
                self.world.add_reaction(member, self._channel_id(channel), int(message_id), emoji)

    def start_thread_as_user(self, user: str | int, channel: str | int, message_id: int | str,
                             name: str = "thread", auto_archive_duration: int = 1440) -> dict[str, Any]:
        """A member (a human, or any configured bot) starts a thread on a message, as in the app:
        Discord's rules apply (CREATE_PUBLIC_THREADS; one thread per message: 160004)."""
        member = self.config.member(user)
        payload = {"name": name, "auto_archive_duration": auto_archive_duration}
        with self.world.lock:
            return self.world.start_thread(member, self._channel_id(channel), int(message_id), payload)

    def modify_thread_as_user(self, user: str | int, thread_id: int | str,
                              **changes: Any) -> dict[str, Any]:
        """A member changes a thread (``archived=True``: its creator may; ``archived=False``:
        anyone who may post, unless locked; the rest needs MANAGE_THREADS)."""
        member = self.config.member(user)
        with self.world.lock:
            return self.world.modify_channel(member, int(thread_id), changes)

    def create_webhook(self, channel: str | int, name: str = "Captain Hook",
                       user: str | int | None = None) -> dict[str, Any]:
        """A webhook for CHANNEL, made as the guild's owner does in the app (no permission
        needed); the answer carries ``id``, ``token`` and ``url``. With USER: made by that member
        through the API's rules (MANAGE_WEBHOOKS)."""
        with self.world.lock:
            if user is None:
                owner = MemberSpec("owner", from_time(1704067200000, 2), bot=False)
                return self.world.create_webhook(owner, self._channel_id(channel), {"name": name},
                                                 check=False)
            return self.world.create_webhook(self.config.member(user), self._channel_id(channel),
                                             {"name": name})

    def execute_webhook(self, webhook: dict[str, Any], content: str, thread_id: int | str | None = None,
                        attachments: Sequence[tuple[str, bytes | str]] | None = None,
                        **payload: Any) -> dict[str, Any]:
        """Post CONTENT as WEBHOOK (what ``create_webhook`` returned), in its channel or in one of
        its threads; the message, as ``?wait=true`` returns it."""
        files = [self._file(name, data) for name, data in attachments or []]
        query = {"wait": "true"} | ({"thread_id": str(thread_id)} if thread_id else {})
        with self.world.lock:
            msg = self.world.execute_webhook(int(webhook["id"]), str(webhook["token"]), query,
                                             {"content": content, **payload}, files)
        assert msg is not None
        return msg

    def post_as_app(self, app: str | int, user: str | int, channel: str | int, content: str,
                    command: str = "run", attachments: Sequence[tuple[str, bytes | str]] | None = None,
                    **payload: Any) -> dict[str, Any]:
        """USER runs APP's (a configured bot's) slash command /COMMAND in CHANNEL (a thread
        too) and the app answers CONTENT publicly: an interaction answer (type 20)."""
        files = [self._file(name, data) for name, data in attachments or []]
        with self.world.lock:
            return self.world.app_message(self.config.bot(app), self.config.member(user),
                                          self._channel_id(channel), {"content": content, **payload},
                                          files, command)

    def messages(self, channel: str | int, after: int | str = 0) -> list[dict[str, Any]]:
        """All messages of CHANNEL (with AFTER: those with a greater id), oldest first,
        unblanked (what an admin would see)."""
        with self.world.lock:
            ch = self.world.channels.get(self._channel_id(channel))
            if ch is None:
                raise KeyError(f"no channel {channel!r}")
            viewer = MemberSpec("observer", 0, bot=False)
            start = bisect.bisect_right(ch.order, int(after))
            return [self.world.message_json(ch.messages[i], viewer) for i in ch.order[start:]]

    def _channel_id(self, channel: str | int) -> int:
        if str(channel).isdigit() and int(channel) in self.world.channels:
            return int(channel)
        return self.config.channel(channel).id

    def _file(self, name: str, data: bytes | str, content_type: str = "") -> Attachment:
        raw = data.encode() if isinstance(data, str) else data
        kind = content_type or ("text/plain; charset=utf-8" if name.endswith((".txt", ".md", ".log"))
                                else "application/octet-stream")
        return Attachment(self.world.ids.next(), name, raw, kind)

    # -- outage by refusing connections --------------------------------------------------------

    async def _apply_outage(self) -> None:
        refuse = self.faults.outage == "refuse"
        if refuse and self._listening and self._site is not None:
            self._listening = False
            await self._site.stop()
            if self.faults.outage_seconds > 0:
                self._outage_task = asyncio.create_task(self._end_outage(self.faults.outage_seconds))
        elif not refuse and not self._listening and self._runner is not None:
            if self._outage_task is not None and self._outage_task is not asyncio.current_task():
                self._outage_task.cancel()
            await self._listen()

    async def _end_outage(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.update_faults(outage="off")

    # -- the API -------------------------------------------------------------------------------

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        try:
            att = self.world.attachment(int(request.match_info["channel_id"]),
                                        int(request.match_info["attachment_id"]))
        except ValueError:
            att = None
        if att is None or att.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        response = web.StreamResponse(headers={"Content-Type": att.content_type})
        response.content_length = len(att.data)
        await response.prepare(request)
        step = self.config.cdn_chunk_bytes
        for start in range(0, len(att.data), step):
            if start:
                # after the first chunk, a pause: what a reader finds buffered then is short
                await asyncio.sleep(self.config.cdn_first_pause if start == step else 0)
            await response.write(att.data[start:start + step])
        await response.write_eof()
        return response

    async def _api(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        prefix = f"/api/{request.match_info['version']}"
        raw_path = request.raw_path.split("?", 1)[0][len(prefix):]
        record = RequestRecord(time=time.time(), method=request.method, path=request.path[len(prefix):],
                               route="", ip=request.remote or "", query=dict(request.query),
                               request_headers={h: request.headers[h] for h in _LOGGED_REQUEST_HEADERS
                                                if h in request.headers})
        try:
            response = await self._answer(request, prefix, raw_path, record)
        except ConnectionResetError:  # the connection was dropped on purpose (a fault)
            record.status = 0
            self._finish(record, started)
            return web.Response(status=204)  # never sent: aiohttp finds the transport closed
        record.status = response.status
        record.response_headers = {h: response.headers[h] for h in _RATE_HEADERS if h in response.headers}
        if response.status >= 400 and response.content_type == "application/json" and response.body:
            assert isinstance(response.body, bytes)
            code = json.loads(response.body).get("code")
            record.code = code if isinstance(code, int) else None
        self._finish(record, started)
        return response

    def _finish(self, record: RequestRecord, started: float) -> None:
        record.duration = time.monotonic() - started
        self.log.add(record)

    async def _answer(self, request: web.Request, prefix: str, raw_path: str,
                      record: RequestRecord) -> web.Response:
        ip = record.ip
        if prefix not in API_PREFIXES:
            return _json(404, {"message": "404: Not Found", "code": 0}, {"Via": VIA})
        banned = self.invalid.banned_for(ip)
        if banned:
            record.scope = record.fault = "cloudflare"
            record.retry_after = banned
            return _html(429, "Error 1015", "<p>You are being rate limited</p><p>error code: 1015</p>",
                         {"Retry-After": str(math.ceil(banned))})

        faulted = await self._fault(request, record)
        if faulted is not None:
            return faulted

        route, params, known = resolve(request.method, raw_path)
        if route is None:
            status = 405 if known else 404
            text = "405: Method Not Allowed" if known else "404: Not Found"
            return _json(status, {"message": text, "code": 0}, {"Via": VIA})
        record.route = route.key

        bot = self._bot(request)
        if bot is not None:
            record.bot, record.bot_id = bot.name, str(bot.id)
        elif route.auth:
            self.invalid.record(ip)
            return _json(401, {"message": "401: Unauthorized", "code": 0}, {"Via": VIA})
        # a webhook's requests count against the webhook, whoever sends them
        caller = bot if route.auth and bot is not None else _WEBHOOK_CALLER
        limit_key = caller.id if route.auth else _as_key(params.get("webhook_id", ""))
        verdict = self.limiter.check(limit_key, route.bucket, route.identity, route.major(params))
        now = time.time()
        headers = {"Via": VIA}
        if verdict.scope != "global":
            headers |= verdict.headers(now)
        if verdict.limited:
            self.invalid.record(ip)
            record.scope, record.retry_after = verdict.scope, round(verdict.retry_after, 3)
            headers |= {"X-RateLimit-Scope": verdict.scope,
                        "Retry-After": str(math.ceil(verdict.retry_after))}
            if verdict.scope == "global":
                headers["X-RateLimit-Global"] = "true"
            return _json(429, {"message": "You are being rate limited.", "retry_after": record.retry_after,
                               "global": verdict.scope == "global"}, headers)

        try:
            body, files = await self._read_body(request, record)
            call = Call(self.world, caller, params, dict(request.query), body, files)
            with self.world.lock:
                status, data = route.handler(call)
        except ApiError as exc:
            if exc.status in (401, 403):
                self.invalid.record(ip)
            return _json(exc.status, exc.body(), headers)
        if self.faults.drop_responses > 0 or (self.faults.drop_response_rate
                                              and self._rng.random() < self.faults.drop_response_rate):
            self.faults.drop_responses = max(0, self.faults.drop_responses - 1)
            record.fault = "drop-response"
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("emulated lost response")
        return _json(status, data, headers)

    def _bot(self, request: web.Request) -> MemberSpec | None:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        return self._tokens.get(token.strip()) if scheme == "Bot" else None

    async def _fault(self, request: web.Request, record: RequestRecord) -> web.Response | None:
        faults = self.faults
        if faults.outage in ("reset", "refuse"):
            record.fault = f"outage-{faults.outage}"
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("emulated outage")
        if faults.outage == "503":
            record.fault = "outage-503"
            return _html(503, "503 Service Unavailable")
        if faults.latency:
            await asyncio.sleep(faults.latency)
        roll = self._rng.random()
        if faults.fail_next > 0:
            faults.fail_next -= 1
            roll = -1.0
        if roll < faults.error_rate or roll < 0:
            record.fault = f"error-{faults.error_status}"
            if faults.error_status == 500:
                return _json(500, {"message": "500: Internal Server Error", "code": 0}, {"Via": VIA})
            return _html(faults.error_status, f"{faults.error_status} Server Error")
        if roll < faults.error_rate + faults.shared_429_rate:
            record.fault = record.scope = "shared"
            record.retry_after = faults.shared_retry_after
            return _json(429, {"message": "You are being rate limited.",
                               "retry_after": faults.shared_retry_after, "global": False},
                         {"Via": VIA, "X-RateLimit-Scope": "shared",
                          "Retry-After": str(math.ceil(faults.shared_retry_after))})
        return None

    async def _read_body(self, request: web.Request,
                         record: RequestRecord) -> tuple[dict[str, Any], list[Attachment]]:
        """The JSON body, or a multipart request's ``payload_json`` and ``files[n]`` parts."""
        if not request.body_exists:
            return {}, []
        try:
            if request.content_type == "multipart/form-data":
                return await self._read_multipart(request, record)
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, 40005, "Request entity too large") from None
        if not raw.strip():
            return {}, []
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        record.body = body
        if not isinstance(body, dict):
            raise form_error("_root", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        return body, []

    async def _read_multipart(self, request: web.Request,
                              record: RequestRecord) -> tuple[dict[str, Any], list[Attachment]]:
        body: dict[str, Any] = {}
        parts: list[tuple[int, str, str, bytes]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            name = part.name or ""
            data = await part.read()
            if name == "payload_json":
                try:
                    body = json.loads(data)
                except ValueError:
                    raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
            elif name.startswith("files[") and name.endswith("]") and name[6:-1].isdigit():
                if len(data) > self.config.max_file_bytes:
                    raise ApiError(413, 40005, "Request entity too large")
                kind = part.headers.get("Content-Type", "application/octet-stream")
                parts.append((int(name[6:-1]), part.filename or "unknown", kind, bytes(data)))
            elif name in ("content", "nonce") and not body:
                body[name] = data.decode()
        record.body = body
        record.files = [p[1] for p in parts]
        if len(parts) > self.config.max_files:
            raise form_error("files", "BASE_TYPE_MAX_LENGTH",
                             f"Must be {self.config.max_files} or fewer in length.")
        described = {str(a.get("id")): a for a in body.get("attachments") or [] if isinstance(a, dict)}
        files = []
        for index, filename, kind, data in sorted(parts):
            meta = described.get(str(index), {})
            files.append(Attachment(self.world.ids.next(), str(meta.get("filename") or filename), data, kind,
                                    str(meta.get("description") or "")))
        return body, files


_WEBHOOK_CALLER = MemberSpec("(webhook)", 0, bot=False)  # the actor of unauthenticated routes


def _as_key(raw: str) -> int:
    return int(raw) if raw.isdigit() else 0


async def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0,
                announce: Any = print) -> None:
    """Run until cancelled (SIGINT/SIGTERM), announcing the base URL once listening.

    The announcement is one line: ``dorch emulator: url=http://HOST:PORT api_base=...``; tests
    read it to learn the port.
    """
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Emulator(config, host, port) as emu:
        announce(f"dorch emulator: url={emu.url} api_base={emu.api_base} control={emu.url}/_emulator")
        await stop.wait()
