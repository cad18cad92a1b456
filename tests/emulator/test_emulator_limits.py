"""Rate limits, the invalid-request ban, and injected faults."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from dorch_emulator import Emulator

from tests.support.emulator_api import Api, MakeEmulator, run


def test_the_global_limit_is_per_bot(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(ratelimit={"global_limit": 3, "global_per": 5.0})

    async def body(api: Api) -> None:
        paths = ["/users/@me", "/applications/@me", f"/channels/{api.channel()}",
                 f"/guilds/{emu.config.guild_id}"]
        answers = [await api.call("GET", p) for p in paths]
        assert [a.status for a in answers] == [200, 200, 200, 429]
        limited = answers[3]
        assert limited.data["global"] is True and 0 < limited.data["retry_after"] <= 5.0
        assert limited.headers["X-RateLimit-Global"] == "true"
        assert limited.headers["X-RateLimit-Scope"] == "global"
        assert int(limited.headers["Retry-After"]) >= 1
        assert "X-RateLimit-Bucket" not in limited.headers
        assert (await api.as_bot("worker-2").call("GET", "/users/@me")).status == 200

    run(emu, body)
    assert emu.stats()["rate_limited"] == {"global": 1}


def test_adding_and_removing_reactions_share_a_bucket_per_channel(emulator: Emulator) -> None:
    a = emulator.post_as_user("alice", "task-queue", "a")
    b = emulator.post_as_user("alice", "results", "b")

    async def body(api: Api) -> None:
        added = await api.react(api.channel(), a["id"])
        removed = await api.react(api.channel(), a["id"], method="DELETE")
        assert (added.status, removed.status) == (204, 429)
        assert added.headers["X-RateLimit-Bucket"] == removed.headers["X-RateLimit-Bucket"]
        assert added.headers["X-RateLimit-Limit"] == "1"
        assert added.headers["X-RateLimit-Reset-After"] == "0.250"
        assert (await api.react(api.channel("results"), b["id"])).status == 204

    run(emulator, body)


def test_too_many_invalid_requests_get_a_cloudflare_ban(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(emulator={"invalid_limit": 5, "ban_seconds": 120})

    async def body(api: Api) -> None:
        for _ in range(5):
            assert (await api.call("GET", "/users/@me", token="bad")).status == 401
        banned = await api.call("GET", "/users/@me")
        assert banned.status == 429
        assert not banned.headers["Content-Type"].startswith("application/json")
        assert "Via" not in banned.headers
        assert "1015" in banned.data

    run(emu, body)
    stats = emu.stats()
    assert stats["invalid_requests"] == {"127.0.0.1": 5}
    assert 0 < stats["bans"]["127.0.0.1"] <= 120
    assert stats["rate_limited"] == {"cloudflare": 1}


def test_shared_scope_429s_do_not_count_as_invalid(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(emulator={"invalid_limit": 3},
                        faults={"shared_429_rate": 1.0, "shared_retry_after": 2.5})

    async def body(api: Api) -> None:
        for _ in range(5):
            answer = await api.call("GET", "/users/@me")
            assert answer.status == 429 and answer.headers["X-RateLimit-Scope"] == "shared"
            assert answer.data["retry_after"] == 2.5 and answer.headers["Via"]

    run(emu, body)
    assert emu.stats()["bans"] == {}
    assert emu.stats()["invalid_requests"] == {}


def test_outage_503_and_5xx_faults(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(emulator={"seed": 3})

    async def body(api: Api) -> None:
        emu.set_faults(outage="503")
        down = await api.call("GET", "/users/@me")
        assert down.status == 503 and not down.headers["Content-Type"].startswith("application/json")
        emu.set_faults(outage="off", error_rate=1.0, error_status=500)
        error = await api.call("GET", "/users/@me")
        assert (error.status, error.code) == (500, 0)
        emu.set_faults(error_rate=0.5, error_status=502)
        statuses = [(await api.as_bot(f"worker-{1 + n % 4}").call("GET", "/users/@me")).status
                    for n in range(16)]
        assert set(statuses) == {200, 502}
        emu.set_faults(error_rate=0.0)
        assert (await api.call("GET", "/users/@me")).status == 200

    run(emu, body)
    assert emu.stats()["faults"]["error-502"] == sum(1 for r in emu.requests if r.status == 502)


def test_added_latency(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(faults={"latency": 0.2})

    async def body(api: Api) -> float:
        started = time.monotonic()
        assert (await api.call("GET", "/users/@me")).status == 200
        return time.monotonic() - started

    assert run(emu, body) >= 0.2


def test_outage_reset_drops_connections_and_refuse_closes_the_port(make_emulator: MakeEmulator) -> None:
    emu = make_emulator()

    async def body(api: Api) -> None:
        emu.set_faults(outage="reset")
        with pytest.raises(aiohttp.ClientError):
            await api.call("GET", "/users/@me")
        emu.set_faults(outage="refuse")
        deadline = time.monotonic() + 10
        while True:  # the listener closes on the emulator's loop: wait for it, with a deadline
            try:
                async with aiohttp.ClientSession() as fresh:
                    await fresh.get(emu.api_base + "/users/@me")
            except aiohttp.ClientConnectorError:
                break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "the port stayed open"
            await asyncio.sleep(0.02)
        emu.set_faults(outage="off")
        deadline = time.monotonic() + 10
        while True:
            try:
                headers = {"Authorization": f"Bot {api.token}"}
                async with aiohttp.ClientSession() as fresh, fresh.get(emu.api_base + "/users/@me",
                                                                       headers=headers) as r:
                    assert r.status == 200
                    break
            except aiohttp.ClientConnectorError:
                assert time.monotonic() < deadline, "the port did not reopen"
                await asyncio.sleep(0.02)

    run(emu, body)
    assert emu.stats()["faults"]["outage-reset"] >= 1


def test_fail_next_and_drop_responses_count_down(make_emulator: MakeEmulator) -> None:
    emu = make_emulator()

    async def body(api: Api) -> None:
        emu.set_faults(fail_next=2, error_status=503)
        statuses = [(await api.call("GET", "/users/@me")).status for _ in range(3)]
        assert statuses == [503, 503, 200]
        emu.set_faults(drop_responses=1)
        with pytest.raises(aiohttp.ClientError):
            await api.post(api.channel("results"), "carried out, answer lost")
        assert (await api.post(api.channel("results"), "second")).status == 200

    run(emu, body)
    assert [m["content"] for m in emu.messages("results")] == ["carried out, answer lost", "second"]
    assert emu.faults.drop_responses == 0 and emu.faults.fail_next == 0
    assert [r.fault for r in emu.requests if r.method == "POST"] == ["drop-response", None]
