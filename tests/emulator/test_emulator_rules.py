"""Discord's rules the emulator enforces: nonces, attachments, archived threads, permissions,
the MESSAGE_CONTENT intent, bulk delete, the active-thread cap."""

from __future__ import annotations

import json

import aiohttp
from dorch_emulator import Emulator

from tests.support.emulator_api import Api, MakeEmulator, run


def test_enforced_nonce_returns_the_earlier_message_per_author(emulator: Emulator) -> None:
    async def body(api: Api) -> None:
        ch = api.channel("results")
        first = await api.post(ch, "result", nonce="n-1", enforce_nonce=True)
        retry = await api.post(ch, "result", nonce="n-1", enforce_nonce=True)
        assert retry.status == 200 and retry.data["id"] == first.data["id"]
        other_author = await api.as_bot("worker-2").post(ch, "result", nonce="n-1", enforce_nonce=True)
        assert other_author.data["id"] != first.data["id"]
        unenforced = await api.post(ch, "result", nonce="n-1")
        assert unenforced.data["id"] != first.data["id"]
        too_long = await api.post(ch, "x", nonce="n" * 26, enforce_nonce=True)
        assert (too_long.status, too_long.code) == (400, 50035)

    run(emulator, body)
    assert len(emulator.messages("results")) == 3


def test_an_enforced_nonce_of_a_deleted_message_is_unknown_not_a_new_message(emulator: Emulator) -> None:
    """As Discord does (discord-api-docs#6647): a retry after the first copy was deleted gets
    10008, so a late retry cannot bring a deleted message back."""
    async def body(api: Api) -> None:
        ch = api.channel("task-queue")
        first = await api.post(ch, "task", nonce="r-1", enforce_nonce=True)
        gone = await api.call("DELETE", f"/channels/{ch}/messages/{first.data['id']}")
        assert gone.status == 204
        retry = await api.post(ch, "task", nonce="r-1", enforce_nonce=True)
        assert (retry.status, retry.code) == (404, 10008)

    run(emulator, body)
    assert emulator.messages("task-queue") == []


def test_nonce_window_expires(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(emulator={"nonce_window": 60})

    async def body(api: Api) -> None:
        ch = api.channel("results")
        first = await api.post(ch, "x", nonce=7, enforce_nonce=True)
        emu.advance_clock(61)
        later = await api.post(ch, "x", nonce=7, enforce_nonce=True)
        assert later.data["id"] != first.data["id"]

    run(emu, body)


def test_multipart_payload_json_and_files_are_stored_and_served(emulator: Emulator) -> None:
    report = "result line\n" * 500

    async def body(api: Api) -> None:
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("payload_json", json.dumps({
            "content": "see attached", "allowed_mentions": {"parse": []},
            "attachments": [{"id": 0, "filename": "result.md", "description": "full output"}]}),
            content_type="application/json")
        form.add_field("files[0]", report.encode(), filename="result.md", content_type="text/markdown")
        form.add_field("files[1]", b"\x00\x01", filename="blob.bin")
        sent = await api.call("POST", f"/channels/{api.channel('results')}/messages", data=form)
        assert sent.status == 200, sent.data
        first, second = sent.data["attachments"]
        assert (first["filename"], first["size"]) == ("result.md", len(report))
        assert first["description"] == "full output"
        assert second["filename"] == "blob.bin"
        async with api.session.get(first["url"]) as r:
            assert r.status == 200 and await r.text() == report
        no_files = emulator.config.channel("task-queue").id
        empty_form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
        empty_form.add_field("payload_json", json.dumps({"content": ""}))
        empty = await api.call("POST", f"/channels/{no_files}/messages", data=empty_form)
        assert empty.code == 50006

    run(emulator, body)
    (record,) = [r for r in emulator.requests if r.files]
    assert record.files == ["result.md", "blob.bin"]
    assert record.body["content"] == "see attached"


def test_too_large_files_get_413(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(emulator={"max_file_bytes": 1000})

    async def body(api: Api) -> None:
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("payload_json", json.dumps({"content": "big"}))
        form.add_field("files[0]", b"x" * 1001, filename="big.txt")
        sent = await api.call("POST", f"/channels/{api.channel()}/messages", data=form)
        assert (sent.status, sent.code) == (413, 40005)

    run(emu, body)


def test_archived_thread_rules(emulator: Emulator) -> None:
    task = emulator.post_as_user("alice", "task-queue", "task")

    async def body(api: Api) -> None:
        ch = api.channel()
        thread = int((await api.thread(ch, task["id"])).data["id"])
        note = await api.post(thread, "receipt")
        other = api.as_bot("worker-2")
        not_owner = await other.call("PATCH", f"/channels/{thread}", json_body={"archived": True})
        assert not_owner.status == 200  # worker-2 has MANAGE_THREADS by default
        assert not_owner.data["thread_metadata"]["archived"] is True
        react = await api.react(thread, note.data["id"])
        assert (react.status, react.code) == (400, 50083)
        edit = await api.call("PATCH", f"/channels/{thread}/messages/{note.data['id']}",
                              json_body={"content": "x"})
        assert (edit.status, edit.code) == (400, 50083)
        rename = await api.call("PATCH", f"/channels/{thread}", json_body={"name": "renamed"})
        assert rename.code == 50083
        active = await api.call("GET", f"/guilds/{emulator.config.guild_id}/threads/active")
        assert active.data["threads"] == []
        # a new message in an archived, unlocked thread unarchives it
        assert (await api.post(thread, "more")).status == 200
        state = await api.call("GET", f"/channels/{thread}")
        assert state.data["thread_metadata"]["archived"] is False
        assert state.data["message_count"] == 2
        # the creator may archive its own thread
        own = await api.call("PATCH", f"/channels/{thread}", json_body={"archived": True})
        assert own.data["thread_metadata"]["archived"] is True

    run(emulator, body)


def test_only_the_creator_or_a_thread_manager_archives(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(bots=[{"name": "worker-1"}, {"name": "plain", "deny": ["MANAGE_THREADS"]}])
    task = emu.post_as_user("alice", "task-queue", "task")

    async def body(api: Api) -> None:
        thread = int((await api.thread(api.channel(), task["id"])).data["id"])
        denied = await api.as_bot("plain").call("PATCH", f"/channels/{thread}", json_body={"archived": True})
        assert (denied.status, denied.code) == (403, 50013)

    run(emu, body)


def test_active_thread_cap_and_auto_archive(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(emulator={"max_active_threads": 2},
                        ratelimit={"routes": {"start_thread": {"limit": 10}}})
    tasks = [emu.post_as_user("alice", "task-queue", f"t{n}")["id"] for n in range(3)]

    async def body(api: Api) -> None:
        ch = api.channel()
        assert [(await api.thread(ch, t)).status for t in tasks[:2]] == [201, 201]
        capped = await api.thread(ch, tasks[2])
        assert (capped.status, capped.code) == (400, 160006)
        emu.advance_clock(24 * 3600 + 1)  # auto_archive_duration 1440 minutes of inactivity
        assert (await api.thread(ch, tasks[2])).status == 201

    run(emu, body)


def test_missing_permissions_and_access(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(bots=[
        {"name": "worker-1"},
        {"name": "reader", "deny": ["READ_MESSAGE_HISTORY"]},
        {"name": "blind", "channels": {"task-queue": {"deny": ["VIEW_CHANNEL"]}}},
        {"name": "no-files", "deny": ["ATTACH_FILES", "ADD_REACTIONS", "MANAGE_MESSAGES"]},
    ], ratelimit={"routes": {"reactions": {"limit": 10}}})
    task = emu.post_as_user("alice", "task-queue", "task")

    async def body(api: Api) -> None:
        ch = api.channel()
        history = await api.as_bot("reader").messages(ch)
        assert (history.status, history.data) == (200, [])
        blind = await api.as_bot("blind").messages(ch)
        assert (blind.status, blind.code) == (403, 50001)
        assert (await api.as_bot("blind").post(ch, "x")).code == 50001
        no_files = api.as_bot("no-files")
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("payload_json", json.dumps({"content": "x"}))
        form.add_field("files[0]", b"x", filename="x.txt")
        assert (await no_files.call("POST", f"/channels/{ch}/messages", data=form)).code == 50013
        assert (await no_files.react(ch, task["id"])).code == 50013  # a new emoji needs ADD_REACTIONS
        assert (await api.react(ch, task["id"])).status == 204
        assert (await no_files.react(ch, task["id"])).status == 204  # an existing one does not
        delete = await no_files.call("DELETE", f"/channels/{ch}/messages/{task['id']}")
        assert (delete.status, delete.code) == (403, 50013)
        bulk = await no_files.call("POST", f"/channels/{ch}/messages/bulk-delete",
                                   json_body={"messages": [task["id"], task["id"]]})
        assert bulk.code == 50013

    run(emu, body)
    assert emu.stats()["invalid_requests"]["127.0.0.1"] == 6  # every 403 above


def test_without_the_message_content_intent_others_content_is_blank(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(bots=[{"name": "worker-1"}, {"name": "no-intent", "message_content": False}],
                        ratelimit={"routes": {"default": {"limit": 20}}})
    bot_id = emu.config.bot("no-intent").id
    plain = emu.post_as_user("alice", "task-queue", "secret task", attachments=[("a.txt", "data")])
    mention = emu.post_as_user("alice", "task-queue", f"<@{bot_id}> do this")

    async def body(api: Api) -> None:
        blind = api.as_bot("no-intent")
        app = await blind.call("GET", "/applications/@me")
        assert app.data["flags"] & (1 << 18 | 1 << 19) == 0
        own = await blind.post(api.channel(), "my own words")
        seen = {m["id"]: m for m in (await blind.messages(api.channel())).data}
        assert seen[plain["id"]]["content"] == "" and seen[plain["id"]]["attachments"] == []
        assert seen[mention["id"]]["content"].endswith("do this")
        assert seen[own.data["id"]]["content"] == "my own words"
        full = await api.call("GET", f"/channels/{api.channel()}/messages/{plain['id']}")
        assert full.data["content"] == "secret task" and len(full.data["attachments"]) == 1

    run(emu, body)


def test_bulk_delete_rules(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(ratelimit={"routes": {"bulk_delete": {"limit": 10}}})
    ids = [emu.post_as_user("bob", "worker-pool", f"board {n}")["id"] for n in range(3)]

    async def body(api: Api) -> None:
        url = f"/channels/{api.channel('worker-pool')}/messages/bulk-delete"
        one = await api.call("POST", url, json_body={"messages": ids[:1]})
        assert (one.status, one.code) == (400, 50016)
        assert (await api.call("POST", url, json_body={"messages": ids[:2]})).status == 204
        emu.advance_clock(15 * 24 * 3600)
        old = await api.call("POST", url, json_body={"messages": [ids[2], "1"]})
        assert (old.status, old.code) == (400, 50034)

    run(emu, body)
    assert [m["id"] for m in emu.messages("worker-pool")] == ids[2:]


def test_guild_members_carry_roles(emulator: Emulator) -> None:
    """REST message objects have no ``member``; dorch reads roles from the member endpoint."""
    msg = emulator.post_as_user("alice", "task-queue", "task")
    assert "member" not in msg

    async def body(api: Api) -> None:
        g = emulator.config.guild_id
        alice = await api.call("GET", f"/guilds/{g}/members/{msg['author']['id']}")
        roles = await api.call("GET", f"/guilds/{g}/roles")
        names = {r["id"]: r["name"] for r in roles.data}
        assert [names[r] for r in alice.data["roles"]] == ["dorch-submitter"]
        assert (await api.call("GET", f"/guilds/{g}/members/42")).code == 10007

    run(emulator, body)
