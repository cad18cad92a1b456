"""The host's idle workers take turns polling: evenly spread, each still once per interval."""

from __future__ import annotations

import heapq
from itertools import pairwise
from pathlib import Path

from dorch.pacing import PollPacer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def simulate(tmp_path: Path, workers: list[str], interval: float, until: float,
             clock: Clock | None = None) -> list[tuple[float, str]]:
    """Every worker polls at once at start, then when its pacer says; returns (time, worker)
    of every poll. Each worker has its own PollPacer on the shared file, as processes do."""
    clock = clock or Clock()
    start = clock.now
    pacers = {w: PollPacer(tmp_path, "local:/q", clock=clock) for w in workers}
    due = [(start, w) for w in workers]
    polls = []
    while due and due[0][0] < start + until:
        clock.now, worker = heapq.heappop(due)
        polls.append((clock.now - start, worker))
        heapq.heappush(due, (clock.now + pacers[worker].wait(worker, interval), worker))
    return polls


def steady_gaps(polls: list[tuple[float, str]], after: float) -> list[float]:
    return [b - a for a, b in pairwise(t for t, _ in polls if t > after)]


def test_three_idle_workers_poll_in_turn_every_third_of_the_interval(tmp_path: Path) -> None:
    polls = simulate(tmp_path, ["w1", "w2", "w3"], interval=6.0, until=120.0)
    gaps = steady_gaps(polls, after=12.0)
    assert gaps and all(1.5 <= g <= 2.5 for g in gaps), gaps  # 2.0 each, give or take jitter
    for worker in ("w1", "w2", "w3"):
        periods = steady_gaps([p for p in polls if p[1] == worker], after=12.0)
        assert all(5.5 <= p <= 6.5 for p in periods), (worker, periods)  # no extra requests


def test_a_worker_that_leaves_or_dies_makes_room(tmp_path: Path) -> None:
    clock = Clock()
    for name in ("w1", "gone", "killed"):
        PollPacer(tmp_path, "local:/q", clock=clock).wait(name, 6.0)
    PollPacer(tmp_path, "local:/q", clock=clock).leave("gone")  # it claimed a task
    polls = simulate(tmp_path, ["w1", "w2"], interval=6.0, until=90.0, clock=clock)
    # "killed" never polls again: after two intervals the two left take turns every 3 s
    gaps = steady_gaps(polls, after=20.0)
    assert gaps and all(2.5 <= g <= 3.5 for g in gaps), gaps


def test_a_lone_worker_polls_once_per_interval_and_other_queues_do_not_count(tmp_path: Path) -> None:
    clock = Clock()
    other = PollPacer(tmp_path, "discord:42", clock=clock)
    other.wait("x", 6.0)
    polls = simulate(tmp_path, ["w1"], interval=6.0, until=60.0, clock=clock)
    assert len(polls) in (10, 11)
    assert all(5.5 <= gap <= 6.5 for gap in steady_gaps(polls, after=1.0))
