"""An async Discord REST client for what dorch needs, careful about rate limits and retries.

    async with DiscordClient(token, api_base=...) as discord:
        msg = await discord.create_message(channel_id, "hello")

Every request waits for a reservation in its rate-limit bucket (``ratelimit``), is refused while
this host is close to Discord's invalid-request ban (``invalid_requests``), is retried on 429
(after ``retry_after``), on 5xx and on connection errors (exponential backoff with jitter, at most
``max_tries`` tries), and never on other 4xx: those raise the typed errors of ``errors``. Methods
return Discord's JSON as plain dicts and lists, typed by ``dorch.discord.types``.

Every message dorch creates suppresses mentions (``allowed_mentions: {"parse": []}``) and
carries a ``nonce`` with ``enforce_nonce``, the same on every retry, so a post whose answer was
lost is not duplicated; pass the outbox item's nonce to extend that over process restarts.
The token is only ever sent in the Authorization header; ``on_secret`` is given it (dorch
registers it with its log redaction), and no exception or repr carries it.

A leaf: it knows nothing of dorch's configuration, paths, logging or outbox; the bus adapts
those (``dorch.bus.discord.connect``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

from dorch import __version__
from dorch.discord import errors
from dorch.discord.content import MAX_CONTENT, File
from dorch.discord.invalid_requests import DEFAULT_LIMIT, InvalidRequestCounter
from dorch.discord.ratelimit import RateLimiter, RateLimitInfo
from dorch.discord.tls import aiohttp  # aiohttp itself, its CA bundle loaded on demand
from dorch.discord.types import Channel, Member, Message, User
from dorch.shared_state import SharedState

log = logging.getLogger(__name__)

API_BASE = "https://discord.com/api/v10"
USER_AGENT = f"DiscordBot (https://github.com/dorch/dorch, {__version__})"
NO_MENTIONS: dict[str, Any] = {"parse": []}
MAX_NONCE = 25
CLOUDFLARE_BACKOFF = 3600.0  # s: a ban without Retry-After lasts about an hour
ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)
_RETRY_STATUSES = frozenset({500, 502, 503, 504, 520, 521, 522, 523, 524})
_REACTIONS = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}"
START_THREAD = "/channels/{channel_id}/messages/{message_id}/threads"
# Routes known to share one bucket, so the first answer of one teaches the others: adding and
# removing reactions do (a remove right after an add would otherwise be sent blind, and 429).
_SHARED_ROUTES = {
    f"PUT {_REACTIONS}/@me": "reactions",
    f"DELETE {_REACTIONS}/@me": "reactions",
    f"DELETE {_REACTIONS}/{{user_id}}": "reactions",
}


class _Secret:
    """Holds the Authorization value; shows nothing of it in reprs and tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def new_nonce() -> str:
    """A fresh nonce (at most 25 characters), unique across hosts and processes."""
    return f"{os.getpid() % 1000:03d}{secrets.token_hex(10)}"[:25]


def _attachments(files: Sequence[File]) -> list[dict[str, Any]]:
    """The ``attachments`` of a payload: one entry per uploaded ``files[i]`` part."""
    return [{"id": i, "filename": f.filename, **({"description": f.description}
                                                 if f.description else {})}
            for i, f in enumerate(files)]


def _major(params: Mapping[str, Any]) -> str:
    for name in ("channel_id", "guild_id", "webhook_id"):
        if name in params:
            return str(params[name])
    return ""


class DiscordClient:
    """Discord's REST API for one bot token. Use ``async with`` or call ``aclose()``.

    ``state_dir``: where the rate-limit and invalid-request state shared with the host's other
    processes lives (None or ``shared=False``: in this process only). ``nonce``: makes the
    nonce of a post given none. ``on_secret``: called with the token, e.g. to keep it out of
    logs. ``global_limit``/``global_per``: the token's global limit (Discord: 50/s).
    ``invalid_limit``: invalid requests per 10 minutes per host at which the client refuses
    to send (it slows down from half of it). ``max_wait``: the longest rate-limit wait before a
    request raises ``RateLimited`` instead. ``retry_base``: the first backoff on 5xx/connection
    errors, doubled on every try (with jitter), capped at ``max_backoff``.
    """

    def __init__(self, token: str, *, api_base: str = API_BASE,
                 state_dir: str | os.PathLike[str] | None = None, shared: bool = True,
                 nonce: Callable[[], str] = new_nonce,
                 on_secret: Callable[[str], object] | None = None,
                 timeout: float = 30.0, max_tries: int = 5, max_wait: float = 120.0,
                 retry_base: float = 1.0, max_backoff: float = 30.0, global_limit: int = 50,
                 global_per: float = 1.0, invalid_limit: int = DEFAULT_LIMIT,
                 user_agent: str = USER_AGENT) -> None:
        token = token.strip()
        if not token:
            raise errors.Unauthorized(401, 0, "no bot token given")
        if token.lower().startswith("bot "):
            token = token[4:].strip()
        if on_secret is not None:
            on_secret(token)
        self._nonce = nonce
        self._auth = _Secret(f"Bot {token}")
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.max_tries = max(1, max_tries)
        self.max_wait = max_wait
        self.retry_base = retry_base
        self.max_backoff = max_backoff
        self.resent = 0  # requests sent again after an attempt that may have reached Discord
        self.user_agent = user_agent
        directory = Path(state_dir) if state_dir is not None else None
        # per token (by a hash: the file name must not reveal it) and per host
        token_id = hashlib.sha256(token.encode()).hexdigest()[:16]
        self.token_id = token_id  # names this token in shared files without revealing it
        self._bucket_state = SharedState(directory / f"ratelimit-{token_id}.json"
                                         if shared and directory else None)
        self._host_state = SharedState(directory / "invalid-requests.json"
                                       if shared and directory else None)
        self.limiter = RateLimiter(self._bucket_state, global_limit=global_limit,
                                   global_per=global_per)
        self.invalid = InvalidRequestCounter(self._host_state, limit=invalid_limit)
        self._session: aiohttp.ClientSession | None = None
        self._me: User | None = None

    def __repr__(self) -> str:
        return f"<DiscordClient api_base={self.api_base!r} token=***>"

    async def __aenter__(self) -> DiscordClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._bucket_state.close()
        self._host_state.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": self.user_agent},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
            # aiohttp silently resends an idempotent request once when a kept-alive connection
            # drops; every try must pass the rate limiter and be counted, so the loop above
            # does all retrying (aiohttp's own test client turns it off the same way).
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    def wait_time(self, method: str, template: str, params: Mapping[str, Any]) -> float:
        """Seconds until METHOD TEMPLATE (with PARAMS' major parameter) could be sent without
        waiting for its rate limit; reserves nothing."""
        route = f"{method} {template}"
        return self.limiter.wait_time(_SHARED_ROUTES.get(route, route), _major(params))

    # -- the request loop ----------------------------------------------------------------------

    async def request(self, method: str, template: str, params: Mapping[str, Any] | None = None,
                      *, query: Mapping[str, Any] | None = None, json_body: Any = None,
                      files: Sequence[File] = (), reason: str | None = None) -> Any:
        """METHOD on TEMPLATE (e.g. ``/channels/{channel_id}/messages``) filled from PARAMS.

        Returns the decoded JSON (``None`` for 204). The route's bucket is learned per template,
        keyed by its major parameter (``channel_id``, ``guild_id`` or ``webhook_id``).
        """
        params = dict(params or {})
        path = template.format(**{k: quote(str(v), safe=":@") for k, v in params.items()})
        route = f"{method} {template}"
        route = _SHARED_ROUTES.get(route, route)
        major = _major(params)
        url = self.api_base + path
        if query:
            url += "?" + urlencode({k: str(v) for k, v in query.items() if v is not None})
        headers = {"Authorization": self._auth.reveal()}
        if reason:
            headers["X-Audit-Log-Reason"] = quote(reason, safe=" ")
        ambiguous = False
        failure: errors.DiscordError | None = None
        for attempt in range(self.max_tries):
            self.resent += ambiguous
            delay = self.invalid.delay()  # raises during a ban or at the host's limit
            if delay:
                log.warning("slowing down %.2f s: many invalid Discord requests from this host",
                            delay)
                await asyncio.sleep(delay)
            await self.limiter.acquire(route, major, max_wait=self.max_wait, method=method,
                                       path=path)
            started = time.monotonic()
            try:
                status, resp_headers, data = await self._send(method, url, headers, json_body,
                                                              files)
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.limiter.update(route, major, None)
                # a refused connection never reached Discord; anything later might have
                ambiguous = ambiguous or not isinstance(exc, aiohttp.ClientConnectorError)
                kind = type(exc).__name__
                failure = errors.DiscordConnectionError(
                    f"{method} {path}: cannot reach Discord at {self.api_base} ({kind})")
                log.warning("%s %s: %s (try %d of %d)", method, path, kind, attempt + 1,
                            self.max_tries)
                await self._backoff(attempt)
                continue
            except BaseException:  # cancelled: the reservation is no longer in flight
                self.limiter.update(route, major, None)
                raise
            info = RateLimitInfo.parse(resp_headers)
            elapsed = (time.monotonic() - started) * 1000
            log.debug("%s %s -> %d in %.0f ms (bucket %s remaining %s reset in %s)", method, path,
                      status, elapsed, info.bucket, info.remaining, info.reset_after)
            if status < 300:
                self.limiter.update(route, major, info, status=status)
                return data
            if status == 429:
                failure = self._rate_limited(route, major, method, path, resp_headers, info, data)
                continue
            self.limiter.update(route, major, info, status=status)
            if status in (401, 403):
                self.invalid.record()
            if status in _RETRY_STATUSES:
                ambiguous = True
                failure = errors.from_response(status, data, method=method, path=path,
                                               ambiguous=True)
                log.warning("%s %s: HTTP %d (try %d of %d)", method, path, status, attempt + 1,
                            self.max_tries)
                await self._backoff(attempt)
                continue
            raise errors.from_response(status, data, method=method, path=path, ambiguous=ambiguous)
        assert failure is not None
        if isinstance(failure, errors.DiscordHTTPError):
            failure.ambiguous = ambiguous
        raise failure

    async def _send(self, method: str, url: str, headers: dict[str, str], json_body: Any,
                    files: Sequence[File]) -> tuple[int, Mapping[str, str], Any]:
        body: Any = None
        send_headers = dict(headers)
        if files:
            body = aiohttp.FormData(quote_fields=False)  # files[0] must stay unescaped
            body.add_field("payload_json", json.dumps(json_body or {}),
                           content_type="application/json")
            for i, f in enumerate(files):
                body.add_field(f"files[{i}]", f.data, filename=f.filename,
                               content_type=f.content_type)
        elif json_body is not None:
            body = json.dumps(json_body)
            send_headers["Content-Type"] = "application/json"
        session = self._get_session()
        async with session.request(method, url, data=body, headers=send_headers) as resp:
            raw = await resp.read()
            data: Any = None
            if raw and resp.content_type == "application/json":
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
            elif raw:
                data = raw.decode("utf-8", "replace")[:500]
            return resp.status, resp.headers, data

    def _rate_limited(self, route: str, major: str, method: str, path: str,
                      headers: Mapping[str, str], info: RateLimitInfo, data: Any) -> errors.DiscordError:
        """Record a 429 and return what to raise if no try is left; raise a Cloudflare ban."""
        if not isinstance(data, dict) or "Via" not in headers:
            try:
                ban = float(headers.get("Retry-After", "")) or CLOUDFLARE_BACKOFF
            except ValueError:
                ban = CLOUDFLARE_BACKOFF
            self.invalid.ban(ban)
            self.limiter.update(route, major, None)
            log.critical("CLOUDFLARE BAN: Discord's edge refused %s %s with a bare 429; every "
                         "dorch process on this host stops sending to Discord for %.0f s. Find "
                         "what keeps failing (revoked token, missing permission) first.",
                         method, path, ban)
            raise errors.CloudflareBan(ban)
        try:
            retry_after = max(0.0, float(data.get("retry_after", info.reset_after or 1.0)))
        except (TypeError, ValueError):
            retry_after = 1.0
        is_global = bool(data.get("global")) or info.is_global
        scope = "global" if is_global else info.scope or "user"
        if scope != "shared":
            self.invalid.record()
        marked = RateLimitInfo(info.limit, info.remaining, info.reset_after, info.bucket, scope,
                               is_global)
        self.limiter.update(route, major, marked, status=429, retry_after=retry_after)
        log.warning("%s %s: rate limited (%s scope), retrying in %.2f s", method, path, scope,
                    retry_after)
        return errors.RateLimited(retry_after, scope, method=method, path=path)

    async def _backoff(self, attempt: int) -> None:
        if attempt + 1 < self.max_tries:
            delay = min(self.max_backoff, self.retry_base * 2 ** attempt)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    # -- users and applications ----------------------------------------------------------------

    async def me(self) -> User:
        """The bot's user (cached after the first call)."""
        if self._me is None:
            self._me = await self.request("GET", "/users/@me")
        return self._me

    async def application(self) -> dict[str, Any]:
        """The bot's application (``flags`` carries the MESSAGE_CONTENT intent bits)."""
        result: dict[str, Any] = await self.request("GET", "/applications/@me")
        return result

    async def my_guilds(self) -> list[dict[str, Any]]:
        """The guilds the bot is in, each with its guild-level ``permissions``."""
        result: list[dict[str, Any]] = await self.request("GET", "/users/@me/guilds")
        return result

    async def guild_roles(self, guild_id: int | str) -> list[dict[str, Any]]:
        """The guild's roles, @everyone (id = the guild's) included, with their permissions."""
        result: list[dict[str, Any]] = await self.request("GET", "/guilds/{guild_id}/roles",
                                                          {"guild_id": guild_id})
        return result

    async def get_member(self, guild_id: int | str, user_id: int | str) -> Member:
        result: Member = await self.request(
            "GET", "/guilds/{guild_id}/members/{user_id}", {"guild_id": guild_id, "user_id": user_id})
        return result

    # -- channels and threads ------------------------------------------------------------------

    async def get_channel(self, channel_id: int | str) -> Channel:
        result: Channel = await self.request("GET", "/channels/{channel_id}",
                                                    {"channel_id": channel_id})
        return result

    async def edit_channel(self, channel_id: int | str, **fields: Any) -> Channel:
        """PATCH a channel or thread (e.g. ``archived=True``, ``name=...``)."""
        result: Channel = await self.request("PATCH", "/channels/{channel_id}",
                                                    {"channel_id": channel_id}, json_body=fields)
        return result

    async def start_thread(self, channel_id: int | str, message_id: int | str, name: str, *,
                           auto_archive_duration: int = 1440) -> Channel:
        """Start a public thread on a message: dorch's claim. ``ThreadAlreadyExists`` (160004)
        means another bot won; if our own earlier try may have created it (a lost answer), the
        thread is fetched and returned when we own it. NAME is cut to 100 characters."""
        if auto_archive_duration not in ARCHIVE_DURATIONS:
            raise ValueError(f"auto_archive_duration must be one of {ARCHIVE_DURATIONS}")
        name = name.strip() or "task"
        if len(name) > 100:
            name = name[:99] + "…"
        try:
            result: Channel = await self.request(
                "POST", START_THREAD, {"channel_id": channel_id, "message_id": message_id},
                json_body={"name": name, "auto_archive_duration": auto_archive_duration})
            return result
        except errors.ThreadAlreadyExists as exc:
            if not exc.ambiguous:
                raise
            thread = await self.get_channel(message_id)  # a thread's id is its message's
            if str(thread.get("owner_id")) == str((await self.me())["id"]):
                return thread
            raise

    # -- messages ------------------------------------------------------------------------------

    async def get_message(self, channel_id: int | str, message_id: int | str) -> Message:
        result: Message = await self.request(
            "GET", "/channels/{channel_id}/messages/{message_id}",
            {"channel_id": channel_id, "message_id": message_id})
        return result

    async def list_messages(self, channel_id: int | str, *, before: int | str | None = None,
                            after: int | str | None = None, around: int | str | None = None,
                            limit: int = 50) -> list[Message]:
        """Up to LIMIT (1..100) messages, newest first; ``before``/``after``/``around`` exclude
        each other. Ids are k-sorted, not strictly increasing: dedupe by id when paging."""
        if sum(x is not None for x in (before, after, around)) > 1:
            raise ValueError("before, after and around exclude each other")
        if not 1 <= limit <= 100:
            raise ValueError("limit must be between 1 and 100")
        query = {"limit": limit, "before": before, "after": after, "around": around}
        result: list[Message] = await self.request(
            "GET", "/channels/{channel_id}/messages", {"channel_id": channel_id}, query=query)
        return result

    async def create_message(self, channel_id: int | str, content: str = "", *,
                             nonce: str | int | None = None,
                             files: Sequence[File] = ()) -> Message:
        """Post a message: mentions suppressed, a nonce enforced (the same on every retry; give
        the outbox's to dedupe across restarts). CONTENT over 2000 characters is refused: attach the
        rest as a file."""
        if len(content) > MAX_CONTENT:
            raise ValueError(f"content is {len(content)} characters, Discord allows "
                             f"{MAX_CONTENT}: attach the rest as a file")
        if not content.strip() and not files:
            raise ValueError("a message needs content or files")
        if len(files) > 10:
            raise ValueError("at most 10 files per message")
        nonce = self._nonce() if nonce is None else nonce
        if isinstance(nonce, str) and not 0 < len(nonce) <= MAX_NONCE:
            raise ValueError(f"a nonce has 1 to {MAX_NONCE} characters")
        payload: dict[str, Any] = {"content": content, "nonce": nonce, "enforce_nonce": True,
                                   "allowed_mentions": dict(NO_MENTIONS)}
        if files:
            payload["attachments"] = _attachments(files)
        result: Message = await self.request(
            "POST", "/channels/{channel_id}/messages", {"channel_id": channel_id},
            json_body=payload, files=files)
        return result

    async def edit_message(self, channel_id: int | str, message_id: int | str,
                           content: str | None = None, *, files: Sequence[File] = (),
                           **fields: Any) -> Message:
        """Edit the bot's own message (mentions stay suppressed). FILES replace its attachments."""
        if content is not None:
            if len(content) > MAX_CONTENT:
                raise ValueError(f"content is {len(content)} characters, Discord allows "
                                 f"{MAX_CONTENT}")
            fields["content"] = content
        fields.setdefault("allowed_mentions", dict(NO_MENTIONS))
        if files:
            fields["attachments"] = _attachments(files)
        result: Message = await self.request(
            "PATCH", "/channels/{channel_id}/messages/{message_id}",
            {"channel_id": channel_id, "message_id": message_id}, json_body=fields, files=files)
        return result

    async def delete_message(self, channel_id: int | str, message_id: int | str) -> None:
        """Delete a message. A repeat gets ``NotFound`` (10008): the requeue compare-and-set."""
        await self.request("DELETE", "/channels/{channel_id}/messages/{message_id}",
                           {"channel_id": channel_id, "message_id": message_id})

    async def bulk_delete(self, channel_id: int | str, message_ids: Sequence[int | str]) -> None:
        """Delete 2..100 messages younger than 14 days (one id: a plain delete)."""
        ids = list(dict.fromkeys(str(m) for m in message_ids))
        if len(ids) == 1:
            return await self.delete_message(channel_id, ids[0])
        if not 2 <= len(ids) <= 100:
            raise ValueError("bulk delete takes 2 to 100 message ids")
        await self.request("POST", "/channels/{channel_id}/messages/bulk-delete",
                           {"channel_id": channel_id}, json_body={"messages": ids})

    # -- reactions -----------------------------------------------------------------------------

    async def add_reaction(self, channel_id: int | str, message_id: int | str, emoji: str) -> None:
        """React with EMOJI (unicode, or ``name:id`` for a custom one)."""
        await self.request("PUT", _REACTIONS + "/@me",
                           {"channel_id": channel_id, "message_id": message_id, "emoji": emoji})

    async def list_reactions(self, channel_id: int | str, message_id: int | str, emoji: str, *,
                             after: int | str | None = None, limit: int = 100) -> list[User]:
        """Users who reacted with EMOJI, sorted by user id (not by time), LIMIT 1..100."""
        if not 1 <= limit <= 100:
            raise ValueError("limit must be between 1 and 100")
        result: list[User] = await self.request(
            "GET", _REACTIONS, {"channel_id": channel_id, "message_id": message_id,
                                     "emoji": emoji},
            query={"after": after, "limit": limit})
        return result
