"""Spread the polls of a host's idle workers evenly over the poll interval.

N idle workers that each poll every ``poll_interval`` seconds at random moments leave gaps of up
to a whole interval in which nobody looks at the queue. Here the idle workers of one host (for
one queue) share the looking instead: the host polls once every ``interval / N`` seconds, done
by whichever of them wakes first, so a new task waits half that on average, for the same number
of requests. Workers find each other in a small shared file; one that stops being idle (it
claimed a task, or exits) leaves, and a killed one drops out after two intervals.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from pathlib import Path

from dorch.shared_state import SharedState

STALE_INTERVALS = 2.0  # an idle worker not seen for this many intervals is gone
JITTER = 0.05  # of the gap: who wakes first varies, and hosts sharing a rhythm drift apart


class PollPacer:
    """The host-wide poll rhythm of the idle workers polling one queue (KEY)."""

    def __init__(self, directory: Path | None, key: str,
                 clock: Callable[[], float] = time.time) -> None:
        name = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.state = SharedState(directory / f"pacing-{name}.json" if directory else None)
        self.clock = clock

    def polled(self, worker: str) -> None:
        """WORKER has just polled (and is idle): the host's next poll is a gap away."""
        now = self.clock()
        with self.state.locked() as doc:
            doc.setdefault("idle", {})[worker] = now
            doc["last"] = max(float(doc.get("last") or 0), now)

    def turn(self, worker: str, interval: float) -> float:
        """0.0 if WORKER should poll now (its turn is taken), else seconds to wait before asking
        again: the host polls once every INTERVAL / (idle workers)."""
        now = self.clock()
        with self.state.locked() as doc:
            idle: dict[str, float] = doc.setdefault("idle", {})
            idle[worker] = now
            for other, seen in list(idle.items()):
                if now - seen > STALE_INTERVALS * interval + 1:
                    del idle[other]
            gap = interval / len(idle)
            last = float(doc.get("last") or 0)
            if now - last >= gap or last > now + interval:  # (a clock step back: start over)
                doc["last"] = now
                return 0.0
        return last + gap - now + random.uniform(0, JITTER) * gap

    def leave(self, worker: str) -> None:
        """WORKER stops polling (it claimed a task or exits): the others close ranks."""
        with self.state.locked() as doc:
            (doc.get("idle") or {}).pop(worker, None)

    def close(self) -> None:
        self.state.close()
