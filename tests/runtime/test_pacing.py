"""The host's idle workers share the polling: evenly spread, as many requests as before."""

from __future__ import annotations

import heapq
from itertools import pairwise
from pathlib import Path

import pytest

from dorch.runtime.pacing import PollPacer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def simulate(tmp_path: Path, workers: list[str], interval: float, until: float,
             clock: Clock | None = None) -> list[tuple[float, str]]:
    """Every worker polls at once at start, then whenever its pacer gives it the turn, as the
    worker loop does; returns (time, worker) of every poll. Each worker has its own PollPacer
    on the shared file, as processes do."""
    clock = clock or Clock()
    start = clock.now
    pacers = {w: PollPacer(tmp_path, "local:/q", clock=clock) for w in workers}
    polls = [(0.0, w) for w in workers]
    for w in workers:
        pacers[w].polled(w)
    asks = [(start, w) for w in workers]
    while asks and asks[0][0] < start + until:
        clock.now, worker = heapq.heappop(asks)
        wait = pacers[worker].turn(worker, interval)
        if wait <= 0:
            polls.append((clock.now - start, worker))
            pacers[worker].polled(worker)
        heapq.heappush(asks, (clock.now + max(wait, 0.0), worker))
    return sorted(polls)


def steady_gaps(polls: list[tuple[float, str]], after: float) -> list[float]:
    return [b - a for a, b in pairwise(t for t, _ in polls if t > after)]


def test_three_idle_workers_poll_in_turn_every_third_of_the_interval(tmp_path: Path) -> None:
    polls = simulate(tmp_path, ["w1", "w2", "w3"], interval=6.0, until=120.0)
    gaps = steady_gaps(polls, after=12.0)
    assert gaps and all(1.5 <= g <= 2.5 for g in gaps), gaps  # 2.0 each, give or take jitter
    rate = len([p for p in polls if p[0] > 12.0]) / (120.0 - 12.0)
    assert rate == pytest.approx(3 / 6.0, rel=0.1)  # as many requests as three lone workers


def test_a_worker_that_leaves_or_dies_makes_room(tmp_path: Path) -> None:
    clock = Clock()
    for name in ("w1", "gone", "killed"):
        PollPacer(tmp_path, "local:/q", clock=clock).turn(name, 6.0)
    PollPacer(tmp_path, "local:/q", clock=clock).leave("gone")  # it claimed a task
    polls = simulate(tmp_path, ["w1", "w2"], interval=6.0, until=90.0, clock=clock)
    # "killed" never polls again: after two intervals the two left take turns every 3 s
    gaps = steady_gaps(polls, after=20.0)
    assert gaps and all(2.5 <= g <= 3.5 for g in gaps), gaps


def test_a_lone_worker_polls_once_per_interval_and_other_queues_do_not_count(tmp_path: Path) -> None:
    clock = Clock()
    other = PollPacer(tmp_path, "discord:42", clock=clock)
    other.turn("x", 6.0)
    polls = simulate(tmp_path, ["w1"], interval=6.0, until=60.0, clock=clock)
    assert len(polls) in (10, 11)
    assert all(5.5 <= gap <= 6.5 for gap in steady_gaps(polls, after=1.0))
