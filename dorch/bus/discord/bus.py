"""The Discord bus: #task-queue is the queue, a task's thread is its claim, and deleting a
message is the only compare-and-set dorch relies on besides starting a thread.

Why not reactions: every bot's ✅ succeeds and the reaction list is sorted by user id, so
"first reactor wins" cannot be decided (``tests/bus/discord/test_reaction_protocol.py`` shows
the double claims). What is atomic on Discord:

- **Claim** = *Start Thread from Message*: a message has at most one thread; the second try
  answers 400 / 160004 and loses quietly. The winner posts a claim receipt in the thread (its
  fencing token, renewed by editing it: the heartbeat), then adds ✅ for people.
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

Polling costs one request while at most 100 tasks wait: ``GET messages?after=CURSOR&limit=100``
returns the oldest messages after a cursor kept just before the oldest waiting task, shared by
the host's processes (``$DATA/discord/bus-<channel>.json``, with the tasks seen running there,
which the reaper checks once their lease could have expired). A worker picks at random among
the oldest few waiting tasks, which spreads contention and keeps roughly oldest-first order.

Writes that must not be lost (submissions, results, requeues, hand-backs) go through the
outbox (``dorch.bus.discord.outbox``) with stable nonces: an outage delays them, a retry never duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dorch import paths
from dorch.bus import BusConfigError, BusError
from dorch.bus.discord import formats, trust
from dorch.bus.discord.board import Board, parse_board
from dorch.bus.discord.outbox import Item, Outbox, PermanentError
from dorch.discord import errors
from dorch.discord.client import START_THREAD, DiscordClient
from dorch.discord.content import File
from dorch.model import (
    Claim,
    Delivery,
    DeliveryKind,
    Lease,
    Result,
    State,
    Status,
    Task,
    TaskError,
    TaskSpec,
    TaskView,
    WorkerState,
    WorkerView,
    parse_task,
    validate,
)
from dorch.shared_state import SharedState

if TYPE_CHECKING:
    import aiohttp

    from dorch.config import Config

log = logging.getLogger("dorch.bus.discord")

PAGE = 100  # messages per poll (Discord's maximum)
# A worker picks at random among this many of the oldest waiting tasks, the older the likelier
# (weights 5:4:3:2:1), so workers polling together rarely collide and no task lingers.
SPREAD = 5
MAX_CLAIM_TRIES = 6  # threads tried per poll (lost races and deleted messages included)
MAX_THREAD_WAIT = 10.0  # s: a longer wait for the thread bucket gives the turn up until later
TURN_PATIENCE = 5.0  # s a worker waits for its host's claiming turn before polling again later
TURN_TTL = 30.0  # s: a turn whose holder died is free again after this
TURN_POLL = 0.05  # s between looks at the turn
PAGE_FRESH = 0.5  # s a polled page is fresh enough to claim from
MAX_PAGES = 20  # pages read in one poll while catching up over finished tasks
CURSOR_MARGIN = 10.0  # s: ids are k-sorted, so the cursor stays this far behind the present
REAP_GRACE = 2.0  # s after a lease's end before a reaper takes it (clock skew, slow edits)
REAP_BATCH = 10  # leases checked per poll at most
PREFLIGHT_TTL = 3600.0  # s a passed permission check is trusted (per host and token)
ATTACHMENT_CAP = 100_000  # bytes of text attachments a human's task may carry
TASK_FILE_CAP = 8 << 20  # bytes of a task.md or result.md dorch writes (Discord takes 10 MiB)
ROLE_TTL = 60.0  # s a member's roles are cached (a removed role stops tasks within a minute)
SQUAT_LIMIT = 3  # threads started on a task by others before it ends ❌ blocked
SQUATS_PER_ROUND = 5  # squatted tasks re-posted per reap at most
# s a bot's squatted post is left alone: its poster's client may still be retrying it (backoff
# 1+2+4+8 s), and a retry after the take-back deleted it would post a second copy
SQUAT_SETTLE = 20.0
KEPT_IGNORED = 1000  # message ids remembered as "already logged as ignored"
MAX_ROWS = 20  # board rows whose task `dorch status` looks up when it is not in the poll's page
DISCORD_EPOCH_MS = 1420070400000
ARCHIVED_THREAD = 50083
BULK_TOO_OLD = 50034  # bulk delete refused: a message is older than 14 days
_TASK_TYPES = (0, 19)  # default and reply messages; everything else is a system message
_ATTACHMENT_SECTION = re.compile(r"\n\n--- [^\n]+ ---\n")
_GAVE_UP = re.compile(r"gave up after attempt (\d+)")
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml",
               "application/yaml", "application/toml", "application/javascript")
_TEXT_EXTENSIONS = (".txt", ".md", ".markdown", ".rst", ".py", ".js", ".ts", ".json", ".yaml",
                    ".yml", ".toml", ".ini", ".cfg", ".csv", ".tsv", ".log", ".sh", ".c", ".h",
                    ".cc", ".cpp", ".hpp", ".rs", ".go", ".java", ".kt", ".rb", ".php", ".sql",
                    ".html", ".css", ".xml", ".diff", ".patch")


# Errors that mean Discord could not be reached (from here): leases could not be renewed either.
_UNREACHABLE = (errors.DiscordConnectionError, errors.ServerError, errors.RateLimited,
                errors.CloudflareBan, errors.TooManyInvalidRequests)
# Bot-written markers that are never a task, even if one lands in #task-queue.
# Entries that keep the cursor before them: tasks to claim, and squatted tasks to re-post.
_PENDING = ("queued", "stop", "squatted")
_NOT_TASKS = (formats.RECEIPT, formats.RESULT, formats.SUMMARY, formats.BOARD, formats.REJECTED,
              formats.REQUEUE_NOTE, formats.DEAD_NOTE, formats.CANCELLED_QUEUED)


def _msg_id(msg: dict[str, Any]) -> int:
    return int(msg["id"])


def _snowflake_at(when: float) -> int:
    return max(0, int(when * 1000) - DISCORD_EPOCH_MS) << 22


def _reaction(msg: dict[str, Any], emoji: str) -> dict[str, Any] | None:
    for reaction in msg.get("reactions") or []:
        name = (reaction.get("emoji") or {}).get("name") or ""
        if formats.same_emoji(name, emoji):
            return dict(reaction)
    return None


def _thread_created(thread: dict[str, Any]) -> float:
    meta = thread.get("thread_metadata") or {}
    return trust.epoch(meta.get("create_timestamp")) or trust.epoch(meta.get("archive_timestamp"))


def _archived(thread: dict[str, Any]) -> bool:
    return bool((thread.get("thread_metadata") or {}).get("archived"))


def _requeued_to(notes: list[dict[str, Any]]) -> str | None:
    """The next attempt's id a thread's (fleet) notes point to: its ♻️ note."""
    for m in notes:
        found = formats.REQUEUE_NOTE.match(m.get("content") or "")
        if found and (parsed := formats.parse_link(found["link"])):
            return parsed[2]
    return None


def _thread_started(notes: list[dict[str, Any]]) -> float | None:
    return trust.epoch(notes[0].get("timestamp")) if notes else None


def _ended(task: Task, notes: list[dict[str, Any]], worker: str, started: float | None,
           url: str) -> TaskView | None:
    """How a task ended, from a note in its thread (☠️ dead, ❌ rejected, 🛑 cancelled)."""
    for m in notes:
        content = m.get("content") or ""
        at = trust.epoch(m.get("timestamp"))
        if found := formats.DEAD_NOTE.match(content):
            gave_up = _GAVE_UP.search(found["error"])
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


def _summaries(messages: list[dict[str, Any]]) -> list[tuple[State, str, str, Result, float, str]]:
    """(state, task id, worker, result, finished at, link) of #results lines, newest first."""
    out = []
    for m in sorted(messages, key=_msg_id, reverse=True):
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


def _is_text(attachment: dict[str, Any]) -> bool:
    kind = str(attachment.get("content_type") or "").lower()
    name = str(attachment.get("filename") or "").lower()
    return kind.startswith(_TEXT_TYPES) or name.endswith(_TEXT_EXTENSIONS)


def _sub_nonce(item: Item, tag: str) -> str:
    """A second stable nonce for another post of the same outbox item."""
    return f"{item.nonce[:22]}-{tag}"


def _token(config: Config) -> str:
    """The bot token: systemd credential, keyring, then environment (dorch.secrets)."""
    from dorch.secrets import lookup_secret

    return lookup_secret(config.discord["token"])


@dataclass
class _Entry:
    """A message of #task-queue as the poll classified it."""

    msg: dict[str, Any]
    kind: str  # queued | stop (queued with a 🛑 to check) | running | squatted | done

    @property
    def id(self) -> int:
        return _msg_id(self.msg)


class _Rejected(TaskError):
    """A task that cannot run as written; the text tells its author what to fix."""


class DiscordBus:
    """The Bus over a Discord server's #task-queue, #results and #worker-pool channels."""

    wait_interval = 2.0  # s between looks of `dorch submit --wait` (two GETs each)

    def __init__(self, config: Config, client: DiscordClient | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        """CLOCK: the wall clock of every lease, age and grace decision (tests inject one)."""
        d = config.discord
        self.guild = int(d["guild_id"])
        self.task_channel = int(d["task_channel"])
        self.results_channel = int(d["results_channel"])
        self.pool_channel = int(d["pool_channel"])
        self.allowed_users = {int(u) for u in d["allowed_submitters"]}
        self.allowed_roles = {int(r) for r in d["allowed_roles"]}
        self.config = config
        self.max_attempts = int(config.worker["max_attempts"])
        self.lease = float(config.worker["lease_seconds"])
        self.host = socket.gethostname()
        self.clock = clock
        state_dir = paths.private_dir() / "discord"
        if client is None:
            client = DiscordClient.from_config(config, _token(config), state_dir=state_dir)
        self.client = client
        self._token_id = client.token_id
        self.state = SharedState(state_dir / f"bus-{self.task_channel}.json")
        self.outbox = Outbox(paths.private_dir() / "outbox.sqlite3", clock)
        self.board = Board(client, self.pool_channel, self.guild, self.task_channel)
        self._me: int | None = None
        self._fleet_cache: trust.Fleet | None = None
        self._fresh: tuple[float, list[_Entry]] | None = None
        self._polled_at = 0.0
        self._reported = False  # this process's task result was accepted (not fenced)
        self._cdn: aiohttp.ClientSession | None = None
        self._failures: dict[int, BaseException] = {}
        self._labels = {self.task_channel: "#task-queue ([discord] task_channel)",
                        self.results_channel: "#results ([discord] results_channel)",
                        self.pool_channel: "#worker-pool ([discord] pool_channel)"}
        self._handlers: dict[str, Callable[[Item], Awaitable[Any]]] = {
            "submit": self._deliver_submit, "result": self._deliver_result,
            "requeue": self._deliver_requeue,
        }

    # -- errors ------------------------------------------------------------------------------

    def _where(self, exc: errors.DiscordHTTPError) -> str:
        for channel, label in self._labels.items():
            if f"/channels/{channel}" in exc.path:
                return label
        return exc.path or "Discord"

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Discord's errors as the bus's: configuration (exit 78) or temporary (exit 75)."""
        try:
            yield
        except errors.Unauthorized:
            raise BusConfigError(
                f"{doing}: Discord rejected the bot token (HTTP 401): it was revoked, reset or "
                "mistyped. Store the current token (`dorch token set NAME`, or the systemd "
                "credential) and start again"
            ) from None
        except errors.Forbidden as exc:
            raise BusConfigError(
                f"{doing}: the bot may not do this in {self._where(exc)} (HTTP 403, code "
                f"{exc.code}: {exc.text}). Give it View Channel, Read Message History, Send "
                "Messages, Add Reactions, Create Public Threads, Send Messages in Threads, "
                "Manage Messages and Manage Threads there; `dorch doctor` shows what is missing"
            ) from None
        except errors.UnknownRoute as exc:
            raise BusConfigError(
                f"{doing}: {exc}; it is now {self.client.api_base}") from None
        except errors.NotFound as exc:
            if exc.code in (errors.UNKNOWN_CHANNEL, errors.UNKNOWN_GUILD):
                raise BusConfigError(
                    f"{doing}: {self._where(exc)} does not exist or the bot is not in the server "
                    f"(code {exc.code}); check the ids in [discord] and the bot's invitation"
                ) from None
            raise BusError(f"{doing}: {exc}") from None
        except errors.DiscordError as exc:
            if isinstance(exc, _UNREACHABLE):
                with self.state.locked() as doc:
                    doc["unreachable_at"] = self.clock()
            raise BusError(f"{doing}: {exc}") from None

    # -- small helpers -----------------------------------------------------------------------

    def _link(self, message_id: int | str, channel: int | str | None = None) -> str:
        return formats.link(self.guild, channel or self.task_channel, message_id)

    async def _me_id(self) -> int:
        """The bot's user id, cached on the host (a worker process must not ask every task)."""
        if self._me is None:
            with self.state.locked() as doc:
                cached = (doc.get("me") or {}).get(self._token_id)
            if cached is None:
                cached = int((await self.client.me())["id"])
                with self.state.locked() as doc:
                    doc.setdefault("me", {})[self._token_id] = cached
            self._me = int(cached)
        return self._me

    async def _fleet(self) -> trust.Fleet:
        """The bots whose threads, receipts and notes dorch believes ([discord] fleet_bots)."""
        if self._fleet_cache is None:
            self._fleet_cache = trust.Fleet.from_config(self.config.discord, await self._me_id())
        return self._fleet_cache

    async def _trusted(self, user: dict[str, Any]) -> bool:
        """Whether dorch obeys USER: allowed_submitters, an allowed role, or a fleet bot."""
        uid = int(user["id"])
        if uid in self.allowed_users or (user.get("bot") and uid in await self._fleet()):
            return True
        return await self._allowed_role(uid)

    async def _allowed_role(self, uid: int) -> bool:
        """Whether UID holds one of allowed_roles (roles cached ROLE_TTL on the host)."""
        if not self.allowed_roles:
            return False
        now = self.clock()
        with self.state.locked() as doc:
            cached = (doc.get("roles") or {}).get(str(uid))
        if not (isinstance(cached, list) and len(cached) == 2 and now - cached[1] < ROLE_TTL):
            try:
                member = await self.client.get_member(self.guild, uid)
                roles = [int(r) for r in member.get("roles") or []]
            except errors.NotFound:
                roles = []  # left the server
            cached = [roles, now]
            with self.state.locked() as doc:
                table = doc.setdefault("roles", {})
                table[str(uid)] = cached
                if len(table) > 2000:
                    for key in sorted(table, key=lambda k: table[k][1])[:1000]:
                        del table[key]
        return bool(self.allowed_roles.intersection(cached[0]))

    def _log_ignored(self, msg: dict[str, Any], why: str) -> None:
        """Log an ignored message once per message id (per host)."""
        mid = msg["id"]
        with self.state.locked() as doc:
            seen: list[str] = doc.setdefault("ignored", [])
            if mid in seen:
                return
            seen.append(mid)
            del seen[:-KEPT_IGNORED]
        author = msg.get("author") or {}
        log.warning("ignoring message %s in #task-queue from %s (id %s): %s", mid,
                    author.get("username", "?"), author.get("id", "?"), why)

    async def _preflight(self) -> None:
        """Once an hour per host and token, the checks of ``dorch doctor``: a bot that cannot
        read #task-queue (or lacks the intent) would otherwise see an empty queue forever."""
        now = self.clock()
        with self.state.locked() as doc:
            passed = (doc.get("preflight") or {}).get(self._token_id, 0)
        if now - passed < PREFLIGHT_TTL:
            return
        from dorch.bus.discord.doctor import run_checks

        failed = [c for c in await run_checks(self.config, self.client, advice=False)
                  if not c.ok]
        if failed:
            if any(c.name == "token" for c in failed):
                raise errors.Unauthorized(401, 0, "the bot token was rejected")
            if any(c.name == "discord reachable" for c in failed):
                raise errors.DiscordConnectionError(failed[0].detail)
            raise BusConfigError("the bot cannot work in this server as configured: " + "; ".join(
                f"{c.name}: {c.detail} (fix: {c.fix})" for c in failed))
        with self.state.locked() as doc:
            doc.setdefault("preflight", {})[self._token_id] = now

    async def _stopped(self, msg: dict[str, Any], channel: int | None = None) -> bool:
        """A 🛑 on MSG from a user dorch obeys."""
        if _reaction(msg, formats.STOP) is None:
            return False
        users = await self.client.list_reactions(channel or self.task_channel, msg["id"],
                                                 formats.STOP)
        for user in users:
            if await self._trusted(user):
                return True
        return False

    async def _download(self, attachment: dict[str, Any], cap: int) -> str:
        """An attachment's text, read to its end and checked against its declared size: a
        short read is a temporary error (BusError), never a cut text. Over CAP: _Rejected."""
        import aiohttp

        if self._cdn is None:
            self._cdn = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        name = attachment.get("filename", "?")
        try:
            declared = int(attachment.get("size"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            declared = -1
        if declared > cap:
            raise _Rejected(f"the attachment {name} holds {declared:,} bytes; the Discord bus "
                            f"takes at most {cap:,} bytes there")
        chunks: list[bytes] = []
        got = 0
        try:
            async with self._cdn.get(attachment["url"]) as resp:
                if resp.status != 200:
                    raise BusError(f"downloading attachment {name}: HTTP {resp.status}")
                async for chunk in resp.content.iter_chunked(1 << 16):
                    chunks.append(chunk)
                    got += len(chunk)
                    if got > cap:
                        raise _Rejected(f"the attachment {name} is larger than {cap:,} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BusError(f"downloading attachment {name}: {type(exc).__name__} after "
                           f"{got:,} bytes") from None
        if declared >= 0 and got != declared:
            raise BusError(f"downloading attachment {name}: got {got:,} of its {declared:,} "
                           "bytes; try again")
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise _Rejected(f"the attachment {name} is not UTF-8 text") from None

    async def _source(self, msg: dict[str, Any]) -> tuple[str, int]:
        """(task text as it would be re-posted, attempt) of a task message. Raises _Rejected."""
        content = msg.get("content") or ""
        attachments = msg.get("attachments") or []
        if (msg.get("author") or {}).get("bot"):
            body, attempt = formats.split_header(content)
            if not (await self._fleet()).wrote(msg):
                attempt = 1  # only the fleet re-posts tasks: another bot's "attempt 3" is a lie
            task_file = next((a for a in attachments if a.get("filename") == formats.TASK_FILE),
                             None)
            if task_file is not None:
                body = await self._download(task_file, TASK_FILE_CAP)
            return body, attempt
        texts = [a for a in attachments if _is_text(a)]
        skipped = [a.get("filename", "?") for a in attachments if not _is_text(a)]
        if skipped:
            log.info("task %s: not text, not part of the prompt: %s", msg["id"], ", ".join(skipped))
        total = sum(int(a.get("size") or 0) for a in texts)
        if total > ATTACHMENT_CAP:
            raise _Rejected(
                f"its text attachments hold {total:,} bytes; dorch takes at most "
                f"{ATTACHMENT_CAP:,} bytes of attachments per task. Split the task, or put "
                "the material somewhere the agent can read it and say where"
            )
        if len(texts) == 1 and not content.strip():
            # Discord's app turns a long typed message into message.txt: it is the task itself.
            return await self._download(texts[0], ATTACHMENT_CAP), 1
        sections = [f"\n\n--- {a.get('filename', 'attachment')} ---\n"
                    + await self._download(a, ATTACHMENT_CAP) for a in texts]
        return content + "".join(sections), 1

    @staticmethod
    def _parse(source: str) -> TaskSpec:
        """The spec of a task text: tags are read before its first attachment section only,
        so code or notes in an attachment are never mistaken for tags. Raises TaskError."""
        found = _ATTACHMENT_SECTION.search(source)
        lead, rest = (source[:found.start()], source[found.start():]) if found else (source, "")
        spec = parse_task(lead) if lead.strip() or not rest else TaskSpec(rest.strip("\n"))
        if lead.strip() and rest:
            spec = TaskSpec(spec.prompt + rest, spec.model, spec.thinking)
        return validate(spec)

    def _view_spec(self, msg: dict[str, Any]) -> tuple[TaskSpec, int]:
        """A best-effort spec for showing a task (no downloads, never raises)."""
        content = msg.get("content") or ""
        attempt = 1
        if (msg.get("author") or {}).get("bot"):
            content, attempt = formats.split_header(content)
        try:
            return self._parse(content), attempt
        except TaskError:
            return TaskSpec(content or "(attachment)"), attempt

    async def _archive(self, thread_id: int | str) -> None:
        try:
            await self.client.archive_thread(thread_id)
        except errors.NotFound:
            pass
        except errors.BadRequest as exc:
            if exc.code != ARCHIVED_THREAD:
                raise

    async def _react(self, message_id: int | str, emoji: str) -> None:
        """Mark a task message for people; a deleted message or archived thread is fine."""
        with contextlib.suppress(errors.NotFound):
            await self.client.add_reaction(self.task_channel, message_id, emoji)

    # -- polling -----------------------------------------------------------------------------

    async def _classify(self, msg: dict[str, Any]) -> _Entry:
        if msg.get("type", 0) not in _TASK_TYPES:
            return _Entry(msg, "done")
        author = msg.get("author") or {}
        if trust.is_app_message(msg):  # webhooks and apps: their own id must be allowed
            if not trust.sender_ids(msg) & self.allowed_users:
                self._log_ignored(msg, "a webhook's or an app's message (its webhook or "
                                       "application id is not in [discord] allowed_submitters)")
                return _Entry(msg, "done")
        elif not await self._trusted(author):
            self._log_ignored(msg, "not in [discord] allowed_submitters, allowed_roles or "
                                   "fleet_bots")
            return _Entry(msg, "done")
        thread = msg.get("thread")
        if thread and (await self._fleet()).owns(thread):
            return _Entry(msg, "done" if _archived(thread) else "running")
        if author.get("bot") and any(p.match(msg.get("content") or "") for p in _NOT_TASKS):
            self._log_ignored(msg, "a dorch status or result post, not a task")
            return _Entry(msg, "done")
        if not author.get("bot") and not (msg.get("content") or "").strip() \
                and not msg.get("attachments"):
            self._log_ignored(msg, "its content is empty: enable the MESSAGE_CONTENT intent "
                                   "of this bot in the Developer Portal (`dorch doctor`)")
            return _Entry(msg, "done")
        if thread:
            return _Entry(msg, "squatted")  # a member's or a stranger's thread: no claim
        return _Entry(msg, "stop" if _reaction(msg, formats.STOP) else "queued")

    async def _poll(self) -> list[_Entry]:
        """The messages of #task-queue from the cursor on, oldest first (one GET while the
        oldest 100 hold a waiting task). Moves the cursor and records running tasks."""
        with self.state.locked() as doc:
            cursor = int(doc.get("cursor") or 0)
        start = cursor
        seen: list[_Entry] = []
        for _ in range(MAX_PAGES):
            batch = await self.client.list_messages(self.task_channel, after=cursor, limit=PAGE)
            batch.sort(key=_msg_id)
            entries = [await self._classify(m) for m in batch]
            seen.extend(entries)
            if len(batch) < PAGE or any(e.kind in _PENDING for e in entries):
                break
            cursor = _msg_id(batch[-1])  # a page of finished tasks: catch up
        waiting = [e.id for e in seen if e.kind in _PENDING]
        # just before the oldest waiting task, else after everything seen
        new = min(waiting) - 1 if waiting else (seen[-1].id if seen else start)
        new = min(new, _snowflake_at(self.clock() - CURSOR_MARGIN))
        with self.state.locked() as doc:
            if new > int(doc.get("cursor") or 0):
                doc["cursor"] = new
            running: dict[str, float] = doc.setdefault("running", {})
            for e in seen:
                key = str(e.id)
                if e.kind == "running" and key not in running:
                    running[key] = _thread_created(e.msg["thread"]) + self.lease + REAP_GRACE
                    doc.setdefault("owners", {})[key] = trust.thread_owner(e.msg["thread"])
                elif e.kind in ("done", "squatted"):
                    running.pop(key, None)
                    (doc.get("owners") or {}).pop(key, None)
        self._polled_at = time.monotonic()
        self._fresh = (self._polled_at, seen)
        return seen

    async def _page(self) -> list[_Entry]:
        """The page polled by this round's reap, if fresh, else a new poll."""
        fresh, self._fresh = self._fresh, None
        if fresh is not None and time.monotonic() - fresh[0] < 2.0:
            return fresh[1]
        return await self._poll()

    # -- outbox ------------------------------------------------------------------------------

    def _tracked(self) -> dict[str, Callable[[Item], Awaitable[Any]]]:
        def wrap(handler: Callable[[Item], Awaitable[Any]]) -> Callable[[Item], Awaitable[Any]]:
            async def run(item: Item) -> Any:
                try:
                    return await handler(item)
                except BaseException as exc:
                    self._failures[item.id] = exc
                    raise
            return run
        return {kind: wrap(h) for kind, h in self._handlers.items()}

    async def _drain(self, limit: int = 20) -> None:
        """Deliver what waits in this host's outbox; stop at the first failure."""
        handlers = self._tracked()
        for _ in range(limit):
            if await self.outbox.deliver(handlers, limit=1, owner=self._token_id) == 0:
                break

    async def _deliver(self, item: Item) -> Any:
        """Try to deliver ITEM now (older due items go first); its response, None if it waits."""
        handlers = self._tracked()
        for _ in range(50):
            response = self.outbox.response(item.id)
            if response is not None:
                return response
            if await self.outbox.deliver(handlers, limit=1, owner=self._token_id) == 0:
                break
        response = self.outbox.response(item.id)
        failure = self._failures.pop(item.id, None)
        if response is None and failure is not None:
            log.warning("outbox item %d (%s) waits for Discord: %s", item.id, item.kind, failure)
        if isinstance(failure, errors.DiscordError) and failure.exit_code == 78:
            with self._errors(f"delivering the {item.kind}"):
                raise failure
        if isinstance(failure, PermanentError) and isinstance(failure.__cause__, BusConfigError):
            raise failure.__cause__
        return response

    async def _deliver_submit(self, item: Item) -> Any:
        files = [File.text(name, text) for name, text in item.payload.get("files", [])]
        resent = self.client.resent
        try:
            msg = await self.client.create_message(self.task_channel, item.payload["content"],
                                                   files=files, nonce=item.nonce)
        except (errors.Unauthorized, errors.Forbidden) as exc:
            # the user must fix the configuration and submit again: do not post it later too
            try:
                with self._errors("submitting the task"):
                    raise exc
            except BusConfigError as config_error:
                raise PermanentError(str(config_error)) from config_error
        except errors.NotFound as exc:
            if exc.code != errors.UNKNOWN_MESSAGE:
                raise
            # the nonce found an earlier try of ours that went through and is deleted since:
            # a worker took it back from a squatter (and re-posted it), or someone deleted it
            earlier = await self._squatted_copy(item.payload["content"], "")
            if earlier is None:
                raise PermanentError("the task was posted, then deleted before Discord's answer "
                                     "came back (not posted again): see #task-queue and "
                                     "#results") from None
            return {"id": earlier}
        return {"id": await self._one_copy(item, resent, item.payload["content"], msg["id"])}

    async def _one_copy(self, item: Item, resent: int, content: str, posted: str) -> str:
        """The task's id after posting CONTENT as POSTED: if an earlier try of this post got
        through (its answer lost) and was squatted and re-posted before the retry, the retry
        is a second copy (the nonce no longer finds the deleted first one): it is deleted and
        the first try's id returned (``get`` follows it to the re-post)."""
        if not item.tries and self.client.resent == resent:
            return posted
        earlier = await self._squatted_copy(content, posted)
        if earlier is None:
            return posted
        log.warning("task %s: an earlier try of this post (%s) went through and was squatted "
                    "and re-posted meanwhile; deleting this copy", posted, earlier)
        with contextlib.suppress(errors.NotFound):
            await self.client.delete_message(self.task_channel, posted)
        return earlier

    async def _squatted_copy(self, content: str, posted: str) -> str | None:
        """The id of an earlier try of a submission whose answer was lost, if a worker took it
        back from a squatter and re-posted it before the retry: the nonce no longer finds a
        deleted message, so the retry (POSTED) is a second copy of the task."""
        body = formats.split_header(content)[0]
        fleet = await self._fleet()
        recent = await self.client.list_messages(
            self.task_channel, before=_snowflake_at(self.clock() + 60), limit=PAGE)
        for m in recent:
            head, _, rest = (m.get("content") or "").partition("\n")
            if m["id"] != posted and fleet.wrote(m) and " · squatted " in head and rest == body \
                    and (origin := formats.parse_link(head)) is not None:
                return origin[2]
        return None

    async def _deliver_result(self, item: Item) -> Any:
        p = item.payload
        tid, receipt = p["task"], p["receipt"]
        r = p["result"]
        result = Result(State(r["state"]), r["output"], r["error"], r["stderr_tail"],
                        float(r["duration"]), dict(r["usage"]))
        # Fencing: the answer replaces the claim receipt, so only a holder whose receipt still
        # stands can post it (a reaper deletes the receipt first), and it takes one request.
        post = formats.result_post(result, p["worker"], self.host, p["attempt"], self.max_attempts)
        try:
            await self.client.edit_message(tid, receipt, post.content, files=post.files)
        except errors.NotFound:
            return {"fenced": True}
        except errors.BadRequest as exc:
            if exc.code == ARCHIVED_THREAD:
                return {"fenced": True}
            raise
        summary = formats.summary_text(result.state, self._link(tid), p["worker"],
                                       result.duration, formats.first_line(result))
        await self.client.create_message(self.results_channel, summary,
                                         nonce=_sub_nonce(item, "s"))
        ok = result.state is State.SUCCEEDED
        await self._react(tid, formats.SUCCEEDED if ok else formats.FAILED)
        await self._archive(tid)
        return {"result": receipt}

    async def _deliver_requeue(self, item: Item) -> Any:
        p = item.payload
        old = p["old"]
        if p.get("cancelled"):
            by = p.get("by", "?")
            if p.get("foreign"):  # a squatter's thread: it may be locked or gone
                await self._foreign_note(old, formats.cancelled_note(by), _sub_nonce(item, "c"))
            else:
                await self.client.create_message(old, formats.cancelled_note(by),
                                                 nonce=_sub_nonce(item, "c"))
            where = self._link(old, old) if p.get("foreign") else self._link(old)
            summary = formats.summary_text(State.CANCELLED, where,
                                           line=f"before it started (requested by {by})")
            await self.client.create_message(self.results_channel, summary,
                                             nonce=_sub_nonce(item, "s"))
            await self._react(old, formats.FAILED)
            await self._archive(old)
            return {"cancelled": old}
        if p.get("dead"):
            await self.client.create_message(old, formats.dead_note(p["error"]),
                                             nonce=_sub_nonce(item, "d"))
            summary = f"{formats.DEAD} **dead** · {self._link(old)} · {p['error']}"
            await self.client.create_message(self.results_channel, summary[:1900],
                                             nonce=_sub_nonce(item, "s"))
            await self._react(old, formats.DEAD)
            await self._archive(old)
            return {"dead": old}
        if p.get("verify") and await self._taken_back(old):
            return {"dropped": old}
        if p.get("blocked"):
            error = p["blocked"]
            await self._foreign_note(old, formats.rejected_note(error), _sub_nonce(item, "b"))
            summary = f"{formats.FAILED} **rejected** · {self._link(old, old)} · {error}"
            files = [File.text(formats.TASK_FILE, p["text"])] if p.get("text") else []
            await self.client.create_message(self.results_channel, summary[:1900], files=files,
                                             nonce=_sub_nonce(item, "s"))
            with contextlib.suppress(errors.DiscordHTTPError):
                await self._archive(old)
            return {"blocked": old}
        if not p.get("orphan"):
            # A reaper that took this task as an orphan (this re-post was late: an outage, or
            # its worker died after winning) deleted the task message: it re-posts, not us.
            try:
                await self.client.get_message(self.task_channel, old)
            except errors.NotFound:
                log.warning("task %s was re-queued by another worker meanwhile; dropping this "
                            "re-post", old)
                return {"dropped": old}
        header = formats.requeue_header(p["attempt"], self._link(old, old), p["verb"],
                                        p.get("squats", 0), p.get("submitter", ""))
        post = formats.task_post(p["text"], header)
        resent = self.client.resent
        try:
            new = await self.client.create_message(self.task_channel, post.content,
                                                   files=post.files, nonce=item.nonce)
            new = {"id": await self._one_copy(item, resent, post.content, new["id"])}
        except errors.NotFound as exc:
            if exc.code != errors.UNKNOWN_MESSAGE:
                raise
            # an earlier try went through and was deleted since (squatted and taken back)
            earlier = await self._squatted_copy(post.content, "")
            if earlier is None:
                log.warning("task %s: its re-post went through and was deleted since; the "
                            "thread of the deleted copy tells the rest", old)
                return {"dropped": old}
            new = {"id": earlier}
        note = formats.requeue_note(p["attempt"], self._link(new["id"]), p["why"])
        if p.get("foreign"):  # the squatter's thread: it may be locked or gone
            await self._foreign_note(old, note, _sub_nonce(item, "n"))
            with contextlib.suppress(errors.DiscordHTTPError):
                await self._archive(old)
            return {"id": new["id"]}
        await self.client.create_message(old, note, nonce=_sub_nonce(item, "n"))
        await self._react(old, formats.REQUEUED)
        await self._archive(old)
        return {"id": new["id"]}

    async def _taken_back(self, old: str) -> bool:
        """Whether a fleet bot already re-posted squatted task OLD, or said it is blocked."""
        if await self._reposted_as(old) is not None:
            return True
        fleet = await self._fleet()
        msgs = await self.client.list_messages(self.results_channel, after=old, limit=PAGE)
        # the line's own link: the rest of a #results line may quote an agent's answer
        return any(fleet.wrote(m) and (found := formats.SUMMARY.match(m.get("content") or ""))
                   and found["link"] == self._link(old, old) for m in msgs)

    async def _reposted_as(self, old: str) -> str | None:
        """The id of the fleet's re-post of task OLD (its header links OLD's thread): found
        even when the ♻️ note could not go into a squatter's thread, or is not there yet."""
        fleet = await self._fleet()
        origin = f" from {self._link(old, old)}"
        for m in await self.client.list_messages(self.task_channel, after=old, limit=PAGE):
            first = (m.get("content") or "").partition("\n")[0]
            if fleet.wrote(m) and first.startswith(formats.HEADER) and origin in first:
                return str(m["id"])
        return None

    async def _thread_exists(self, tid: str) -> bool:
        try:
            await self.client.get_channel(tid)
        except errors.NotFound:
            return False
        return True

    async def _foreign_note(self, thread: str, text: str, nonce: str) -> None:
        """A note in a thread someone outside the fleet started: they may have locked or
        deleted it, and that must not hold the outbox up (the note is for people)."""
        try:
            await self.client.create_message(thread, text, nonce=nonce)
        except (errors.Forbidden, errors.NotFound, errors.BadRequest) as exc:
            log.warning("could not post a note in thread %s (%s): %s", thread, type(exc).__name__,
                        text.partition("\n")[0])

    async def _requeue(self, msg: dict[str, Any], source: str, attempt: int, why: str, *,
                       verb: str, handed_back: bool = False, limit: int | None = None,
                       orphan: bool = False) -> None:
        """Queue the re-post of a task this process won the compare-and-set for. ORPHAN: the
        compare-and-set deleted the task message itself (see ``_deliver_requeue``)."""
        limit = self.max_attempts if limit is None else limit
        old = msg["id"]
        if not handed_back and attempt >= limit:
            payload: dict[str, Any] = {
                "old": old, "dead": True,
                "error": f"gave up after attempt {attempt} of {limit}: {why}"}
        else:
            payload = {"old": old, "text": source, "why": why, "verb": verb,
                       "attempt": attempt if handed_back else attempt + 1}
        payload["orphan"] = orphan
        payload["submitter"] = await self._submitter(msg)
        item = self.outbox.put("requeue", payload)
        await self._deliver(item)

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
        with self._errors("submitting the task"):
            await self._check_submitter()
            await self._drain()
            header = f"submitted by {formats.clean_name(submitter)}" if submitter else ""
            post = formats.task_post(spec.to_text(), header)
            files = [[f.filename, f.data.decode("utf-8")] for f in post.files]
            item = self.outbox.put("submit", {"content": post.content, "files": files})
            response = await self._deliver(item)
        if response is None:
            return f"outbox-{item.id}"
        return str(response["id"])

    async def _check_in_fleet(self) -> None:
        """A worker whose bot is not in fleet_bots would see its own claims taken for squats
        by the rest of the fleet: it does not start (exit 78)."""
        configured = {int(b) for b in self.config.discord.get("fleet_bots") or []}
        me = await self._me_id()
        if configured and me not in configured:
            raise BusConfigError(
                f"this bot (user id {me}) is not in [discord] fleet_bots, so the fleet would not "
                "believe its workers' claims. Add its id to fleet_bots on every host (`dorch "
                "doctor` shows it), or run these workers with a fleet bot's token")

    async def _check_submitter(self) -> None:
        """Refuse to queue a task no worker would obey (exit 78) instead of letting it wait
        for ever: this bot must be a fleet bot, an allowed submitter or hold an allowed role."""
        try:
            me = await self._me_id()
        except _UNREACHABLE:
            return  # Discord cannot say now: the outbox keeps the task, as for any outage
        if me in self.allowed_users or me in trust.Fleet.from_config(self.config.discord):
            return
        if await self._allowed_role(me):
            return
        raise BusConfigError(
            f"this bot (user id {me}) is not in [discord] fleet_bots or allowed_submitters and "
            "holds no role of allowed_roles, so no worker would run its tasks. Add its id to "
            "fleet_bots (if its workers are part of the fleet) or to allowed_submitters, on "
            "every host of the fleet, then submit again")

    async def claim(self, worker: str, lease_seconds: float) -> Claim | None:
        with self._errors("looking for a task"):
            await self._drain()
            entries = await self._page()
            if any(e.kind in ("queued", "stop") for e in entries):
                async with self._claim_turn(worker) as turn:
                    if turn:
                        claim = await self._claim_in_turn(entries, worker, lease_seconds)
                        if claim is not None:
                            return claim
        self.board.idle()
        return None

    async def _claim_in_turn(self, entries: list[_Entry], worker: str,
                             lease_seconds: float) -> Claim | None:
        tries = 0
        while tries < MAX_CLAIM_TRIES:
            # Choose at the last moment: when the bot's thread bucket makes us wait (or a race
            # was just lost), the page is stale: other workers took its oldest tasks meanwhile.
            wait = self.client.wait_time("POST", START_THREAD, {"channel_id": self.task_channel})
            if wait > MAX_THREAD_WAIT:
                return None
            if wait > 0 or tries or time.monotonic() - self._polled_at > PAGE_FRESH:
                await asyncio.sleep(wait)
                entries = await self._poll()
            waiting = [e for e in entries if e.kind in ("queued", "stop")]
            if not waiting:
                return None
            few = waiting[:SPREAD]
            entry = random.choices(few, weights=range(len(few), 0, -1))[0]
            if entry.kind == "stop" and await self._stopped(entry.msg):
                await self._cancel_queued(entry.msg, by="a 🛑 reaction")
                entries = [e for e in entries if e is not entry]
                continue
            tries += 1
            claim = await self._try(entry.msg, worker, lease_seconds)
            if claim is not None:
                return claim
        return None

    @contextlib.asynccontextmanager
    async def _claim_turn(self, worker: str) -> AsyncIterator[bool]:
        """The host's workers on one bot claim in turn (True: it is ours; False: none came
        within TURN_PATIENCE). The bot starts about one thread a second, and workers choosing
        from the same page at once would mostly lose races to each other."""
        me = f"{worker}:{os.getpid()}"
        deadline = time.monotonic() + TURN_PATIENCE
        while True:
            now = self.clock()
            with self.state.locked() as doc:
                turns: dict[str, list[Any]] = doc.setdefault("turns", {})
                holder = turns.get(self._token_id)
                if not holder or holder[1] < now:
                    turns[self._token_id] = [me, now + TURN_TTL]
                    break
            if time.monotonic() >= deadline:
                yield False
                return
            await asyncio.sleep(TURN_POLL)
        try:
            yield True
        finally:
            with self.state.locked() as doc:
                if (doc.get("turns") or {}).get(self._token_id, [None])[0] == me:
                    del doc["turns"][self._token_id]

    async def _try(self, msg: dict[str, Any], worker: str, lease: float) -> Claim | None:
        """Start the thread on MSG (the claim) and post the receipt; None if another won."""
        mid = msg["id"]
        first = " ".join((msg.get("content") or "").split())
        if first.startswith(formats.HEADER.strip()):
            first = formats.split_header(msg.get("content") or "")[0]
            first = " ".join(first.split())
        try:
            await self.client.start_thread(self.task_channel, mid, f"task {mid}: {first[:60]}")
        except errors.ThreadAlreadyExists:
            log.debug("task %s: another worker was first", mid)
            return None
        except errors.NotFound as exc:
            if exc.code != errors.UNKNOWN_MESSAGE:
                raise
            log.info("task %s was deleted before it could be claimed", mid)
            return None
        try:
            source, attempt = await self._source(msg)
            spec = self._parse(source)
        except (_Rejected, TaskError) as exc:
            await self._reject(msg, str(exc))
            return None
        until = self.clock() + lease
        receipt = await self.client.create_message(
            mid, formats.receipt_text(worker, self.host, attempt, self.max_attempts, until))
        try:
            await self.client.add_reaction(self.task_channel, mid, formats.CLAIMED)
        except errors.NotFound:
            log.warning("task %s: its message was deleted after the claim; not running it", mid)
            return None
        author = msg.get("author") or {}
        task = Task(str(mid), spec, attempt, str(author.get("username", "")),
                    trust.epoch(msg.get("timestamp")))
        return Claim(task, worker, str(receipt["id"]), until)

    async def _reject(self, msg: dict[str, Any], why: str) -> None:
        mid = msg["id"]
        log.warning("task %s rejected: %s", mid, why)
        await self.client.create_message(mid, formats.rejected_note(why))
        summary = f"{formats.FAILED} **rejected** · {self._link(mid)} · {' '.join(why.split())}"
        await self.client.create_message(self.results_channel, summary[:1900])
        await self._react(mid, formats.FAILED)
        await self._archive(mid)

    async def _cancel_queued(self, msg: dict[str, Any], by: str) -> bool:
        """Cancel a task nobody claimed yet by claiming it: False if a worker was first."""
        mid = msg["id"]
        try:
            await self.client.start_thread(self.task_channel, mid, f"task {mid}: cancelled")
        except errors.ThreadAlreadyExists:
            return False
        except errors.NotFound as exc:
            if exc.code != errors.UNKNOWN_MESSAGE:
                raise
            return True
        item = self.outbox.put("requeue", {"old": mid, "cancelled": True, "by": by})
        await self._deliver(item)
        return True

    async def heartbeat(self, claim: Claim, lease_seconds: float) -> Lease:
        tid = claim.task.id
        with self._errors(f"renewing the lease of task {tid}"):
            text = formats.receipt_text(claim.worker, self.host, claim.task.attempt,
                                        self.max_attempts, self.clock() + lease_seconds)
            try:
                await self.client.edit_message(tid, claim.token, text)
                msg = await self.client.get_message(self.task_channel, tid)
            except errors.NotFound as exc:
                if exc.code in (errors.UNKNOWN_CHANNEL, errors.UNKNOWN_MESSAGE):
                    return Lease.LOST
                raise
            except errors.BadRequest as exc:
                if exc.code == ARCHIVED_THREAD:
                    return Lease.LOST
                raise
            stopped = await self._stopped(msg)
            # then the results of this host's workers that exited meanwhile: after the renewal,
            # so that a slow delivery never holds the lease up
            await self._drain(limit=5)
            return Lease.CANCELLED if stopped else Lease.HELD

    async def finish(self, claim: Claim, result: Result) -> bool:
        if not result.state.finished:
            raise ValueError(f"finish needs a final state, not {result.state.value!r}")
        size = len(result.output.encode())
        if size > TASK_FILE_CAP:  # never a cut answer: a clear failure instead
            result = Result(State.FAILED, "", f"the answer holds {size:,} bytes; the Discord bus "
                            f"carries at most {TASK_FILE_CAP:,} bytes, so it was not posted. The "
                            f"whole answer is in the worker's workspace on {self.host}",
                            result.stderr_tail, result.duration, result.usage)
        payload = {
            "task": claim.task.id, "receipt": claim.token, "worker": claim.worker,
            "attempt": claim.task.attempt,
            "result": {"state": result.state.value, "output": result.output,
                       "error": result.error, "stderr_tail": result.stderr_tail,
                       "duration": result.duration, "usage": result.usage},
        }
        # only this bot may edit its receipt: another token's worker on this host must not try
        item = self.outbox.put("result", payload, owner=self._token_id)
        with self._errors(f"reporting task {claim.task.id}"):
            response = await self._deliver(item)
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
        with self._errors(f"handing back task {tid}"):
            try:
                await self.client.delete_message(tid, claim.token)
            except errors.NotFound:
                return  # a reaper took it already
            try:
                msg = await self.client.get_message(self.task_channel, tid)
            except errors.NotFound:
                return
            if await self._stopped(msg):
                item = self.outbox.put("requeue", {"old": tid, "cancelled": True,
                                                   "by": "a 🛑 reaction"})
                await self._deliver(item)
                return
            await self._requeue(msg, claim.task.spec.to_text(), claim.task.attempt,
                                f"handed back by {claim.worker} (worker stopping)",
                                verb="handed back", handed_back=True)

    async def reap(self, max_attempts: int | None = None) -> int:
        """Poll (the claim that follows uses this page) and requeue tasks whose lease expired."""
        limit = self.max_attempts if max_attempts is None else max_attempts
        with self._errors("checking leases"):
            await self._check_in_fleet()
            await self._preflight()
            await self._drain()
            entries = await self._poll()
            settled = self.clock() - SQUAT_SETTLE
            squatted = [e for e in entries if e.kind == "squatted" and (
                not (e.msg.get("author") or {}).get("bot")
                or trust.epoch(e.msg.get("timestamp")) < settled)][:SQUATS_PER_ROUND]
            for entry in squatted:
                await self._unsquat(entry.msg)
            if squatted:
                self._fresh = None  # the page changed: the claim polls again
            now = self.clock()
            with self.state.locked() as doc:
                back = float(doc.get("unreachable_at") or 0) > float(doc.get("reachable_at") or 0)
                if back:  # the first answer since Discord could not be reached from here
                    doc["reachable_at"] = now
                recovered = float(doc.get("reachable_at") or 0)
            if back and self.outbox.retry_now():
                await self._drain()  # what waited for Discord goes first
            if now - recovered < self.lease + REAP_GRACE:
                # Holders could not renew during the outage either: give them one lease
                # from its end to catch up before taking their tasks.
                return 0
            with self.state.locked() as doc:
                running: dict[str, float] = doc.setdefault("running", {})
                due = sorted((k for k, t in running.items() if t <= now), key=int)[:REAP_BATCH]
                for key in due:  # this process checks them: the host's others wait
                    running[key] = now + max(self.lease / 2, 1.0)
            reaped = 0
            for key in due:
                reaped += await self._check(key, limit)
            return reaped

    async def _user_label(self, user_id: int) -> str:
        """``name (id N)`` of a guild member, for notes that say who did something."""
        try:
            member = await self.client.get_member(self.guild, user_id)
            name = str((member.get("user") or {}).get("username") or "?")
        except errors.NotFound:
            name = "a former member"
        except errors.DiscordError:  # called after a compare-and-set: never fail here
            name = "user"
        return f"{formats.clean_name(name)} (id {user_id})"

    async def _unsquat(self, msg: dict[str, Any]) -> None:
        """A thread someone outside the fleet started on a task is no claim: take the task
        back (deleting its message is the compare-and-set) and re-post it, same attempt, noted
        in that thread; after SQUAT_LIMIT such threads it ends ❌ blocked, said in #results."""
        mid = msg["id"]
        owner = trust.thread_owner(msg["thread"])
        if not self.config.discord.get("fleet_bots") and await self._allowed_role(owner):
            # before fleet_bots, the README allowed giving the fleet's bots a role instead of
            # listing them: taking their running tasks back would run every task twice
            raise BusConfigError(
                f"task {mid} was claimed by user {owner}, who holds one of allowed_roles but is "
                "not in [discord] fleet_bots (not set). If it is a bot of your fleet, list every "
                "fleet bot in fleet_bots on every host (`dorch doctor` prints each bot's id)")
        fleet = await self._fleet()
        squats = (formats.squats(msg.get("content") or "") if fleet.wrote(msg) else 0) + 1
        try:
            source, attempt = await self._source(msg)
            refused = ""
        except _Rejected as exc:
            source, attempt, refused = msg.get("content") or "", 1, str(exc)
        payload: dict[str, Any] = {"old": mid, "text": source, "orphan": True, "foreign": True}
        stopped = _reaction(msg, formats.STOP) is not None and await self._stopped(msg)
        try:
            await self.client.delete_message(self.task_channel, mid)  # the compare-and-set
        except errors.NotFound as exc:
            if not exc.ambiguous:
                return  # another worker took it back first
            # an earlier try of ours may have deleted it (its answer lost): re-post unless
            # another worker's re-post is there by delivery
            payload["verify"] = True
        who = await self._user_label(owner)
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
        item = self.outbox.put("requeue", payload)
        await self._deliver(item)

    def _schedule(self, key: str, when: float | None) -> None:
        with self.state.locked() as doc:
            running = doc.setdefault("running", {})
            if when is None:
                running.pop(key, None)
                (doc.get("suspects") or {}).pop(key, None)
                (doc.get("owners") or {}).pop(key, None)
            else:
                running[key] = when

    async def _check(self, key: str, limit: int) -> int:
        """Look at one running task's thread; requeue it if its lease expired. 1 if requeued."""
        young = self.clock() - max(3 * self.lease, 600.0)
        if any(i.kind == "result" and i.payload.get("task") == key and i.created > young
               for i in self.outbox.pending()):
            self._schedule(key, self.clock() + self.lease)  # its result waits here: no reaping
            return 0
        try:
            notes = await self.client.list_messages(key, after=0, limit=50)
        except errors.NotFound:
            self._schedule(key, None)
            return 0
        # Only the fleet's notes count, and only the claimer's receipt and result (trust.py):
        # anyone else's marker in the thread is noise, however it reads.
        fleet = await self._fleet()
        with self.state.locked() as doc:
            owner = (doc.get("owners") or {}).get(key)
        if owner is None:
            owner = trust.thread_owner(await self.client.get_channel(key))
        thread = {"owner_id": owner}
        notes = sorted(fleet.markers(notes), key=_msg_id)
        ends = (formats.REQUEUE_NOTE, formats.DEAD_NOTE, formats.REJECTED,
                formats.CANCELLED_QUEUED)
        if any(p.match(m.get("content") or "") for m in notes for p in ends) or any(
                formats.RESULT.match(m.get("content") or "") and fleet.owner_wrote(m, thread)
                for m in notes):
            self._schedule(key, None)  # finished (perhaps still being marked)
            return 0
        receipts = [(m, r) for m in notes if fleet.owner_wrote(m, thread)
                    and (r := formats.parse_receipt(m.get("content") or ""))]
        now = self.clock()
        if receipts:
            receipt_msg, receipt = receipts[-1]
            until = trust.lease_cap(receipt.lease_until, receipt_msg, self.lease, now)
            if until + REAP_GRACE > now:
                self._schedule(key, until + REAP_GRACE)
                return 0
            try:
                msg = await self.client.get_message(self.task_channel, key)
                source, _ = await self._source(msg)
            except errors.NotFound:
                self._schedule(key, None)
                return 0
            except _Rejected:
                source = msg.get("content") or ""
            try:
                await self.client.delete_message(key, receipt_msg["id"])  # the compare-and-set
            except errors.NotFound:
                self._schedule(key, now + self.lease)
                return 0
            later = await self.client.list_messages(key, after=receipt_msg["id"], limit=50)
            if any(formats.RESULT.match(m.get("content") or "") for m in later
                   if fleet.owner_wrote(m, thread)):
                self._schedule(key, None)  # its holder finished just now: nothing to do
                return 0
            why = (f"the lease of attempt {receipt.attempt} expired (worker {receipt.worker} "
                   "stopped renewing it: died or hung)")
            log.warning("task %s: %s; re-queueing", key, why)
            self._schedule(key, None)
            await self._requeue(msg, source, receipt.attempt, why, verb="requeued", limit=limit)
            return 1
        # No receipt. Either nothing was ever posted in the thread (its claimer died before
        # the receipt), or the receipt was deleted by a reaper or a worker handing the task
        # back, whose re-post is on its way (or who died just after the delete). The second
        # kind is an orphan only if it is still so a whole lease after this host first saw it.
        thread = await self.client.get_channel(key)
        if _archived(thread):
            self._schedule(key, None)
            return 0
        if thread.get("total_message_sent", 0):
            with self.state.locked() as doc:
                suspects: dict[str, float] = doc.setdefault("suspects", {})
                first_seen = suspects.setdefault(key, now)
            if now - first_seen < self.lease + REAP_GRACE:
                self._schedule(key, first_seen + self.lease + REAP_GRACE)
                return 0
            why = "its receipt was removed but the task was never re-posted (the worker doing it died)"
        elif now - _thread_created(thread) < self.lease + REAP_GRACE:
            self._schedule(key, _thread_created(thread) + self.lease + REAP_GRACE)
            return 0
        else:
            why = "it was claimed but its worker never confirmed (died)"
        try:
            msg = await self.client.get_message(self.task_channel, key)
            source, attempt = await self._source(msg)
        except errors.NotFound:
            self._schedule(key, None)
            return 0
        except _Rejected:
            source, attempt = msg.get("content") or "", formats.split_header(
                msg.get("content") or "")[1]
        try:
            await self.client.delete_message(self.task_channel, key)  # the compare-and-set
        except errors.NotFound:
            self._schedule(key, None)
            return 0
        why = f"attempt {attempt}: {why}"
        log.warning("task %s: %s; re-queueing", key, why)
        self._schedule(key, None)
        await self._requeue(msg, source, attempt, why, verb="requeued", limit=limit, orphan=True)
        return 1

    async def cancel(self, task_id: str) -> bool:
        with self._errors(f"cancelling task {task_id}"):
            msg = await self._latest(task_id)
            if msg is None:
                return False
            thread = msg.get("thread")
            if thread and _archived(thread):
                return False
            await self.client.add_reaction(self.task_channel, msg["id"], formats.STOP)
            # a thread only a fleet bot starts is a claim; another bot's 🛑 alone is enough:
            # the first worker to pick the task cancels it
            if not thread and await self._me_id() in trust.Fleet.from_config(self.config.discord):
                await self._cancel_queued(msg, by="`dorch cancel`")
            return True

    async def _latest(self, task_id: str) -> dict[str, Any] | None:
        """The message of the task's latest attempt (following re-posts)."""
        tid = self._resolve_outbox(task_id)
        if tid is None:
            return None
        for _ in range(self.max_attempts * 3 + 3):
            try:
                msg = await self.client.get_message(self.task_channel, tid)
            except errors.NotFound as exc:
                if exc.code != errors.UNKNOWN_MESSAGE:
                    raise
                nxt = await self._next_attempt(tid)  # deleted by a reaper: its thread says where
                if nxt is None:
                    return None
                tid = nxt
                continue
            thread = msg.get("thread")
            if not thread or not _archived(thread):
                return msg
            nxt = await self._next_attempt(tid)
            if nxt is None:
                return msg
            tid = nxt
        return None

    async def _next_attempt(self, tid: str) -> str | None:
        """The id of the attempt a task's thread points to (its ♻️ note), if any."""
        return _requeued_to(await self._thread_notes(tid))

    async def _thread_notes(self, tid: str) -> list[dict[str, Any]]:
        """The fleet's messages in thread TID, oldest first (none if there is no thread)."""
        try:
            notes = await self.client.list_messages(tid, after=0, limit=100)
        except errors.NotFound:
            return []
        fleet = await self._fleet()
        return sorted(fleet.markers(notes), key=_msg_id)

    async def _submitter(self, msg: dict[str, Any]) -> str:
        """Who submitted the task MSG carries: a task the fleet posted says so in its header
        (another bot's header is not believed), anyone else's task is theirs."""
        if (await self._fleet()).wrote(msg):
            return formats.submitter_of(msg.get("content") or "")
        return str((msg.get("author") or {}).get("username") or "")

    async def _task_of(self, msg: dict[str, Any], task_id: str = "") -> Task:
        """The task MSG carries, as shown (no downloads). A person may edit a task after a
        worker took it: the text shown then is the start of the one that ran (the thread's
        name), marked, never the edited text as if it had run."""
        spec, attempt = self._view_spec(msg)
        thread = msg.get("thread")
        edited = trust.epoch(msg.get("edited_timestamp"))
        if thread and edited and edited > _thread_created(thread) > 0 \
                and not (msg.get("author") or {}).get("bot") and (await self._fleet()).owns(thread):
            ran = str(thread.get("name") or "").partition(": ")[2]
            spec = TaskSpec(f"{ran}{'…' if len(ran) >= 60 else ''} [edited after it started: "
                            "this is how the text that ran began]", spec.model, spec.thinking)
        return Task(task_id or str(msg["id"]), spec, attempt, await self._submitter(msg),
                    trust.epoch(msg.get("timestamp")))

    def _resolve_outbox(self, task_id: str) -> str | None:
        if not task_id.startswith("outbox-"):
            return task_id if task_id.isdigit() else None
        try:
            response = self.outbox.response(int(task_id[len("outbox-"):]))
        except ValueError:
            return None
        return str(response["id"]) if isinstance(response, dict) and "id" in response else None

    async def get(self, task_id: str) -> TaskView | None:
        with self._errors(f"reading task {task_id}"):
            await self._drain()
            tid = self._resolve_outbox(task_id)
            if tid is None:
                if task_id.startswith("outbox-") and any(
                        f"outbox-{i.id}" == task_id for i in self.outbox.pending()):
                    spec = TaskSpec("(waiting in this host's outbox for Discord)")
                    return TaskView(Task(task_id, spec), State.QUEUED)
                return None
            origin: Task | None = None  # the first attempt: who submitted it, and when
            for _ in range(self.max_attempts * 3 + 3):
                url = self._link(tid)
                try:
                    msg = await self.client.get_message(self.task_channel, tid)
                except errors.NotFound as exc:
                    if exc.code != errors.UNKNOWN_MESSAGE:
                        raise
                    # deleted by a reaper (an orphan) or taken back from a squatter: its
                    # thread says where the task went, or how it ended
                    notes = await self._thread_notes(tid)
                    nxt = _requeued_to(notes) or await self._reposted_as(tid)
                    if nxt is None:
                        gone = origin or Task(task_id, TaskSpec("(its message was deleted)"))
                        ended = _ended(gone, notes, "", _thread_started(notes), url)
                        if ended is None and await self._thread_exists(tid):
                            return TaskView(gone, State.QUEUED, url=url)  # re-post on its way
                        return ended
                    tid = nxt
                    continue
                task = await self._task_of(msg, task_id)
                if origin is None:
                    origin = task
                else:
                    task = replace(task, submitter=task.submitter or origin.submitter,
                                   submitted_at=origin.submitted_at)
                thread = msg.get("thread")
                if not thread:
                    if await self._stopped(msg):
                        return TaskView(task, State.CANCELLED, url=url,
                                        result=Result(State.CANCELLED, error="cancelled before "
                                                      "it started"))
                    return TaskView(task, State.QUEUED, url=url)
                view = await self._read_thread(task, tid, thread, url)
                if isinstance(view, TaskView):
                    return view
                tid = view
            return None

    async def _read_thread(self, task: Task, tid: str, thread: dict[str, Any],
                           url: str) -> TaskView | str:
        """The task's state from its thread, or the id of its next attempt. Only the fleet's
        notes count, and only the claimer's receipt and result."""
        fleet = await self._fleet()
        notes = await self._thread_notes(tid)
        started = _thread_created(thread)
        receipt: formats.Receipt | None = None
        for m in notes:
            parsed = formats.parse_result(m.get("content") or "")
            if parsed is not None and fleet.owner_wrote(m, thread):
                result, worker = parsed
                for att in m.get("attachments") or []:
                    if att.get("filename") == formats.RESULT_FILE:
                        try:
                            result.output = await self._download(att, TASK_FILE_CAP)
                        except _Rejected as exc:
                            raise BusError(f"task {tid}: its answer cannot be shown: {exc}; "
                                           f"read it in its thread: {url}") from None
                return TaskView(task, result.state, worker, started, trust.epoch(m.get("timestamp")),
                                result, url)
        nxt = _requeued_to(notes)
        if nxt is not None:
            return nxt
        for m in notes:
            if fleet.owner_wrote(m, thread):
                receipt = formats.parse_receipt(m.get("content") or "") or receipt
        worker = receipt.worker if receipt else ""
        ended = _ended(task, notes, worker, started, url)
        if ended is not None:
            return ended
        if not fleet.owns(thread):  # a squatter's thread: no claim, the task waits
            return TaskView(task, State.QUEUED, url=url)
        return TaskView(task, State.RUNNING, worker, started, url=url)

    async def status(self, recent: int = 10) -> Status:
        """The queue as Discord shows it (finished counts: the last 100 results), and what waits
        in this host's outbox. Discord unreachable: the outbox only, with ``error`` set."""
        recent = max(recent, 0)
        try:
            with self._errors("reading the queue"):
                await self._drain()
                entries = await self._poll()
                summaries = await self.client.list_messages(self.results_channel, limit=100)
                board = await self.client.list_messages(self.pool_channel, limit=100)
                fleet = await self._fleet()
                workers = parse_board(fleet.markers(board))
                done = _summaries(fleet.markers(summaries))
                shown = ([d for d in done if d[0] is not State.DEAD][:recent]
                         + [d for d in done if d[0] is State.DEAD][:recent])
                page = {str(e.id): e for e in entries}
                rows = {w.task_id: w for w in workers if w.state == "RUNNING" and w.task_id}
                elsewhere = [t for t in rows if not (t in page and page[t].kind == "running")]
                msgs = await self._task_messages(
                    [d[1] for d in shown] + elsewhere[:MAX_ROWS],
                    {t: e.msg for t, e in page.items()},
                    min((e.id for e in entries), default=None))
        except BusConfigError:
            raise
        except BusError as exc:
            return Status({s.value: 0 for s in State}, [], [], [], [],
                          deliveries=self.deliveries(), error=str(exc))
        counts = {s.value: 0 for s in State}
        running: list[TaskView] = []
        for e in entries:
            if e.kind in _PENDING:
                counts["queued"] += 1
            elif e.kind == "running":
                holder = rows.get(str(e.id))
                running.append(TaskView(await self._task_of(e.msg), State.RUNNING,
                                        holder.worker if holder else "",
                                        _thread_created(e.msg["thread"]), url=self._link(e.id)))
        for task_id in elsewhere:
            # a board row RUNNING whose task is not running in this poll's page: running
            # still (an older task), or the row of a worker that died (lost once reaped)
            holder = rows[task_id]
            if task_id not in msgs:  # more rows than were looked up: as the board says
                running.append(TaskView(Task(task_id, TaskSpec("(see the thread)")),
                                        State.RUNNING, holder.worker, holder.updated_at,
                                        url=self._link(task_id)))
                continue
            msg = msgs[task_id]
            thread = (msg or {}).get("thread")
            if msg is not None and thread and not _archived(thread) and fleet.owns(thread):
                running.append(TaskView(await self._task_of(msg), State.RUNNING, holder.worker,
                                        _thread_created(thread), url=self._link(task_id)))
                continue
            reaped = msg is None or any(_reaction(msg, mark) for mark in
                                        (formats.REQUEUED, formats.DEAD))
            if reaped or self.clock() - holder.updated_at > self.lease + REAP_GRACE:
                holder.state = WorkerState.LOST
        counts["running"] = len(running)
        for state, *_ in done:
            counts[state.value] += 1
        finished: list[TaskView] = []
        dead: list[TaskView] = []
        for state, task_id, worker, result, finished_at, link in shown:
            msg = msgs.get(task_id)
            if msg is not None:
                task = await self._task_of(msg)
                thread = msg.get("thread")
                started = _thread_created(thread) if thread else None
            else:
                gave_up = _GAVE_UP.search(result.error)
                task = Task(task_id, TaskSpec("(its message was deleted)"),
                            int(gave_up.group(1)) if gave_up else 1)
                started = None
            view = TaskView(task, state, worker, started, finished_at, result, link)
            (dead if state is State.DEAD else finished).append(view)
        return Status(counts=counts, running=sorted(running, key=lambda v: v.started_at or 0),
                      recent=finished, dead=dead, workers=workers,
                      deliveries=self.deliveries())

    async def _task_messages(self, ids: list[str], known: dict[str, dict[str, Any]],
                             page_start: int | None) -> dict[str, dict[str, Any] | None]:
        """The task messages of IDS (None: deleted): from KNOWN (the poll's page, which starts
        at PAGE_START), then one page of #task-queue before the newest of them, then one by
        one."""
        found: dict[str, dict[str, Any] | None] = {}
        wanted = []
        for tid in dict.fromkeys(ids):
            if tid in known:
                found[tid] = known[tid]
            elif page_start is not None and tid.isdigit() and int(tid) > page_start:
                found[tid] = None  # within the page, yet not in it: deleted
            elif tid.isdigit():
                wanted.append(tid)
        if wanted:
            before = max(int(t) for t in wanted) + 1
            for m in await self.client.list_messages(self.task_channel, before=before,
                                                     limit=PAGE):
                if m["id"] in wanted:
                    found[m["id"]] = m
        for tid in wanted:
            if tid in found:
                continue
            try:
                found[tid] = await self.client.get_message(self.task_channel, tid)
            except errors.NotFound as exc:
                if exc.code != errors.UNKNOWN_MESSAGE:
                    raise
                found[tid] = None
        return found

    async def clear(self) -> int:
        """Delete every task nobody claimed yet: bulk deletes for messages younger than 14
        days, single deletes for older ones. Returns how many were deleted."""
        with self._errors("clearing the queue"):
            with self.state.locked() as doc:
                cursor = int(doc.get("cursor") or 0)
            waiting: list[int] = []
            for _ in range(1000):
                batch = await self.client.list_messages(self.task_channel, after=cursor,
                                                        limit=PAGE)
                if not batch:
                    break
                batch.sort(key=_msg_id)
                for msg in batch:
                    entry = await self._classify(msg)
                    if entry.kind in _PENDING:  # squatted ones wait to be re-posted
                        waiting.append(entry.id)
                cursor = _msg_id(batch[-1])
                if len(batch) < PAGE:
                    break
            young_after = _snowflake_at(self.clock() - 14 * 86400 + 3600)
            young = [m for m in waiting if m > young_after]
            old = [m for m in waiting if m <= young_after]
            for start in range(0, len(young), 100):
                chunk = young[start:start + 100]
                if len(chunk) == 1:
                    old.append(chunk[0])
                    continue
                try:
                    await self.client.bulk_delete(self.task_channel, chunk)
                except errors.BadRequest as exc:
                    if exc.code != BULK_TOO_OLD:  # our clock and Discord's disagree: one by one
                        raise
                    old.extend(chunk)
            for mid in old:
                with contextlib.suppress(errors.NotFound):
                    await self.client.delete_message(self.task_channel, mid)
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
        if self._cdn is not None:
            await self._cdn.close()
        self.outbox.close()
        self.state.close()

    def deliveries(self) -> list[Delivery]:
        """What waits in this host's outbox (and what it gave up on), for ``dorch status``."""
        out = []
        for item, failed in [(i, False) for i in self.outbox.pending()] + [
                (i, True) for i in self.outbox.failed()]:
            p = item.payload
            if item.kind == "submit":
                what = "task: " + " ".join(formats.split_header(p.get("content", ""))[0].split())[:60]
            elif item.kind == "result":
                what = f"result of task {p.get('task')} ({p.get('result', {}).get('state', '?')})"
            else:
                what = f"re-post of task {p.get('old')}"
            out.append(Delivery(item.id, DeliveryKind(item.kind), what, item.created, item.tries,
                                item.last_error, failed))
        return out

