"""The bus contract: how workers and the CLI see a queue, whether it is SQLite or Discord.

Lifecycle: queued -> claimed(running) -> succeeded | failed | timed_out | cancelled; an expired
lease (worker died or hung) makes the task ``lost`` and queues it again as attempt k+1, or
``dead`` after ``max_attempts``. ``release`` hands a task back without spending an attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from dorch.task import TaskSpec

if TYPE_CHECKING:
    from dorch.config import Config


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    DEAD = "dead"

    @property
    def finished(self) -> bool:
        return self not in (State.QUEUED, State.RUNNING)


class Lease(StrEnum):
    """What a heartbeat learns about a claim."""

    HELD = "held"            # keep going
    CANCELLED = "cancelled"  # the user cancelled: stop the agent, report cancelled
    LOST = "lost"            # fenced (lease expired and taken): stop, report nothing


class BusError(Exception):
    """The bus cannot be used right now (exit 75: try again later)."""

    exit_code = 75


class BusConfigError(BusError):
    """The bus cannot work as configured: bad token, missing channel (exit 78: do not retry)."""

    exit_code = 78


@dataclass(frozen=True)
class Task:
    id: str
    spec: TaskSpec
    attempt: int = 1
    submitter: str = ""
    submitted_at: float = 0.0


@dataclass(frozen=True)
class Claim:
    """A worker's lease on a task. ``token`` fences: only the holder of the current one may finish."""

    task: Task
    worker: str
    token: str
    lease_until: float


@dataclass
class Result:
    """The outcome of one attempt, as the worker reports it."""

    state: State
    output: str = ""
    error: str = ""
    stderr_tail: str = ""
    duration: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskView:
    """A task as the CLI shows it: its spec, where it stands, and its result once finished."""

    task: Task
    state: State
    worker: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    result: Result | None = None
    url: str = ""


@dataclass
class WorkerView:
    worker: str
    state: str          # READY | RUNNING | RESTARTING | STOPPED; LOST: its task was taken back
    task_id: str = ""
    host: str = ""
    pid: int = 0
    version: str = ""
    tasks_done: int = 0
    updated_at: float = 0.0


@dataclass
class Delivery:
    """A write waiting in this host's outbox (Discord bus): a submission, a result, a requeue."""

    id: int
    kind: str           # submit | result | requeue
    what: str           # one line for people
    created: float
    tries: int
    last_error: str = ""
    failed: bool = False  # gave up (retrying cannot help); kept for inspection


@dataclass
class Status:
    counts: dict[str, int]
    running: list[TaskView]
    recent: list[TaskView]
    dead: list[TaskView]
    workers: list[WorkerView]
    deliveries: list[Delivery] = field(default_factory=list)
    error: str = ""     # the bus could not be read (only the local part is shown)

    @property
    def pending_delivery(self) -> int:
        return len(self.deliveries)


class Bus(Protocol):
    """Implemented by dorch.bus.local.LocalBus and dorch.bus.discord.DiscordBus."""

    wait_interval: float  # s between looks at a task while a command waits for its result

    async def submit(self, spec: TaskSpec, submitter: str = "") -> str: ...
    async def claim(self, worker: str, lease_seconds: float) -> Claim | None: ...
    async def heartbeat(self, claim: Claim, lease_seconds: float) -> Lease: ...
    async def finish(self, claim: Claim, result: Result) -> bool: ...
    async def release(self, claim: Claim) -> None: ...
    async def reap(self, max_attempts: int) -> int: ...
    async def cancel(self, task_id: str) -> bool: ...
    async def get(self, task_id: str) -> TaskView | None: ...
    async def status(self, recent: int = 10) -> Status: ...
    async def clear(self) -> int: ...
    async def report_worker(self, view: WorkerView) -> None: ...
    async def close(self) -> None: ...


def open_bus(config: Config) -> Bus:
    """The bus the configuration names. Imports only that bus's module (worker start-up cost)."""
    if config.bus_kind == "local":
        from dorch.bus.local import LocalBus

        return LocalBus(config.local_path(), max_attempts=config.worker["max_attempts"])
    if config.bus_kind == "discord":
        from dorch.bus.discord import DiscordBus

        return DiscordBus(config)
    raise BusConfigError(
        f"bus kind {config.bus_kind!r} is not available in this version; use kind = \"local\""
    )
