"""Executors run one task's agent as a child process and turn what it did into a Result.

Every executor goes through dorch.runtime.process.run_child: scrubbed environment (never a token), its own
process group, a timeout, and the whole group killed on cancel, timeout or stop.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dorch.errors import ConfigError

if TYPE_CHECKING:
    from dorch.config import Config
    from dorch.model import Result
    from dorch.runtime.sandbox import Sandbox


@dataclass(frozen=True)
class ExecRequest:
    prompt: str
    model: str | None
    thinking: str | None
    workspace: Path          # the task's own directory, created by the worker; the agent's cwd
    timeout: float           # seconds; 0 = none
    state_dir: Path          # the worker's state dir (e.g. OPENCLAW_HOME lives under it)
    extra_env: dict[str, str] = field(default_factory=dict)
    sandbox: Sandbox | None = None   # how to isolate the agent (dorch.runtime.sandbox); None: not at all
    # [executor] secrets, looked up once at the worker's start: only the agent's environment
    # gets them (under their names), never a log line, argv or repr
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


class Executor(Protocol):
    name: str

    async def run(self, request: ExecRequest, cancel: asyncio.Event) -> Result:
        """Run the agent. When ``cancel`` is set, kill it and return a CANCELLED result."""
        ...


class ExecutorConfigError(ConfigError):
    """The executor cannot run as configured (e.g. openclaw not installed): exit 78."""


def make_executor(config: Config) -> Executor:
    kind = config.values["executor"]["kind"]
    settings: dict[str, Any] = config.values["executor.openclaw"]
    if not kind:
        kind = "openclaw" if (settings["path"] or shutil.which("openclaw")) else ""
    if kind == "echo":
        from dorch.executors.echo import EchoExecutor

        return EchoExecutor.from_config(config)
    if kind == "command":
        from dorch.executors.command import CommandExecutor

        return CommandExecutor.from_config(config)
    if kind == "openclaw":
        from dorch.executors.openclaw import OpenClawExecutor

        return OpenClawExecutor.from_config(config)
    raise ExecutorConfigError(
        "no executor configured and `openclaw` is not on PATH; install OpenClaw "
        "(see README, Executors) or set [executor] kind = \"command\" or \"echo\""
    )
