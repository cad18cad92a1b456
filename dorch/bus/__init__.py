"""The bus contract: how workers and the CLI see a queue, whether it is SQLite or Discord.

The types it speaks (tasks, claims, results, views) are the domain model's (``dorch.model``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from dorch.errors import ConfigError, DorchError
from dorch.model import Claim, Lease, Result, Status, TaskSpec, TaskView, WorkerView

if TYPE_CHECKING:
    from dorch.config import Config


class BusError(DorchError):
    """The bus cannot be used right now (exit 75: try again later)."""


class BusConfigError(BusError, ConfigError):
    """The bus cannot work as configured: bad token, missing channel (exit 78: do not retry)."""


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
