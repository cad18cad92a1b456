"""The #worker-pool board: one message per worker, edited in place, remembered in its state dir.

A worker process reports READY, RUNNING, RESTARTING and STOPPED every task, and the channel's
edit bucket (5 per 5 s per bot) is shared by every worker on the bot. So edits run in the
background and the latest state wins; READY is only shown once a worker has found nothing to
do, and RESTARTING, which lasts a moment, is merged into the next process's first edit (its
RUNNING, or READY once it finds nothing to do): the count of tasks done it carries is kept in
the worker's state dir and shown then. One edit per task, besides that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from dorch.bus.discord import formats
from dorch.discord import errors
from dorch.discord.client import DiscordClient
from dorch.discord.types import Message
from dorch.model import WorkerState, WorkerView

log = logging.getLogger(__name__)

FILE = "board.json"
FLUSH_WAIT = {"STOPPED": 10.0}  # seconds close() waits for the last edit; others: FLUSH_DEFAULT
FLUSH_DEFAULT = 1.0


class Board:
    """One worker process's view of its board message."""

    def __init__(self, client: DiscordClient, channel: int, guild: int, task_channel: int) -> None:
        self.client = client
        self.channel = channel
        self.guild = guild
        self.task_channel = task_channel
        self._path: Path | None = None
        self._data: dict[str, Any] = {}
        self._latest: str | None = None
        self._latest_state = ""
        self._deferred: str | None = None
        self._task: asyncio.Task[None] | None = None

    def _load(self, path: Path) -> None:
        if self._path == path:
            return
        self._path = path
        try:
            loaded = json.loads(path.read_text())
            self._data = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self._data = {}
        if self._data.get("channel") != self.channel:  # another server: a new message
            self._data = {"channel": self.channel, "tasks_done": int(self._data.get("tasks_done", 0))}

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data))
        os.replace(tmp, self._path)

    def report(self, view: WorkerView, state_dir: Path) -> None:
        """Record VIEW (``tasks_done`` is added to the total) and schedule the edit."""
        self._load(state_dir / FILE)
        done = int(self._data.get("tasks_done", 0)) + max(view.tasks_done, 0)
        self._data["tasks_done"] = done
        self._save()
        task_link = (formats.link(self.guild, self.task_channel, view.task_id)
                     if view.task_id else "")
        text = formats.board_text(view.worker, view.state, view.host, view.version, done,
                                  view.updated_at, task_link, view.pid)
        if view.state in ("READY", "RESTARTING"):  # RESTARTING: the next process shows it
            self._deferred = text if view.state == "READY" else None
            return
        self._deferred = None
        self._send(text, view.state)

    def idle(self) -> None:
        """The worker found nothing to do: now show it READY."""
        if self._deferred is not None:
            text, self._deferred = self._deferred, None
            self._send(text, "READY")

    def _send(self, text: str, state: str) -> None:
        self._latest, self._latest_state = text, state
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._latest is not None:
            text, self._latest = self._latest, None
            try:
                await self._edit(text)
            except errors.DiscordError as exc:
                log.warning("could not update the worker board: %s", exc)

    async def _edit(self, text: str) -> None:
        message_id = self._data.get("message_id")
        if message_id:
            try:
                await self.client.edit_message(self.channel, message_id, text)
                return
            except errors.NotFound:
                log.info("board message %s is gone: posting a new one", message_id)
        msg = await self.client.create_message(self.channel, text)
        self._data["message_id"] = msg["id"]
        self._save()

    async def flush(self) -> None:
        """Let the last edit land, for at most a few seconds (STOPPED is worth waiting for)."""
        task = self._task
        if task is None or task.done():
            return
        wait = FLUSH_WAIT.get(self._latest_state, FLUSH_DEFAULT)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, wait)


def parse_board(messages: list[Message]) -> list[WorkerView]:
    """The workers shown on the board (messages written by bots; the caller keeps only the
    fleet's), newest state per worker."""
    seen: dict[str, WorkerView] = {}
    for msg in sorted(messages, key=lambda m: int(m["id"])):
        if not msg.get("author", {}).get("bot"):
            continue
        found = formats.BOARD.match(msg.get("content", ""))
        if not found:
            continue
        task_id = ""
        if found["link"]:
            parsed = formats.parse_link(found["link"])
            task_id = parsed[2] if parsed else ""
        seen[found["worker"]] = WorkerView(
            worker=found["worker"], state=WorkerState(found["state"]), task_id=task_id,
            host=found["host"].strip(), pid=int(found["pid"] or 0), version=found["version"],
            tasks_done=int(found["done"]), updated_at=float(found["at"]),
        )
    return sorted(seen.values(), key=lambda w: w.worker)
