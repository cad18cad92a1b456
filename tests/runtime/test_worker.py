"""The worker process on the local bus: one task per process, never twice, never lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dorch.model import State, TaskSpec
from tests.support.helpers import DorchHome, agent_command, wait_until


def executions(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [json.loads(line)["prompt"] for line in log.read_text().splitlines()]


def use_recording_agent(home: DorchHome, **worker: object) -> Path:
    log = home.root / "executions.jsonl"
    home.configure(executor={"kind": "command"},
                   executor__command={"argv": agent_command("recording_agent.py", str(log))},
                   worker=worker)
    return log


def submit(home: DorchHome, prompt: str) -> str:
    return str(home.call("submit", TaskSpec(prompt), "test"))


def test_one_task_per_process_then_exit_0(home: DorchHome) -> None:
    log = use_recording_agent(home)
    first, second = submit(home, "task one"), submit(home, "task two")
    proc = home.spawn_worker("1")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert executions(log) == ["task one"]
    done = home.call("get", first)
    assert done.state is State.SUCCEEDED and done.result.output == "done: task one\n"
    assert home.call("get", second).state is State.QUEUED


def test_idle_worker_exits_0_after_max_idle_time(home: DorchHome) -> None:
    home.configure(worker={"max_idle_time": 0.5})
    proc = home.spawn_worker("1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    (row,) = home.call("status").workers  # it left the board as a worker systemd restarts
    assert row.state == "RESTARTING" and row.tasks_done == 0


def test_bad_config_exits_78_with_the_key_named(home: DorchHome) -> None:
    home.config_path.write_text("[worker]\npoll_interval = 'often'\n")
    proc = home.spawn_worker("1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 78
    assert "poll_interval" in err and str(home.config_path) in err


def test_failed_agent_reports_error_and_stderr_tail(home: DorchHome) -> None:
    use_recording_agent(home)
    task = submit(home, "please FAIL")
    assert home.spawn_worker("1").wait(timeout=60) == 0
    view = home.call("get", task)
    assert view.state is State.FAILED
    assert "agent exploded on purpose" in view.result.stderr_tail


@pytest.mark.soak  # minutes: 300 tasks through `dorch up`
def test_eight_workers_300_tasks_each_executed_exactly_once(home: DorchHome) -> None:
    log = use_recording_agent(home, max_idle_time=2)
    prompts = [f"task {i}" for i in range(300)]
    for p in prompts:
        submit(home, p)
    with open(home.root / "up.log", "w") as out:
        up = subprocess.Popen([sys.executable, "-m", "dorch", "up", "--workers", "8"],
                              env=home.env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: home.call("status").counts.get("succeeded", 0) == 300, timeout=600,
                   what="300 tasks to succeed")
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
    ran = Counter(executions(log))
    assert sorted(ran) == sorted(prompts)
    assert [p for p, n in ran.items() if n > 1] == []
    assert up.returncode == 0


@pytest.mark.soak  # a wall-clock twin of test_worker_inprocess (real kill -9, a 1.5 s lease)
def test_kill_9_mid_task_requeues_after_the_lease_and_another_worker_completes(
    home: DorchHome,
) -> None:
    log = use_recording_agent(home, lease_seconds=1.5, heartbeat_seconds=0.3)
    task = submit(home, "HANG-ONCE please")
    victim = home.spawn_worker("1")
    started = Path(str(log) + ".started")
    wait_until(started.exists, what="the agent to start")
    victim.kill()
    victim.wait(timeout=10)
    # The reaper's parent-death signal kills the agent with its worker; if it has not yet, do it
    # as systemd's cgroup kill would.
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(started.read_text().split()[0]), signal.SIGKILL)
    rescuer = home.spawn_worker("2")
    assert rescuer.wait(timeout=60) == 0
    view = home.call("get", task)
    assert view.state is State.SUCCEEDED
    assert view.task.attempt == 2
    assert executions(log) == ["HANG-ONCE please"] * 2


def test_sigterm_mid_task_hands_it_back_at_once_without_spending_an_attempt(
    home: DorchHome,
) -> None:
    log = use_recording_agent(home, lease_seconds=30, heartbeat_seconds=1)
    task = submit(home, "HANG-ONCE please")
    worker = home.spawn_worker("1")
    wait_until(Path(str(log) + ".started").exists, what="the agent to start")
    agent_pid = int(Path(str(log) + ".started").read_text().split()[0])
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert not Path(f"/proc/{agent_pid}").exists() or _is_zombie(agent_pid)
    view = home.call("get", task)
    assert view.state is State.QUEUED and view.task.attempt == 1
    assert home.spawn_worker("2").wait(timeout=60) == 0
    view = home.call("get", task)
    assert view.state is State.SUCCEEDED and view.task.attempt == 1


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def test_cancel_while_running_stops_the_agent(home: DorchHome) -> None:
    log = use_recording_agent(home)
    task = submit(home, "SLOW job")
    worker = home.spawn_worker("1")
    wait_until(Path(str(log) + ".started").exists, what="the agent to start")
    agent_pid = int(Path(str(log) + ".started").read_text().split()[0])
    assert home.dorch("cancel", task).returncode == 0
    assert worker.wait(timeout=30) == 0
    assert home.call("get", task).state is State.CANCELLED
    assert not Path(f"/proc/{agent_pid}").exists() or _is_zombie(agent_pid)


@pytest.mark.soak  # a wall-clock twin of test_worker_inprocess (real SIGSTOP, a 1.5 s lease)
def test_a_fenced_worker_does_not_report_its_late_result(home: DorchHome) -> None:
    """A hung worker (SIGSTOP) loses its lease; when it wakes it must not report as the owner."""
    log = use_recording_agent(home, lease_seconds=1.5, heartbeat_seconds=0.3)
    task = submit(home, "HANG-ONCE please")
    hung = home.spawn_worker("1")
    started = Path(str(log) + ".started")
    wait_until(started.exists, what="the agent to start")
    hung.send_signal(signal.SIGSTOP)
    try:
        rescuer = home.spawn_worker("2")
        assert rescuer.wait(timeout=60) == 0
        view = home.call("get", task)
        assert view.state is State.SUCCEEDED and view.task.attempt == 2 and view.worker.endswith("-2")
    finally:
        hung.send_signal(signal.SIGCONT)
    _, err = hung.communicate(timeout=30)
    assert hung.returncode == 0, err
    after = home.call("get", task)  # what it did not report: the rescuer's result stands
    assert after.worker.endswith("-2") and after.result.output == view.result.output


def test_sd_notify_ready_status_and_watchdog(home: DorchHome, tmp_path: Path) -> None:
    home.configure(worker={"max_idle_time": 1.0})
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    try:
        proc = home.spawn_worker("1", NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
        messages = []
        while not any("STOPPING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert proc.wait(timeout=30) == 0
    finally:
        sock.close()
    assert messages[0].startswith("READY=1") or any(m.startswith("READY=1") for m in messages)
    assert any("WATCHDOG=1" in m for m in messages)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_idle_exits_promptly(home: DorchHome, signum: int) -> None:
    worker = home.spawn_worker("1")
    wait_until(lambda: any(w.state == "READY" for w in home.call("status").workers),
               what="the worker to be ready")
    worker.send_signal(signum)
    assert worker.wait(timeout=10) == 0
