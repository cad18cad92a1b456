"""Spread the polls of a host's idle workers evenly over the poll interval.

N idle workers that each poll every ``poll_interval`` seconds at random moments leave gaps of up
to a whole interval in which nobody looks at the queue. Here the idle workers of one host (for
one queue) take turns instead: worker r of N polls at phase ``r * interval / N`` of every
interval, so the host looks every ``interval / N`` seconds and a new task waits half that on
average, for the same number of requests. Workers find each other in a small shared file; one
that stops being idle (it claimed a task, or exits) leaves, and a killed one drops out after
two intervals.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

from dorch.shared_state import SharedState

STALE_INTERVALS = 2.0  # an idle worker not seen for this many intervals is gone
JITTER = 0.05  # of the gap: hosts that happen to share a phase drift apart


class PollPacer:
    """The host-wide poll schedule of the idle workers polling one queue (KEY)."""

    def __init__(self, directory: Path | None, key: str,
                 clock: Callable[[], float] = time.time) -> None:
        name = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.state = SharedState(directory / f"pacing-{name}.json" if directory else None)
        self.clock = clock

    def wait(self, worker: str, interval: float) -> float:
        """Seconds WORKER, which has just polled, should wait before polling again."""
        now = self.clock()
        with self.state.locked() as doc:
            idle: dict[str, float] = doc.setdefault("idle", {})
            idle[worker] = now
            for other, seen in list(idle.items()):
                if now - seen > STALE_INTERVALS * interval + 1:
                    del idle[other]
            ranked = sorted(idle)
        gap = interval / len(ranked)
        phase = ranked.index(worker) * gap
        start = now + gap / 2  # never twice in a row, even when the ranks shift
        at = phase + math.ceil((start - phase) / interval) * interval  # first turn after start
        return at - now + random.uniform(-JITTER, JITTER) * gap

    def leave(self, worker: str) -> None:
        """WORKER stops polling (it claimed a task or exits): the others close ranks."""
        with self.state.locked() as doc:
            (doc.get("idle") or {}).pop(worker, None)

    def close(self) -> None:
        self.state.close()
