"""Snowflake ids as Discord makes them: k-sorted, millisecond time since the Discord epoch."""

from __future__ import annotations

import threading
import time

DISCORD_EPOCH_MS = 1420070400000


def from_time(ms: int, worker: int = 0, increment: int = 0) -> int:
    """The snowflake for unix time MS (milliseconds), as used for ``before``/``after`` queries."""
    return ((ms - DISCORD_EPOCH_MS) << 22) | ((worker & 0x3FF) << 12) | (increment & 0xFFF)


def time_ms(snowflake: int) -> int:
    """Unix time in milliseconds at which SNOWFLAKE was made."""
    return (snowflake >> 22) + DISCORD_EPOCH_MS


class Snowflakes:
    """Makes ids for new objects; never goes backwards, even if the wall clock does."""

    def __init__(self, worker: int = 1) -> None:
        self._worker = worker
        self._last = 0
        self._lock = threading.Lock()

    def next(self, now_ms: int | None = None) -> int:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            candidate = from_time(now, self._worker)
            self._last = candidate if candidate > self._last else self._last + 1
            return self._last
