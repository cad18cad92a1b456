"""The host's count of invalid Discord requests, shared by every dorch process on the machine.

Discord bans an IP address (through Cloudflare, for about an hour) after 10,000 invalid
requests (401, 403, and 429 except scope ``shared``) in 10 minutes; every worker on a host
shares that budget. dorch keeps its own count in a small locked file, in 10-second bins over a
sliding 10-minute window, and reacts long before Discord would: from half its ``limit`` on every
request is delayed (up to ``MAX_DELAY`` seconds, growing with the count), at ``limit`` requests
are refused with ``TooManyInvalidRequests``. A Cloudflare ban, once seen, is recorded here too,
so no process on the host sends anything until it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from dorch.discord.errors import CloudflareBan, TooManyInvalidRequests
from dorch.shared_state import SharedState

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 2500  # a quarter of Discord's 10,000 per 10 minutes
WINDOW = 600.0
BIN = 10.0
MAX_DELAY = 5.0


class InvalidRequestCounter:
    def __init__(self, state: SharedState, *, limit: int = DEFAULT_LIMIT, window: float = WINDOW,
                 clock: Callable[[], float] = time.time) -> None:
        if limit < 2:
            raise ValueError("the invalid-request limit must be at least 2")
        self.state = state
        self.limit = limit
        self.window = window
        self.clock = clock

    def _bins(self, doc: dict[str, object], now: float) -> dict[str, int]:
        raw = doc.get("bins")
        bins = raw if isinstance(raw, dict) else {}
        live = {k: int(v) for k, v in bins.items()
                if isinstance(v, int) and now - self.window < (float(k) + 1) * BIN
                and float(k) * BIN <= now}  # a bin stays until its newest second is out
        doc["bins"] = live
        return live

    def record(self, n: int = 1) -> int:
        """Count N invalid requests now; returns the host's count in the window."""
        with self.state.locked() as doc:
            now = self.clock()  # inside the lock: times in the file never run ahead of it
            bins = self._bins(doc, now)
            key = str(int(now // BIN))
            bins[key] = bins.get(key, 0) + n
            total = sum(bins.values())
        if total >= self.limit // 2 and (total - n) < self.limit // 2:
            log.warning("invalid Discord requests from this host: %d in 10 minutes; slowing "
                        "down (refusing at %d, Discord bans at 10000)", total, self.limit)
        return total

    def count(self) -> int:
        with self.state.locked() as doc:
            now = self.clock()  # inside the lock: times in the file never run ahead of it
            return sum(self._bins(doc, now).values())

    def ban(self, seconds: float) -> None:
        """Record a Cloudflare ban of SECONDS for the whole host."""
        with self.state.locked() as doc:
            now = self.clock()  # inside the lock: times in the file never run ahead of it
            doc["banned_until"] = max(float(doc.get("banned_until", 0) or 0), now + seconds)

    def delay(self) -> float:
        """Seconds to wait before the next request (0 normally). Raises ``CloudflareBan`` during
        a recorded ban and ``TooManyInvalidRequests`` at the limit."""
        with self.state.locked() as doc:
            now = self.clock()  # inside the lock: times in the file never run ahead of it
            banned = float(doc.get("banned_until", 0) or 0) - now
            bins = self._bins(doc, now)
        if banned > 0:
            raise CloudflareBan(banned)
        total = sum(bins.values())
        if total >= self.limit:
            # the count falls below the limit once enough of the oldest bins leave the window
            excess = total - self.limit + 1
            retry = BIN
            for key in sorted(bins, key=float):
                excess -= bins[key]
                retry = float(key) * BIN + BIN + self.window - now
                if excess <= 0:
                    break
            raise TooManyInvalidRequests(total, self.limit, max(retry, 0.0))
        soft = self.limit // 2
        if total < soft:
            return 0.0
        return MAX_DELAY * (total - soft + 1) / (self.limit - soft)
