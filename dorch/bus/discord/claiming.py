"""Claiming a task: *Start Thread from Message* (a message has at most one thread, the second
try answers 400 / 160004 and loses quietly), then the claim receipt in the thread, the holder's
fencing token.

The host's workers on one bot claim in turn, and a worker chooses at the last moment, at random
among the oldest few waiting tasks (the older the likelier), which spreads contention and keeps
roughly oldest-first order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Callable

from dorch.bus.discord import formats, trust
from dorch.bus.discord.connect import Settings
from dorch.bus.discord.delivery import SUMMARY_MAX, Courier
from dorch.bus.discord.gate import STOP, WAITING, Entry, Gate
from dorch.bus.discord.guild import Guild
from dorch.bus.discord.host_state import HostState
from dorch.bus.discord.intake import Intake, Rejected, parse
from dorch.bus.discord.poller import Poller
from dorch.discord import errors
from dorch.discord.client import START_THREAD
from dorch.discord.types import Message
from dorch.model import Claim, Task, TaskError

log = logging.getLogger("dorch.bus.discord")

# A worker picks at random among this many of the oldest waiting tasks, the older the likelier
# (weights 5:4:3:2:1), so workers polling together rarely collide and no task lingers.
SPREAD = 5
MAX_CLAIM_TRIES = 6  # threads tried per poll (lost races and deleted messages included)
MAX_THREAD_WAIT = 10.0  # s: a longer wait for the thread bucket gives the turn up until later
TURN_PATIENCE = 5.0  # s a worker waits for its host's claiming turn before polling again later
TURN_TTL = 30.0  # s: a turn whose holder died is free again after this
TURN_POLL = 0.05  # s between looks at the turn
PAGE_FRESH = 0.5  # s a polled page is fresh enough to claim from
# s a claim may take before it checks its task message is still there: a reaper takes a
# thread without a receipt (its claimer died) only a lease after the thread started
SLOW_CLAIM = 10.0


class Claimer:
    """Claims tasks for this host's workers, and cancels tasks nobody claimed yet."""

    def __init__(self, guild: Guild, gate: Gate, intake: Intake, poller: Poller,
                 courier: Courier, settings: Settings, state: HostState,
                 clock: Callable[[], float]) -> None:
        self.guild = guild
        self.client = guild.client
        self.gate = gate
        self.intake = intake
        self.poller = poller
        self.courier = courier
        self.settings = settings
        self.state = state
        self.clock = clock
        self.names: dict[str, str] = {}  # task id -> its thread's name, for the result

    async def claim(self, entries: list[Entry], worker: str, lease: float) -> Claim | None:
        """Claim one of the tasks waiting in ENTRIES (a page just polled), in this host's turn."""
        if not any(e.kind in WAITING for e in entries):
            return None
        async with self._turn(worker) as turn:
            if turn:
                return await self._in_turn(entries, worker, lease)
        return None

    async def _in_turn(self, entries: list[Entry], worker: str, lease: float) -> Claim | None:
        tries = 0
        while tries < MAX_CLAIM_TRIES:
            # Choose at the last moment: when the bot's thread bucket makes us wait (or a race
            # was just lost), the page is stale: other workers took its oldest tasks meanwhile.
            wait = self.client.wait_time("POST", START_THREAD,
                                         {"channel_id": self.settings.task_channel})
            if wait > MAX_THREAD_WAIT:
                return None
            if wait > 0 or tries or self.poller.age() > PAGE_FRESH:
                await asyncio.sleep(wait)
                entries = await self.poller.poll()
            waiting = [e for e in entries if e.kind in WAITING]
            if not waiting:
                return None
            few = waiting[:SPREAD]
            entry = random.choices(few, weights=range(len(few), 0, -1))[0]
            if entry.kind == STOP and await self.gate.stopped(entry.msg):
                await self.cancel_queued(entry.msg, by="a 🛑 reaction")
                entries = [e for e in entries if e is not entry]
                continue
            tries += 1
            claim = await self._try(entry.msg, worker, lease)
            if claim is not None:
                return claim
        return None

    @contextlib.asynccontextmanager
    async def _turn(self, worker: str) -> AsyncIterator[bool]:
        """The host's workers on one bot claim in turn (True: it is ours; False: none came
        within TURN_PATIENCE). The bot starts about one thread a second, and workers choosing
        from the same page at once would mostly lose races to each other."""
        me = f"{worker}:{os.getpid()}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TURN_PATIENCE
        while not self.state.take_turn(me, self.clock(), TURN_TTL):
            if loop.time() >= deadline:
                yield False
                return
            await asyncio.sleep(TURN_POLL)
        try:
            yield True
        finally:
            self.state.drop_turn(me)

    async def _try(self, msg: Message, worker: str, lease: float) -> Claim | None:
        """Start the thread on MSG (the claim) and post the receipt; None if another won."""
        mid = msg["id"]
        first = " ".join((msg.get("content") or "").split())
        if first.startswith(formats.HEADER.strip()):
            first = formats.split_header(msg.get("content") or "")[0]
            first = " ".join(first.split())
        started = self.clock()
        try:
            thread = await self.client.start_thread(self.settings.task_channel, mid,
                                                    f"task {mid}: {first[:60]}")
        except errors.ThreadAlreadyExists:
            log.debug("task %s: another worker was first", mid)
            return None
        except errors.NotFound as exc:
            if exc.code != errors.UNKNOWN_MESSAGE:
                raise
            log.info("task %s was deleted before it could be claimed", mid)
            return None
        try:
            source, attempt = await self.intake.source(msg)
            spec = parse(source)
        except (Rejected, TaskError) as exc:
            await self._reject(msg, str(exc))
            return None
        until = self.clock() + lease
        receipt = await self.client.create_message(mid, formats.receipt_text(
            worker, self.settings.host, attempt, self.settings.max_attempts, until))
        # The thread shows the claim to people (no ✅ needed). A claim this slow may have been
        # taken back as an orphan meanwhile (its task message deleted): then it is not run.
        if self.clock() - started > min(SLOW_CLAIM, self.settings.lease / 2):
            try:
                await self.client.get_message(self.settings.task_channel, mid)
            except errors.NotFound:
                log.warning("task %s: its message was deleted after the claim; not running it",
                            mid)
                return None
        self.names[str(mid)] = str(thread.get("name") or "")
        author = msg.get("author") or {}
        task = Task(str(mid), spec, attempt, str(author.get("username", "")),
                    trust.epoch(msg.get("timestamp")))
        return Claim(task, worker, str(receipt["id"]), until)

    async def _reject(self, msg: Message, why: str) -> None:
        mid = msg["id"]
        log.warning("task %s rejected: %s", mid, why)
        await self.client.create_message(mid, formats.rejected_note(why))
        summary = f"{formats.FAILED} **rejected** · {self.guild.link(mid)} · {' '.join(why.split())}"
        await self.client.create_message(self.settings.results_channel, summary[:SUMMARY_MAX])
        await self.guild.react(mid, formats.FAILED)
        await self.guild.archive(mid)

    async def cancel_queued(self, msg: Message, by: str) -> bool:
        """Cancel a task nobody claimed yet by claiming it: False if a worker was first."""
        mid = msg["id"]
        try:
            await self.client.start_thread(self.settings.task_channel, mid, f"task {mid}: cancelled")
        except errors.ThreadAlreadyExists:
            return False
        except errors.NotFound as exc:
            if exc.code != errors.UNKNOWN_MESSAGE:
                raise
            return True
        await self.courier.put("requeue", {"old": mid, "cancelled": True, "by": by})
        return True
