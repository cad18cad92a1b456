"""Rate limits as Discord applies them: per-route buckets, a global limit per bot, and the
Cloudflare ban for too many invalid requests from one IP address.

Buckets are fixed windows keyed by bot, bucket and major parameter (channel or guild id): the
first request opens a window of ``per`` seconds in which ``limit`` requests pass.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dorch_emulator.config import DEFAULT_ROUTE_LIMITS, RouteLimit


@dataclass(frozen=True)
class Verdict:
    """The outcome of counting one request against its bucket: pass, or 429 with this scope."""

    limit: int
    remaining: int
    reset_after: float
    bucket: str
    retry_after: float = 0.0
    scope: str = ""  # "" passed; "user" per-route 429; "global"

    @property
    def limited(self) -> bool:
        return bool(self.scope)

    def headers(self, now: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": f"{now + self.reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{self.reset_after:.3f}",
            "X-RateLimit-Bucket": self.bucket,
        }


def bucket_hash(identity: str) -> str:
    """An opaque 32-hex-digit bucket id, stable for a route group (Discord's are opaque too)."""
    return hashlib.sha256(f"dorch-emulator:{identity}".encode()).hexdigest()[:32]


class _Windows:
    """Fixed windows: key -> [count, end]. Expired windows are dropped when the table grows."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._table: dict[object, list[float]] = {}

    def peek(self, key: object, per: float) -> tuple[int, float]:
        """(count, seconds left) of KEY's window, opening a fresh one if it has ended."""
        now = self._clock()
        window = self._table.get(key)
        if window is None or now >= window[1]:
            if len(self._table) > 50_000:
                self._table = {k: w for k, w in self._table.items() if w[1] > now}
            window = self._table[key] = [0, now + per]
        return int(window[0]), max(0.0, window[1] - now)

    def add(self, key: object) -> None:
        self._table[key][0] += 1

    def clear(self) -> None:
        self._table.clear()


class RateLimiter:
    """Per-route buckets and the global limit of each bot."""

    def __init__(self, routes: dict[str, RouteLimit], global_limit: int, global_per: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.routes = routes
        self.global_limit = global_limit
        self.global_per = global_per
        self._windows = _Windows(clock)

    def limit_for(self, bucket: str) -> RouteLimit:
        return self.routes.get(bucket) or self.routes.get("default") or DEFAULT_ROUTE_LIMITS["default"]

    def check(self, bot_id: int, bucket: str, identity: str, major: str) -> Verdict:
        """Count one request of BOT_ID on BUCKET (limits) / IDENTITY (hash) for MAJOR."""
        spec = self.limit_for(bucket)
        key = (bot_id, identity, major)
        count, left = self._windows.peek(key, spec.per)
        hashed = bucket_hash(identity)
        g_count, g_left = self._windows.peek((bot_id, "global"), self.global_per)
        if g_count >= self.global_limit:
            return Verdict(spec.limit, max(0, spec.limit - count), left, hashed, g_left, "global")
        if count >= spec.limit:
            return Verdict(spec.limit, 0, left, hashed, left, "user")
        if spec.hidden_limit:
            h_count, h_left = self._windows.peek((*key, "hidden"), spec.hidden_per)
            if h_count >= spec.hidden_limit:
                return Verdict(spec.limit, spec.limit - count, left, hashed, h_left, "user")
            self._windows.add((*key, "hidden"))
        self._windows.add(key)
        self._windows.add((bot_id, "global"))
        return Verdict(spec.limit, spec.limit - count - 1, left, hashed)

    def clear(self) -> None:
        self._windows.clear()


class InvalidRequests:
    """Invalid requests (401, 403, 429 except shared scope) per IP over a sliding window; too
    many and the IP is banned (Cloudflare) for ``ban_seconds``."""

    def __init__(self, limit: int, window: float, ban_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.ban_seconds = ban_seconds
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._banned: dict[str, float] = {}
        self.bans_total = 0

    def _trim(self, ip: str, now: float) -> deque[float]:
        seen = self._seen.setdefault(ip, deque())
        while seen and now - seen[0] >= self.window:
            seen.popleft()
        return seen

    def record(self, ip: str) -> None:
        now = self._clock()
        seen = self._trim(ip, now)
        seen.append(now)
        if len(seen) >= self.limit and ip not in self._banned:
            self._banned[ip] = now + self.ban_seconds
            self.bans_total += 1

    def banned_for(self, ip: str) -> float:
        """Seconds left of IP's ban (0: not banned)."""
        until = self._banned.get(ip)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._banned[ip]
            self._seen.pop(ip, None)
            return 0.0
        return left

    def counts(self) -> dict[str, int]:
        now = self._clock()
        return {ip: len(self._trim(ip, now)) for ip in list(self._seen)}

    def bans(self) -> dict[str, float]:
        return {ip: left for ip in list(self._banned) if (left := self.banned_for(ip)) > 0}

    def clear(self) -> None:
        self._seen.clear()
        self._banned.clear()
        self.bans_total = 0
