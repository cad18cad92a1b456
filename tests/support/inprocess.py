"""Workers built in process (arq's pattern) on virtual time: the fast tier of the worker tests.

- ``InProcess`` (the ``inprocess`` fixture of tests/runtime/test_worker_inprocess.py): a dorch
  home, a ``VirtualTimeLoop`` and ``worker(name)``, a real ``dorch.runtime.worker.Worker`` with
  its own connection to the real local queue (as a separate process would have), the loop's time
  as its clock, a ``ScriptedAgent`` and a ``Link`` between it and the bus.
- ``ScriptedAgent``: an in-process executor; a prompt's ``WORK=<seconds>`` is how long its
  agent works (virtual seconds, default 1); every run is recorded in ``Runs``.
- ``Link``: the worker's way to the bus, which a test can cut (``down``: every call raises
  BusError, an outage) or hold (``hold("finish")``: that call waits until the test releases it,
  a worker that hangs at that point).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from dorch import config as dconfig
from dorch.bus import Bus, BusError
from dorch.bus.local import LocalBus
from dorch.executors import ExecRequest
from dorch.model import Result, State, TaskSpec
from dorch.runtime.worker import Worker
from tests.support.helpers import DorchHome
from tests.support.virtual_time import VirtualTimeLoop

WORK = re.compile(r"\bWORK=([0-9.]+)")
# Realistic settings, in virtual seconds
WORKER = {"poll_interval": 1.0, "lease_seconds": 30, "heartbeat_seconds": 10,
          "max_idle_time": 600, "max_attempts": 3, "task_timeout": 3600, "stop_grace": 2}


@dataclass
class Run:
    """One execution of an agent."""

    worker: str
    prompt: str
    started: float
    ended: float | None = None
    stopped: bool = False  # the worker set its cancel event (cancel, fencing, stop)


@dataclass
class Runs:
    """Every execution, in order; ``until`` waits for one to satisfy a predicate."""

    all: list[Run] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def note(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[list[Run]], Any]) -> Any:
        async with self._changed:
            return await self._changed.wait_for(lambda: predicate(self.all))

    def of(self, worker: str) -> list[Run]:
        return [r for r in self.all if r.worker == worker]


class ScriptedAgent:
    """An executor whose agent works WORK= virtual seconds, or until it is cancelled."""

    name = "scripted"

    def __init__(self, worker: str, runs: Runs, clock: Callable[[], float]) -> None:
        self.worker = worker
        self.runs = runs
        self.clock = clock

    async def run(self, request: ExecRequest, cancel: asyncio.Event) -> Result:
        found = WORK.search(request.prompt)
        seconds = float(found.group(1)) if found else 1.0
        run = Run(self.worker, request.prompt, self.clock())
        self.runs.all.append(run)
        await self.runs.note()
        try:
            await asyncio.wait_for(cancel.wait(), seconds)
            run.stopped = True
            result = Result(State.CANCELLED, error="cancelled")  # as the real executors say
        except TimeoutError:
            result = Result(State.SUCCEEDED, output=f"done: {request.prompt}\n")
        run.ended = self.clock()
        await self.runs.note()
        result.duration = run.ended - run.started
        return result


class Link:
    """A worker's way to the bus: calls go through unless it is down or the call is held."""

    def __init__(self, bus: LocalBus) -> None:
        self.bus = bus
        self.down = False
        self.calls: list[tuple[str, Any]] = []  # (method, what it returned) of calls that went through
        self.failed: list[str] = []  # calls refused while down
        self._held: dict[str, asyncio.Event] = {}

    def hold(self, method: str) -> asyncio.Event:
        """From now on, calls of METHOD wait until the returned event is set."""
        gate = self._held[method] = asyncio.Event()
        return gate

    def results(self, method: str) -> list[Any]:
        return [result for name, result in self.calls if name == method]

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.bus, name)
        if not asyncio.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            if name in self._held:
                await self._held[name].wait()
            if self.down:
                self.failed.append(name)
                raise BusError(f"{name}: the bus cannot be reached (the test cut the link)")
            result = await target(*args, **kwargs)
            self.calls.append((name, result))
            return result

        return call


@dataclass
class Member:
    """One in-process worker and what the test holds of it."""

    worker: Worker
    link: Link

    def run(self) -> asyncio.Task[int]:
        """Start the worker's life (``Worker.run``) as a task: its exit code."""
        return asyncio.get_running_loop().create_task(self.worker.run())


class InProcess:
    """A dorch home on the local bus, on virtual time, with workers built in process."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.home = DorchHome(root)
        self.home.configure(worker=dict(WORKER))
        for name, value in self.home.env().items():
            if name.startswith("DORCH_"):
                monkeypatch.setenv(name, value)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "STATE_DIRECTORY", "INVOCATION_ID"):
            monkeypatch.delenv(name, raising=False)
        self.loop = VirtualTimeLoop()
        self.clock = self.loop.time
        self.runs = Runs()  # created outside the loop: its Condition binds on first use
        self.buses: list[LocalBus] = []
        self.bus = self.open_bus()  # the test's own connection (the CLI's, say)

    def open_bus(self) -> LocalBus:
        bus = LocalBus(self.home.queue, clock=self.clock)
        self.buses.append(bus)
        return bus

    def worker(self, name: str, **settings: Any) -> Member:
        """A Worker named NAME with its own queue connection, agent and link; SETTINGS override
        [worker] keys (e.g. max_idle_time)."""
        raw = {k: dict(v) for k, v in self.home.settings.items()}
        raw["worker"].update(settings)
        link = Link(self.open_bus())
        worker = Worker(dconfig.build(raw), cast(Bus, link), ScriptedAgent(name, self.runs, self.clock),
                        name, clock=self.clock)
        return Member(worker, link)

    async def submit(self, prompt: str) -> str:
        return await self.bus.submit(TaskSpec(prompt), "test")

    def drive(self, scenario: Callable[[], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            return await scenario()

        return self.loop.drive(main())

    def close(self) -> None:
        for bus in self.buses:
            self.loop.run_until_complete(bus.close())
        self.loop.close()
