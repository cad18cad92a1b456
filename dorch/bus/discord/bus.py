"""The Discord bus: #task-queue is the queue, a task's thread is its claim, and deleting a
message is the only compare-and-set dorch relies on besides starting a thread.

Why not reactions: every bot's ✅ succeeds and the reaction list is sorted by user id, so
"first reactor wins" cannot be decided (``tests/bus/discord/test_reaction_protocol.py`` shows
the double claims). What is atomic on Discord:

- **Claim** = *Start Thread from Message*: a message has at most one thread; the second try
  answers 400 / 160004 and loses quietly. The winner posts a claim receipt in the thread (its
  fencing token, renewed by editing it: the heartbeat). The thread shows the claim to people,
  and, once archived, how the task ended (🏁 or ❌ in front of its name).
- **Requeue** = deleting the receipt of an expired lease: the first DELETE answers 204, every
  later one 404 / 10008. The winner re-posts the task as attempt k+1 through the outbox, notes
  it in the old thread, marks the old message ♻️ and archives the thread (☠️ after
  ``max_attempts``). A thread in which nothing was ever posted (its claimer died before the
  receipt) is requeued by deleting the task message itself, the same compare-and-set.
- **Trust** (``trust.py``): only a thread a fleet bot started is a claim, only its claimer's
  receipt and result count. A thread anyone else starts on a task (a squat) is no claim: the
  first worker to delete the task message (the compare-and-set) re-posts it, same attempt;
  the ``SQUAT_LIMIT``-th squat in a row ends it ❌ blocked, named in its thread and #results.
- **Fencing**: a holder whose receipt is gone (or whose task message is gone) stops its agent
  and never posts its result as the answer; the result is posted only after an edit of the
  receipt succeeded, which also extends the lease over the posting.

This class reads like the protocol; each job is a part it composes (none knows this class):
``gate`` (whom to obey, what a message is), ``intake`` (messages and attachments into tasks),
``poller`` (one GET per poll, the host's cursor), ``claiming``, ``delivery`` (the outbox:
writes that must not be lost), ``reaper``, ``reader`` (a task's state, following re-posts),
``overview`` (``dorch status``), ``guild`` (the server, and Discord's errors as the bus's), and
``host_state`` (what the host's processes share).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from dorch import paths
from dorch.bus import BusConfigError, BusError
from dorch.bus.discord import connect, formats
from dorch.bus.discord.board import Board
from dorch.bus.discord.claiming import Claimer
from dorch.bus.discord.connect import Settings
from dorch.bus.discord.delivery import Courier
from dorch.bus.discord.gate import PENDING, Gate, archived, msg_id
from dorch.bus.discord.guild import ARCHIVED_THREAD, Guild
from dorch.bus.discord.host_state import HostState
from dorch.bus.discord.intake import TASK_FILE_CAP, Intake
from dorch.bus.discord.outbox import Outbox
from dorch.bus.discord.overview import Overview
from dorch.bus.discord.poller import PAGE, Poller, snowflake_at
from dorch.bus.discord.reader import Reader
from dorch.bus.discord.reaper import Reaper
from dorch.discord import errors
from dorch.discord.client import DiscordClient
from dorch.model import (
    Claim,
    Delivery,
    Lease,
    Result,
    State,
    Status,
    Task,
    TaskError,
    TaskSpec,
    TaskView,
    WorkerView,
    validate,
)
from dorch.shared_state import SharedState

if TYPE_CHECKING:
    from dorch.config import Config

log = logging.getLogger("dorch.bus.discord")

BULK_TOO_OLD = 50034  # bulk delete refused: a message is older than 14 days
PAGE_REUSE = 2.0  # s a reap's page is fresh enough for the claim that follows it


class DiscordBus:
    """The Bus over a Discord server's #task-queue, #results and #worker-pool channels."""

    wait_interval = 2.0  # s between looks of `dorch submit --wait` (two GETs each)

    def __init__(self, config: Config, client: DiscordClient | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        """CLOCK: the wall clock of every lease, age and grace decision (tests inject one)."""
        self.config = config
        self.settings = s = Settings.from_config(config)
        self.clock = clock
        if client is None:
            client = connect.open_client(config)
        self.client = client
        self.state = HostState(SharedState(connect.state_dir() / f"bus-{s.task_channel}.json"),
                               client.token_id)
        self.outbox = Outbox(paths.private_dir() / "outbox.sqlite3", clock)
        self.board = Board(client, s.pool_channel, s.guild, s.task_channel)
        self.guild = Guild(client, s, self.state, clock)
        self.gate = Gate(self.guild, s, self.state, clock)
        self.intake = Intake(self.gate)
        self.poller = Poller(client, self.gate, s, self.state, clock)
        self.reader = Reader(self.guild, self.gate, self.intake, s)
        self.courier = Courier(self.outbox, self.guild, self.gate, self.reader, s,
                               client.token_id, clock)
        self.claimer = Claimer(self.guild, self.gate, self.intake, self.poller, self.courier, s,
                               self.state, clock)
        self.reaper = Reaper(self.guild, self.gate, self.intake, self.courier, s, self.state,
                             clock)
        self.overview = Overview(self.guild, self.gate, self.intake, s, clock)
        self._reported = False  # this process's task result was accepted (not fenced)

    async def _admitted(self) -> None:
        """What a worker checks before it reaps or claims: this bot is in the fleet, and the
        hourly preflight (``dorch doctor``'s checks) passed. Cheap after the first call."""
        from dorch.bus.discord.doctor import preflight  # imported when used: start-up cost

        await self.gate.check_in_fleet()
        await preflight(self.config, self.client, self.state, self.clock())

    # -- the Bus contract ----------------------------------------------------------------------

    async def submit(self, spec: TaskSpec, submitter: str = "") -> str:
        """Post SPEC to #task-queue; its message id is the task id (``outbox-N`` while Discord
        cannot be reached: the host's outbox delivers it later)."""
        spec = validate(spec)
        size = len(spec.to_text().encode())
        if size > TASK_FILE_CAP:
            raise TaskError(f"the task holds {size:,} bytes; the Discord bus carries at most "
                            f"{TASK_FILE_CAP:,} bytes per task. Put the material where the "
                            "agent can read it and say where")
        with self.guild.errors("submitting the task"):
            await self.gate.check_submitter()
            await self.courier.drain()
            header = f"submitted by {formats.clean_name(submitter)}" if submitter else ""
            post = formats.task_post(spec.to_text(), header)
            files = [[f.filename, f.data.decode("utf-8")] for f in post.files]
            item = self.outbox.put("submit", {"content": post.content, "files": files})
            response = await self.courier.deliver(item)
        if response is None:
            return f"outbox-{item.id}"
        return str(response["id"])

    async def claim(self, worker: str, lease_seconds: float) -> Claim | None:
        """Claim a waiting task: from the page this round's ``reap`` just polled, if any,
        else from a new poll."""
        with self.guild.errors("looking for a task"):
            await self._admitted()
            await self.courier.drain()
            entries = self.poller.take_recent(PAGE_REUSE)
            if entries is None:  # an empty page is a page: only a missing or stale one polls
                entries = await self.poller.poll()
            claim = await self.claimer.claim(entries, worker, lease_seconds)
            if claim is not None:
                return claim
        self.board.idle()
        return None

    async def heartbeat(self, claim: Claim, lease_seconds: float) -> Lease:
        tid = claim.task.id
        with self.guild.errors(f"renewing the lease of task {tid}"):
            text = formats.receipt_text(claim.worker, self.settings.host, claim.task.attempt,
                                        self.settings.max_attempts, self.clock() + lease_seconds)
            try:
                await self.client.edit_message(tid, claim.token, text)
                msg = await self.client.get_message(self.settings.task_channel, tid)
            except errors.NotFound as exc:
                if exc.code in (errors.UNKNOWN_CHANNEL, errors.UNKNOWN_MESSAGE):
                    return Lease.LOST
                raise
            except errors.BadRequest as exc:
                if exc.code == ARCHIVED_THREAD:
                    return Lease.LOST
                raise
            stopped = await self.gate.stopped(msg)
            # then the results of this host's workers that exited meanwhile: after the renewal,
            # so that a slow delivery never holds the lease up
            await self.courier.drain(limit=5)
            return Lease.CANCELLED if stopped else Lease.HELD

    async def finish(self, claim: Claim, result: Result) -> bool:
        if not result.state.finished:
            raise ValueError(f"finish needs a final state, not {result.state.value!r}")
        size = len(result.output.encode())
        if size > TASK_FILE_CAP:  # never a cut answer: a clear failure instead
            result = Result(State.FAILED, "", f"the answer holds {size:,} bytes; the Discord bus "
                            f"carries at most {TASK_FILE_CAP:,} bytes, so it was not posted. The "
                            f"whole answer is in the worker's workspace on {self.settings.host}",
                            result.stderr_tail, result.duration, result.usage)
        payload = {
            "task": claim.task.id, "receipt": claim.token, "worker": claim.worker,
            "attempt": claim.task.attempt, "name": self.claimer.names.get(claim.task.id, ""),
            "result": {"state": result.state.value, "output": result.output,
                       "error": result.error, "stderr_tail": result.stderr_tail,
                       "duration": result.duration, "usage": result.usage},
        }
        with self.guild.errors(f"reporting task {claim.task.id}"):
            # only this bot may edit its receipt: another token's worker on this host must not
            response = await self.courier.put("result", payload, owner=self.client.token_id)
        if response is None:
            log.warning("task %s: the result waits in the outbox (%s) until Discord answers",
                        claim.task.id, self.outbox.path)
            self._reported = True
            return True
        self._reported = not response.get("fenced")
        return self._reported

    async def release(self, claim: Claim) -> None:
        """Hand the task back (worker stopping): same attempt, re-posted at the queue's end."""
        tid = claim.task.id
        with self.guild.errors(f"handing back task {tid}"):
            try:
                await self.client.delete_message(tid, claim.token)
            except errors.NotFound:
                return  # a reaper took it already
            try:
                msg = await self.client.get_message(self.settings.task_channel, tid)
            except errors.NotFound:
                return
            if await self.gate.stopped(msg):
                await self.courier.put("requeue", {"old": tid, "cancelled": True,
                                                   "by": "a 🛑 reaction"})
                return
            await self.courier.repost(msg, claim.task.spec.to_text(), claim.task.attempt,
                                      f"handed back by {claim.worker} (worker stopping)",
                                      verb="handed back", handed_back=True)

    async def reap(self, max_attempts: int | None = None) -> int:
        """Poll (the claim that follows uses this page), take squatted tasks back and requeue
        tasks whose lease expired."""
        limit = self.settings.max_attempts if max_attempts is None else max_attempts
        with self.guild.errors("checking leases"):
            await self._admitted()
            await self.courier.drain()
            if await self.reaper.unsquat_page(await self.poller.poll()):
                self.poller.forget()  # the page changed: the claim polls again
            return await self.reaper.reap_due(limit)

    async def cancel(self, task_id: str) -> bool:
        with self.guild.errors(f"cancelling task {task_id}"):
            tid = self.courier.task_id(task_id)
            msg = await self.reader.latest(tid) if tid is not None else None
            if msg is None:
                return False
            thread = msg.get("thread")
            if thread and archived(thread):
                return False
            await self.client.add_reaction(self.settings.task_channel, msg["id"], formats.STOP)
            # a thread only a fleet bot starts is a claim; another bot's 🛑 alone is enough:
            # the first worker to pick the task cancels it
            if not thread and await self.gate.in_fleet():
                await self.claimer.cancel_queued(msg, by="`dorch cancel`")
            return True

    async def get(self, task_id: str) -> TaskView | None:
        with self.guild.errors(f"reading task {task_id}"):
            await self.courier.drain()
            tid = self.courier.task_id(task_id)
            if tid is not None:
                return await self.reader.get(tid, task_id)
            if task_id.startswith("outbox-") and self.courier.waiting(task_id):
                spec = TaskSpec("(waiting in this host's outbox for Discord)")
                return TaskView(Task(task_id, spec), State.QUEUED)
            return None

    async def status(self, recent: int = 10) -> Status:
        """The queue as Discord shows it (finished counts: the last 100 results), and what waits
        in this host's outbox. Discord unreachable: the outbox only, with ``error`` set."""
        try:
            with self.guild.errors("reading the queue"):
                await self.courier.drain()
                status = await self.overview.status(await self.poller.poll(), max(recent, 0))
        except BusConfigError:
            raise
        except BusError as exc:
            return Status({s.value: 0 for s in State}, [], [], [], [],
                          deliveries=self.courier.deliveries(), error=str(exc))
        return replace(status, deliveries=self.courier.deliveries())

    async def clear(self) -> int:
        """Delete every task nobody claimed yet: bulk deletes for messages younger than 14
        days, single deletes for older ones. Returns how many were deleted."""
        channel = self.settings.task_channel
        with self.guild.errors("clearing the queue"):
            cursor = self.state.cursor()
            waiting: list[int] = []
            for _ in range(1000):
                batch = await self.client.list_messages(channel, after=cursor, limit=PAGE)
                if not batch:
                    break
                batch.sort(key=msg_id)
                for msg in batch:
                    entry = await self.gate.classify(msg)
                    if entry.kind in PENDING:  # squatted ones wait to be re-posted
                        waiting.append(entry.id)
                cursor = msg_id(batch[-1])
                if len(batch) < PAGE:
                    break
            young_after = snowflake_at(self.clock() - 14 * 86400 + 3600)
            young = [m for m in waiting if m > young_after]
            old = [m for m in waiting if m <= young_after]
            for start in range(0, len(young), 100):
                chunk = young[start:start + 100]
                if len(chunk) == 1:
                    old.append(chunk[0])
                    continue
                try:
                    await self.client.bulk_delete(channel, chunk)
                except errors.BadRequest as exc:
                    if exc.code != BULK_TOO_OLD:  # our clock and Discord's disagree: one by one
                        raise
                    old.extend(chunk)
            for mid in old:
                with contextlib.suppress(errors.NotFound):
                    await self.client.delete_message(channel, mid)
            return len(waiting)

    async def report_worker(self, view: WorkerView) -> None:
        if view.tasks_done and not self._reported:  # fenced, lost or handed back: not done
            view = replace(view, tasks_done=0)
        self.board.report(view, paths.worker_state_dir(view.worker))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.board.flush()
        with contextlib.suppress(Exception):
            await self.client.aclose()
        await self.intake.close()
        self.outbox.close()
        self.state.close()

    def deliveries(self) -> list[Delivery]:
        """What waits in this host's outbox (and what it gave up on), for ``dorch status``."""
        return self.courier.deliveries()
