"""Whole bytes end to end: a 300,000-character prompt submitted from a file reaches the agent
byte for byte, and its 5 MB answer comes back from `dorch result` byte for byte (the emulator's
CDN sends attachments in chunks over time, as Discord's does)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.support.helpers import DORCH
from tests.support.world import TOKEN_ENV, World, thread_messages

PROMPT_CHARS = 300_000
ANSWER_BYTES = 5_000_000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def long_prompt(alice: int) -> str:
    lines = [f"ANSWER_BYTES={ANSWER_BYTES}"] + [
        f"{i:05d} · line of the specification with ünïcödé, <@{alice}>, @everyone and `code`"
        for i in range(PROMPT_CHARS // 60)]
    prompt = "\n".join(lines)[:PROMPT_CHARS]
    return prompt[:-1] + "x" if prompt[-1].isspace() else prompt


def test_a_300000_character_prompt_and_a_5_mb_answer_arrive_byte_identical(
        world: World, tmp_path: Path) -> None:
    world.configure(worker={"task_timeout": 120})
    prompt = long_prompt(world.user_id("alice"))
    assert len(prompt) == PROMPT_CHARS
    spec = tmp_path / "spec.md"
    spec.write_text(prompt, encoding="utf-8")
    submitted = world.dorch("submit", "--file", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    (task,) = world.messages("task-queue")
    assert [(a["filename"], a["size"]) for a in task["attachments"]] == [("task.md", len(prompt.encode()))]

    world.fleet(1)
    done = subprocess.run([DORCH, "result", task_id, "--wait", "--timeout", "150"], capture_output=True,
                          env=world.home.env(**{TOKEN_ENV: world.token("submitter")}), timeout=240,
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]

    (execution,) = world.executions()
    received = execution["prompt"].encode("utf-8", "surrogateescape")
    assert (len(received), execution["sha256"]) == (len(spec.read_bytes()), sha256(spec.read_bytes())), \
        f"the agent got {len(received):,} of {len(spec.read_bytes()):,} bytes"
    printed = (world.executions_log.parent / (world.executions_log.name + ".answer")).read_bytes()
    assert len(printed) >= ANSWER_BYTES
    assert (len(done.stdout), sha256(done.stdout)) == (len(printed), sha256(printed)), \
        f"`dorch result` printed {len(done.stdout):,} of {len(printed):,} bytes"
    (answer,) = thread_messages(world, task_id)
    assert [(a["filename"], a["size"]) for a in answer["attachments"]] == [("result.md", len(printed))]


def test_a_long_task_re_posted_after_a_squat_reaches_the_agent_whole(world: World, tmp_path: Path) -> None:
    prompt = long_prompt(world.user_id("alice")).replace(f"ANSWER_BYTES={ANSWER_BYTES}", "squatted")
    spec = tmp_path / "spec.md"
    spec.write_text(prompt, encoding="utf-8")
    submitted = world.dorch("submit", "--file", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    world.emu.start_thread_as_user("bob", "task-queue", task_id, "mine")  # before any worker

    world.fleet(1)
    done = subprocess.run([DORCH, "result", task_id, "--wait", "--timeout", "150"], capture_output=True,
                          env=world.home.env(**{TOKEN_ENV: world.token("submitter")}), timeout=240,
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    (execution,) = world.executions()
    assert execution["sha256"] == sha256(spec.read_bytes())
    assert done.stdout == f"done: {prompt}\n".encode()
    copies = [m for m in world.messages("task-queue") if m["id"] != task_id]
    assert [[(a["filename"], a["size"]) for a in m["attachments"]] for m in copies] == [
        [("task.md", len(spec.read_bytes()))]]
