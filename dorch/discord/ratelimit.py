"""Discord's rate limits, learned from response headers and shared by every process of a token.

Discord names a bucket in ``X-RateLimit-Bucket`` (a hash); the real key is the hash plus the
route's major parameter (channel, guild or webhook id). Until a route's first answer tells its
hash and limit, the route gets a provisional bucket of one request at a time (as discord.py
does). A request is only sent with a reservation: a bucket with ``remaining > 0`` (or a fresh
window), no global 429 in force, and fewer than ``global_limit`` requests of this token in the
last ``global_per`` seconds (Discord's 50/s, enforced before sending instead of learned from
429s). Answers update the bucket: the lower ``remaining`` and the later reset win, so responses
arriving out of order never loosen a limit. A 429 empties the bucket until ``retry_after``
(hidden sub-limits answer 429 while ``Remaining`` > 0; their ``retry_after`` may end before the
window does, and then the bucket goes on with what is known of its window: a 429 never makes it
forget the window, and a shared-scope 429, which Discord does not count, gives its request back).
When a window is over and no answer has told the next one's end yet (say the response was lost),
the bucket is assumed closed for at most the window's length as last learned, never longer.

The state lives in a ``SharedState`` file per token, so several workers sharing one bot token
on a host keep to one budget. Times are wall-clock (``time.time``) so they mean the same in
every process; a reset further away than ``MAX_RESET`` is treated as stale.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from dorch.discord.errors import RateLimited
from dorch.shared_state import SharedState

log = logging.getLogger(__name__)

PENDING_TTL = 60.0  # s after which an unanswered reservation is forgotten (its process died)
PROVISIONAL_TTL = 10.0  # s a first request may hold an unknown bucket before another may try
POLL = 0.05  # s between looks at a bucket whose reset is not known yet
GLOBAL_MARGIN = 0.05  # s added to the global window: send and arrival times differ a little
MAX_RESET = 24 * 3600.0
_LIMIT, _REMAINING, _RESET, _STATE, _SINCE, _PENDING, _WINDOW, _BLOCKED = range(8)
# _STATE: the bucket's window is known (from headers), the bucket is unknown (provisional, one
# request at a time), or a fresh window began whose end no answer has told yet.
# _SINCE: when the bucket's current window began here; an answer whose reset comes before it
# belongs to an earlier window (a late answer) and teaches nothing. _PENDING: times of the
# reservations not answered yet (a request reserved late in one window may arrive in the next).
# _WINDOW: the longest reset_after learned (the window's length; 0: not known). _BLOCKED: no
# request before this time (a 429's retry_after), whatever the window says.
KNOWN, PROVISIONAL, FRESH = 0, 1, 2


@dataclass(frozen=True)
class RateLimitInfo:
    """What one response said about its bucket (``None``: the header was absent)."""

    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    bucket: str | None = None
    scope: str = ""
    is_global: bool = False

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitInfo:
        def num(name: str, kind: type[int] | type[float]) -> int | float | None:
            raw = headers.get(name)
            if raw is None:
                return None
            try:
                return kind(float(raw)) if kind is int else float(raw)
            except ValueError:
                return None

        limit = num("X-RateLimit-Limit", int)
        remaining = num("X-RateLimit-Remaining", int)
        return cls(
            limit=int(limit) if limit is not None else None,
            remaining=int(remaining) if remaining is not None else None,
            reset_after=num("X-RateLimit-Reset-After", float),
            bucket=headers.get("X-RateLimit-Bucket") or None,
            scope=headers.get("X-RateLimit-Scope", ""),
            is_global=headers.get("X-RateLimit-Global", "").lower() == "true",
        )

    @property
    def complete(self) -> bool:
        return None not in (self.limit, self.remaining, self.reset_after)


def _valid(b: object, now: float) -> TypeGuard[list[Any]]:
    """B is a bucket as this version writes them, with a believable reset time."""
    return (isinstance(b, list) and len(b) == 8 and isinstance(b[_PENDING], list)
            and now - MAX_RESET < b[_RESET] < now + MAX_RESET)


class RateLimiter:
    """Reservations against one token's buckets. ``try_acquire`` and ``update`` are the
    arithmetic (unit-tested with a fake clock); ``acquire`` waits for a reservation."""

    def __init__(self, state: SharedState, *, global_limit: int = 50, global_per: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        if global_limit < 1 or global_per <= 0:
            raise ValueError("global_limit must be >= 1 and global_per > 0")
        self.state = state
        self.global_limit = global_limit
        self.global_window = global_per + GLOBAL_MARGIN
        self.clock = clock

    @staticmethod
    def _key(doc: dict[str, object], route: str, major: str) -> str:
        routes = doc.get("routes")
        bucket = routes.get(route) if isinstance(routes, dict) else None
        return f"b:{bucket}:{major}" if bucket else f"r:{route}:{major}"

    @staticmethod
    def _section(doc: dict[str, object], name: str) -> dict[str, list[Any]]:
        section = doc.get(name)
        if not isinstance(section, dict):
            section = doc[name] = {}
        return section

    def _pending(self, b: list[Any], now: float) -> list[float]:
        """B's reservations still unanswered (a crashed process's expire after PENDING_TTL)."""
        live = [t for t in b[_PENDING] if now - PENDING_TTL < t]
        b[_PENDING] = live
        return live

    def try_acquire(self, route: str, major: str) -> float:
        """Reserve one request on ROUTE/MAJOR: 0.0 if reserved, else seconds to wait first."""
        with self.state.locked() as doc:
            return self._reserve(doc, route, major)

    def wait_time(self, route: str, major: str) -> float:
        """Seconds until a request on ROUTE/MAJOR could go, reserving nothing (so a caller
        can decide what to send at the last moment)."""
        with self.state.locked() as doc:
            return self._reserve(copy.deepcopy(doc), route, major)

    def _reserve(self, doc: dict[str, Any], route: str, major: str) -> float:
        """The reservation arithmetic on DOC, changed in place."""
        now = self.clock()  # inside the lock: times in the file never run ahead of it
        until = float(doc.get("global_until", 0) or 0)
        if now < until < now + MAX_RESET:
            return until - now
        sent = [t for t in doc.get("sent", []) if isinstance(t, int | float)
                and now - self.global_window < t]
        if len(sent) >= self.global_limit:
            doc["sent"] = sent
            return max(0.001, min(sent) + self.global_window - now)
        buckets = self._section(doc, "buckets")
        key = self._key(doc, route, major)
        b = buckets.get(key)
        if not _valid(b, now):
            # a new major of a route whose hash is known: its window is likely the same, so a
            # first request that never gets its answer (its process died) holds it no longer
            window = self._hash_window(doc, buckets, route, now)
            b = buckets[key] = [1, 1, now + min(window or PROVISIONAL_TTL, PROVISIONAL_TTL),
                                PROVISIONAL, now, [], window, 0.0]
        pending = self._pending(b, now)
        if b[_BLOCKED] > now:
            return b[_BLOCKED] - now
        if b[_RESET] <= now:  # the window is over: a fresh one, whose end is not known yet
            if b[_STATE] == PROVISIONAL:
                # its one request got no answer for a whole window: its process died
                b[_LIMIT] = 1
                b[_PENDING] = pending = []
            else:
                b[_STATE] = FRESH
            # requests still in flight may yet land in the new window: count them in it
            b[_REMAINING] = max(0, b[_LIMIT] - len(pending))
            # until an answer tells the real end: at most one window as last learned
            b[_RESET] = now + min(b[_WINDOW] or PROVISIONAL_TTL, PROVISIONAL_TTL)
            b[_SINCE] = now
        if b[_REMAINING] < 1:
            left = b[_RESET] - now
            return max(0.001, left if b[_STATE] == KNOWN else min(left, POLL))
        b[_REMAINING] -= 1
        pending.append(now)
        sent.append(now)
        doc["sent"] = sent[-self.global_limit:]
        self._prune(buckets, now)
        return 0.0

    def update(self, route: str, major: str, info: RateLimitInfo | None, *, status: int = 0,
               retry_after: float | None = None) -> None:
        """Learn from the answer to a reserved request (``info=None``: no answer came)."""
        with self.state.locked() as doc:
            now = self.clock()  # inside the lock: times in the file never run ahead of it
            buckets = self._section(doc, "buckets")
            key = self._key(doc, route, major)
            b = buckets.get(key)
            if not _valid(b, now):
                b = None
            if b is not None:  # this request is no longer in flight
                pending = self._pending(b, now)
                if pending:
                    pending.remove(min(pending))
            if info is not None and info.bucket:
                routes = self._section(doc, "routes")
                if routes.get(route) != info.bucket:
                    routes[route] = info.bucket  # type: ignore[assignment]
                    if b is not None and b[_STATE] == PROVISIONAL:
                        del buckets[key]
                    key = self._key(doc, route, major)
                    b = buckets.get(key)
                    if not _valid(b, now):
                        b = None
            if status == 429 and info is not None and (info.is_global or info.scope == "global"):
                wait = retry_after if retry_after is not None else 1.0
                doc["global_until"] = max(float(doc.get("global_until", 0) or 0), now + wait)
                log.warning("global rate limit: every request of this bot waits %.2f s", wait)
                if b is not None and b[_STATE] == PROVISIONAL:
                    b[_REMAINING] = 1
                return
            if info is not None and info.complete:
                assert info.limit is not None and info.remaining is not None
                assert info.reset_after is not None
                reset = now + info.reset_after
                window = max(b[_WINDOW] if b is not None else 0.0, info.reset_after)
                if b is None or b[_STATE] == PROVISIONAL or b[_RESET] <= now:
                    pending = self._pending(b, now) if b is not None and b[_STATE] != PROVISIONAL else []
                    remaining = min(info.remaining, info.limit - len(pending))
                    blocked = b[_BLOCKED] if b is not None else 0.0
                    b = buckets[key] = [info.limit, max(0, remaining), reset, KNOWN, now, pending,
                                        window, blocked]
                elif reset <= b[_SINCE]:
                    pass  # a late answer from before this window
                else:
                    b[_LIMIT] = info.limit
                    b[_WINDOW] = window
                    b[_REMAINING] = min(b[_REMAINING], info.remaining)
                    b[_RESET] = reset if b[_STATE] == FRESH else max(b[_RESET], reset)
                    b[_STATE] = KNOWN
            elif b is not None and b[_STATE] == PROVISIONAL:
                b[_REMAINING] = 1  # nothing learned: let the next request try
            if status == 429:
                learned = retry_after if retry_after is not None else (
                    info.reset_after if info else None)
                wait = 1.0 if learned is None else learned
                if b is None:
                    b = buckets[key] = [1, 0, now + wait, KNOWN, now, [], 0.0, 0.0]
                # retry_after rules, even before the window's end (a hidden sub-limit is
                # shorter); what is known of the window stays (it is not a new one after it)
                b[_BLOCKED] = max(b[_BLOCKED], now + wait)
                if info is not None and info.scope == "shared":
                    b[_REMAINING] = min(b[_LIMIT], b[_REMAINING] + 1)  # not counted by Discord
                elif b[_STATE] != KNOWN or info is None or info.remaining is None:
                    b[_REMAINING] = 0  # nothing known of the window: none left in it
                if b[_RESET] < now + wait:
                    b[_RESET] = now + wait
                    b[_STATE] = KNOWN

    async def acquire(self, route: str, major: str, *, max_wait: float,
                      method: str = "", path: str = "") -> float:
        """Wait for a reservation; returns the seconds waited. Raises ``RateLimited`` instead of
        waiting longer than MAX_WAIT in all."""
        waited = 0.0
        while True:
            wait = self.try_acquire(route, major)
            if wait <= 0:
                return waited
            if waited + wait > max_wait:
                raise RateLimited(wait, "user", method=method, path=path,
                                  text=f"waiting would exceed max_wait ({max_wait:.0f} s)")
            await asyncio.sleep(wait)
            waited += wait

    @staticmethod
    def _hash_window(doc: dict[str, Any], buckets: dict[str, list[Any]], route: str,
                     now: float) -> float:
        """The longest window learned for ROUTE's bucket hash under any major (0: none)."""
        routes = doc.get("routes")
        bucket = routes.get(route) if isinstance(routes, dict) else None
        if not bucket:
            return 0.0
        prefix = f"b:{bucket}:"
        return max((float(b[_WINDOW]) for k, b in buckets.items()
                    if k.startswith(prefix) and _valid(b, now)), default=0.0)

    @staticmethod
    def _prune(buckets: dict[str, list[Any]], now: float) -> None:
        if len(buckets) > 512:
            for key in [k for k, b in buckets.items() if b[_RESET] < now - 60]:
                del buckets[key]
