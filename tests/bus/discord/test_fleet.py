"""Many real worker processes, on several bot tokens and several "hosts" (data dirs), against the
emulator's realistic limits: every task runs exactly once, none is lost, the oldest go first,
and no rate limit is exceeded."""

from __future__ import annotations

import time

import pytest

from tests.support.world import (
    World,
    eventually,
    executed_prompts,
    finished_ids,
    rate_limit_figures,
    reactions,
    thread_messages,
)

pytestmark = pytest.mark.soak  # minutes: 300 and 250 tasks through real worker fleets
THREAD_ROUTE = "POST /channels/{channel_id}/messages/{message_id}/threads"


def lost_races(world: World) -> int:
    return sum(r.route == THREAD_ROUTE and r.code == 160004 for r in world.emu.requests)


def test_contention_12_workers_on_4_tokens_run_300_tasks_exactly_once(world: World) -> None:
    world.configure(worker={"lease_seconds": 20, "heartbeat_seconds": 5})
    started = time.monotonic()
    fleet = world.fleet(12, hosts=4)
    prompts = [f"contention task {i:03d}" for i in range(300)]
    ids = []
    for i, prompt in enumerate(prompts):
        ids.append(world.post(prompt))
        if i % 25 == 24:  # a steady stream: keep at most about 100 tasks waiting
            eventually(lambda n=i: len(world.executions()) >= n - 75, 300,
                       "the workers to keep up", interval=0.25)
    eventually(lambda: len(world.summaries()) >= len(prompts), 400, "300 results", interval=0.5)
    took = time.monotonic() - started
    fleet.stop()

    executed = executed_prompts(world)
    assert sorted(executed) == prompts, "a task was lost"
    assert not {p: n for p, n in executed.items() if n > 1}, "a task was executed twice"
    assert sorted(finished_ids(world)) == sorted(ids)
    assert all(s.startswith("🏁 **succeeded**") for s in world.summaries())
    queue = {m["id"]: m for m in world.messages("task-queue")}
    assert len(queue) == 300, "a task was re-posted"
    # the thread shows the claim, its name how the task ended: no reactions needed
    assert all(queue[i]["thread"]["name"].startswith("🏁 ") and not reactions(queue[i])
               for i in ids)
    for task_id in ids[::30]:  # the claim receipt became the one result of the thread
        thread = [m["content"].split(" ", 2)[:2] for m in thread_messages(world, task_id)]
        assert thread == [["🏁", "**succeeded**"]]
    races = lost_races(world)
    assert races > 0, "no two workers ever raced for a task: the test did not test contention"
    figures = rate_limit_figures(world)
    print(f"\ncontention: 300 tasks, 12 workers, 4 tokens, 4 hosts in {took:.1f} s "
          f"({300 / took * 60:.0f} tasks/min); {races} lost thread races; {figures}; "
          f"worker starts {fleet.starts}")


def test_depth_250_queued_tasks_all_run_roughly_oldest_first(world: World) -> None:
    ids = [world.post(f"deep task {i:03d}") for i in range(250)]
    started = time.monotonic()
    fleet = world.fleet(4, hosts=2)
    eventually(lambda: len(world.summaries()) >= 250, 400, "250 results", interval=0.5)
    took = time.monotonic() - started
    fleet.stop()

    executed = executed_prompts(world)
    assert sorted(executed) == [f"deep task {i:03d}" for i in range(250)], "a task starved"
    assert set(executed.values()) == {1}
    assert sorted(finished_ids(world)) == sorted(ids)
    order = [int(e["prompt"].split()[-1]) for e in world.executions()]
    displacement = [abs(rank - index) for rank, index in enumerate(order)]
    # oldest first, spread over the oldest few: no task waits behind many younger ones
    assert max(displacement) <= 30, f"order of execution: {order}"
    figures = rate_limit_figures(world)
    print(f"\ndepth: 250 queued tasks, 4 workers in {took:.1f} s; displacement from FIFO: "
          f"mean {sum(displacement) / 250:.1f}, max {max(displacement)}; {figures}")
