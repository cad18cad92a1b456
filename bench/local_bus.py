"""The local bus end to end: tasks per second with N workers and the echo executor, the per-task
restart included, and the bus alone (claim + finish per second, no processes started).

    python bench/local_bus.py [--tasks 300] [--workers 4]

The end-to-end figure runs the real thing: ``dorch up --workers N`` (a fresh ``dorch worker``
process per task) over a queue holding TASKS tasks, timed from the supervisor's start to the
last result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import heading, table, wait_for, write_json

from dorch.bus.local import LocalBus
from dorch.model import Result, State, TaskSpec
from tests.support.helpers import DorchHome


async def fill(path: Path, n: int) -> None:
    bus = LocalBus(path)
    try:
        for i in range(n):
            await bus.submit(TaskSpec(f"bench task {i}"))
    finally:
        await bus.close()


def succeeded(path: Path) -> int:
    """Finished tasks, read with one query (the measuring must not eat the workers' CPU)."""
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        return int(db.execute("SELECT count(*) FROM tasks WHERE state = 'succeeded'").fetchone()[0])


async def claims_per_second(path: Path, n: int) -> float:
    """The bus alone in one process: claim + finish, as fast as it goes."""
    await fill(path, n)
    bus = LocalBus(path)
    started = time.perf_counter()
    try:
        while (claim := await bus.claim("bench", 60)) is not None:
            await bus.finish(claim, Result(State.SUCCEEDED, output="ok"))
    finally:
        await bus.close()
    return n / (time.perf_counter() - started)


def end_to_end(tmp: Path, tasks: int, workers: int) -> dict[str, float]:
    home = DorchHome(tmp / "e2e")
    home.root.mkdir()
    home.configure(worker={"poll_interval": 5.0, "max_idle_time": 300.0}, executor={"kind": "echo"})
    asyncio.run(fill(home.queue, tasks))
    started = time.perf_counter()
    up = subprocess.Popen([sys.executable, "-m", "dorch", "up", "--workers", str(workers)],
                          env=home.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: succeeded(home.queue) >= tasks, 300, f"{tasks} tasks", interval=0.2)
        took = time.perf_counter() - started
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    return {"tasks": tasks, "workers": workers, "seconds": took, "tasks_per_second": tasks / took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    heading(f"local bus: {args.tasks} echo tasks, {args.workers} workers, one process per task "
            f"({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="dorch-bench-") as tmp:
        e2e = end_to_end(Path(tmp), args.tasks, args.workers)
        bus_only = asyncio.run(claims_per_second(Path(tmp) / "alone.sqlite3", 2000))
    print(table(["figure", "value", "target"], [
        ["tasks/s, end to end (dorch up, restart per task)", e2e["tasks_per_second"], ">= 8"],
        ["seconds for all", e2e["seconds"], "-"],
        ["claim + finish per second, the bus alone (1 process)", bus_only, "-"],
    ]))
    write_json("local_bus", {"end_to_end": e2e, "bus_claims_per_second": bus_only})


if __name__ == "__main__":
    main()
