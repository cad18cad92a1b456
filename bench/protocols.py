"""dorch's claim protocol next to the original scripts' reaction protocol, in the same run:
API requests per completed task (by endpoint), idle requests per worker per minute, and pickup
latency (submit -> claim), 3 workers each at default settings, against the emulator.

    python bench/protocols.py [--tasks 30] [--idle 30]

Both fleets run at once, each against its own emulator (Discord's realistic limits), fed the
same stream of tasks typed by a person at random moments (0.5 to 3 s apart). dorch: three real
``dorch worker`` processes (one per bot, one host; a fresh process per task) with the echo
executor. The original: tests/support/original_protocol.py, its three workers polling every 3 to
8 s as the scripts did. Then both idle on an empty queue for IDLE seconds.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from typing import Any

from common import (
    default_worker_settings,
    discord_world,
    heading,
    percentiles,
    snowflake_time,
    table,
    wait_for,
    write_json,
)

from tests.support.original_protocol import Channels, Fleet

THREADS = "POST /channels/{channel_id}/messages/{message_id}/threads"
POLL = "GET /channels/{channel_id}/messages"
# Asked once per host and bot per hour (dorch doctor's checks): not a per-task cost.
PREFLIGHT = {"GET /users/@me", "GET /applications/@me", "GET /users/@me/guilds",
             "GET /guilds/{guild_id}/members/{user_id}", "GET /channels/{channel_id}"}
# Emulator route names of each endpoint (for the fleet model's bucket arithmetic).
BUCKETS = {THREADS: "start_thread", "POST /channels/{channel_id}/messages": "create_message",
           "PATCH /channels/{channel_id}/messages/{message_id}": "edit_message",
           "PATCH /channels/{channel_id}": "modify_channel",
           "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me": "reactions"}


def stream(world: Any, tasks: int, seed: int, label: str) -> list[str]:
    """Post TASKS tasks as alice at random moments; their ids."""
    rng = random.Random(seed)
    ids = []
    for i in range(tasks):
        ids.append(world.post(f"{label} task {i:02d}"))
        time.sleep(rng.uniform(0.5, 3.0))  # the user's pace, not synchronisation
    return ids


def worker_requests(world: Any, since: int = 0, until: int | None = None) -> list[Any]:
    return [r for r in world.emu.requests[since:until] if (r.bot or "").startswith("worker")]


def per_task(records: list[Any], tasks: int) -> dict[str, float]:
    by_route = Counter(r.route for r in records if r.route not in PREFLIGHT)
    return {route: n / tasks for route, n in sorted(by_route.items())}


def dorch_run(tasks: int, idle: float, seed: int, out: dict[str, Any]) -> None:
    settings = default_worker_settings()
    with discord_world(worker=settings, executor={"kind": "echo"}) as world:
        fleet = world.fleet(3)
        queue = str(world.channel("task-queue"))
        wait_for(lambda: sum(r.route == POLL for r in worker_requests(world)) >= 3, 60,
                 "the workers' first polls")
        start = len(world.emu.requests)
        ids = stream(world, tasks, seed, "dorch")
        wait_for(lambda: len(world.summaries()) >= tasks, 120, "dorch's results")
        # every process that ran a task has exited (its last board edit sent) and been replaced
        wait_for(lambda: fleet.starts >= 3 + tasks, 60, "the workers' restarts")
        busy = worker_requests(world, start)
        claimed = {r.path.split("/")[4]: r.time for r in busy if r.route == THREADS and r.status == 201}
        latency = [claimed[i] - snowflake_time(i) for i in ids]
        mark = len(world.emu.requests)
        time.sleep(idle)
        idle_requests = worker_requests(world, mark)
        polls = sum(r.route == POLL and r.path.split("/")[2] == queue for r in busy)
        cost = per_task([r for r in busy if r.route != POLL], tasks)
        out["dorch"] = {
            "tasks": tasks, "per_task": cost, "per_task_total": sum(cost.values()),
            "polls_per_task": polls / tasks,
            "per_task_by_bucket": bucket_costs(cost),
            "idle_per_worker_minute": len(idle_requests) / 3 / idle * 60,
            "latency": percentiles(latency), "latency_samples": latency,
            "preflight_requests": sum(r.route in PREFLIGHT for r in worker_requests(world)),
        }


def bucket_costs(cost: dict[str, float]) -> dict[str, float]:
    out: Counter[str] = Counter()
    for route, n in cost.items():
        out[BUCKETS.get(route, "default")] += n
    return dict(out)


def original_run(tasks: int, idle: float, seed: int, out: dict[str, Any]) -> None:
    with discord_world() as world:
        bots = [(f"worker-{n}", world.token(f"worker-{n}")) for n in (1, 2, 3)]
        channels = Channels(world.channel("task-queue"), world.channel("results"),
                            world.channel("worker-pool"))
        fleet = Fleet(world.emu.api_base, bots, channels, count=3, seed=seed)
        with fleet.running(duration=600):
            wait_for(lambda: len(worker_requests(world)) >= 3, 30, "their READY posts")
            start = len(world.emu.requests)
            ids = stream(world, tasks, seed, "original")
            try:
                wait_for(lambda: {c.message_id for c in fleet.snapshot()} >= set(ids), 30,
                         "the original workers to run every task", interval=0.5)
                completed = len(ids)
            except TimeoutError:
                completed = len({c.message_id for c in fleet.snapshot()} & set(ids))
            end = len(world.emu.requests)
            first_claim: dict[str, float] = {}
            for claim in fleet.snapshot():
                first_claim.setdefault(claim.message_id, claim.time)
            latency = [first_claim[i] - snowflake_time(i) for i in ids if i in first_claim]
            busy = worker_requests(world, start, end)
            executions = len(fleet.snapshot())
        # idle on an empty queue: its best case (with finished tasks in view it re-runs them)
    with discord_world() as empty:
        bots = [(f"worker-{n}", empty.token(f"worker-{n}")) for n in (1, 2, 3)]
        channels = Channels(empty.channel("task-queue"), empty.channel("results"),
                            empty.channel("worker-pool"))
        idle_fleet = Fleet(empty.emu.api_base, bots, channels, count=3, seed=seed)
        with idle_fleet.running(duration=idle + 30):
            time.sleep(idle)
        idle_requests = worker_requests(empty)
    cost = per_task([r for r in busy if r.route != POLL], max(completed, 1))
    out["original"] = {
        "tasks": tasks, "completed": completed, "executions": executions,
        "per_task": cost, "per_task_total": sum(cost.values()),
        "polls_per_task": sum(r.route == POLL for r in busy) / max(completed, 1),
        "idle_per_worker_minute": len(idle_requests) / 3 / idle * 60,
        "latency": percentiles(latency) if latency else {}, "latency_samples": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    heading(f"protocols: {args.tasks} tasks streamed to 3 workers each, default settings; "
            f"then {args.idle:.0f} s idle")
    out: dict[str, Any] = {}
    runs = [threading.Thread(target=f, args=(args.tasks, args.idle, args.seed, out))
            for f in (dorch_run, original_run)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    d, o = out["dorch"], out["original"]
    routes = sorted(set(d["per_task"]) | set(o["per_task"]))
    rows = [[route, d["per_task"].get(route, 0.0), o["per_task"].get(route, 0.0)] for route in routes]
    rows.append(["all of the above (polls excluded)", d["per_task_total"], o["per_task_total"]])
    rows.append([POLL + " (polls)", d["polls_per_task"], o["polls_per_task"]])
    print(table(["requests per completed task, by endpoint", "dorch", "original"], rows))
    print(f"dorch: target <= 7 per task (polls excluded); the preflight checks cost "
          f"{d['preflight_requests']} requests once per host and bot per hour (not counted above). "
          f"original: {o['completed']} of {o['tasks']} tasks run, {o['executions']} executions.")
    print(table(["figure", "dorch", "original", "target (dorch)"], [
        ["idle requests per worker per minute", d["idle_per_worker_minute"],
         o["idle_per_worker_minute"], "-"],
        ["pickup latency p50 (s)", d["latency"]["p50"], o["latency"].get("p50", "-"), "<= 1"],
        ["pickup latency p95 (s)", d["latency"]["p95"], o["latency"].get("p95", "-"), "<= 3"],
        ["pickup latency p99 (s)", d["latency"]["p99"], o["latency"].get("p99", "-"), "-"],
    ]))
    write_json("requests", out)


if __name__ == "__main__":
    main()
