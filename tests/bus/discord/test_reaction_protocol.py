"""Why dorch does not claim tasks the way the scripts it replaces did: their ✅-reaction protocol
(tests/support/original_protocol.py) runs tasks twice and never sees tasks beyond the 10 newest,
while dorch's real workers, on the same emulated Discord, run every task exactly once.

Polling is fast (0.2-0.6 s instead of 3-8 s) to keep the module short; it changes how often
the protocol goes wrong, not whether.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from tests.support.original_protocol import Channels, Fleet, Timing, double_claims, summary
from tests.support.world import WORKER_BOTS, World, eventually, executed_prompts

FAST = Timing(poll_interval=(0.2, 0.6), idle_timeout=60.0)
BATCH = 2  # tasks posted at once in a stream, the next two once both were taken


def original_fleet(world: World, count: int, seed: int) -> Fleet:
    """COUNT workers of the original protocol on the world's worker bots (worker-1 first)."""
    return Fleet(world.emu.api_base, [(bot, world.token(bot)) for bot in WORKER_BOTS],
                 Channels(world.channel("task-queue"), world.channel("results"),
                          world.channel("worker-pool")),
                 count, FAST, seed=seed)


def settle(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """Poll PREDICATE until it holds or TIMEOUT passes (without failing); whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def result_posts(world: World, task_id: str) -> list[str]:
    """The result messages the original workers posted in #results for TASK_ID."""
    return [text for text in world.summaries() if f"`{task_id}`" in text]


def original_took(fleet: Fleet, tasks: list[str]) -> bool:
    """Every one of TASKS was run by some original worker."""
    return set(tasks) <= set(fleet.workers_by_task())


def dorch_took(world: World, tasks: list[str]) -> bool:
    """Every one of TASKS was claimed by a dorch worker: its claim is the thread it started on
    the task's message."""
    threaded = {m["id"] for m in world.messages("task-queue") if m.get("thread")}
    return set(tasks) <= threaded


def assert_each_ran_once(dorch: World, prompts: list[str], started: float, what: str) -> None:
    """The contrast: dorch ran every one of PROMPTS, once."""
    executed = executed_prompts(dorch)
    print(f"dorch, {what} in {time.monotonic() - started:.1f} s: {len(executed)} of "
          f"{len(prompts)} run, most runs of one task {max(executed.values())}")
    assert sorted(executed) == prompts, "dorch lost or starved a task"
    assert set(executed.values()) == {1}, "dorch ran a task twice"


pytestmark = pytest.mark.soak  # races of the old protocol against dorch's (about a minute)


def test_the_original_reaction_protocol_claims_tasks_twice(make_world: Callable[..., World]) -> None:
    started = time.monotonic()
    world = make_world()
    fleet = original_fleet(world, 4, seed=1)
    ids: list[str] = []
    with fleet.running(duration=90):
        for first in range(0, 20, BATCH):  # a stream: the next batch once the last was all taken
            batch = [world.post(f"stream task {i:02d}") for i in range(first, first + BATCH)]
            ids += batch
            eventually(partial(original_took, fleet, batch), 30,
                       f"stream tasks {first}-{first + BATCH - 1} to be claimed")
        # nothing keeps a lower-id bot off a ✅ message it sees: bounded wait for one to take it
        settle(lambda: double_claims(fleet.snapshot()), 20)
    took = time.monotonic() - started

    assert not fleet.crashes, f"a worker failed, so the figures are not the protocol's: {fleet.crashes}"
    claims = fleet.snapshot()
    doubles = double_claims(claims)
    figures = summary(fleet)
    order = {task: [c.worker for c in claims if c.message_id == task] for task in doubles}
    # the usual way: a bot with a lower id than the winner's sees the ✅ list start with itself
    lower = sum(any(world.bot_id(later) < world.bot_id(runs[0]) for later in runs[1:])
                for runs in order.values())
    print(f"\noriginal protocol, 4 workers, 20 streamed tasks in {took:.1f} s: {figures}; "
          f"tasks run by 2+ workers: {len(doubles)} of 20 ({lower} taken over by a lower-id bot), "
          f"e.g. {dict(list(order.items())[:3])}")
    assert doubles, "no task was run by two workers"
    twice = next(iter(doubles))
    posters = {text.split(" by **")[1].split("**")[0] for text in result_posts(world, twice)}
    assert len(posters) >= 2, "#results shows one result per worker that ran the task"

    # the contrast: dorch's real workers on the same kind of world and the same stream
    started = time.monotonic()
    dorch = make_world()
    dorch.fleet(4)
    prompts = [f"stream task {i:02d}" for i in range(20)]
    for first in range(0, 20, BATCH):
        batch = [dorch.post(prompt) for prompt in prompts[first:first + BATCH]]
        eventually(partial(dorch_took, dorch, batch), 30,
                   f"dorch to claim stream tasks {first}-{first + BATCH - 1}", interval=0.1)
    eventually(lambda: len(dorch.summaries()) >= 20, 60, "20 dorch results", interval=0.25)
    assert_each_ran_once(dorch, prompts, started, "4 workers, 20 streamed tasks")


def test_the_original_protocol_starves_tasks_beyond_the_10_newest(
        make_world: Callable[..., World]) -> None:
    started = time.monotonic()
    world = make_world()
    ids = [world.post(f"queued task {i:02d}") for i in range(30)]  # oldest first
    fleet = original_fleet(world, 3, seed=2)
    quiet = 5 * FAST.poll_interval[1]  # a few poll intervals without a task taken for the first time
    with fleet.running(duration=90):
        seen = 0
        last_new = time.monotonic()

        def settled() -> bool:
            nonlocal seen, last_new
            now = len(fleet.workers_by_task())
            if now > seen:
                seen, last_new = now, time.monotonic()
            restarted = all(fleet.lifetimes[w] >= 2 for w in fleet.worker_names())
            return restarted and time.monotonic() - last_new >= quiet

        settle(settled, 45, interval=0.1)
    took = time.monotonic() - started

    assert not fleet.crashes, f"a worker failed, so the figures are not the protocol's: {fleet.crashes}"
    ran = fleet.workers_by_task()
    starved = [task for task in ids if task not in ran]
    print(f"\noriginal protocol, 3 workers, 30 queued tasks, {took:.1f} s: {summary(fleet)}; "
          f"never run: {len(starved)} of 30 (of them beyond the 10 newest: "
          f"{sum(task in ids[:20] for task in starved)})")
    assert fleet.snapshot(), "the original workers ran nothing: the test tested nothing"
    assert starved, "every task ran"
    assert not set(ids[:20]) & set(ran), "a task beyond the 10 newest ran: the protocol reads 10"
    assert not any(result_posts(world, task) for task in starved), "#results names a starved task"

    # the contrast: dorch with 3 workers on 30 queued tasks runs all of them, once each
    started = time.monotonic()
    dorch = make_world()
    prompts = [f"queued task {i:02d}" for i in range(30)]
    for prompt in prompts:
        dorch.post(prompt)
    dorch.fleet(3)
    eventually(lambda: len(dorch.summaries()) >= 30, 90, "30 dorch results", interval=0.25)
    assert_each_ran_once(dorch, prompts, started, "3 workers, 30 queued tasks")
