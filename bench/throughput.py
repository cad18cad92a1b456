"""The throughput ceiling: 1,000 trivial tasks over 16 workers on 4 bot tokens (4 hosts), next to
the ceiling the emulator's rate limits imply.

    python bench/throughput.py [--tasks 1000] [--workers 16]

Two runs of the same queue:

1. **the fleet**: 16 real ``dorch worker`` processes (a fresh one per task, default settings,
   the echo executor; every claim is in a worker's log, and a claim runs the executor once, so
   duplicates are counted, not guessed). On a small machine this run is bound by CPU, not by
   Discord: the CPU seconds each task's process takes are printed;
2. **the protocol alone**: the same 16 workers as coroutines, 4 per process (one process per
   host), calling the bus (reap, claim, finish) with no process start or agent per task: what
   the claim protocol itself sustains under Discord's limits.

Every task must pass, per bot, through buckets shared by all of that bot's tasks: starting a
thread on a #task-queue message, posting to #results, and reacting on #task-queue (✅ and 🏁);
the tightest of them, times the number of bots, is the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from common import default_worker_settings, discord_world, heading, table, wait_for, write_json
from dorch_emulator.config import DEFAULT_ROUTE_LIMITS

from tests.support.world import World, limit_figures

# Uses per task of the buckets every task of a bot shares (per bot and channel).
SHARED_BUCKETS = {"start_thread": 1, "create_message": 1, "reactions": 2}
INVALID = (401, 403, 429)
CLAIMED = re.compile(r"claimed task (\d+) \(attempt")
HOSTS = 4


def ceiling(bots: int) -> tuple[float, str]:
    """Tasks per minute the rate limits allow, and the bucket that sets it."""
    per_bot = {route: DEFAULT_ROUTE_LIMITS[route].limit / DEFAULT_ROUTE_LIMITS[route].per / uses
               for route, uses in SHARED_BUCKETS.items()}
    route = min(per_bot, key=lambda r: per_bot[r])
    return per_bot[route] * bots * 60, route


def figures(world: World, start_index: int, tasks: int, took: float) -> dict[str, Any]:
    records = world.emu.requests[start_index:]
    results = sorted(r.time for r in records if r.route == "POST /channels/{channel_id}/messages"
                     and r.path.split("/")[2] == str(world.channel("results")))
    steady = tasks * 0.8 / (results[int(tasks * 0.9) - 1] - results[int(tasks * 0.1)]) * 60
    limits = limit_figures(records)
    invalid = sum(r.status in INVALID for r in records)
    summaries = Counter(s.split(" · ")[1] for s in world.summaries())
    return {
        "tasks": tasks, "seconds": took, "tasks_per_minute": tasks / took * 60,
        "steady_tasks_per_minute": steady, "summaries": sum(summaries.values()),
        "tasks_with_two_summaries": sum(n > 1 for n in summaries.values()),
        "requests": limits["requests"], "429": limits["429"], "429_share": limits["429 share"],
        "late_429": len(limits["late 429"]), "invalid_per_10_min": invalid / took * 600,
    }


def all_done(world: World, tasks: int, started: float) -> Callable[[], bool]:
    """A check that all TASKS have a summary, printing progress every 30 s."""
    shown = started

    def check() -> bool:
        nonlocal shown
        done = len(world.summaries())
        if time.time() - shown >= 30:
            shown = time.time()
            print(f"  {done}/{tasks} after {shown - started:.0f} s", flush=True)
        return done >= tasks

    return check


def fleet_run(tasks: int, workers: int) -> dict[str, Any]:
    with discord_world(worker=default_worker_settings(), executor={"kind": "echo"}) as world:
        ids = [world.post(f"throughput task {i:04d}") for i in range(tasks)]
        start_index = len(world.emu.requests)
        started, cpu = time.time(), os.times()
        fleet = world.fleet(workers, hosts=HOSTS)
        wait_for(all_done(world, tasks, started), 1200, f"{tasks} results", interval=1.0)
        took = time.time() - started
        fleet.stop()
        spent = os.times()
        # a worker runs its executor once per claim, and logs every claim
        executed = Counter(CLAIMED.findall(fleet.logs()))
        out = figures(world, start_index, tasks, took)
        out |= {
            "workers": workers, "worker_starts": fleet.starts,
            "lost": len(set(ids) - set(executed)),
            "executed_twice": sum(n > 1 for n in executed.values()),
            "cpu_seconds_per_task": (spent.children_user + spent.children_system
                                     - cpu.children_user - cpu.children_system) / tasks,
            "cpu_cores": os.cpu_count(),
        }
        return out


async def _serve(loops: int, deadline: float) -> None:
    """One host of the protocol-only run: LOOPS workers as coroutines, each with its own bus."""
    from dorch.bus.discord import DiscordBus
    from dorch.config import load
    from dorch.model import Result, State

    config = load(os.environ["DORCH_CONFIG"])

    async def work(n: int) -> None:
        bus = DiscordBus(config)
        try:
            while time.time() < deadline:
                await bus.reap()
                claim = await bus.claim(f"{os.getpid()}-{n}", 60)
                if claim is None:
                    await asyncio.sleep(0.2)
                    continue
                await bus.finish(claim, Result(State.SUCCEEDED, output="ok", duration=0.01))
        finally:
            await bus.close()

    await asyncio.gather(*(work(n) for n in range(loops)))


def protocol_run(tasks: int, workers: int) -> dict[str, Any]:
    with discord_world(worker=default_worker_settings(), executor={"kind": "echo"}) as world:
        for i in range(tasks):
            world.post(f"protocol task {i:04d}")
        start_index = len(world.emu.requests)
        started = time.time()
        hosts = []
        for h in range(HOSTS):
            env = world.home.env(DORCH_SECRET_DISCORD_TOKEN=world.token(f"worker-{h + 1}"),
                                 DORCH_DATA_DIR=str(world.root / f"host-{h}"))
            hosts.append(subprocess.Popen(
                [sys.executable, __file__, "--serve", str(workers // HOSTS), str(started + 1200)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            wait_for(all_done(world, tasks, started), 1200, f"{tasks} results", interval=1.0)
            took = time.time() - started
        finally:
            for proc in hosts:
                proc.kill()
                proc.wait()
        return figures(world, start_index, tasks, took)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:  # a host of the protocol-only run
        asyncio.run(_serve(int(sys.argv[2]), float(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--protocol-tasks", type=int, default=400,
                        help="tasks of the protocol-only run")
    args = parser.parse_args()
    top, bucket = ceiling(HOSTS)
    heading(f"throughput: {args.tasks} trivial tasks, {args.workers} workers on {HOSTS} bots "
            f"({HOSTS} hosts); ceiling {top:.0f} tasks/min ({bucket}, {HOSTS} bots)")
    fleet = fleet_run(args.tasks, args.workers)
    protocol = protocol_run(args.protocol_tasks, args.workers)
    rows = [
        ["tasks per minute (whole run)", fleet["tasks_per_minute"], protocol["tasks_per_minute"],
         f">= {0.8 * top:.0f}"],
        ["tasks per minute (10% to 90% of results)", fleet["steady_tasks_per_minute"],
         protocol["steady_tasks_per_minute"], "-"],
        ["share of the ceiling (whole run)", f"{fleet['tasks_per_minute'] / top:.0%}",
         f"{protocol['tasks_per_minute'] / top:.0%}", ">= 80%"],
        ["lost / executed twice", f"{fleet['lost']} / {fleet['executed_twice']}", "-", "0 / 0"],
        ["tasks with two summaries", fleet["tasks_with_two_summaries"],
         protocol["tasks_with_two_summaries"], 0],
        ["requests", fleet["requests"], protocol["requests"], "-"],
        ["429s (share)", f"{fleet['429']} ({fleet['429_share']:.2%})",
         f"{protocol['429']} ({protocol['429_share']:.2%})", "< 1%"],
        ["429s after a bucket was learned", fleet["late_429"], protocol["late_429"], 0],
        ["invalid requests per 10 min", fleet["invalid_per_10_min"], protocol["invalid_per_10_min"],
         "<< 10,000"],
        ["CPU seconds per task (its worker process)", fleet["cpu_seconds_per_task"], "-", "-"],
    ]
    print(table(["figure", "fleet (processes)", "protocol alone", "target"], rows))
    print(f"The fleet's ceiling on this machine is its CPU: {fleet['cpu_cores']} cores / "
          f"{fleet['cpu_seconds_per_task']:.2f} CPU-s per task = "
          f"{fleet['cpu_cores'] / fleet['cpu_seconds_per_task'] * 60:.0f} tasks/min at most.")
    write_json("throughput", {"fleet": fleet, "protocol": protocol, "ceiling_per_minute": top,
                              "ceiling_bucket": bucket, "tasks_per_minute": fleet["tasks_per_minute"],
                              "lost": fleet["lost"], "executed_twice": fleet["executed_twice"]})


if __name__ == "__main__":
    main()
