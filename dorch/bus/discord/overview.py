"""The queue as ``dorch status`` shows it: the poll's page (waiting and running tasks), the last
100 #results lines (finished counts, recent and dead tasks) and the #worker-pool board.
"""

from __future__ import annotations

from collections.abc import Callable

from dorch.bus.discord import formats, trust
from dorch.bus.discord.board import parse_board
from dorch.bus.discord.connect import Settings
from dorch.bus.discord.gate import PENDING, RUNNING, Entry, Gate, archived, msg_id, reaction, thread_created
from dorch.bus.discord.guild import Guild
from dorch.bus.discord.intake import Intake
from dorch.bus.discord.poller import PAGE, REAP_GRACE
from dorch.bus.discord.reader import GAVE_UP
from dorch.discord import errors
from dorch.discord.types import Message
from dorch.model import Result, State, Status, Task, TaskSpec, TaskView, WorkerState

MAX_ROWS = 20  # board rows whose task `dorch status` looks up when it is not in the poll's page
Summary = tuple[State, str, str, Result, float, str]


def summaries(messages: list[Message]) -> list[Summary]:
    """(state, task id, worker, result, finished at, link) of #results lines, newest first."""
    out = []
    for m in sorted(messages, key=msg_id, reverse=True):
        found = formats.SUMMARY.match(m.get("content") or "")
        if not found:
            continue
        label = found["state"]
        state = State.FAILED if label == "rejected" else State(label)
        parsed = formats.parse_link(found["link"])
        line = found["line"] or ""
        result = Result(state, output=line if state is State.SUCCEEDED else "",
                        error="" if state is State.SUCCEEDED else line or label,
                        duration=float(found["duration"] or 0))
        out.append((state, parsed[2] if parsed else "?", found["worker"] or "", result,
                    trust.epoch(m.get("timestamp")), found["link"]))
    return out


class Overview:
    """Builds ``dorch status``'s view from a poll's page, #results and the board."""

    def __init__(self, guild: Guild, gate: Gate, intake: Intake, settings: Settings,
                 clock: Callable[[], float]) -> None:
        self.guild = guild
        self.client = guild.client
        self.gate = gate
        self.intake = intake
        self.settings = settings
        self.clock = clock

    async def status(self, entries: list[Entry], recent: int) -> Status:
        """The queue from ENTRIES (a page just polled); ``deliveries`` is the caller's."""
        s = self.settings
        fleet = await self.gate.fleet()
        lines = await self.client.list_messages(s.results_channel, limit=100)
        board = await self.client.list_messages(s.pool_channel, limit=100)
        workers = parse_board(fleet.markers(board))
        done = summaries(fleet.markers(lines))
        shown = ([d for d in done if d[0] is not State.DEAD][:recent]
                 + [d for d in done if d[0] is State.DEAD][:recent])
        page = {str(e.id): e for e in entries}
        rows = {w.task_id: w for w in workers if w.state == "RUNNING" and w.task_id}
        elsewhere = [t for t in rows if not (t in page and page[t].kind == RUNNING)]
        msgs = await self._task_messages(
            [d[1] for d in shown] + elsewhere[:MAX_ROWS], {t: e.msg for t, e in page.items()},
            min((e.id for e in entries), default=None))
        counts = {st.value: 0 for st in State}
        running: list[TaskView] = []
        link = self.guild.link
        for e in entries:
            if e.kind in PENDING:
                counts["queued"] += 1
            elif e.kind == RUNNING:
                holder = rows.get(str(e.id))
                running.append(TaskView(await self.intake.shown(e.msg), State.RUNNING,
                                        holder.worker if holder else "",
                                        thread_created(e.msg["thread"]), url=link(e.id)))
        for task_id in elsewhere:
            # a board row RUNNING whose task is not running in this poll's page: running
            # still (an older task), or the row of a worker that died (lost once reaped)
            holder = rows[task_id]
            if task_id not in msgs:  # more rows than were looked up: as the board says
                running.append(TaskView(Task(task_id, TaskSpec("(see the thread)")),
                                        State.RUNNING, holder.worker, holder.updated_at,
                                        url=link(task_id)))
                continue
            msg = msgs[task_id]
            thread = (msg or {}).get("thread")
            if msg is not None and thread and not archived(thread) and fleet.owns(thread):
                running.append(TaskView(await self.intake.shown(msg), State.RUNNING,
                                        holder.worker, thread_created(thread), url=link(task_id)))
                continue
            reaped = msg is None or any(reaction(msg, mark) for mark in
                                        (formats.REQUEUED, formats.DEAD))
            if reaped or self.clock() - holder.updated_at > s.lease + REAP_GRACE:
                holder.state = WorkerState.LOST
        counts["running"] = len(running)
        for state, *_ in done:
            counts[state.value] += 1
        finished: list[TaskView] = []
        dead: list[TaskView] = []
        for state, task_id, worker, result, finished_at, where in shown:
            found = msgs.get(task_id)
            started: float | None
            if found is not None:
                task = await self.intake.shown(found)
                thread = found.get("thread")
                started = thread_created(thread) if thread else None
            else:
                gave_up = GAVE_UP.search(result.error)
                task = Task(task_id, TaskSpec("(its message was deleted)"),
                            int(gave_up.group(1)) if gave_up else 1)
                started = None
            view = TaskView(task, state, worker, started, finished_at, result, where)
            (dead if state is State.DEAD else finished).append(view)
        return Status(counts=counts, running=sorted(running, key=lambda v: v.started_at or 0),
                      recent=finished, dead=dead, workers=workers)

    async def _task_messages(self, ids: list[str], known: dict[str, Message],
                             page_start: int | None) -> dict[str, Message | None]:
        """The task messages of IDS (None: deleted): from KNOWN (the poll's page, which starts
        at PAGE_START), then one page of #task-queue before the newest of them, then one by
        one."""
        found: dict[str, Message | None] = {}
        wanted = []
        for tid in dict.fromkeys(ids):
            if tid in known:
                found[tid] = known[tid]
            elif page_start is not None and tid.isdigit() and int(tid) > page_start:
                found[tid] = None  # within the page, yet not in it: deleted
            elif tid.isdigit():
                wanted.append(tid)
        channel = self.settings.task_channel
        if wanted:
            before = max(int(t) for t in wanted) + 1
            for m in await self.client.list_messages(channel, before=before, limit=PAGE):
                if m["id"] in wanted:
                    found[m["id"]] = m
        for tid in wanted:
            if tid in found:
                continue
            try:
                found[tid] = await self.client.get_message(channel, tid)
            except errors.NotFound as exc:
                if exc.code != errors.UNKNOWN_MESSAGE:
                    raise
                found[tid] = None
        return found
