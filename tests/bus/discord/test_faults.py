"""When things fail: workers killed with SIGKILL mid-task, and a one-minute Discord outage in
the middle of submissions and results. Nothing is lost, nothing runs twice that did not have
to, and what happened is visible in the threads."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import pytest

from dorch.bus.discord import formats
from tests.support.world import (
    World,
    eventually,
    executed_prompts,
    rate_limit_figures,
    reactions,
    thread_messages,
)

pytestmark = pytest.mark.soak  # minutes: 100 tasks under kill -9, a real 60 s outage


def attempts_posted(world: World) -> Counter[str]:
    """How many attempts of each prompt were posted to #task-queue (original + re-posts)."""
    return Counter(formats.split_header(m["content"])[0] for m in world.messages("task-queue"))


def succeeded_lines(world: World) -> Counter[str]:
    """The first output line of every succeeded summary in #results."""
    return Counter(s.split(" · ")[-1] for s in world.summaries()
                   if s.startswith("🏁 **succeeded**"))


def test_kill_9_of_random_workers_during_a_100_task_run_loses_nothing(world: World) -> None:
    world.configure(worker={"lease_seconds": 6, "heartbeat_seconds": 2, "max_attempts": 8})
    prompts = [f"crash task {i:03d} WORK=1.5" for i in range(100)]
    for prompt in prompts:
        world.post(prompt)
    fleet = world.fleet(8, hosts=2)
    rng = random.Random(9)
    kills = 0
    deadline = time.monotonic() + 480
    while len(world.summaries()) < 100 and time.monotonic() < deadline:
        time.sleep(rng.uniform(1.5, 3.5))  # the chaos: a kill every few seconds
        kills += fleet.kill_random(rng) is not None
    eventually(lambda: len(world.summaries()) >= 100, 120, "100 results", interval=0.5)
    fleet.stop()

    assert kills >= 10
    assert all(s.startswith("🏁 **succeeded**") for s in world.summaries()), world.summaries()
    assert succeeded_lines(world) == Counter(f"done: {p}" for p in prompts)
    executed, attempts = executed_prompts(world), attempts_posted(world)
    assert set(executed) == set(prompts)
    # a killed attempt may have run its agent; no attempt ran it twice
    assert all(executed[p] <= attempts[p] for p in prompts), (executed, attempts)

    requeued = [m for m in world.messages("task-queue") if "♻" in "".join(reactions(m))]
    assert requeued, f"{kills} kills and no task was ever re-queued"
    for old in requeued:
        notes = [m["content"] for m in thread_messages(world, old["id"])]
        assert any(formats.REQUEUE_NOTE.match(n) for n in notes), notes
    reposts = [m for m in world.messages("task-queue") if m["content"].startswith("-# dorch · attempt")]
    assert len(reposts) >= len(requeued)
    assert all(" · requeued from https://discord.com/channels/" in m["content"] for m in reposts)
    print(f"\ncrash: 100 tasks, {kills} kills, {len(reposts)} re-posts, "
          f"{sum(executed.values())} executions, worker starts {fleet.starts}; "
          f"{rate_limit_figures(world)}")


def test_a_60_second_outage_delays_submissions_and_results_and_loses_none(world: World) -> None:
    world.configure(worker={"lease_seconds": 12, "heartbeat_seconds": 2})
    fleet = world.fleet(6, hosts=2)
    prompts = [f"outage task {i:02d} WORK=3" for i in range(24)]
    ids = [world.dorch("submit", p).stdout.strip() for p in prompts[:10]]
    eventually(lambda: len(world.executions()) >= 4, 60, "the first tasks to start")

    world.emu.set_faults(outage="503")  # Discord's edge answers 503 to everything ...
    outage_started = time.monotonic()
    spooled = [world.dorch("submit", p) for p in prompts[10:13]]
    for done in spooled:
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("outbox-"), done.stdout
        assert "kept in this machine's outbox" in done.stderr
    during = world.dorch("status", "--json")
    assert during.returncode == 75, during.stderr
    waiting = json.loads(during.stdout)
    assert waiting["error"] and waiting["pending_delivery"] == 3
    assert {d["kind"] for d in waiting["deliveries"]} == {"submit"}
    time.sleep(max(0.0, 30 - (time.monotonic() - outage_started)))  # the outage lasts a minute:
    world.emu.set_faults(outage="refuse")  # ... then nothing even accepts a connection
    time.sleep(max(0.0, 60 - (time.monotonic() - outage_started)))
    world.emu.set_faults(outage="off")

    after = world.dorch("status", "--json")  # delivers this machine's outbox first
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["pending_delivery"] == 0
    ids += [world.dorch("submit", p).stdout.strip() for p in prompts[13:]]
    eventually(lambda: len(world.summaries()) >= len(prompts), 240, "every result",
               interval=0.5)
    fleet.stop()

    assert all(i.isdigit() for i in ids)
    executed = executed_prompts(world)
    assert sorted(executed) == prompts and set(executed.values()) == {1}, executed
    queue = world.messages("task-queue")
    assert sorted(formats.split_header(m["content"])[0] for m in queue) == prompts, \
        "a submission was posted twice, or a task re-posted"
    assert succeeded_lines(world) == Counter(f"done: {p}" for p in prompts)
    for msg in queue:
        results = [m for m in thread_messages(world, msg["id"])
                   if formats.RESULT.match(m["content"])]
        assert len(results) == 1
    refused = sum(r.fault == "outage-503" for r in world.emu.requests)
    print(f"\noutage: 60 s, {refused} requests answered 503 meanwhile; {rate_limit_figures(world)}")
