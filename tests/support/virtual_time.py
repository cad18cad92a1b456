"""An asyncio event loop on virtual time: when nothing is ready to run, time jumps to the next
timer instead of waiting for it.

Minutes of leases, heartbeats and back-offs then pass in milliseconds, always in the same order,
and a test never sleeps to let something happen. ``loop.time()`` is both the loop's monotonic
time and, for the code under test, the wall clock (pass ``loop.time`` as its ``clock``); it
starts at a fixed date so that no result depends on today.

Only for code whose every wait is the loop's own (timers, events, loopback sockets the loop
serves itself): time would jump while a thread or a child process works.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

START = 1_800_000_000.0  # 2027-01-15 08:00 UTC
T = TypeVar("T")


class _Selector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Looks at the file descriptors without waiting; a wait for a timer becomes a jump."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only a file descriptor can wake the loop
            return list(super().select(None))
        # one step past the timer: asyncio runs a timer due before now + 1 ns, which at this
        # magnitude rounds to now
        self.now = math.nextafter(self.now + timeout, math.inf)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _Selector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return float(self._virtual.now)

    def drive(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run CORO to its end, then cancel what it left running (as ``asyncio.run`` does)."""
        try:
            return self.run_until_complete(coro)
        finally:
            left = [t for t in asyncio.all_tasks(self) if not t.done()]
            for task in left:
                task.cancel()
            if left:
                self.run_until_complete(asyncio.gather(*left, return_exceptions=True))
