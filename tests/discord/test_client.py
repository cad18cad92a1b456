"""The Discord client against the emulator (a real aiohttp server on 127.0.0.1): the endpoints,
mention suppression, nonces, attachments, errors and retries, token redaction."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dorch_emulator import Emulator

from dorch import __version__
from dorch.discord import errors
from dorch.discord.client import DiscordClient
from dorch.discord.content import File, Post, head
from tests.support.emulator_api import MakeEmulator

T = TypeVar("T")


def run(emu: Emulator, tmp_path: Path, body: Callable[[DiscordClient], Awaitable[T]],
        bot: str = "worker-1", token: str | None = None, **kwargs: Any) -> T:
    """BODY(client) for BOT on EMU, in a fresh event loop, with its state under TMP_PATH."""
    kwargs.setdefault("retry_base", 0.01)

    async def go() -> T:
        tok = token if token is not None else emu.config.bot(bot).token
        async with DiscordClient(tok, api_base=emu.api_base, state_dir=tmp_path / "state",
                                 **kwargs) as client:
            return await body(client)

    return asyncio.run(go())


def test_the_claim_path_end_to_end(emulator: Emulator, tmp_path: Path) -> None:
    """Post a task, claim it by thread (the loser gets 160004), react, reply, archive, reap."""
    task_queue = emulator.config.channel("task-queue").id
    task = emulator.post_as_user("alice", "task-queue", "write a sort function")

    async def body(w1: DiscordClient) -> None:
        me = await w1.me()
        assert me["username"] == "worker-1" and me["bot"] is True
        page = await w1.list_messages(task_queue, after=0, limit=10)
        assert [m["id"] for m in page] == [task["id"]]
        assert page[0]["content"] == "write a sort function"
        thread = await w1.start_thread(task_queue, task["id"], "task: write a sort function")
        assert thread["id"] == task["id"] and thread["owner_id"] == me["id"]
        async with DiscordClient(emulator.config.bot("worker-2").token, api_base=emulator.api_base,
                                 state_dir=tmp_path / "state") as w2:
            with pytest.raises(errors.ThreadAlreadyExists) as lost:
                await w2.start_thread(task_queue, task["id"], "task")
            assert lost.value.status == 400 and lost.value.code == 160004
            assert not lost.value.ambiguous
        receipt = await w1.create_message(thread["id"], "claimed by worker-1")
        await w1.add_reaction(task_queue, task["id"], "✅")
        users = await w1.list_reactions(task_queue, task["id"], "✅")
        assert [u["id"] for u in users] == [me["id"]]
        edited = await w1.edit_message(thread["id"], receipt["id"], "claimed by worker-1 (renewed)")
        assert edited["content"].endswith("(renewed)")
        assert (await w1.get_message(thread["id"], receipt["id"]))["edited_timestamp"]
        await w1.delete_message(thread["id"], receipt["id"])  # the reaper's compare-and-set
        with pytest.raises(errors.NotFound) as gone:
            await w1.delete_message(thread["id"], receipt["id"])
        assert gone.value.code == 10008 and gone.value.exit_code == 75
        archived = await w1.edit_channel(thread["id"], archived=True, locked=False)
        assert archived["thread_metadata"]["archived"] is True
        channel = await w1.get_channel(task_queue)
        assert channel["name"] == "task-queue"
        extra = [await w1.create_message(task_queue, f"note {n}") for n in range(3)]
        await w1.bulk_delete(task_queue, [m["id"] for m in extra])
        assert [m["id"] for m in await w1.list_messages(task_queue)] == [task["id"]]

    run(emulator, tmp_path, body)


def test_every_message_suppresses_mentions_and_carries_a_nonce(emulator: Emulator,
                                                               tmp_path: Path) -> None:
    channel = emulator.config.channel("results").id
    alice = emulator.config.member("alice").id

    async def body(client: DiscordClient) -> dict[str, Any]:
        await client.create_message(channel, f"@everyone <@{alice}> done")
        return await client.create_message(channel, "own nonce", nonce="outbox-item-17")

    second = run(emulator, tmp_path, body)
    posts = [r for r in emulator.requests if r.route == "POST /channels/{channel_id}/messages"]
    assert len(posts) == 2
    for record in posts:
        assert record.body["allowed_mentions"] == {"parse": []}
        assert record.body["enforce_nonce"] is True
        assert 0 < len(str(record.body["nonce"])) <= 25
        ua = record.request_headers["User-Agent"]
        assert ua == f"DiscordBot (https://github.com/dorch/dorch, {__version__})"
    assert posts[1].body["nonce"] == "outbox-item-17"
    first = emulator.messages("results")[0]
    assert first["mentions"] == [] and first["mention_everyone"] is False
    assert second["content"] == "own nonce"


def test_the_same_nonce_posts_once(emulator: Emulator, tmp_path: Path) -> None:
    """What the outbox relies on: a post retried after a crash, with its stored nonce."""
    channel = emulator.config.channel("results").id

    async def body(client: DiscordClient) -> tuple[dict[str, Any], dict[str, Any]]:
        a = await client.create_message(channel, "result of task 1", nonce="n-task-1")
        b = await client.create_message(channel, "result of task 1", nonce="n-task-1")
        return a, b

    a, b = run(emulator, tmp_path, body)
    assert a["id"] == b["id"]
    assert len(emulator.messages("results")) == 1


def test_attachment_upload(emulator: Emulator, tmp_path: Path) -> None:
    channel = emulator.config.channel("results").id
    text = "```\n" + "\n".join(f"line {i} of the answer" for i in range(400)) + "\n```\n"
    post = Post(head(text, 1500) + "\n-# the whole answer: result.md", (File.text("result.md", text),))
    binary = File("data.bin", bytes(range(256)) * 10, "application/octet-stream", "raw bytes")

    msg = run(emulator, tmp_path,
              lambda c: c.create_message(channel, post.content, files=[*post.files, binary]))
    assert [a["filename"] for a in msg["attachments"]] == ["result.md", "data.bin"]
    with urllib.request.urlopen(msg["attachments"][0]["url"], timeout=10) as r:
        assert r.read().decode() == text
    with urllib.request.urlopen(msg["attachments"][1]["url"], timeout=10) as r:
        assert r.read() == binary.data
    (record,) = [r for r in emulator.requests if r.method == "POST"]
    assert record.request_headers["Content-Type"].startswith("multipart/form-data")
    assert record.files == ["result.md", "data.bin"]
    assert record.body["allowed_mentions"] == {"parse": []} and record.body["nonce"]
    assert msg["content"] == post.content and len(msg["content"]) <= 2000


def test_too_long_content_is_refused_not_truncated(emulator: Emulator, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2001 characters"):
        run(emulator, tmp_path, lambda c: c.create_message(1, "x" * 2001))
    assert emulator.requests == []


# -- errors and retries --------------------------------------------------------------------------

def test_no_retry_on_4xx_and_typed_errors(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    emu = make_emulator(bots=[{"name": "worker-1", "channels": {"results": {"deny": ["VIEW_CHANNEL"]}}},
                              {"name": "worker-2", "deny": ["SEND_MESSAGES"]}])
    results = emu.config.channel("results").id
    queue = emu.config.channel("task-queue").id

    async def w1(client: DiscordClient) -> None:
        with pytest.raises(errors.Forbidden) as denied:
            await client.get_channel(results)
        assert denied.value.code == 50001 and denied.value.exit_code == 78
        with pytest.raises(errors.NotFound) as unknown:
            await client.get_channel(12345678901234567)
        assert unknown.value.code == 10003 and unknown.value.exit_code == 78
        with pytest.raises(errors.NotFound) as no_msg:
            await client.get_message(queue, 12345678901234567)
        assert no_msg.value.code == 10008 and no_msg.value.exit_code == 75

    async def w2(client: DiscordClient) -> None:
        with pytest.raises(errors.Forbidden) as denied:
            await client.create_message(queue, "hi")
        assert denied.value.code == 50013

    run(emu, tmp_path, w1)
    run(emu, tmp_path, w2, bot="worker-2")
    assert [r.status for r in emu.requests] == [403, 404, 404, 403]  # one try each


def test_bad_token_is_unauthorized_exit_78(emulator: Emulator, tmp_path: Path) -> None:
    with pytest.raises(errors.Unauthorized) as exc:
        run(emulator, tmp_path, lambda c: c.me(), token="not-a-token")
    assert exc.value.status == 401 and exc.value.exit_code == 78
    assert len(emulator.requests) == 1


def test_5xx_is_retried_until_it_passes(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    emu = make_emulator(emulator={"seed": 7}, faults={"error_rate": 0.4, "error_status": 502},
                        ratelimit={"routes": {"create_message": {"limit": 100, "per": 1.0}}})
    channel = emu.config.channel("results").id

    async def body(client: DiscordClient) -> list[str]:
        return [(await client.create_message(channel, f"post {n}"))["id"] for n in range(12)]

    ids = run(emu, tmp_path, body, max_tries=10)
    statuses = [r.status for r in emu.requests]
    assert statuses.count(502) >= 2, statuses  # the fault did fire
    assert statuses.count(200) == 12
    assert len(set(ids)) == 12 and len(emu.messages("results")) == 12


def test_persistent_5xx_gives_up_after_max_tries(emulator: Emulator, tmp_path: Path) -> None:
    emulator.set_faults(error_rate=1.0, error_status=503)
    with pytest.raises(errors.ServerError) as exc:
        run(emulator, tmp_path, lambda c: c.me(), max_tries=3)
    assert exc.value.status == 503 and exc.value.exit_code == 75 and exc.value.ambiguous
    assert len(emulator.requests) == 3


def test_connection_resets_are_retried_then_reported(emulator: Emulator, tmp_path: Path) -> None:
    emulator.set_faults(outage="reset")
    with pytest.raises(errors.DiscordConnectionError, match="cannot reach Discord"):
        run(emulator, tmp_path, lambda c: c.me(), max_tries=3)
    assert [r.fault for r in emulator.requests] == ["outage-reset"] * 3


def test_an_outage_that_ends_is_ridden_out(emulator: Emulator, tmp_path: Path) -> None:
    """Connections refused for 0.3 s: the backoff (0.1, 0.2, 0.4 ... s) outlasts it."""
    emulator.set_faults(outage="refuse", outage_seconds=0.3)
    me = run(emulator, tmp_path, lambda c: c.me(), retry_base=0.1, max_tries=8)
    assert me["username"] == "worker-1"


def test_a_per_route_429_is_waited_out(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    """A hidden sub-limit (429 with Remaining > 0): retried after retry_after, never hammered."""
    emu = make_emulator(ratelimit={"routes": {"create_message": {
        "limit": 50, "per": 5.0, "hidden_limit": 2, "hidden_per": 0.3}}})
    channel = emu.config.channel("results").id

    async def body(client: DiscordClient) -> None:
        await asyncio.gather(*(client.create_message(channel, f"m{n}") for n in range(5)))

    run(emu, tmp_path, body)
    assert len(emu.messages("results")) == 5
    records = emu.requests
    limited = [r for r in records if r.status == 429]
    assert limited and all(r.response_headers["X-RateLimit-Remaining"] != "0" for r in limited)
    for hit in limited:  # after a 429 is answered, nothing is sent before its retry_after
        answered = hit.time + hit.duration
        assert hit.retry_after is not None
        early = [r for r in records if answered + 0.02 < r.time < hit.time + hit.retry_after - 0.02]
        assert early == [], (hit, early)


# -- secrets -------------------------------------------------------------------------------------

def test_the_token_never_appears_in_logs_errors_or_reprs(
        make_emulator: MakeEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every kind of failure at DEBUG; the raw log records (before dorch.log's redaction),
    exception texts, reprs and their causes are searched for the token."""
    emu = make_emulator(bots=[{"name": "worker-1", "deny": ["SEND_MESSAGES"]}],
                        ratelimit={"routes": {"default": {"limit": 1, "per": 0.2}}})
    token = emu.config.bot("worker-1").token
    channel = emu.config.channel("results").id
    texts: list[str] = []

    def keep(exc: BaseException) -> None:
        while exc is not None:
            texts.extend([str(exc), repr(exc), repr(exc.args)])
            exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]

    async def body(client: DiscordClient) -> None:
        texts.append(repr(client))
        texts.append(str(vars(client)))
        await client.me()
        await asyncio.gather(*(client.get_channel(channel) for _ in range(3)))  # waits on 1/0.2 s
        for call in (client.create_message(channel, "x"), client.get_channel(1)):
            try:
                await call
            except errors.DiscordError as exc:
                keep(exc)
        emu.set_faults(outage="reset")
        try:
            await client.application()
        except errors.DiscordError as exc:
            keep(exc)
        emu.set_faults(outage="off", error_rate=1.0)
        try:
            await client.application()
        except errors.DiscordError as exc:
            keep(exc)
        emu.set_faults(error_rate=0.0)

    caplog.set_level(logging.DEBUG)
    run(emu, tmp_path, body, max_tries=2)
    for bad in ("wrong-token-value", f"Bot {token}xyz"):
        try:
            run(emu, tmp_path, lambda c: c.me(), token=bad)
        except errors.DiscordError as exc:
            keep(exc)
    lines = [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    assert len(caplog.records) >= 8 and len(texts) >= 8
    assert any("403" in t for t in texts) and any("cannot reach" in t for t in texts)
    for text in lines + texts:
        assert token not in text
        assert "wrong-token-value" not in text


def test_user_agent_and_repr(emulator: Emulator, tmp_path: Path) -> None:
    client = DiscordClient("abc.def.secret", api_base=emulator.api_base, state_dir=tmp_path)
    assert "secret" not in repr(client) and "token=***" in repr(client)
    asyncio.run(client.aclose())


# -- answers lost after Discord acted (the emulator's drop_responses fault) -----------------------


def test_a_post_whose_answer_was_lost_is_not_duplicated(emulator: Emulator, tmp_path: Path) -> None:
    channel = emulator.config.channel("results").id
    emulator.set_faults(drop_responses=1)  # the message is created, its answer never arrives
    msg = run(emulator, tmp_path, lambda c: c.create_message(channel, "the result"))
    posts = [r for r in emulator.requests if r.method == "POST"]
    assert len(posts) == 2 and posts[0].body["nonce"] == posts[1].body["nonce"]
    assert [m["id"] for m in emulator.messages("results")] == [msg["id"]]


def test_a_claim_whose_answer_was_lost_is_still_ours(emulator: Emulator, tmp_path: Path) -> None:
    """The retried start-thread gets 160004 for our own thread: the client sees it is ours."""
    task = emulator.post_as_user("alice", "task-queue", "task")
    channel = emulator.config.channel("task-queue").id
    emulator.set_faults(drop_responses=1)
    thread = run(emulator, tmp_path, lambda c: c.start_thread(channel, task["id"], "task"))
    assert thread["id"] == task["id"]
    assert thread["owner_id"] == str(emulator.config.bot("worker-1").id)
    assert [r.code for r in emulator.requests if r.method == "POST"][-1] == 160004
