"""Polling #task-queue: one ``GET messages?after=CURSOR&limit=100`` while at most 100 tasks wait.

The cursor, shared by the host's processes, is kept just before the oldest waiting task (and
``CURSOR_MARGIN`` behind the present, since ids are only k-sorted); the tasks seen running are
noted for the reaper, which looks at them once their lease could have expired.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dorch.bus.discord.connect import Settings
from dorch.bus.discord.gate import DONE, PENDING, RUNNING, SQUATTED, Entry, Gate, msg_id, thread_created
from dorch.bus.discord.host_state import HostState
from dorch.bus.discord.trust import thread_owner
from dorch.discord.client import DiscordClient

PAGE = 100  # messages per poll (Discord's maximum)
MAX_PAGES = 20  # pages read in one poll while catching up over finished tasks
CURSOR_MARGIN = 10.0  # s: ids are k-sorted, so the cursor stays this far behind the present
REAP_GRACE = 2.0  # s after a lease's end before a reaper takes it (clock skew, slow edits)
DISCORD_EPOCH_MS = 1420070400000


def snowflake_at(when: float) -> int:
    """The smallest message id Discord could give at WHEN."""
    return max(0, int(when * 1000) - DISCORD_EPOCH_MS) << 22


class Poller:
    """Reads #task-queue from the host's cursor on, and keeps the last page it read."""

    def __init__(self, client: DiscordClient, gate: Gate, settings: Settings, state: HostState,
                 clock: Callable[[], float]) -> None:
        self.client = client
        self.gate = gate
        self.settings = settings
        self.state = state
        self.clock = clock
        self.polled_at = 0.0  # time.monotonic() of the last poll
        self._kept: list[Entry] | None = None

    async def poll(self) -> list[Entry]:
        """The messages of #task-queue from the cursor on, oldest first (one GET while the
        oldest 100 hold a waiting task). Moves the cursor and records running tasks."""
        start = cursor = self.state.cursor()
        seen: list[Entry] = []
        for _ in range(MAX_PAGES):
            batch = await self.client.list_messages(self.settings.task_channel, after=cursor,
                                                    limit=PAGE)
            batch.sort(key=msg_id)
            entries = [await self.gate.classify(m) for m in batch]
            seen.extend(entries)
            if len(batch) < PAGE or any(e.kind in PENDING for e in entries):
                break
            cursor = msg_id(batch[-1])  # a page of finished tasks: catch up
        waiting = [e.id for e in seen if e.kind in PENDING]
        # just before the oldest waiting task, else after everything seen
        new = min(waiting) - 1 if waiting else (seen[-1].id if seen else start)
        new = min(new, snowflake_at(self.clock() - CURSOR_MARGIN))
        grace = self.settings.lease + REAP_GRACE
        self.state.record_poll(
            new,
            [(str(e.id), thread_created(e.msg["thread"]) + grace, thread_owner(e.msg["thread"]))
             for e in seen if e.kind == RUNNING],
            [str(e.id) for e in seen if e.kind in (DONE, SQUATTED)])
        self.polled_at = time.monotonic()
        self._kept = seen
        return seen

    def age(self) -> float:
        """Seconds since the last poll."""
        return time.monotonic() - self.polled_at

    def take_recent(self, max_age: float) -> list[Entry] | None:
        """The last poll's page once, if younger than MAX_AGE (a reap polls, and the claim
        that follows in the same round uses its page instead of asking again)."""
        kept, self._kept = self._kept, None
        return kept if kept is not None and self.age() < max_age else None

    def forget(self) -> None:
        """The page changed (tasks were taken back): the next claim polls again."""
        self._kept = None
