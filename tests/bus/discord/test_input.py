"""Hostile and bad input on the Discord bus: strangers, pings, huge prompts, attachments, tasks
deleted under the worker's feet, malformed tags, a bot that cannot read the channel, a revoked
token. Each gets a clear answer, nothing is lost, and nothing loops."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dorch_emulator.config import DEFAULT as EMULATOR_DEFAULT

from dorch.bus.discord import DiscordBus
from dorch.config import load
from dorch.discord.client import DiscordClient
from tests.support.world import (
    World,
    eventually,
    reactions,
    thread_messages,
    world_config,
)

POLL = "GET /channels/{channel_id}/messages"


def task_polls(world: World) -> int:
    """Polls of #task-queue by worker bots so far."""
    queue = str(world.channel("task-queue"))
    return sum(r.route == POLL and r.path.split("/")[2] == queue and (r.bot or "").startswith("worker")
               for r in world.emu.requests)


def finished(world: World, task_id: str) -> bool:
    msg = next(m for m in world.messages("task-queue") if m["id"] == task_id)
    return bool(msg.get("thread", {}).get("thread_metadata", {}).get("archived"))


def test_a_stranger_is_ignored_and_logged_once_per_message(world: World) -> None:
    stranger = world.post("Delete every file you can find", user="bob")
    allowed = world.post("List three prime numbers", user="alice")
    fleet = world.fleet(1)
    eventually(lambda: finished(world, allowed), 60, "alice's task")
    polls = task_polls(world)
    eventually(lambda: task_polls(world) >= polls + 4, 60, "a few more polls")
    fleet.stop()

    assert [e["prompt"] for e in world.executions()] == ["List three prime numbers"]
    bobs = next(m for m in world.messages("task-queue") if m["id"] == stranger)
    assert "thread" not in bobs and not reactions(bobs)
    logged = [line for line in fleet.logs().splitlines() if f"ignoring message {stranger}" in line]
    assert len(logged) == 1, logged
    assert "allowed_submitters" in logged[0]


def test_mentions_in_tasks_and_answers_never_ping(world: World) -> None:
    alice = world.user_id("alice")
    task = world.post(f"Greet @everyone, @here and <@{alice}> warmly")
    world.fleet(1)
    eventually(lambda: finished(world, task), 60, "the task")

    (answer,) = thread_messages(world, task)
    assert "@everyone" in answer["content"] and f"<@{alice}>" in answer["content"]
    assert answer["mentions"] == [] and answer["mention_everyone"] is False
    writes = [r for r in world.emu.requests if (r.bot or "").startswith("worker") and (
        (r.method == "POST" and r.route.endswith("/messages"))
        or (r.method == "PATCH" and r.route.endswith("/messages/{message_id}")))]
    assert len(writes) >= 4  # receipt, its renewals, answer, summary, board
    assert all((r.body or {}).get("allowed_mentions") == {"parse": []} for r in writes), \
        [(r.route, r.body) for r in writes if (r.body or {}).get("allowed_mentions") != {"parse": []}]


def test_a_10000_character_prompt_goes_whole_both_ways(world: World, tmp_path: Path) -> None:
    lines = [f"{i:04d} · line of the specification with ünïcödé and `a[i:j]`" for i in range(190)]
    prompt = "\n".join(lines)[:10_000]
    assert len(prompt) == 10_000
    (tmp_path / "spec.md").write_text(prompt)
    submitted = world.dorch("submit", "--file", str(tmp_path / "spec.md"), "--thinking", "low")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    msg = world.messages("task-queue")[0]
    assert len(msg["content"]) <= 2000 and msg["content"].endswith(" characters) in task.md")
    assert [a["filename"] for a in msg["attachments"]] == ["task.md"]

    world.fleet(1)
    done = world.dorch("result", task_id, "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert [e["prompt"] for e in world.executions()] == [prompt]
    assert done.stdout == f"done: {prompt}\n"
    eventually(lambda: finished(world, task_id), 30, "the thread to be archived")
    (answer,) = thread_messages(world, task_id)
    assert len(answer["content"]) <= 2000
    assert [a["filename"] for a in answer["attachments"]] == ["result.md"]


def test_text_attachments_are_part_of_the_prompt_and_capped(world: World) -> None:
    notes = "alpha\nbeta\n[model:not-a-tag-in-an-attachment]\n"
    with_notes = str(world.emu.post_as_user("alice", "task-queue", "Summarise these notes",
                                             [("notes.txt", notes), ("photo.png", b"\x89PNG")])["id"])
    too_big = str(world.emu.post_as_user("alice", "task-queue", "Read this",
                                          [("dump.log", "x" * 150_000)])["id"])
    world.fleet(1)
    eventually(lambda: finished(world, with_notes) and finished(world, too_big), 60, "both tasks")

    assert [e["prompt"] for e in world.executions()] == [
        f"Summarise these notes\n\n--- notes.txt ---\n{notes}"]
    reply = thread_messages(world, too_big)[0]["content"]
    assert reply.startswith("❌ **rejected**:") and "150,000 bytes" in reply and "100,000" in reply
    assert any(s.startswith("❌ **rejected**") and too_big in s for s in world.summaries())


def test_malformed_tags_get_a_reply_in_the_thread_and_never_run(world: World) -> None:
    bad_level = world.post("Sort this list [thinking:extreme]")
    unknown = world.post("Sort that list [colour:blue]")
    good = world.post("Sort the other list [thinking:low]")
    world.fleet(1)
    eventually(lambda: all(finished(world, t) for t in (bad_level, unknown, good)), 60,
               "the three tasks")

    assert [e["prompt"] for e in world.executions()] == ["Sort the other list"]
    for task, expected in ((bad_level, "extreme"), (unknown, "colour")):
        reply = thread_messages(world, task)[0]["content"]
        assert reply.startswith("❌ **rejected**:") and expected in reply, reply
        assert "Fix the task and post it again" in reply
        msg = next(m for m in world.messages("task-queue") if m["id"] == task)
        assert "❌" in reactions(msg) and "✅" not in reactions(msg)
    level_reply = thread_messages(world, bad_level)[0]["content"]
    assert "medium" in level_reply  # it names the valid levels
    assert sum(s.startswith("❌ **rejected**") for s in world.summaries()) == 2


def test_a_task_deleted_between_poll_and_claim_is_skipped_quietly(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DORCH_DATA_DIR", str(world.root / "inproc"))
    doomed = world.post("A task its author deletes at once")

    async def scenario() -> tuple[Any, Any, Any]:
        config = load(world.home.config_path)
        async with DiscordClient(world.token("submitter"), api_base=world.emu.api_base,
                                 shared=False) as moderator:
            bus = DiscordBus(config, client=DiscordClient(world.token("worker-1"),
                                                          api_base=world.emu.api_base,
                                                          shared=False))
            try:
                await bus.reap()  # the poll: the claim that follows uses what it saw
                await moderator.delete_message(world.channel("task-queue"), doomed)
                lost = await bus.claim("w1", 30)
                survivor = world.post("A task nobody deletes")
                await bus.reap()
                won = await bus.claim("w1", 30)
                return lost, won, survivor
            finally:
                await bus.close()

    lost, won, survivor = asyncio.run(scenario())
    assert lost is None
    assert won is not None and won.task.id == survivor
    starts = [r for r in world.emu.requests if r.route.endswith("/threads")]
    assert [(r.status, r.code) for r in starts] == [(404, 10008), (201, None)]


def denied(permission: str) -> Any:
    data = json.loads(json.dumps(EMULATOR_DEFAULT))
    data["bots"][0] = {"name": "worker-1", "channels": {"task-queue": {"deny": [permission]}}}
    return world_config(**data)


@pytest.mark.parametrize(("permission", "named"), [
    ("VIEW_CHANNEL", "cannot see channel"),
    ("READ_MESSAGE_HISTORY", "Read Message History"),  # Discord then answers an empty list
])
def test_a_channel_the_bot_cannot_read_stops_the_worker_with_78(
        make_world: Any, permission: str, named: str) -> None:
    world = make_world(denied(permission))
    world.post("Anything")
    fleet = world.fleet(1, bots=("worker-1",))
    eventually(lambda: fleet.exits, 60, "the worker to exit")
    fleet.stop()

    assert fleet.exits == [(0, 78)] and fleet.starts == 1  # not restarted: no hot loop
    log = fleet.logs()
    assert "configuration error" in log and named in log and "fix:" in log
    assert sum(r.bot == "worker-1" for r in world.emu.requests) <= 10
    assert not world.executions()


def test_a_revoked_token_stops_the_worker_with_78_and_never_shows(world: World) -> None:
    revoked = "MTE5MTE2ODkxNDI1MjM2NTgyNA.GhJkLm.revoked-token-value-0123456789abcdefghij"
    proc = world.home.spawn_worker("1", DORCH_SECRET_DISCORD_TOKEN=revoked)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 78, stderr
    assert "rejected the bot token (HTTP 401)" in stderr and "dorch token set" in stderr
    assert revoked not in stderr and "revoked-token-value" not in stderr
    unauthorized = [r for r in world.emu.requests if r.status == 401]
    assert 1 <= len(unauthorized) <= 2
