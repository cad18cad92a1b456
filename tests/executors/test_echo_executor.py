"""The `echo` executor: the prompt back, a cancellable simulated delay, the task timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dorch.config import build
from dorch.executors import ExecRequest
from dorch.executors.echo import EchoExecutor
from dorch.model import Result, State


def req(prompt: str = "hello `world`\n\nü", timeout: float = 60.0) -> ExecRequest:
    return ExecRequest(prompt=prompt, model=None, thinking=None, workspace=Path("/nonexistent"),
                       timeout=timeout, state_dir=Path("/nonexistent"))


def test_returns_the_prompt_exactly() -> None:
    result = asyncio.run(EchoExecutor().run(req(), asyncio.Event()))
    assert result.state is State.SUCCEEDED
    assert result.output == "hello `world`\n\nü"


def test_delay_from_config() -> None:
    ex = EchoExecutor.from_config(build({"executor": {"kind": "echo", "echo": {"delay": 0.2}}}))
    assert ex.delay == 0.2
    result = asyncio.run(ex.run(req(), asyncio.Event()))
    assert result.state is State.SUCCEEDED and result.duration >= 0.2


def test_cancel_during_delay() -> None:
    async def scenario() -> Result:
        cancel = asyncio.Event()
        task = asyncio.create_task(EchoExecutor(delay=600).run(req(), cancel))
        await asyncio.sleep(0)  # let it start waiting
        cancel.set()
        return await asyncio.wait_for(task, 30)

    result = asyncio.run(scenario())
    assert result.state is State.CANCELLED and result.output == ""


def test_already_cancelled() -> None:
    cancel = asyncio.Event()
    cancel.set()
    assert asyncio.run(EchoExecutor().run(req(), cancel)).state is State.CANCELLED


def test_delay_longer_than_timeout_times_out() -> None:
    result = asyncio.run(EchoExecutor(delay=600).run(req(timeout=0.1), asyncio.Event()))
    assert result.state is State.TIMED_OUT and "0.1 s" in result.error
