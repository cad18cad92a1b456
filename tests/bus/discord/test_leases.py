"""Leases on the Discord bus: a worker that hangs is fenced (its agent stopped, its late answer
never posted), a task whose workers keep dying is dead after max_attempts, failures and timeouts
report their error, and dorch's own posts are never taken for tasks."""

from __future__ import annotations

import contextlib
import os
import signal

from dorch.bus.discord import formats
from tests.support.procs import pid_alive
from tests.support.world import (
    World,
    eventually,
    reactions,
    started_agents,
    thread_messages,
    worker_of,
)


def results_in(world: World, task_id: str) -> list[str]:
    """The answers posted in TASK_ID's thread ([] while nobody has claimed it)."""
    claimed = any(m["id"] == task_id and "thread" in m for m in world.messages("task-queue"))
    return [m["content"] for m in thread_messages(world, task_id)
            if formats.RESULT.match(m["content"])] if claimed else []


def next_attempt(world: World, task_id: str) -> str | None:
    for note in thread_messages(world, task_id):
        if found := formats.REQUEUE_NOTE.match(note["content"]):
            return formats.parse_link(found["link"])[2]  # type: ignore[index]
    return None


def test_a_hung_worker_is_fenced_and_never_posts_its_late_answer(world: World) -> None:
    world.configure(worker={"lease_seconds": 4, "heartbeat_seconds": 1})
    task = world.post("Refactor the parser HANG-ONCE")
    fleet = world.fleet(2)
    (hung_agent,) = eventually(lambda: started_agents(world), 60, "the agent to start")
    hung_worker = worker_of(hung_agent)
    os.kill(hung_worker, signal.SIGSTOP)  # hangs: its lease is no longer renewed
    try:
        retry = eventually(lambda: next_attempt(world, task), 60, "the task to be re-queued")
        eventually(lambda: results_in(world, retry), 60, "attempt 2's answer")
    finally:
        os.kill(hung_worker, signal.SIGCONT)
    eventually(lambda: not pid_alive(hung_agent), 30, "the fenced worker to stop its agent")
    eventually(lambda: "lease lost to another worker; result discarded" in fleet.logs(), 30,
               "the fenced worker to give up")
    fleet.stop()

    assert results_in(world, task) == []  # the late answer was never posted
    (answer,) = results_in(world, retry)
    assert answer.startswith("🏁 **succeeded**") and "attempt 2/3" in answer
    assert len(world.summaries()) == 1
    old = next(m for m in world.messages("task-queue") if m["id"] == task)
    assert "♻" in "".join(reactions(old))


def test_a_task_whose_workers_keep_dying_is_dead_after_max_attempts(world: World) -> None:
    world.configure(worker={"lease_seconds": 4, "heartbeat_seconds": 1, "max_attempts": 2})
    task = world.dorch("submit", "Crunch the numbers SLOW").stdout.strip()
    world.fleet(1)
    agents = []
    try:
        for attempt in (1, 2):
            agents = eventually(lambda n=attempt: len(started_agents(world)) >= n and
                                started_agents(world), 90, f"attempt {attempt} to start")
            os.kill(worker_of(agents[-1]), signal.SIGKILL)  # the worker dies mid-task
        done = world.dorch("result", task, "--wait", "--timeout", "90")
    finally:
        for agent in agents:
            if pid_alive(agent):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(agent, signal.SIGKILL)

    assert done.returncode == 1 and f"task {task} dead" in done.stderr, done.stderr
    assert "gave up after attempt 2 of 2" in done.stderr
    retry = next_attempt(world, task)
    assert retry is not None
    notes = [m["content"] for m in thread_messages(world, retry)]
    assert any(n.startswith("☠️ **dead**: gave up after attempt 2 of 2") for n in notes), notes
    (summary,) = world.summaries()
    assert summary.startswith("☠️ **dead** · https://discord.com/channels/") and retry in summary
    last = next(m for m in world.messages("task-queue") if m["id"] == retry)
    assert "☠" in "".join(reactions(last))


def test_failures_and_timeouts_report_the_error_and_the_stderr_tail(world: World) -> None:
    world.configure(worker={"task_timeout": 3, "stop_grace": 1})
    failing = world.post("Try this and FAIL")
    endless = world.post("This never ends SLOW")
    world.fleet(2)
    for task in (failing, endless):
        done = world.dorch("result", task, "--wait", "--timeout", "60")
        assert done.returncode == 1, done.stderr

    (failed,) = results_in(world, failing)
    assert failed.startswith("❌ **failed** in ") and "\nerror: " in failed
    assert "agent exploded on purpose" in failed  # the stderr tail
    shown = world.dorch("result", failing).stderr
    assert " exited with code 3" in shown and "--- stderr (tail) ---" in shown
    (timed_out,) = results_in(world, endless)
    assert timed_out.startswith("⏱️ **timed_out** in ")
    states = sorted(s.split(" · ")[0] for s in world.summaries())
    assert states == ["⏱️ **timed_out**", "❌ **failed**"]
    for task in (failing, endless):
        msg = next(m for m in world.messages("task-queue") if m["id"] == task)
        assert msg["thread"]["name"].startswith("❌ ")  # the outcome, on the archived thread


def test_dorch_posts_in_the_task_channel_are_never_taken_for_tasks(world: World) -> None:
    fakes = ["🏁 **succeeded** in 1.0 s · **vm-9**\ndone: something",
             "🔒 claimed by **vm-9** on vm · attempt 1/3 · lease until <t:1796309001:R>",
             "🟢 **vm-9** READY · vm · dorch 0.1.0 · 3 tasks done · <t:1796309001:R>"]
    ignored = [world.post(text, user="submitter") for text in fakes]  # a trusted bot
    real = world.post("A real task")
    world.fleet(1)
    eventually(lambda: world.summaries(), 60, "the real task's result")

    assert [e["prompt"] for e in world.executions()] == ["A real task"]
    queue = {m["id"]: m for m in world.messages("task-queue")}
    assert all("thread" not in queue[i] for i in ignored) and "thread" in queue[real]
