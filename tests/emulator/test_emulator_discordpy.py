"""The emulator checked by an independent, real client: discord.py's HTTP layer.

discord.py is pointed at the emulator by its documented base URL (``discord.http.Route.BASE``,
which ``discord.http._set_api_version`` also sets). Where discord.py and the emulator disagree,
the emulator is wrong.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import discord
import pytest
from discord.http import HTTPClient, Route, handle_message_parameters
from dorch_emulator import Emulator
from dorch_emulator.records import RequestRecord

from tests.support.emulator_api import MakeEmulator

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _restore_route_base() -> Iterator[None]:
    original = Route.BASE
    yield
    Route.BASE = original


def with_clients(emu: Emulator, body: Callable[..., Awaitable[T]], *bots: str) -> T:
    """Log one discord.py HTTPClient in per bot name and run BODY(*clients)."""
    Route.BASE = emu.api_base

    async def go() -> T:
        clients = [HTTPClient(asyncio.get_running_loop()) for _ in bots]
        try:
            for client, bot in zip(clients, bots, strict=True):
                me = await client.static_login(emu.config.bot(bot).token)
                assert me["id"] == str(emu.config.bot(bot).id)
            return await body(*clients)
        finally:
            for client in clients:
                await client.close()

    return asyncio.run(go())


def send(client: HTTPClient, channel_id: int | str, content: str = "", **kwargs: Any) -> Awaitable[Any]:
    params = handle_message_parameters(content=content, allowed_mentions=discord.AllowedMentions.none(),
                                       **kwargs)
    return client.send_message(channel_id, params=params)


def test_messages_reactions_threads_and_the_160004_race(emulator: Emulator) -> None:
    task_queue = emulator.config.channel("task-queue").id
    task = emulator.post_as_user("alice", "task-queue", "Write a sort function [thinking:low]")

    async def body(one: HTTPClient, two: HTTPClient) -> None:
        newest = await one.logs_from(task_queue, limit=10)
        assert [m["id"] for m in newest] == [task["id"]]
        assert newest[0]["content"] == "Write a sort function [thinking:low]"

        await one.add_reaction(task_queue, task["id"], "✅")
        await two.add_reaction(task_queue, task["id"], "✅")
        users = await one.get_reaction_users(task_queue, task["id"], "✅", limit=10)
        assert [u["id"] for u in users] == sorted((u["id"] for u in users), key=int)
        assert len(users) == 2

        thread = await one.start_thread_with_message(task_queue, task["id"], name="task",
                                                     auto_archive_duration=60)
        assert thread["id"] == task["id"] and thread["type"] == 11
        with pytest.raises(discord.HTTPException) as lost:
            await two.start_thread_with_message(task_queue, task["id"], name="task", auto_archive_duration=60)
        assert lost.value.status == 400 and lost.value.code == 160004

        receipt = await send(one, thread["id"], "claimed by worker-1", nonce="claim-1")
        assert receipt["channel_id"] == thread["id"] and receipt["nonce"] == "claim-1"
        starter = await two.get_message(task_queue, task["id"])
        assert starter["thread"]["id"] == thread["id"]

        # the requeue compare-and-set: the first delete wins, the second is 404 / 10008
        await two.delete_message(thread["id"], receipt["id"])
        with pytest.raises(discord.NotFound) as gone:
            await one.delete_message(thread["id"], receipt["id"])
        assert gone.value.code == 10008

        with pytest.raises(discord.Forbidden) as not_author:
            await two.edit_message(task_queue, task["id"], params=handle_message_parameters(content="x"))
        assert not_author.value.code == 50005

    with_clients(emulator, body, "worker-1", "worker-2")


def test_nonce_dedup_and_attachments_through_discord_py(emulator: Emulator) -> None:
    results = emulator.config.channel("results").id

    async def body(client: HTTPClient) -> None:
        first = await send(client, results, "answer", nonce="result-7")
        again = await send(client, results, "answer", nonce="result-7")
        assert again["id"] == first["id"]

        payload = "line\n" * 1000
        long = await send(client, results, "the full output is attached",
                          file=discord.File(io.BytesIO(payload.encode()), filename="output.txt"))
        (attachment,) = long["attachments"]
        assert attachment["filename"] == "output.txt" and attachment["size"] == len(payload)
        assert (await client.get_from_cdn(attachment["url"])).decode() == payload

        with pytest.raises(discord.HTTPException) as too_long:
            await send(client, results, "x" * 2001)
        assert too_long.value.status == 400 and too_long.value.code == 50035

    with_clients(emulator, body, "worker-1")
    assert [m["content"] for m in emulator.messages("results")] == ["answer", "the full output is attached"]
    multipart = [r for r in emulator.requests if r.files]
    assert multipart[0].files == ["output.txt"]
    assert multipart[0].body["allowed_mentions"] == {"parse": []}


def test_permissions_and_unknown_objects_have_discords_codes(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(bots=[
        {"name": "worker-1"},
        {"name": "mute", "channels": {"task-queue": {"deny": ["SEND_MESSAGES", "CREATE_PUBLIC_THREADS"]},
                                      "results": {"deny": ["VIEW_CHANNEL"]}}},
    ])
    task = emu.post_as_user("alice", "task-queue", "task")
    task_queue, results = emu.config.channel("task-queue").id, emu.config.channel("results").id

    async def body(worker: HTTPClient, mute: HTTPClient) -> None:
        with pytest.raises(discord.Forbidden) as cannot_send:
            await send(mute, task_queue, "hello")
        assert cannot_send.value.code == 50013
        with pytest.raises(discord.Forbidden) as cannot_thread:
            await mute.start_thread_with_message(task_queue, task["id"], name="t", auto_archive_duration=60)
        assert cannot_thread.value.code == 50013
        with pytest.raises(discord.Forbidden) as cannot_see:
            await mute.get_channel(results)
        assert cannot_see.value.code == 50001
        with pytest.raises(discord.NotFound) as no_channel:
            await worker.get_channel(1234567890123456789)
        assert no_channel.value.code == 10003
        with pytest.raises(discord.NotFound) as no_message:
            await worker.get_message(task_queue, 1234567890123456789)
        assert no_message.value.code == 10008

    with_clients(emu, body, "worker-1", "mute")


def _waited(records: list[RequestRecord], scope: str) -> list[tuple[float, float]]:
    """For each 429 of SCOPE: (retry_after, seconds until the same bot sent the same request again)."""
    out = []
    for i, limited in enumerate(records):
        if limited.scope != scope:
            continue
        retry = next(r for r in records[i + 1:]
                     if (r.bot, r.method, r.path) == (limited.bot, limited.method, limited.path))
        assert limited.retry_after is not None
        out.append((limited.retry_after, retry.time - limited.time))
    return out


def test_discord_py_obeys_the_global_429(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(ratelimit={"global_limit": 4, "global_per": 0.5})
    names = ("task-queue", "results", "worker-pool")
    posted = [(emu.config.channel(names[n % 3]).id, emu.post_as_user("alice", names[n % 3], f"m{n}")["id"])
              for n in range(9)]

    async def body(client: HTTPClient) -> list[Any]:
        return list(await asyncio.gather(*(client.get_message(c, m) for c, m in posted)))

    got = with_clients(emu, body, "worker-1")
    assert [m["id"] for m in got] == [m for _, m in posted]
    records = emu.requests
    assert all(r.status == 200 for r in records if r.scope is None)
    waits = _waited(records, "global")
    assert waits, "the burst should have hit the global limit"
    assert all(waited >= retry_after - 0.002 for retry_after, waited in waits)
    limited = next(r for r in records if r.scope == "global")
    assert limited.response_headers["X-RateLimit-Global"] == "true"
    assert limited.response_headers["Via"]


def test_discord_py_obeys_a_hidden_sub_limit(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(ratelimit={"routes": {"create_message": {"limit": 5, "per": 5.0, "hidden_limit": 2,
                                                                 "hidden_per": 0.3}}})
    channel = emu.config.channel("worker-pool").id

    async def body(client: HTTPClient) -> list[Any]:
        return [await send(client, channel, f"board {n}") for n in range(4)]

    sent = with_clients(emu, body, "worker-1")
    assert [m["content"] for m in sent] == [f"board {n}" for n in range(4)]
    records = emu.requests
    hidden = [r for r in records if r.scope == "user"]
    assert hidden and all(int(r.response_headers["X-RateLimit-Remaining"]) > 0 for r in hidden)
    assert all(waited >= retry_after - 0.002 for retry_after, waited in _waited(records, "user"))


def test_a_cloudflare_ban_is_not_mistaken_for_a_rate_limit(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(emulator={"invalid_limit": 3, "ban_seconds": 60})
    Route.BASE = emu.api_base

    async def body() -> None:
        client = HTTPClient(asyncio.get_running_loop())
        try:
            for _ in range(3):
                with pytest.raises(discord.LoginFailure):
                    await client.static_login("wrong-token")
            with pytest.raises(discord.HTTPException) as banned:
                await client.static_login(emu.config.bot("worker-1").token)
            assert banned.value.status == 429
            assert banned.value.code == 0  # no JSON body: discord.py did not take it for Discord's
        finally:
            await client.close()

    asyncio.run(body())
    assert emu.stats()["bans"]
    assert emu.requests[-1].scope == "cloudflare" and "Via" not in emu.requests[-1].response_headers
