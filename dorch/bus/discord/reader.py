"""Reading a task's state back from Discord, following its re-posts.

A task's id is its first message's; a re-post (requeued, handed back, taken back from a
squatter) is a new message, which the old thread's ♻️ note (or, for a squatted task, the
re-post's header) points to. ``trail`` follows those pointers once for everyone: ``get`` reads
the state at its end, ``latest`` (for ``cancel``) its message. Only the fleet's notes count,
and only the claimer's receipt and result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from dorch.bus import BusError
from dorch.bus.discord import formats, trust
from dorch.bus.discord.connect import Settings
from dorch.bus.discord.gate import Gate, msg_id, thread_created
from dorch.bus.discord.guild import Guild
from dorch.bus.discord.intake import TASK_FILE_CAP, Intake, Rejected
from dorch.bus.discord.poller import PAGE
from dorch.discord import errors
from dorch.discord.types import Channel, Message
from dorch.model import Result, State, Task, TaskSpec, TaskView

GAVE_UP = re.compile(r"gave up after attempt (\d+)")


def requeued_to(notes: list[Message]) -> str | None:
    """The next attempt's id a thread's (fleet) notes point to: its ♻️ note."""
    for m in notes:
        found = formats.REQUEUE_NOTE.match(m.get("content") or "")
        if found and (parsed := formats.parse_link(found["link"])):
            return parsed[2]
    return None


def _thread_started(notes: list[Message]) -> float | None:
    return trust.epoch(notes[0].get("timestamp")) if notes else None


def ended(task: Task, notes: list[Message], worker: str, started: float | None,
          url: str) -> TaskView | None:
    """How a task ended, from a note in its thread (☠️ dead, ❌ rejected, 🛑 cancelled)."""
    for m in notes:
        content = m.get("content") or ""
        at = trust.epoch(m.get("timestamp"))
        if found := formats.DEAD_NOTE.match(content):
            gave_up = GAVE_UP.search(found["error"])
            if gave_up:
                task = replace(task, attempt=int(gave_up.group(1)))
            return TaskView(task, State.DEAD, worker, started, at,
                            Result(State.DEAD, error=found["error"]), url)
        if found := formats.REJECTED.match(content):
            return TaskView(task, State.FAILED, "", started, at,
                            Result(State.FAILED, error=found["error"]), url)
        if formats.CANCELLED_QUEUED.match(content):
            return TaskView(task, State.CANCELLED, "", started, at,
                            Result(State.CANCELLED, error="cancelled before it started"), url)
    return None


@dataclass
class Hop:
    """One attempt of a task: its message (None: deleted) and its thread's fleet notes."""

    id: str
    msg: Message | None
    notes: list[Message] = field(default_factory=list)


class Reader:
    """A task's state and messages as Discord shows them."""

    def __init__(self, guild: Guild, gate: Gate, intake: Intake, settings: Settings) -> None:
        self.guild = guild
        self.client = guild.client
        self.gate = gate
        self.intake = intake
        self.settings = settings

    async def thread_notes(self, tid: str) -> list[Message]:
        """The fleet's messages in thread TID, oldest first (none if there is no thread)."""
        try:
            notes = await self.client.list_messages(tid, after=0, limit=100)
        except errors.NotFound:
            return []
        fleet = await self.gate.fleet()
        return sorted(fleet.markers(notes), key=msg_id)

    async def reposted_as(self, old: str) -> str | None:
        """The id of the fleet's re-post of task OLD (its header links OLD's thread): found
        even when the ♻️ note could not go into a squatter's thread, or is not there yet."""
        fleet = await self.gate.fleet()
        origin = f" from {self.guild.link(old, old)}"
        for m in await self.client.list_messages(self.settings.task_channel, after=old,
                                                 limit=PAGE):
            first = (m.get("content") or "").partition("\n")[0]
            if fleet.wrote(m) and first.startswith(formats.HEADER) and origin in first:
                return str(m["id"])
        return None

    async def taken_back(self, old: str) -> bool:
        """Whether a fleet bot already re-posted squatted task OLD, or said it is blocked."""
        if await self.reposted_as(old) is not None:
            return True
        fleet = await self.gate.fleet()
        msgs = await self.client.list_messages(self.settings.results_channel, after=old,
                                               limit=PAGE)
        # the line's own link: the rest of a #results line may quote an agent's answer
        return any(fleet.wrote(m) and (found := formats.SUMMARY.match(m.get("content") or ""))
                   and found["link"] == self.guild.link(old, old) for m in msgs)

    async def _has_result(self, notes: list[Message], thread: Channel) -> bool:
        fleet = await self.gate.fleet()
        return any(formats.parse_result(m.get("content") or "") is not None
                   and fleet.owner_wrote(m, thread) for m in notes)

    async def trail(self, tid: str) -> list[Hop]:
        """TID's attempts up to the latest (bounded): each hop's message and thread notes.
        A deleted message (a reaper took it as an orphan, or it was taken back from a
        squatter) goes on to where its thread or the re-post's header says; a thread goes on
        to its ♻️ note unless it holds the claimer's result."""
        hops: list[Hop] = []
        for _ in range(self.settings.max_attempts * 3 + 3):
            try:
                msg = await self.client.get_message(self.settings.task_channel, tid)
            except errors.NotFound as exc:
                if exc.code != errors.UNKNOWN_MESSAGE:
                    raise
                notes = await self.thread_notes(tid)
                hops.append(Hop(tid, None, notes))
                nxt = requeued_to(notes) or await self.reposted_as(tid)
            else:
                thread = msg.get("thread")
                notes = await self.thread_notes(tid) if thread else []
                hops.append(Hop(tid, msg, notes))
                if not thread or await self._has_result(notes, thread):
                    return hops
                nxt = requeued_to(notes)
            if nxt is None:
                return hops
            tid = nxt
        return []  # a loop of pointers: nothing to show

    async def latest(self, tid: str) -> Message | None:
        """The message of the task's latest attempt (following re-posts), if it is there."""
        hops = await self.trail(tid)
        return hops[-1].msg if hops else None

    async def get(self, tid: str, task_id: str) -> TaskView | None:
        """Task TASK_ID (whose first message is TID) as it stands at its latest attempt."""
        hops = await self.trail(tid)
        if not hops:
            return None
        first = next((h for h in hops if h.msg is not None), None)
        origin = await self.intake.shown(first.msg, task_id) if first and first.msg else None
        last = hops[-1]
        url = self.guild.link(last.id)
        if last.msg is None:
            # deleted, and nothing points on: its thread says how it ended, or it is on its way
            gone = origin or Task(task_id, TaskSpec("(its message was deleted)"))
            view = ended(gone, last.notes, "", _thread_started(last.notes), url)
            if view is None and await self.guild.thread_exists(last.id):
                return TaskView(gone, State.QUEUED, url=url)  # re-post on its way
            return view
        if last is first and origin is not None:
            task = origin
        else:
            task = await self.intake.shown(last.msg, task_id)
            if origin is not None:
                task = replace(task, submitter=task.submitter or origin.submitter,
                               submitted_at=origin.submitted_at)
        thread = last.msg.get("thread")
        if not thread:
            if await self.gate.stopped(last.msg):
                return TaskView(task, State.CANCELLED, url=url,
                                result=Result(State.CANCELLED, error="cancelled before it started"))
            return TaskView(task, State.QUEUED, url=url)
        return await self._from_thread(task, last, thread, url)

    async def _from_thread(self, task: Task, hop: Hop, thread: Channel,
                           url: str) -> TaskView:
        """The task's state from its thread: the claimer's result, an end note, or running."""
        fleet = await self.gate.fleet()
        started = thread_created(thread)
        for m in hop.notes:
            parsed = formats.parse_result(m.get("content") or "")
            if parsed is not None and fleet.owner_wrote(m, thread):
                result, worker = parsed
                for att in m.get("attachments") or []:
                    if att.get("filename") == formats.RESULT_FILE:
                        try:
                            result.output = await self.intake.download(att, TASK_FILE_CAP)
                        except Rejected as exc:
                            raise BusError(f"task {hop.id}: its answer cannot be shown: {exc}; "
                                           f"read it in its thread: {url}") from None
                return TaskView(task, result.state, worker, started,
                                trust.epoch(m.get("timestamp")), result, url)
        receipt: formats.Receipt | None = None
        for m in hop.notes:
            if fleet.owner_wrote(m, thread):
                receipt = formats.parse_receipt(m.get("content") or "") or receipt
        worker = receipt.worker if receipt else ""
        view = ended(task, hop.notes, worker, started, url)
        if view is not None:
            return view
        if not fleet.owns(thread):  # a squatter's thread: no claim, the task waits
            return TaskView(task, State.QUEUED, url=url)
        return TaskView(task, State.RUNNING, worker, started, url=url)
