"""The worker's lease protocol, in process and on virtual time (tests/support/inprocess.py):
real Workers and the real local queue, minutes of leases in milliseconds, the same order every
run. Real processes, signals and agents are tests/runtime/test_worker.py's job."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dorch.bus import BusError
from dorch.model import State
from tests.support.inprocess import WORKER, InProcess


@pytest.fixture
def inprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcess]:
    world = InProcess(tmp_path, monkeypatch)
    yield world
    world.close()


pytestmark = pytest.mark.timeout(30)  # milliseconds each; a hang fails fast

LEASE, BEAT = WORKER["lease_seconds"], WORKER["heartbeat_seconds"]


def test_a_worker_runs_the_oldest_task_and_exits_0(inprocess: InProcess) -> None:
    async def scenario() -> None:
        first = await inprocess.submit("first WORK=5")
        second = await inprocess.submit("second")
        assert await inprocess.worker("w1").run() == 0
        done = await inprocess.bus.get(first)
        assert done.state is State.SUCCEEDED and done.result.output == "done: first WORK=5\n"
        assert done.worker == "w1" and done.task.attempt == 1
        assert (await inprocess.bus.get(second)).state is State.QUEUED

    inprocess.drive(scenario)


def test_an_idle_worker_exits_0_after_max_idle_time(inprocess: InProcess) -> None:
    async def scenario() -> None:
        started = inprocess.clock()
        assert await inprocess.worker("w1", max_idle_time=300).run() == 0
        assert 300 <= inprocess.clock() - started < 300 + 2 * WORKER["poll_interval"]
        (row,) = (await inprocess.bus.status()).workers
        assert row.worker == "w1" and row.state == "RESTARTING"

    inprocess.drive(scenario)


def test_heartbeats_keep_a_task_20_leases_long_with_its_first_worker(
    inprocess: InProcess,
) -> None:
    """Another worker polls (and reaps) all along: a renewed lease is never taken."""
    async def scenario() -> None:
        task = await inprocess.submit(f"long WORK={20 * LEASE}")
        holder = inprocess.worker("w1").run()
        await inprocess.runs.until(lambda runs: runs)
        watcher = inprocess.worker("w2", max_idle_time=30 * LEASE).run()
        assert await holder == 0
        assert await watcher == 0
        view = await inprocess.bus.get(task)
        assert view.state is State.SUCCEEDED and view.worker == "w1" and view.task.attempt == 1
        assert [(a.worker, a.outcome) for a in inprocess.bus.history(task)] == [("w1", "finished")]
        assert inprocess.runs.of("w2") == []

    inprocess.drive(scenario)


def test_a_killed_worker_s_task_is_rerun_by_another_after_its_lease(inprocess: InProcess) -> None:
    async def scenario() -> None:
        task = await inprocess.submit(f"crash WORK={3 * LEASE}")
        victim = inprocess.worker("w1").run()
        await inprocess.runs.until(lambda runs: runs)
        killed_at = inprocess.clock()
        victim.cancel()  # as kill -9: no release, no result, no more heartbeats
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert await inprocess.worker("w2").run() == 0
        view = await inprocess.bus.get(task)
        assert view.state is State.SUCCEEDED and view.worker == "w2" and view.task.attempt == 2
        (lost, rerun) = inprocess.bus.history(task)
        assert (lost.worker, lost.outcome, rerun.outcome) == ("w1", "lost", "finished")
        # not before the lease the victim last renewed ran out
        assert inprocess.runs.of("w2")[0].started >= killed_at + LEASE - BEAT

    inprocess.drive(scenario)


def test_a_task_whose_workers_keep_dying_is_dead_after_max_attempts(inprocess: InProcess) -> None:
    async def scenario() -> None:
        task = await inprocess.submit(f"doomed WORK={3 * LEASE}")
        for attempt in (1, 2, 3):
            victim = inprocess.worker(f"w{attempt}").run()
            await inprocess.runs.until(lambda runs, n=attempt: len(runs) == n)
            victim.cancel()
            await asyncio.gather(victim, return_exceptions=True)
        assert await inprocess.worker("reaper", max_idle_time=2 * LEASE).run() == 0
        view = await inprocess.bus.get(task)
        assert view.state is State.DEAD and view.task.attempt == 3
        assert "gave up" in view.result.error
        assert [a.outcome for a in inprocess.bus.history(task)] == ["lost"] * 3
        assert inprocess.runs.of("reaper") == []

    inprocess.drive(scenario)


def test_a_worker_that_hangs_before_reporting_is_fenced_and_its_late_result_refused(
    inprocess: InProcess,
) -> None:
    async def scenario() -> None:
        task = await inprocess.submit("answer WORK=5")
        late = inprocess.worker("w1")
        gate = late.link.hold("finish")  # its agent is done; the worker hangs before reporting
        hung = late.run()
        await inprocess.runs.until(lambda runs: runs and runs[0].ended)
        assert await inprocess.worker("w2").run() == 0  # reaps the lease, runs attempt 2
        gate.set()
        assert await hung == 0
        assert late.link.results("finish") == [False]  # refused: the claim was fenced
        view = await inprocess.bus.get(task)
        assert view.state is State.SUCCEEDED and view.worker == "w2" and view.task.attempt == 2
        assert [(a.worker, a.outcome) for a in inprocess.bus.history(task)] == [
            ("w1", "lost"), ("w2", "finished")]

    inprocess.drive(scenario)


def test_a_hung_worker_that_wakes_up_fenced_stops_its_agent_and_reports_nothing(
    inprocess: InProcess,
) -> None:
    async def scenario() -> None:
        task = await inprocess.submit(f"answer WORK={4 * LEASE}")
        late = inprocess.worker("w1")
        hung = late.run()
        await inprocess.runs.until(lambda runs: runs)
        gate = late.link.hold("heartbeat")  # the worker hangs (SIGSTOP, a frozen VM)
        rescuer = inprocess.worker("w2").run()
        await inprocess.runs.until(lambda runs: len(runs) == 2)
        gate.set()  # it wakes: its next heartbeat finds the lease gone
        assert await hung == 0
        assert await rescuer == 0
        first, second = inprocess.runs.all
        assert first.worker == "w1" and first.stopped  # its agent was stopped ...
        assert late.link.results("finish") == []  # ... and its result never offered
        assert second.worker == "w2" and not second.stopped
        view = await inprocess.bus.get(task)
        assert view.state is State.SUCCEEDED and view.worker == "w2" and view.task.attempt == 2

    inprocess.drive(scenario)


def test_cancel_stops_a_running_agent_at_its_next_heartbeat(inprocess: InProcess) -> None:
    async def scenario() -> None:
        task = await inprocess.submit("endless WORK=36000")
        worker = inprocess.worker("w1").run()
        await inprocess.runs.until(lambda runs: runs)
        assert await inprocess.bus.cancel(task)
        asked = inprocess.clock()
        assert await worker == 0
        (run,) = inprocess.runs.all
        assert run.stopped and run.ended is not None and run.ended - asked < BEAT + 1
        view = await inprocess.bus.get(task)
        assert view.state is State.CANCELLED

    inprocess.drive(scenario)


def test_a_stopping_worker_hands_its_task_back_without_spending_an_attempt(
    inprocess: InProcess,
) -> None:
    async def scenario() -> None:
        task = await inprocess.submit(f"handed back WORK={3 * LEASE}")
        stopping = inprocess.worker("w1")
        run = stopping.run()
        await inprocess.runs.until(lambda runs: runs)
        stopping.worker.request_stop()  # SIGTERM
        assert await run == 0
        view = await inprocess.bus.get(task)
        assert view.state is State.QUEUED and view.task.attempt == 1
        assert inprocess.runs.all[0].stopped
        assert await inprocess.worker("w2").run() == 0  # at once: no lease to wait for
        view = await inprocess.bus.get(task)
        assert view.state is State.SUCCEEDED and view.task.attempt == 1 and view.worker == "w2"
        assert [a.outcome for a in inprocess.bus.history(task)] == ["released", "finished"]

    inprocess.drive(scenario)


def test_a_60_second_outage_delays_the_claim_and_loses_nothing(inprocess: InProcess) -> None:
    async def scenario() -> None:
        task = await inprocess.submit("after the outage")
        member = inprocess.worker("w1")
        member.link.down = True
        worker = member.run()
        await asyncio.sleep(60)  # the outage, in virtual seconds
        member.link.down = False
        back = inprocess.clock()
        assert await worker == 0
        assert len(member.link.failed) > 3  # it kept trying, backing off ...
        (run,) = inprocess.runs.all
        # ... never longer than half a lease between tries (results first after an outage)
        assert run.started - back <= LEASE / 2 * 1.2
        view = await inprocess.bus.get(task)
        assert view.state is State.SUCCEEDED and view.task.attempt == 1

    inprocess.drive(scenario)


def test_heartbeats_failing_in_an_outage_do_not_stop_the_agent(inprocess: InProcess) -> None:
    """A short outage mid-task: the agent goes on, the lease (renewed after) decides."""
    async def scenario() -> None:
        task = await inprocess.submit(f"through the outage WORK={2 * LEASE}")
        member = inprocess.worker("w1")
        worker = member.run()
        await inprocess.runs.until(lambda runs: runs)
        member.link.down = True
        await asyncio.sleep(LEASE / 2)
        member.link.down = False
        assert await worker == 0
        assert "heartbeat" in member.link.failed
        (run,) = inprocess.runs.all
        assert not run.stopped
        view = await inprocess.bus.get(task)
        assert view.state is State.SUCCEEDED and view.task.attempt == 1

    inprocess.drive(scenario)


def test_an_outage_longer_than_max_idle_time_ends_the_worker_with_a_bus_error(
    inprocess: InProcess,
) -> None:
    """(``dorch worker`` exits 75 then, and systemd starts a fresh one.)"""
    async def scenario() -> None:
        started = inprocess.clock()
        member = inprocess.worker("w1", max_idle_time=120)
        member.link.down = True
        with pytest.raises(BusError):
            await member.run()
        assert inprocess.clock() - started >= 120
        assert len(member.link.failed) > 3

    inprocess.drive(scenario)
