"""The user's commands on the Discord bus: 🛑 and `dorch cancel`, `dorch status`, `dorch watch`
and `dorch queue clear`, against real workers and the emulator."""

from __future__ import annotations

import json
import os
import socket

from tests.support.world import World, eventually, started_agents, thread_messages

BULK = "POST /channels/{channel_id}/messages/bulk-delete"
DELETE = "DELETE /channels/{channel_id}/messages/{message_id}"


def archived(world: World, task_id: str) -> bool:
    msg = next((m for m in world.messages("task-queue") if m["id"] == task_id), {})
    return bool(msg.get("thread", {}).get("thread_metadata", {}).get("archived"))




def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_stop_reaction_cancels_a_queued_task_only_from_an_allowed_user(world: World) -> None:
    stopped = world.post("Never run this one")
    world.emu.react_as_user("alice", "task-queue", stopped, "🛑")
    ignored = world.post("Run this one: the 🛑 is from a stranger")
    world.emu.react_as_user("bob", "task-queue", ignored, "🛑")
    world.fleet(1)
    eventually(lambda: archived(world, stopped) and archived(world, ignored), 60, "both tasks")

    assert [e["prompt"] for e in world.executions()] == ["Run this one: the 🛑 is from a stranger"]
    note = thread_messages(world, stopped)[0]["content"]
    assert note.startswith("🛑 **cancelled** before it started (requested by a 🛑 reaction)")
    result = world.dorch("result", stopped)
    assert result.returncode == 1 and "cancelled" in result.stderr
    cancelled = [s for s in world.summaries() if s.startswith("🛑 **cancelled**")]
    assert len(cancelled) == 1 and stopped in cancelled[0], world.summaries()
    assert "before it started" in cancelled[0]
    status = json.loads(world.dorch("status", "--json").stdout)
    assert status["counts"]["cancelled"] == 1 and status["counts"]["succeeded"] == 1


def test_cancel_a_running_task_by_command_and_by_reaction(world: World) -> None:
    by_command = world.dorch("submit", "Work on this for ages SLOW").stdout.strip()
    by_reaction = world.post("Work on that for ages SLOW")
    world.fleet(2)
    eventually(lambda: len(started_agents(world)) == 2, 60, "both agents to start")
    agents = started_agents(world)

    cancelled = world.dorch("cancel", by_command)
    assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout
    world.emu.react_as_user("alice", "task-queue", by_reaction, "🛑")
    for task_id in (by_command, by_reaction):
        done = world.dorch("result", task_id, "--wait", "--timeout", "60")
        assert done.returncode == 1 and f"task {task_id} cancelled" in done.stderr, done.stderr
    eventually(lambda: not any(alive(p) for p in agents), 30, "the agents to be stopped")
    assert any(s.startswith("🛑 **cancelled**") for s in world.summaries())

    again = world.dorch("cancel", by_command)
    assert again.returncode == 1 and "cannot be cancelled" in again.stderr


def test_status_and_watch_show_queue_running_tasks_and_the_board(world: World) -> None:
    for n in (1, 2):
        world.post(f"Long task {n} SLOW")
    fleet = world.fleet(2)
    eventually(lambda: len(started_agents(world)) == 2, 60, "two tasks to run")
    for n in (1, 2, 3):
        world.post(f"Waiting task {n}")
    eventually(lambda: sum("RUNNING" in m["content"] for m in world.messages("worker-pool")) == 2,
               30, "the board to show both workers running")

    status = world.dorch("status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["bus"] == "discord" and data["error"] is None
    assert data["counts"]["running"] == 2 and data["counts"]["queued"] == 3
    workers = {r["worker"] for r in data["running"]}
    assert len(workers) == 2 and all(workers)
    assert {w["state"] for w in data["workers"]} == {"RUNNING"}
    assert {w["worker"] for w in data["workers"]} == workers
    text = world.dorch("status").stdout
    assert "2 running" in text and "3 queued" in text and "Long task 1" in text
    assert all(w in text for w in workers)
    running = text.split("running:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    column = running[0].index("WORKER")  # 19-digit task ids keep the columns lined up
    assert sorted(row[column:].split()[0] for row in running[1:]) == sorted(workers), text
    board = text.split("workers:\n", 1)[1].splitlines()
    host = board[0].index("HOST")
    assert {row[host:].split()[0] for row in board[1:]} == {socket.gethostname()}, text

    watched = world.dorch("watch", "--count", "2", "--interval", "0.5")
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.count("dorch watch · discord bus") == 2
    assert watched.stdout.count("2 running") == 2
    stream = world.dorch("watch", "--json", "--count", "2", "--interval", "0.2")
    assert [json.loads(line)["counts"]["queued"] for line in stream.stdout.splitlines()] == [3, 3]
    fleet.stop()


def test_queue_clear_removes_only_unclaimed_tasks_asking_first(world: World) -> None:
    running = world.post("Busy with this SLOW")
    world.fleet(1)
    eventually(lambda: started_agents(world), 60, "the worker to be busy")
    young = [world.post(f"Young task {n}") for n in range(3)]

    refused = world.dorch("queue", "clear")  # no terminal to ask on
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(world.messages("task-queue")) == 4

    cleared = world.dorch("queue", "clear", "--yes")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.strip() == "removed 3 queued task(s)"
    assert [m["id"] for m in world.messages("task-queue")] == [running]
    assert [(r.status) for r in world.emu.requests if r.route == BULK] == [204]
    assert world.dorch("result", young[0]).returncode == 1


def test_queue_clear_deletes_tasks_older_than_14_days_one_by_one(world: World) -> None:
    old = [world.post(f"Old task {n}") for n in range(2)]
    world.emu.advance_clock(15 * 86400)  # Discord's clock: older than 14 days, no bulk delete
    young = world.post("Young task")
    cleared = world.dorch("queue", "clear", "--yes")
    assert cleared.stdout.strip() == "removed 3 queued task(s)", cleared.stderr
    assert world.messages("task-queue") == []
    # by this machine's clock all three are young: Discord refuses the bulk delete, so one by one
    assert [(r.status, r.code) for r in world.emu.requests if r.route == BULK] == [(400, 50034)]
    singles = {r.path.rsplit("/", 1)[1] for r in world.emu.requests
               if r.route == DELETE and r.status == 204}
    assert singles == {*old, young}


def test_waiting_for_a_result_costs_the_bot_about_one_request_a_second(world: World) -> None:
    task = world.post("Work on this for ages SLOW")
    world.fleet(1)
    eventually(lambda: len(started_agents(world)) == 1, 60, "the agent to start")
    mark = len(world.emu.requests)
    waited = world.dorch("result", task, "--wait", "--timeout", "8")
    assert waited.returncode == 1 and "not finished within 8" in waited.stderr, waited.stderr
    looks = [r for r in world.emu.requests[mark:] if r.bot == "submitter"]
    # a look is two GETs (the task message, its thread) every 2 s: about 10 in 8 s, not 32
    assert 4 <= len(looks) <= 14, [(r.route, round(r.time, 1)) for r in looks]
