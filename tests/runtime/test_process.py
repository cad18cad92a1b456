"""dorch.runtime.process with real child processes: groups die, output of any size, no token leaks."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dorch.runtime.process import ChildResult, EnvError, group_alive, run_child, scrubbed_env
from tests.support.procs import agent, pid_alive, wait_for_file

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def child(
    tmp_path: Path, argv: list[str], *, stdin: bytes = b"", timeout: float = 60.0,
    cancel: asyncio.Event | None = None, grace: float = 5.0, env: dict[str, str] | None = None,
) -> ChildResult:
    return await run_child(
        argv, stdin=stdin, cwd=tmp_path, env=env if env is not None else scrubbed_env(),
        timeout=timeout, cancel=cancel or asyncio.Event(), grace=grace,
        capture_dir=tmp_path / "capture",
    )


def ready_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    ready = tmp_path / "ready"
    return scrubbed_env(extra={"FAKE_AGENT_READY": str(ready)}), ready


def test_stdout_is_the_answer_and_prompt_arrives_on_stdin(tmp_path: Path) -> None:
    prompt = "héllo `code` [model:x]\n\nsecond line\n"
    result = run(child(tmp_path, agent("echo"), stdin=prompt.encode()))
    assert result.ok and result.returncode == 0
    assert result.stdout == prompt
    assert not result.timed_out and not result.cancelled
    assert result.pid > 0 and result.duration > 0


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    env, ready = ready_env(tmp_path)

    # The agent must be set up (grandchild started) before the timeout fires, or the test
    # proves nothing; on a very loaded machine a short timeout may win, so lengthen it then.
    for timeout in (1.0, 5.0, 25.0):
        result = run(child(tmp_path, agent("grandchild", str(pidfile), "wait"),
                           timeout=timeout, env=env, grace=2.0))
        if ready.exists():
            break
    assert ready.exists(), "the agent never got going; the timeout proves nothing"
    grandchild = int(pidfile.read_text())
    assert result.timed_out and not result.cancelled and result.returncode is None
    assert not result.ok
    assert not group_alive(result.pid)
    assert not pid_alive(result.pid) and not pid_alive(grandchild)


def test_cancel_mid_run(tmp_path: Path) -> None:
    env, ready = ready_env(tmp_path)

    async def scenario() -> ChildResult:
        cancel = asyncio.Event()
        task = asyncio.create_task(child(tmp_path, agent("sleep"), cancel=cancel, env=env))
        await wait_for_file(ready)
        cancel.set()
        return await task

    result = run(scenario())
    assert result.cancelled and not result.timed_out and result.returncode is None
    assert not group_alive(result.pid)


def test_child_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    env, ready = ready_env(tmp_path)
    note = tmp_path / "signals"
    grace = 1.0

    async def scenario() -> ChildResult:
        cancel = asyncio.Event()
        task = asyncio.create_task(child(tmp_path, agent("ignore-term", str(note)),
                                         cancel=cancel, env=env, grace=grace))
        await wait_for_file(ready)
        cancel.set()
        return await task

    result = run(scenario())
    assert note.read_text() == "term\n", "the child should have seen SIGTERM once"
    assert result.cancelled
    assert not pid_alive(result.pid)
    assert result.duration >= grace


def test_grandchild_outliving_its_parent_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    result = run(child(tmp_path, agent("grandchild", str(pidfile), "exit", "stubborn"), grace=0.5))
    grandchild = int(pidfile.read_text())
    assert result.returncode == 0 and result.stdout == "parent done\n"
    assert not pid_alive(grandchild), "a stray process of the agent's group survived the task"
    assert not group_alive(result.pid)


def test_awaiting_coroutine_cancelled_kills_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    env, ready = ready_env(tmp_path)

    async def scenario() -> int:
        task = asyncio.create_task(
            child(tmp_path, agent("grandchild", str(pidfile), "wait"), env=env, grace=2.0))
        leader = int(await wait_for_file(ready))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return leader

    leader = run(scenario())
    assert not pid_alive(leader) and not pid_alive(int(pidfile.read_text()))
    assert not group_alive(leader)


def test_huge_output_is_captured_fully(tmp_path: Path) -> None:
    result = run(child(tmp_path, agent("big", "50")))
    assert result.returncode == 0
    assert len(result.stdout) == 50 * 1024 * 1024 + len("END\n")
    assert result.stdout.endswith("x\nEND\n")
    assert result.stdout_path is not None and result.stdout_path.stat().st_size == len(result.stdout)


def test_non_utf8_output_is_replaced_not_fatal(tmp_path: Path) -> None:
    result = run(child(tmp_path, agent("binary")))
    assert result.returncode == 0
    assert result.stdout == "ok \ufffd\ufffd bad \ufffd( end\n"
    assert result.stderr_tail == "err \ufffd\n"


def test_child_that_never_reads_a_large_prompt(tmp_path: Path) -> None:
    result = run(child(tmp_path, agent("noread"), stdin=b"p" * (20 * 1024 * 1024), timeout=60))
    assert result.returncode == 0 and result.stdout == "done without reading\n"
    assert not result.timed_out


def test_large_prompt_arrives_whole(tmp_path: Path) -> None:
    prompt = ("ünïcode " * 1_000_000).encode()
    result = run(child(tmp_path, agent("count"), stdin=prompt))
    assert result.stdout.strip() == str(len(prompt))


def test_stderr_tail_is_the_end_of_stderr(tmp_path: Path) -> None:
    result = run(child(tmp_path, agent("fail", "3", "the real reason")))
    assert result.returncode == 3 and not result.ok
    assert result.stderr_tail.endswith("the real reason\n")
    assert len(result.stderr_tail.encode()) <= 4096
    assert result.stdout == "partial output\n"


def test_missing_executable_is_an_error_result(tmp_path: Path) -> None:
    result = run(child(tmp_path, ["dorch-no-such-agent-cli"]))
    assert result.returncode is None and not result.ok
    assert "dorch-no-such-agent-cli" in result.error and "not found on PATH" in result.error

    result = run(child(tmp_path, [str(tmp_path / "nope" / "agent")]))
    assert "no such file" in result.error


def test_non_executable_file_is_an_error_result(tmp_path: Path) -> None:
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    result = run(child(tmp_path, [str(script)]))
    assert result.returncode is None
    assert "permission denied" in result.error


def test_missing_working_directory_is_an_error_result(tmp_path: Path) -> None:
    result = run(run_child(agent("echo"), stdin=b"", cwd=tmp_path / "gone", env=scrubbed_env(),
                           timeout=10, cancel=asyncio.Event(), capture_dir=tmp_path / "cap"))
    assert "working directory" in result.error


def test_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DORCH_SECRET_DISCORD_TOKEN", "secret-value-one")
    monkeypatch.setenv("DISCORD_TOKEN", "secret-value-two")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/dorch-worker@1.service")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("SOME_RANDOM_SETTING", "x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-for-the-agent")
    monkeypatch.setenv("LC_TIME", "C")
    env = scrubbed_env(extra={"OPENCLAW_HOME": "/tmp/oc"}, pass_env=["ANTHROPIC_API_KEY", "UNSET_X"])
    result = run(child(tmp_path, agent("env"), env=env))
    seen = json.loads(result.stdout)
    for name in ("DORCH_SECRET_DISCORD_TOKEN", "DISCORD_TOKEN", "CREDENTIALS_DIRECTORY",
                 "NOTIFY_SOCKET", "WATCHDOG_USEC", "SOME_RANDOM_SETTING", "UNSET_X"):
        assert name not in seen
    assert "secret-value" not in result.stdout
    assert seen["ANTHROPIC_API_KEY"] == "sk-ant-for-the-agent"
    assert seen["OPENCLAW_HOME"] == "/tmp/oc"
    assert seen["LC_TIME"] == "C"
    assert seen["PATH"] == os.environ["PATH"]


@pytest.mark.parametrize("name", ["DISCORD_TOKEN", "DORCH_SECRET_X", "github_token",
                                  "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_PID"])
def test_secret_names_are_refused(name: str) -> None:
    with pytest.raises(EnvError, match=name):
        scrubbed_env(pass_env=[name])
    with pytest.raises(EnvError, match=name):
        scrubbed_env(extra={name: "v"})
