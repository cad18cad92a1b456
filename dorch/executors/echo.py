"""The ``echo`` executor: the answer is the prompt. For the demo and tests.

It runs in-process, not as a child: there is no agent to isolate, and the worker is already a
fresh process per task, so a child would only add start-up time to every demo task and to the
many-task tests. ``[executor.echo] delay`` simulates work; it honours cancel and the task
timeout like a real agent would.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from dorch.model import Result, State

if TYPE_CHECKING:
    from dorch.config import Config
    from dorch.executors import ExecRequest


class EchoExecutor:
    name = "echo"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    @classmethod
    def from_config(cls, config: Config) -> EchoExecutor:
        return cls(delay=float(config.values["executor.echo"]["delay"]))

    async def run(self, request: ExecRequest, cancel: asyncio.Event) -> Result:
        started = time.monotonic()
        limit = request.timeout if request.timeout > 0 else float("inf")
        wait = min(self.delay, limit)
        if cancel.is_set():
            return Result(State.CANCELLED, error="cancelled", duration=0.0)
        if wait > 0:
            try:
                await asyncio.wait_for(cancel.wait(), wait)
            except TimeoutError:
                pass
            else:
                return Result(State.CANCELLED, error="cancelled",
                              duration=time.monotonic() - started)
        if self.delay > limit:
            return Result(State.TIMED_OUT, error=f"timed out after {request.timeout:g} s",
                          duration=time.monotonic() - started)
        return Result(State.SUCCEEDED, output=request.prompt, duration=time.monotonic() - started)
