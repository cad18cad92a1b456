"""The local bus under real concurrency: separate OS processes on one SQLite file.

Each process opens the queue, says ``ready`` and waits for ``go`` on stdin, so all of them start
their work at the same moment; what each one did comes back as JSON on its stdout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

from dorch.bus.local import SCHEMA_VERSION, LocalBus
from dorch.model import State, TaskSpec
from tests.support.procs import together


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_eight_processes_claim_each_task_exactly_once(tmp_path: Path) -> None:
    queue = tmp_path / "queue.sqlite3"
    bus = LocalBus(queue)
    ids = [asyncio.run(bus.submit(TaskSpec(f"task {i}"))) for i in range(300)]

    names = [f"p{i}" for i in range(8)]
    claimed = dict(zip(names, together(queue, [[n, "claim-all"] for n in names]), strict=True))

    executions = Counter(t for got in claimed.values() for t in got)
    assert sorted(executions, key=int) == ids  # every task claimed ...
    assert set(executions.values()) == {1}  # ... by exactly one process, once
    status = asyncio.run(bus.status())
    assert status.counts["succeeded"] == 300 and status.counts["queued"] == 0
    for name, got in claimed.items():
        for tid in got:
            view = asyncio.run(bus.get(tid))
            assert view is not None and view.state is State.SUCCEEDED and view.worker == name
            assert view.result is not None and view.result.output == f"{tid} by {name}"
            assert len(bus.history(tid)) == 1
    asyncio.run(bus.close())


def test_concurrent_reapers_reap_each_lease_once(tmp_path: Path) -> None:
    queue = tmp_path / "queue.sqlite3"
    clock = Clock(1000.0)  # long ago: every lease taken below has expired in real time
    bus = LocalBus(queue, clock=clock)
    last = [asyncio.run(bus.submit(TaskSpec(f"last attempt {i}"))) for i in range(20)]
    for _ in range(2):  # bring these to their third (last) attempt
        while asyncio.run(bus.claim("old", 10)) is not None:
            pass
        clock.now += 11
        asyncio.run(bus.reap(3))
    while asyncio.run(bus.claim("old", 10)) is not None:
        pass
    first = [asyncio.run(bus.submit(TaskSpec(f"first attempt {i}"))) for i in range(40)]
    while asyncio.run(bus.claim("old", 10)) is not None:
        pass
    assert asyncio.run(bus.status()).counts["running"] == 60

    reaped = together(queue, [[f"r{i}", "reap", "3"] for i in range(6)])

    assert sum(reaped) == 60
    for tid in first:
        view = asyncio.run(bus.get(tid))
        assert view is not None and (view.state, view.task.attempt) == (State.QUEUED, 2)
        assert [(a.attempt, a.outcome) for a in bus.history(tid)] == [(1, "lost")]
    for tid in last:
        view = asyncio.run(bus.get(tid))
        assert view is not None and (view.state, view.task.attempt) == (State.DEAD, 3)
        assert [(a.attempt, a.outcome) for a in bus.history(tid)] == [
            (1, "lost"), (2, "lost"), (3, "lost")
        ]
    asyncio.run(bus.close())


def test_processes_opening_a_new_file_at_once(tmp_path: Path) -> None:
    queue = tmp_path / "new" / "dir" / "queue.sqlite3"
    submitted = together(queue, [[f"s{i}", "submit", "10"] for i in range(8)])

    ids = [t for got in submitted for t in got]
    assert len(ids) == len(set(ids)) == 80
    with sqlite3.connect(queue) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM tasks WHERE state = 'queued'").fetchone()[0] == 80
