"""The emulator answers like Discord: auth, channels, messages, reactions, threads, headers."""

from __future__ import annotations

import asyncio

from dorch_emulator import Emulator
from dorch_emulator.snowflake import DISCORD_EPOCH_MS, time_ms

from tests.support.emulator_api import Api, MakeEmulator, run

ROOMY = {"routes": {"default": {"limit": 100}}}  # for tests that read more than 5 times a second


def test_token_identifies_the_bot_and_a_bad_token_is_401(emulator: Emulator) -> None:
    async def body(api: Api) -> None:
        me = await api.call("GET", "/users/@me")
        assert me.status == 200
        assert me.data["id"] == str(emulator.config.bot("worker-1").id)
        assert me.data["bot"] is True
        assert me.headers["Content-Type"] == "application/json"
        bad = await api.call("GET", "/users/@me", token="not-a-token")
        assert (bad.status, bad.code) == (401, 0)
        app = await api.call("GET", "/applications/@me")
        assert app.data["flags"] & (1 << 19)  # GATEWAY_MESSAGE_CONTENT_LIMITED

    run(emulator, body)
    assert emulator.stats()["invalid_requests"] == {"127.0.0.1": 1}
    assert "not-a-token" not in repr(emulator.requests)


def test_unknown_routes_channels_and_messages(emulator: Emulator) -> None:
    async def body(api: Api) -> None:
        assert (await api.call("GET", "/nothing/here")).status == 404
        assert (await api.call("GET", "/channels/1")).code == 10003
        assert (await api.call("GET", f"/channels/{api.channel()}/messages/1")).code == 10008
        bad = await api.call("GET", "/channels/abc")
        assert (bad.status, bad.code) == (400, 50035)
        channel = await api.call("GET", f"/channels/{api.channel('results')}")
        assert channel.data["name"] == "results" and channel.data["type"] == 0

    run(emulator, body)


def test_messages_are_snowflakes_read_newest_first_with_paging(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(ratelimit=ROOMY)
    ids = [int(emulator.post_as_user("alice", "task-queue", f"task {n}")["id"]) for n in range(7)]
    assert ids == sorted(ids)
    assert time_ms(ids[0]) > DISCORD_EPOCH_MS

    async def body(api: Api) -> None:
        ch = api.channel()
        newest = await api.messages(ch, limit=3)
        assert [int(m["id"]) for m in newest.data] == ids[:-4:-1]
        before = await api.messages(ch, limit=2, before=ids[3])
        assert [int(m["id"]) for m in before.data] == [ids[2], ids[1]]
        after = await api.messages(ch, limit=2, after=ids[3])
        assert [int(m["id"]) for m in after.data] == [ids[5], ids[4]]
        around = await api.messages(ch, limit=3, around=ids[3])
        assert [int(m["id"]) for m in around.data] == [ids[4], ids[3], ids[2]]
        assert (await api.messages(ch, limit=101)).code == 50035
        assert (await api.messages(ch, limit=0)).code == 50035
        one = await api.call("GET", f"/channels/{ch}/messages/{ids[0]}")
        assert one.data["content"] == "task 0"
        assert one.data["author"]["username"] == "alice"

    run(emulator, body)


def test_create_edit_delete_message(emulator: Emulator) -> None:
    async def body(api: Api) -> None:
        ch = api.channel("results")
        sent = await api.post(ch, f"hi <@{emulator.config.member('bob').id}>",
                              allowed_mentions={"parse": []})
        assert sent.status == 200
        assert sent.data["mentions"] == []  # allowed_mentions parse [] pings nobody
        mid = sent.data["id"]
        other = api.as_bot("worker-2")
        denied = await other.call("PATCH", f"/channels/{ch}/messages/{mid}", json_body={"content": "x"})
        assert (denied.status, denied.code) == (403, 50005)
        edited = await api.call("PATCH", f"/channels/{ch}/messages/{mid}", json_body={"content": "edited"})
        assert edited.data["content"] == "edited" and edited.data["edited_timestamp"]
        assert (await api.call("DELETE", f"/channels/{ch}/messages/{mid}")).status == 204
        again = await api.call("DELETE", f"/channels/{ch}/messages/{mid}")
        assert (again.status, again.code) == (404, 10008)
        empty = await api.post(ch, "")
        assert (empty.status, empty.code) == (400, 50006)

    run(emulator, body)


def test_content_limit_is_2000_characters(emulator: Emulator) -> None:
    async def body(api: Api) -> None:
        ch = api.channel()
        assert (await api.post(ch, "x" * 2000)).status == 200
        too_long = await api.post(ch, "x" * 2001)
        assert (too_long.status, too_long.code) == (400, 50035)
        assert too_long.data["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"

    run(emulator, body)
    assert len(emulator.messages("task-queue")) == 1


def test_two_bots_both_get_204_on_the_same_reaction_sorted_by_id(emulator: Emulator) -> None:
    msg = emulator.post_as_user("alice", "task-queue", "claim me")
    bots = ["worker-3", "worker-1", "worker-2"]

    async def body(api: Api) -> None:
        ch = api.channel()
        answers = await asyncio.gather(*(api.as_bot(b).react(ch, msg["id"]) for b in bots))
        assert [a.status for a in answers] == [204, 204, 204]
        users = await api.call("GET", f"/channels/{ch}/messages/{msg['id']}/reactions/%E2%9C%85")
        ids = [int(u["id"]) for u in users.data]
        assert ids == sorted(emulator.config.bot(b).id for b in bots)
        page = await api.call("GET", f"/channels/{ch}/messages/{msg['id']}/reactions/%E2%9C%85",
                              params={"after": ids[0], "limit": 1})
        assert [int(u["id"]) for u in page.data] == [ids[1]]
        seen = await api.call("GET", f"/channels/{ch}/messages/{msg['id']}")
        assert seen.data["reactions"][0]["count"] == 3 and seen.data["reactions"][0]["me"] is True
        assert (await api.as_bot("worker-4").call("GET", f"/channels/{ch}/messages/{msg['id']}")
                ).data["reactions"][0]["me"] is False

    run(emulator, body)


def test_removing_reactions(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(ratelimit={"routes": {"reactions": {"limit": 10}}})
    msg = emulator.post_as_user("alice", "task-queue", "x")
    emulator.react_as_user("bob", "task-queue", msg["id"], "🛑")

    async def body(api: Api) -> None:
        ch = api.channel()
        assert (await api.react(ch, msg["id"], "🛑")).status == 204
        bob = emulator.config.member("bob").id
        url = f"/channels/{ch}/messages/{msg['id']}/reactions/%F0%9F%9B%91/{bob}"
        removed = await api.as_bot("worker-2").call("DELETE", url)
        assert removed.status == 204  # worker-2 has MANAGE_MESSAGES by default
        users = await api.call("GET", f"/channels/{ch}/messages/{msg['id']}/reactions/%F0%9F%9B%91")
        assert [u["username"] for u in users.data] == ["worker-1"]
        assert (await api.react(ch, msg["id"], "🛑", "DELETE")).status == 204
        seen = await api.call("GET", f"/channels/{ch}/messages/{msg['id']}")
        assert "reactions" not in seen.data
        assert (await api.react(ch, msg["id"], "nope")).code == 10014

    run(emulator, body)


def test_start_thread_once_then_160004(emulator: Emulator) -> None:
    msg = emulator.post_as_user("alice", "task-queue", "a task")

    async def body(api: Api) -> None:
        ch = api.channel()
        won = await api.thread(ch, msg["id"])
        assert won.status == 201
        assert won.data["id"] == msg["id"]
        assert won.data["owner_id"] == str(emulator.config.bot("worker-1").id)
        assert won.data["parent_id"] == str(ch)
        lost = await api.as_bot("worker-2").thread(ch, msg["id"])
        assert (lost.status, lost.code) == (400, 160004)
        starter = await api.call("GET", f"/channels/{ch}/messages/{msg['id']}")
        assert starter.data["thread"]["id"] == msg["id"]
        in_thread = await api.post(int(msg["id"]), "claimed by worker-1")
        assert in_thread.status == 200 and in_thread.data["channel_id"] == msg["id"]
        listed = await api.messages(int(msg["id"]))
        assert [m["content"] for m in listed.data] == ["claimed by worker-1"]
        active = await api.call("GET", f"/guilds/{emulator.config.guild_id}/threads/active")
        assert [t["id"] for t in active.data["threads"]] == [msg["id"]]

    run(emulator, body)


def test_thread_race_under_concurrency_has_exactly_one_winner(emulator: Emulator) -> None:
    msg = emulator.post_as_user("alice", "task-queue", "contended")
    bots = ["worker-1", "worker-2", "worker-3", "worker-4", "submitter"]

    async def body(api: Api) -> list[int]:
        ch = api.channel()
        calls = [api.as_bot(bots[n % len(bots)]).thread(ch, msg["id"], f"try {n}") for n in range(25)]
        answers = await asyncio.gather(*calls)
        return [a.status if a.status == 201 else a.code or 0 for a in answers]

    outcomes = run(emulator, body)
    assert outcomes.count(201) == 1
    assert all(o in (201, 160004) or o == 0 for o in outcomes)
    # rate-limited tries (5 per 5 s per bot) are 429s, not a second winner
    assert outcomes.count(160004) >= 4


def test_rate_limit_headers_and_429_after_the_bucket_is_empty(emulator: Emulator) -> None:
    async def body(api: Api) -> None:
        ch = api.channel("worker-pool")
        answers = [await api.post(ch, f"n{n}") for n in range(6)]
        assert [a.status for a in answers] == [200] * 5 + [429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
        first = answers[0].headers
        assert first["X-RateLimit-Limit"] == "5"
        assert 4.5 < float(first["X-RateLimit-Reset-After"]) <= 5.0
        assert {a.headers["X-RateLimit-Bucket"] for a in answers} == {first["X-RateLimit-Bucket"]}
        limited = answers[5]
        assert limited.headers["X-RateLimit-Scope"] == "user"
        assert limited.headers["Via"]
        assert 0 < limited.data["retry_after"] <= 5.0 and limited.data["global"] is False
        # the bucket is per channel (major parameter) and per bot
        assert (await api.post(api.channel("results"), "other channel")).status == 200
        assert (await api.as_bot("worker-2").post(ch, "other bot")).status == 200

    run(emulator, body)
    assert emulator.stats()["rate_limited"] == {"user": 1}
