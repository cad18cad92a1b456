"""Taking back what no live worker holds, by the one compare-and-set dorch relies on besides
starting a thread: deleting a message (the first DELETE answers 204, every later one 404).

- An expired lease: the receipt is deleted, and the task re-posted as attempt k+1 (☠️ after
  ``max_attempts``). A thread in which nothing was ever posted (its claimer died before the
  receipt) is requeued by deleting the task message itself.
- A squat (a thread someone outside the fleet started): the task message is deleted and the
  task re-posted, same attempt; the ``SQUAT_LIMIT``-th squat in a row ends it ❌ blocked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dorch.bus import BusConfigError
from dorch.bus.discord import formats, trust
from dorch.bus.discord.connect import Settings
from dorch.bus.discord.delivery import Courier
from dorch.bus.discord.gate import SQUATTED, Entry, Gate, archived, msg_id, reaction, thread_created
from dorch.bus.discord.guild import Guild
from dorch.bus.discord.host_state import HostState
from dorch.bus.discord.intake import Intake, Rejected
from dorch.bus.discord.poller import REAP_GRACE
from dorch.discord import errors
from dorch.discord.types import Channel, Message

log = logging.getLogger("dorch.bus.discord")

REAP_BATCH = 10  # leases checked per poll at most
SQUAT_LIMIT = 3  # threads started on a task by others before it ends ❌ blocked
SQUATS_PER_ROUND = 5  # squatted tasks re-posted per reap at most
# s a bot's squatted post is left alone: its poster's client may still be retrying it (backoff
# 1+2+4+8 s), and a retry after the take-back deleted it would post a second copy
SQUAT_SETTLE = 20.0
_ENDS = (formats.REQUEUE_NOTE, formats.DEAD_NOTE, formats.REJECTED, formats.CANCELLED_QUEUED)


class Reaper:
    """Requeues expired leases and takes squatted tasks back."""

    def __init__(self, guild: Guild, gate: Gate, intake: Intake, courier: Courier,
                 settings: Settings, state: HostState, clock: Callable[[], float]) -> None:
        self.guild = guild
        self.client = guild.client
        self.gate = gate
        self.intake = intake
        self.courier = courier
        self.settings = settings
        self.state = state
        self.clock = clock

    @property
    def _lease(self) -> float:
        return self.settings.lease

    async def unsquat_page(self, entries: list[Entry]) -> int:
        """Take back the squatted tasks of ENTRIES (a few per round); how many."""
        settled = self.clock() - SQUAT_SETTLE
        squatted = [e for e in entries if e.kind == SQUATTED and (
            not (e.msg.get("author") or {}).get("bot")
            or trust.epoch(e.msg.get("timestamp")) < settled)][:SQUATS_PER_ROUND]
        for entry in squatted:
            await self.unsquat(entry.msg)
        return len(squatted)

    async def reap_due(self, limit: int) -> int:
        """Look at the running tasks whose lease could have expired; how many were requeued.
        After an outage, holders get one lease from its end to renew before anything is taken."""
        now = self.clock()
        back, recovered = self.state.recovered(now)
        if back and self.courier.outbox.retry_now():
            await self.courier.drain()  # what waited for Discord goes first
        if now - recovered < self._lease + REAP_GRACE:
            # Holders could not renew during the outage either: give them one lease
            # from its end to catch up before taking their tasks.
            return 0
        due = self.state.take_due(now, REAP_BATCH, now + max(self._lease / 2, 1.0))
        reaped = 0
        for key in due:  # this process checks them: the host's others wait
            reaped += await self.check(key, limit)
        return reaped

    async def unsquat(self, msg: Message) -> None:
        """A thread someone outside the fleet started on a task is no claim: take the task
        back (deleting its message is the compare-and-set) and re-post it, same attempt, noted
        in that thread; after SQUAT_LIMIT such threads it ends ❌ blocked, said in #results."""
        mid = msg["id"]
        owner = trust.thread_owner(msg["thread"])
        if not self.settings.fleet_bots and await self.gate.allowed_role(owner):
            # before fleet_bots, the README allowed giving the fleet's bots a role instead of
            # listing them: taking their running tasks back would run every task twice
            raise BusConfigError(
                f"task {mid} was claimed by user {owner}, who holds one of allowed_roles but is "
                "not in [discord] fleet_bots (not set). If it is a bot of your fleet, list every "
                "fleet bot in fleet_bots on every host (`dorch doctor` prints each bot's id)")
        fleet = await self.gate.fleet()
        squats = (formats.squats(msg.get("content") or "") if fleet.wrote(msg) else 0) + 1
        try:
            source, attempt = await self.intake.source(msg)
            refused = ""
        except Rejected as exc:
            source, attempt, refused = msg.get("content") or "", 1, str(exc)
        payload: dict[str, Any] = {"old": mid, "text": source, "orphan": True, "foreign": True}
        stopped = reaction(msg, formats.STOP) is not None and await self.gate.stopped(msg)
        try:
            await self.client.delete_message(self.settings.task_channel, mid)  # compare-and-set
        except errors.NotFound as exc:
            if not exc.ambiguous:
                return  # another worker took it back first
            # an earlier try of ours may have deleted it (its answer lost): re-post unless
            # another worker's re-post is there by delivery
            payload["verify"] = True
        who = await self.guild.user_label(owner)
        if stopped:
            payload |= {"cancelled": True, "by": "a 🛑 reaction"}  # what its author asked for
        elif refused or squats >= SQUAT_LIMIT:
            error = refused or (
                f"blocked by {who}: {squats} times a thread was started on this task by someone "
                "outside dorch's fleet, so no worker could claim it. Deny Create Public Threads "
                "and Send Messages in Threads in #task-queue to everyone but the fleet's bots "
                "(`dorch doctor` shows how), then post the task again (task.md in #results)")
            log.warning("task %s: %s", mid, error)
            payload["blocked"] = error
        else:
            why = (f"a thread was started on it by {who}, not by a dorch worker (not a claim; "
                   f"{squats} of {SQUAT_LIMIT} before it is given up)")
            log.warning("task %s: %s; re-posting it", mid, why)
            payload |= {"why": why, "verb": "re-posted", "attempt": attempt, "squats": squats}
        await self.courier.put("requeue", payload)

    async def check(self, key: str, limit: int) -> int:
        """Look at one running task's thread; requeue it if its lease expired. 1 if requeued."""
        lease = self._lease
        if self.courier.result_waits(key, since=self.clock() - max(3 * lease, 600.0)):
            self.state.schedule(key, self.clock() + lease)  # its result waits here: no reaping
            return 0
        try:
            notes = await self.client.list_messages(key, after=0, limit=50)
        except errors.NotFound:
            self.state.schedule(key, None)
            return 0
        # Only the fleet's notes count, and only the claimer's receipt and result (trust.py):
        # anyone else's marker in the thread is noise, however it reads.
        fleet = await self.gate.fleet()
        owner = self.state.owner(key)
        if owner is None:
            owner = trust.thread_owner(await self.client.get_channel(key))
        thread: Channel = {"owner_id": str(owner)}
        notes = sorted(fleet.markers(notes), key=msg_id)
        if any(p.match(m.get("content") or "") for m in notes for p in _ENDS) or any(
                formats.RESULT.match(m.get("content") or "") and fleet.owner_wrote(m, thread)
                for m in notes):
            self.state.schedule(key, None)  # finished (perhaps still being marked)
            return 0
        receipts = [(m, r) for m in notes if fleet.owner_wrote(m, thread)
                    and (r := formats.parse_receipt(m.get("content") or ""))]
        now = self.clock()
        if receipts:
            return await self._expired(key, receipts[-1], thread, now, limit)
        return await self._orphan(key, now, limit)

    async def _expired(self, key: str, found: tuple[Message, formats.Receipt],
                       thread: Channel, now: float, limit: int) -> int:
        """A task whose latest receipt is FOUND: requeued if its lease ran out."""
        receipt_msg, receipt = found
        fleet = await self.gate.fleet()
        until = trust.lease_cap(receipt.lease_until, receipt_msg, self._lease, now)
        if until + REAP_GRACE > now:
            self.state.schedule(key, until + REAP_GRACE)
            return 0
        try:
            msg = await self.client.get_message(self.settings.task_channel, key)
            source, _ = await self.intake.source(msg)
        except errors.NotFound:
            self.state.schedule(key, None)
            return 0
        except Rejected:
            source = msg.get("content") or ""
        try:
            await self.client.delete_message(key, receipt_msg["id"])  # the compare-and-set
        except errors.NotFound:
            self.state.schedule(key, now + self._lease)
            return 0
        later = await self.client.list_messages(key, after=receipt_msg["id"], limit=50)
        if any(formats.RESULT.match(m.get("content") or "") for m in later
               if fleet.owner_wrote(m, thread)):
            self.state.schedule(key, None)  # its holder finished just now: nothing to do
            return 0
        why = (f"the lease of attempt {receipt.attempt} expired (worker {receipt.worker} "
               "stopped renewing it: died or hung)")
        log.warning("task %s: %s; re-queueing", key, why)
        self.state.schedule(key, None)
        await self.courier.repost(msg, source, receipt.attempt, why, verb="requeued", limit=limit)
        return 1

    async def _orphan(self, key: str, now: float, limit: int) -> int:
        """A task without a receipt. Either nothing was ever posted in the thread (its claimer
        died before the receipt), or the receipt was deleted by a reaper or a worker handing
        the task back, whose re-post is on its way (or who died just after the delete). The
        second kind is an orphan only if it is still so a whole lease after this host first
        saw it."""
        grace = self._lease + REAP_GRACE
        thread = await self.client.get_channel(key)
        if archived(thread):
            self.state.schedule(key, None)
            return 0
        if thread.get("total_message_sent", 0):
            first_seen = self.state.suspect_since(key, now)
            if now - first_seen < grace:
                self.state.schedule(key, first_seen + grace)
                return 0
            why = "its receipt was removed but the task was never re-posted (the worker doing it died)"
        elif now - thread_created(thread) < grace:
            self.state.schedule(key, thread_created(thread) + grace)
            return 0
        else:
            why = "it was claimed but its worker never confirmed (died)"
        try:
            msg = await self.client.get_message(self.settings.task_channel, key)
            source, attempt = await self.intake.source(msg)
        except errors.NotFound:
            self.state.schedule(key, None)
            return 0
        except Rejected:
            source, attempt = msg.get("content") or "", formats.split_header(
                msg.get("content") or "")[1]
        try:
            await self.client.delete_message(self.settings.task_channel, key)  # compare-and-set
        except errors.NotFound:
            self.state.schedule(key, None)
            return 0
        why = f"attempt {attempt}: {why}"
        log.warning("task %s: %s; re-queueing", key, why)
        self.state.schedule(key, None)
        await self.courier.repost(msg, source, attempt, why, verb="requeued", limit=limit,
                                  orphan=True)
        return 1
