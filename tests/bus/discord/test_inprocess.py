"""The Discord bus's lease protocol in process: DiscordBus objects on an injected clock, moved
forward together with the emulator's, instead of worker processes waiting out real leases.
Fleets of real processes under faults are the soak tests (test_faults.py, test_fleet.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from dorch.bus import BusError
from dorch.bus.discord.bus import DiscordBus
from dorch.config import load
from dorch.discord.client import DiscordClient
from dorch.model import Result, State
from tests.support.world import World

LEASE = 30.0


class Clock:
    """dorch's wall clock and the emulator's, moved forward together."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.world.emu.advance_clock(seconds)


@pytest.fixture
def inproc(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("DORCH_DATA_DIR", str(world.root / "inproc"))
    world.configure(worker={"lease_seconds": LEASE, "heartbeat_seconds": 10})
    return world


def open_bus(world: World, clock: Callable[[], float], bot: str = "worker-1") -> DiscordBus:
    return DiscordBus(load(world.home.config_path), clock=clock,
                      client=DiscordClient(world.token(bot), api_base=world.emu.api_base,
                                           shared=False, retry_base=0.01))  # outages: fast


def test_a_late_workers_result_is_refused_once_its_lease_was_taken(inproc: World) -> None:
    task = inproc.post("Count the stars")
    clock = Clock(inproc)

    async def scenario() -> tuple[bool, bool]:
        late, rescuer = open_bus(inproc, clock), open_bus(inproc, clock)
        try:
            await late.reap()
            first = await late.claim("w-late", LEASE)
            assert first is not None and first.task.id == task
            clock.advance(LEASE + 10)  # the late worker hung: no heartbeat (10 s: the reapers' grace)
            assert await rescuer.reap() == 1  # re-posted as attempt 2 ...
            second = None
            for _ in range(3):  # ... which the next rounds of polls find
                second = second or await rescuer.claim("w-rescuer", LEASE)
            assert second is not None and second.task.attempt == 2
            refused = await late.finish(first, Result(State.SUCCEEDED, "late answer"))
            taken = await rescuer.finish(second, Result(State.SUCCEEDED, "done: Count the stars"))
            return refused, taken
        finally:
            await late.close()
            await rescuer.close()

    refused, taken = asyncio.run(scenario())
    assert (refused, taken) == (False, True)
    (summary,) = inproc.summaries()
    assert summary.startswith("🏁 **succeeded**") and "late answer" not in summary


def test_a_held_lease_is_not_taken_however_long_the_task(inproc: World) -> None:
    inproc.post("Count the grains of sand")
    clock = Clock(inproc)

    async def scenario() -> None:
        holder, other = open_bus(inproc, clock), open_bus(inproc, clock)
        try:
            await holder.reap()
            claim = await holder.claim("w-holder", LEASE)
            assert claim is not None
            for _ in range(6):  # three minutes of heartbeats, every third of a lease
                clock.advance(LEASE / 3)
                assert (await holder.heartbeat(claim, LEASE)).value == "held"
                assert await other.reap() == 0
                assert await other.claim("w-other", LEASE) is None
            assert await holder.finish(claim, Result(State.SUCCEEDED, "done"))
        finally:
            await holder.close()
            await other.close()

    asyncio.run(scenario())
    (summary,) = inproc.summaries()
    assert summary.startswith("🏁 **succeeded**")


def test_an_outage_fails_the_poll_and_the_claim_works_once_discord_answers(
        inproc: World) -> None:
    task = inproc.post("Water the plants")
    clock = Clock(inproc)

    async def scenario() -> str:
        bus = open_bus(inproc, clock)
        try:
            inproc.emu.set_faults(outage="503")
            with pytest.raises(BusError):
                await bus.reap()
            inproc.emu.set_faults(outage="off")
            await bus.reap()
            claim = await bus.claim("w1", LEASE)
            assert claim is not None
            return claim.task.id
        finally:
            await bus.close()

    assert asyncio.run(scenario()) == task


def test_cancel_reaches_the_holder_at_its_next_heartbeat(inproc: World) -> None:
    task = inproc.post("Sort the socks")
    clock = Clock(inproc)

    async def scenario() -> str:
        holder, submitter = open_bus(inproc, clock), open_bus(inproc, clock, bot="submitter")
        try:
            await holder.reap()
            claim = await holder.claim("w1", LEASE)
            assert claim is not None
            assert (await holder.heartbeat(claim, LEASE)).value == "held"
            assert await submitter.cancel(task)
            clock.advance(LEASE / 3)
            return (await holder.heartbeat(claim, LEASE)).value
        finally:
            await holder.close()
            await submitter.close()

    assert asyncio.run(scenario()) == "cancelled"


def test_an_idle_round_on_an_empty_queue_polls_once(inproc: World) -> None:
    """A worker's round is a reap then a claim; the claim takes the reap's page, even an empty
    one (an idle fleet's polls are most of what it asks Discord)."""
    poll = "GET /channels/{channel_id}/messages"

    async def scenario() -> int:
        bus = open_bus(inproc, Clock(inproc))
        try:
            await bus.reap()
            await bus.claim("w1", LEASE)  # the preflight's requests, once
            before = sum(r.route == poll for r in inproc.emu.requests)
            await bus.reap()
            assert await bus.claim("w1", LEASE) is None
            return sum(r.route == poll for r in inproc.emu.requests) - before
        finally:
            await bus.close()

    assert asyncio.run(scenario()) == 1
