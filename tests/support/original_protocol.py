"""The claim protocol of the scripts dorch replaces (discord-orchestration's worker-reaction.sh),
re-implemented in asyncio on dorch's ``DiscordClient``, to measure it against the emulator.

It exists for comparisons that must be fair to the original: the contrast tests
(tests/bus/discord/test_reaction_protocol.py: double claims, tasks starved beyond the 10 newest)
and the benchmarks in bench/ (requests per task, idle requests per worker per minute). Requests go
through ``DiscordClient`` so rate limits are honoured: what goes wrong comes from the protocol,
not from 429s. Everything talks to the given ``api_base`` (the emulator on 127.0.0.1).

One worker "process lifetime" (``run_lifetime``), as the script did it:

1. post READY to #worker-pool;
2. every poll (the poll interval is drawn once per lifetime, like the script's POLL_INTERVAL):
   GET the ``newest`` (10) messages of #task-queue, newest first; for each id not in this
   worker's lost cache: PUT a ✅ reaction (204 whether or not it was already there), sleep a
   jitter (100-300 ms), GET /users/@me (once per poll: the script ran the poll in a command
   substitution, a subshell, so its cache never outlived a poll), GET the ✅ reaction list: if
   its first user is someone else, the message is lost (cached, next message); else sleep
   0.3 s and check again; still first: won. GET the message; empty content: next message;
3. "run" the task (``record(message_id, worker)``), post CLAIMED to #worker-pool before it and a
   result to #results and RESTARTING to #worker-pool after it, and end; or post IDLE after
   ``idle_timeout`` seconds of polling without a task.

The reaction list is sorted by user id, not by time, so "first reactor wins" cannot be decided:
two workers can both see themselves first, and a lower-id bot re-claims any message a higher-id
one already won (nothing skips messages that carry ✅). Won messages are never cached either, so a
restarted worker claims its own finished task again. Both are the protocol's, kept as they were.
An error answer (after the client's retries) ends the lifetime like a crash (``Fleet.crashes``).

``Fleet`` runs N workers concurrently, each restarted after every exit as systemd would, for a
bounded time or until a condition, from the caller's event loop (``await fleet.run(...)``) or a
thread of its own (``with fleet.running(): ...``). To count requests: ``Fleet.calls`` (protocol
steps per worker), ``Fleet.clients`` (one per bot token), or the emulator's request log filtered
by bot name (each worker bot is one ``RequestRecord.bot``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dorch.discord.client import DiscordClient
from dorch.discord.errors import DiscordError

CHECK = "✅"


@dataclass(frozen=True)
class Channels:
    """The three channel ids the scripts were configured with."""

    task_queue: int | str
    results: int | str
    worker_pool: int | str


@dataclass(frozen=True)
class Timing:
    """The script's timings; tests pass smaller poll intervals to stay quick."""

    poll_interval: tuple[float, float] = (3.0, 8.0)  # drawn once per lifetime, like POLL_INTERVAL
    newest: int = 10  # messages read per poll (?limit=10)
    jitter: tuple[float, float] = (0.1, 0.3)  # between the PUT and the first check
    recheck: float = 0.3  # between the first and the second check
    idle_timeout: float = 300.0  # MAX_IDLE_TIME: polling seconds without a task, then exit


@dataclass(frozen=True)
class Claim:
    """One execution: WORKER won MESSAGE_ID (and ran it) at TIME (time.time())."""

    message_id: str
    worker: str
    time: float


Record = Callable[[str, str], None]
Stop = Callable[[], bool]


def _never() -> bool:
    return False


async def run_lifetime(client: DiscordClient, worker: str, channels: Channels, *, lost: set[str],
                       record: Record, timing: Timing = Timing(), stop: Stop = _never,
                       calls: Counter[str] | None = None, rng: random.Random | None = None) -> str | None:
    """One process lifetime of WORKER: READY, poll until it wins a task (or idles out or STOP()
    says so), run it, report, return. Returns the message id it ran, or None.

    LOST is the worker's lost cache (the script's /tmp file), kept by the caller across
    lifetimes; CALLS counts each protocol step (a bench's requests, before client retries).
    """
    rng = rng or random.Random()
    counted = calls if calls is not None else Counter()
    poll_interval = rng.uniform(*timing.poll_interval)

    async def post(channel: int | str, content: str) -> None:
        counted["create_message"] += 1
        await client.create_message(channel, content)

    await post(channels.worker_pool, f"**[READY]** {worker}: online and waiting")
    idle = 0.0
    while idle < timing.idle_timeout and not stop():
        task = await _poll(client, channels, timing, lost, counted, rng)
        if task is not None:
            message_id, content = task
            await post(channels.worker_pool, f"**[CLAIMED]** {worker}: task {message_id}")
            record(message_id, worker)
            await post(channels.results,
                       f"**[SUCCESS]** `{message_id}` by **{worker}**\n```\n{content[:500]}\n```")
            await post(channels.worker_pool, f"**[RESTARTING]** {worker}: task complete")
            return message_id
        await asyncio.sleep(poll_interval)
        idle += poll_interval
    if not stop():
        await post(channels.worker_pool, f"**[IDLE]** {worker}: timeout after {idle:.0f}s")
    return None


async def _poll(client: DiscordClient, channels: Channels, timing: Timing, lost: set[str],
                calls: Counter[str], rng: random.Random) -> tuple[str, str] | None:
    """One look at #task-queue: the (message id, content) this worker won, or None."""
    queue = channels.task_queue
    calls["list_messages"] += 1
    messages = await client.list_messages(queue, limit=timing.newest)
    me: str | None = None  # cached for this poll only
    for message in messages:
        message_id = str(message["id"])
        if message_id in lost:
            continue
        calls["add_reaction"] += 1
        await client.add_reaction(queue, message_id, CHECK)
        await asyncio.sleep(rng.uniform(*timing.jitter))
        if me is None:
            calls["me"] += 1
            me = str((await client.request("GET", "/users/@me"))["id"])  # not client.me(): no cache
        if await _first_reactor(client, queue, message_id, calls) not in ("", me):
            lost.add(message_id)
            continue
        await asyncio.sleep(timing.recheck)
        if await _first_reactor(client, queue, message_id, calls) not in ("", me):
            lost.add(message_id)
            continue
        calls["get_message"] += 1
        content = str((await client.get_message(queue, message_id)).get("content") or "")
        if content:
            return message_id, content
    return None


async def _first_reactor(client: DiscordClient, channel: int | str, message_id: str,
                         calls: Counter[str]) -> str:
    """The id of the first user in the ✅ list ("" if none): the script's data[0].id."""
    calls["list_reactions"] += 1
    users = await client.list_reactions(channel, message_id, CHECK)
    return str(users[0]["id"]) if users else ""


@dataclass
class Fleet:
    """COUNT original-protocol workers on BOTS ((name, token) pairs, worker i on bot i mod n),
    each restarted right after every exit, like systemd's Restart=always."""

    api_base: str
    bots: Sequence[tuple[str, str]]
    channels: Channels
    count: int
    timing: Timing = field(default_factory=Timing)
    seed: int | None = None
    claims: list[Claim] = field(default_factory=list)
    lost: dict[str, set[str]] = field(default_factory=dict)  # worker -> its lost cache
    calls: dict[str, Counter[str]] = field(default_factory=dict)  # worker -> protocol steps
    lifetimes: Counter[str] = field(default_factory=Counter)  # worker -> lifetimes started
    crashes: list[tuple[str, str]] = field(default_factory=list)  # (worker, error)
    clients: dict[str, DiscordClient] = field(default_factory=dict)  # bot name -> its client

    def __post_init__(self) -> None:
        if not self.bots or self.count < 1:
            raise ValueError("a fleet needs at least one bot and one worker")
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def worker_names(self) -> list[str]:
        """Worker i is named after its bot, with a suffix when several share one."""
        names = []
        for i in range(self.count):
            bot = self.bots[i % len(self.bots)][0]
            names.append(bot if self.count <= len(self.bots) else f"{bot}.{i // len(self.bots)}")
        return names

    def record(self, message_id: str, worker: str) -> None:
        with self._lock:
            self.claims.append(Claim(message_id, worker, time.time()))

    def snapshot(self) -> list[Claim]:
        """The claims so far (safe from any thread)."""
        with self._lock:
            return list(self.claims)

    def workers_by_task(self) -> dict[str, set[str]]:
        """Message id -> the distinct workers that ran it."""
        out: dict[str, set[str]] = {}
        for claim in self.snapshot():
            out.setdefault(claim.message_id, set()).add(claim.worker)
        return out

    def stop(self) -> None:
        """Ask every worker to stop (from any thread); ``run`` returns soon after."""
        self._stop.set()

    async def run(self, duration: float, until: Stop = _never) -> None:
        """Run the fleet until DURATION seconds have passed, UNTIL() is true or ``stop()``."""
        self._stop.clear()
        deadline = time.monotonic() + duration

        def stopping() -> bool:
            return self._stop.is_set() or time.monotonic() >= deadline or until()

        for name, token in self.bots:
            if name not in self.clients:
                self.clients[name] = DiscordClient(token, api_base=self.api_base, shared=False)
        rng = random.Random(self.seed)
        slots = [asyncio.create_task(self._slot(i, name, stopping, random.Random(rng.random())))
                 for i, name in enumerate(self.worker_names())]
        try:
            while not stopping():
                await asyncio.sleep(0.05)
        finally:
            for slot in slots:
                slot.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            for client in self.clients.values():
                await client.aclose()
            self.clients.clear()

    async def _slot(self, index: int, worker: str, stopping: Stop, rng: random.Random) -> None:
        """Worker INDEX, restarted after each lifetime until STOPPING()."""
        client = self.clients[self.bots[index % len(self.bots)][0]]
        lost = self.lost.setdefault(worker, set())
        calls = self.calls.setdefault(worker, Counter())
        while not stopping():
            self.lifetimes[worker] += 1
            try:
                await run_lifetime(client, worker, self.channels, lost=lost, record=self.record,
                                   timing=self.timing, stop=stopping, calls=calls, rng=rng)
            except DiscordError as exc:
                with self._lock:
                    self.crashes.append((worker, f"{type(exc).__name__}: {exc}"))
                await asyncio.sleep(0.5)  # systemd's RestartSec, so a failing call cannot spin

    @contextlib.contextmanager
    def running(self, duration: float = 300.0) -> Iterator[Fleet]:
        """Run the fleet on a thread of its own (its own event loop) while the block runs, for
        synchronous tests; stops it (and waits for it) when the block ends."""
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                asyncio.run(self.run(duration))
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)

        thread = threading.Thread(target=serve, name="original-protocol-fleet", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.stop()
            thread.join(30)
        if failure:
            raise failure[0]


def double_claims(claims: Sequence[Claim]) -> dict[str, set[str]]:
    """The tasks run by two or more different workers: message id -> those workers."""
    by_task: dict[str, set[str]] = {}
    for claim in claims:
        by_task.setdefault(claim.message_id, set()).add(claim.worker)
    return {task: workers for task, workers in by_task.items() if len(workers) > 1}


def summary(fleet: Fleet) -> dict[str, Any]:
    """Figures for a report: executions, distinct tasks, repeats, double claims, crashes."""
    claims = fleet.snapshot()
    runs = Counter(c.message_id for c in claims)
    return {"executions": len(claims), "tasks run": len(runs),
            "tasks run more than once": sum(n > 1 for n in runs.values()),
            "tasks run by 2+ workers": len(double_claims(claims)),
            "lifetimes": sum(fleet.lifetimes.values()), "crashes": len(fleet.crashes)}
