"""How fast the local bus hands out tasks: claim + finish per second, 1 process and N processes.

    python bench/local_bus_claims.py [--tasks 2000] [--procs 8] [--dir DIR]

Each claimer loops claim -> finish (an empty result) until the queue is empty, as workers do
minus the agent. Also measures submit and an idle poll (reap + claim on an empty queue), which
every waiting worker does once per poll interval. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

from dorch.bus import Result, State
from dorch.bus.local import LocalBus
from dorch.task import TaskSpec


async def _fill(path: Path, n: int) -> float:
    bus = LocalBus(path)
    start = time.perf_counter()
    for i in range(n):
        await bus.submit(TaskSpec(f"benchmark task {i}"))
    took = time.perf_counter() - start
    await bus.close()
    return took


async def _drain(path: Path, name: str, barrier: Barrier | None) -> int:
    bus = LocalBus(path)
    if barrier is not None:
        barrier.wait()
    done = 0
    while (claim := await bus.claim(name, 60)) is not None:
        await bus.finish(claim, Result(State.SUCCEEDED, output="ok"))
        done += 1
    await bus.close()
    return done


def _claimer(path: str, name: str, barrier: Barrier, out: mp.Queue) -> None:
    out.put(asyncio.run(_drain(Path(path), name, barrier)))


async def _idle_polls(path: Path, n: int) -> float:
    bus = LocalBus(path)
    start = time.perf_counter()
    for _ in range(n):
        await bus.reap(3)
        await bus.claim("idle", 60)
    took = time.perf_counter() - start
    await bus.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the queue files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        one = Path(tmp) / "one.sqlite3"
        took = asyncio.run(_fill(one, args.tasks))
        print(f"submit, 1 process:           {args.tasks / took:8.0f} tasks/s")
        start = time.perf_counter()
        done = asyncio.run(_drain(one, "solo", None))
        took = time.perf_counter() - start
        print(f"claim+finish, 1 process:     {done / took:8.0f} tasks/s")
        took = asyncio.run(_idle_polls(one, 1000))
        print(f"idle poll (reap+claim):      {took / 1000 * 1e6:8.0f} µs per poll")

        many = Path(tmp) / "many.sqlite3"
        asyncio.run(_fill(many, args.tasks))
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(args.procs + 1)
        out: mp.Queue = ctx.Queue()
        procs = [ctx.Process(target=_claimer, args=(str(many), f"p{i}", barrier, out))
                 for i in range(args.procs)]
        for p in procs:
            p.start()
        barrier.wait()
        start = time.perf_counter()
        counts = [out.get(timeout=600) for _ in procs]
        took = time.perf_counter() - start
        for p in procs:
            p.join()
        assert sum(counts) == args.tasks, counts
        print(f"claim+finish, {args.procs} processes:   {args.tasks / took:8.0f} tasks/s "
              f"(per process: {min(counts)}..{max(counts)} tasks)")


if __name__ == "__main__":
    main()
