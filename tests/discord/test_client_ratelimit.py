"""Rate limits under load against the emulator: bursts from many coroutines and from several
processes sharing one token, the global limit, the host's invalid-request budget, and the
Cloudflare ban. The emulator's request log is the witness."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from dorch_emulator import Emulator
from dorch_emulator.records import RequestRecord

from dorch.discord import errors
from dorch.discord.client import DiscordClient
from tests.support.emulator_api import MakeEmulator
from tests.support.procs import release_together

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = [f"c{n}" for n in range(5)]
# Discord's shape, scaled so a 500-request burst takes seconds: 10 posts per 0.5 s per channel,
# 100 requests per second per bot.
BURST = {"channels": CHANNELS,
         "ratelimit": {"global_limit": 100, "global_per": 1.0,
                       "routes": {"create_message": {"limit": 10, "per": 0.5}}}}
CLIENT: dict[str, Any] = {"global_limit": 100, "global_per": 1.0}
_MAJOR = re.compile(r"/(?:channels|guilds)/(\d+)")


def into_exhausted(records: list[RequestRecord], slack: float = 0.0) -> list[RequestRecord]:
    """Requests that arrived while an answer already delivered had shown their bucket empty
    (``Remaining: 0``) and its reset had not come: sent into a known-exhausted bucket.

    SLACK: how long after the server sent that answer the client counts as knowing it (the
    log has arrival times, not send times; a starved child process reads answers late)."""
    known: dict[tuple[str | None, str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        bucket = r.response_headers.get("X-RateLimit-Bucket")
        if bucket and r.response_headers.get("X-RateLimit-Remaining") == "0":
            major = _MAJOR.search(r.path)
            key = (r.bot, bucket, major.group(1) if major else "")
            known[key].append((r.time + r.duration, float(r.response_headers["X-RateLimit-Reset"])))
    bad = []
    for r in records:
        bucket = r.response_headers.get("X-RateLimit-Bucket")
        major = _MAJOR.search(r.path)
        key = (r.bot, bucket or "", major.group(1) if major else "")
        if any(seen + slack < r.time < reset - 0.005 for seen, reset in known.get(key, ())):
            bad.append(r)
    return bad


def rate_limited(records: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.status == 429]


def test_a_500_request_burst_from_many_coroutines(make_emulator: MakeEmulator,
                                                  tmp_path: Path) -> None:
    emu = make_emulator(**BURST)
    channels = [emu.config.channel(c).id for c in CHANNELS]
    token = emu.config.bot("worker-1").token

    async def burst() -> list[str]:
        async with DiscordClient(token, api_base=emu.api_base, state_dir=tmp_path, **CLIENT) as c:
            sem = asyncio.Semaphore(50)  # 50 coroutines at a time, 500 posts

            async def post(n: int) -> str:
                async with sem:
                    msg = await c.create_message(channels[n % 5], f"burst {n}")
                    return str(msg["id"])

            return await asyncio.gather(*(post(n) for n in range(500)))

    ids = asyncio.run(burst())
    records = emu.requests
    assert len(set(ids)) == 500
    assert sum(len(emu.messages(c)) for c in CHANNELS) == 500
    limited = rate_limited(records)
    print(f"\n500-request burst, 50 coroutines: {len(records)} requests, {len(limited)} 429s")
    assert len(limited) < 0.01 * len(records)
    assert into_exhausted(records, slack=0.1) == []


def test_a_burst_from_several_processes_sharing_one_token(make_emulator: MakeEmulator,
                                                          tmp_path: Path) -> None:
    """Five worker processes of one bot: the buckets live in a shared file, not per process."""
    emu = make_emulator(**BURST)
    job = {"job": "post", "api_base": emu.api_base, "token": emu.config.bot("worker-1").token,
           "state_dir": str(tmp_path / "state"), "channels": [emu.config.channel(c).id for c in CHANNELS],
           "count": 100, "client": CLIENT}
    procs = [_child(job | {"tag": f"p{n}"}) for n in range(5)]
    results = release_together(procs)
    ids = [i for r in results for i in r["ids"]]
    records = emu.requests
    assert len(set(ids)) == 500
    limited = rate_limited(records)
    print(f"\n500-request burst, 5 processes x 100: {len(records)} requests, {len(limited)} 429s")
    assert len(limited) < 0.01 * len(records)
    assert into_exhausted(records, slack=0.1) == []


def test_the_global_limit_is_kept_before_sending(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    emu = make_emulator(ratelimit={"global_limit": 10, "global_per": 0.5,
                                   "routes": {"default": {"limit": 1000, "per": 1.0}}})
    channel = emu.config.channel("results").id
    token = emu.config.bot("worker-1").token

    async def many() -> None:
        async with DiscordClient(token, api_base=emu.api_base, state_dir=tmp_path,
                                 global_limit=10, global_per=0.5) as c:
            await asyncio.gather(*(c.get_channel(channel) for _ in range(40)))

    asyncio.run(many())
    records = emu.requests
    # The client spaces its sends by its own clock; on a loaded machine one send can be delayed
    # into the next server window and draw a 429, which it then honours. A client that ignored
    # the global limit would collect about 30 of them here.
    limited = rate_limited(records)
    assert len(limited) <= 1
    assert len(records) == 40 + len(limited)
    times = sorted(r.time for r in records)
    assert times[-1] - times[0] >= 3 * 0.5  # 40 requests at 10 per 0.5 s span 4 windows


def test_a_global_429_stops_every_request_until_retry_after(make_emulator: MakeEmulator,
                                                            tmp_path: Path) -> None:
    """The client does not know the bot's global limit (it thinks 1000/s): the emulator's
    global 429s teach it, and no request goes out while one is in force."""
    emu = make_emulator(ratelimit={"global_limit": 10, "global_per": 0.5,
                                   "routes": {"default": {"limit": 1000, "per": 1.0}}})
    channels = [emu.config.channel(c).id for c in ("task-queue", "results", "worker-pool")]
    token = emu.config.bot("worker-1").token

    async def many() -> None:
        async with DiscordClient(token, api_base=emu.api_base, state_dir=tmp_path,
                                 global_limit=1000, max_tries=10) as c:
            await asyncio.gather(*(c.get_channel(channels[n % 3]) for n in range(30)))

    asyncio.run(many())
    records = emu.requests
    assert sum(r.status == 200 for r in records) == 30
    global_hits = [r for r in records if r.scope == "global"]
    assert global_hits and all(r.response_headers.get("X-RateLimit-Global") == "true"
                               for r in global_hits)
    # Waiting out each global 429 costs one 429 per request still to send per window: about
    # 20 + 10 here. A client that retried without waiting would pile up hundreds.
    assert len(global_hits) <= 40, len(global_hits)
    windows = sorted(r.time for r in records if r.status == 200)
    assert windows[-1] - windows[0] >= 2 * 0.5 - 0.05  # 30 passed at 10 per 0.5 s


def test_invalid_requests_are_counted_across_processes(emulator: Emulator, tmp_path: Path) -> None:
    """Two processes with a bad token share the host's count; at the limit a third client
    refuses to send anything."""
    state = tmp_path / "state"
    job = {"job": "invalid", "api_base": emulator.api_base, "token": "revoked-token",
           "state_dir": str(state), "count": 15}
    results = release_together([_child(job), _child(job)])
    assert [r["unauthorized"] for r in results] == [15, 15]
    assert len(emulator.requests) == 30

    async def third() -> None:
        async with DiscordClient("revoked-token", api_base=emulator.api_base, state_dir=state,
                                 invalid_limit=30) as c:
            assert c.invalid.count() == 30
            await c.me()

    with pytest.raises(errors.TooManyInvalidRequests) as exc:
        asyncio.run(third())
    assert exc.value.count == 30 and exc.value.retry_after > 0
    assert len(emulator.requests) == 30  # refused before sending


def test_a_cloudflare_ban_stops_every_process_on_the_host(make_emulator: MakeEmulator,
                                                          tmp_path: Path) -> None:
    emu = make_emulator(emulator={"invalid_limit": 5, "ban_seconds": 120})
    state = tmp_path / "state"

    async def bad_token() -> None:
        async with DiscordClient("revoked-token", api_base=emu.api_base, state_dir=state) as c:
            for _ in range(5):
                with pytest.raises(errors.Unauthorized):
                    await c.me()
            await c.me()  # the emulator's Cloudflare front now answers a bare 429

    with pytest.raises(errors.CloudflareBan) as ban:
        asyncio.run(bad_token())
    assert 100 < ban.value.retry_after <= 120
    assert emu.requests[-1].scope == "cloudflare"
    sent = len(emu.requests)

    async def good_token() -> None:  # another bot, another process: same host, same ban
        async with DiscordClient(emu.config.bot("worker-2").token, api_base=emu.api_base,
                                 state_dir=state) as c:
            await c.me()

    with pytest.raises(errors.CloudflareBan):
        asyncio.run(good_token())
    assert len(emu.requests) == sent


# -- child processes -----------------------------------------------------------------------------

def _child(job: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.support.client_child", json.dumps(job)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
