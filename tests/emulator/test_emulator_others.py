"""What others do in the guild, as Discord does it: webhooks and apps post (``bot: true`` without
being a bot of the guild), members start, post in and archive threads, downloads arrive over
time, answers get lost. The control API does each for a test in another process."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dorch_emulator import Emulator, EmulatorConfigError
from dorch_emulator.remote import EmulatorProcess, RemoteError
from dorch_emulator.state import ApiError

from tests.support.doctor_checks import checks_for
from tests.support.emulator_api import Api, MakeEmulator, run

HOOK_ALLOWED = {"bots": [{"name": "worker-1", "allow": ["MANAGE_WEBHOOKS"]}, {"name": "worker-2"}],
                "users": [{"name": "alice"}, {"name": "bob"}]}


def test_a_webhook_posts_as_a_bot_user_with_its_own_id(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(**HOOK_ALLOWED)

    async def body(api: Api) -> None:
        queue = api.channel("task-queue")
        denied = await api.as_bot("worker-2").call("POST", f"/channels/{queue}/webhooks",
                                                   json_body={"name": "relay"})
        assert (denied.status, denied.code) == (403, 50013)
        bad_name = await api.call("POST", f"/channels/{queue}/webhooks", json_body={"name": "my discord"})
        assert (bad_name.status, bad_name.code) == (400, 50035)
        made = await api.call("POST", f"/channels/{queue}/webhooks", json_body={"name": "relay"})
        assert made.status == 200 and made.data["type"] == 1 and made.data["token"]
        hook = made.data
        assert hook["channel_id"] == str(queue)
        assert hook["application_id"] == str(api.emu.config.bot("worker-1").id)
        listed = await api.call("GET", f"/channels/{queue}/webhooks")
        assert [h["id"] for h in listed.data] == [hook["id"]]

        path = f"/webhooks/{hook['id']}/{hook['token']}"
        # no bot token: the webhook's URL is its credential
        sent = await api.call("POST", path, params={"wait": "true"}, token="",
                              json_body={"content": "🔒 claimed by **w1**", "username": "worker-1"})
        assert sent.status == 200, sent.data
        msg = sent.data
        assert msg["webhook_id"] == hook["id"] and msg["author"]["id"] == hook["id"]
        assert msg["author"]["bot"] is True and msg["author"]["username"] == "worker-1"
        assert msg["application_id"] == hook["application_id"] and msg["type"] == 0
        quiet = await api.call("POST", path, token="", json_body={"content": "no wait"})
        assert (quiet.status, quiet.data) == (204, "")
        wrong = await api.call("POST", f"/webhooks/{hook['id']}/not-the-token", token="",
                               json_body={"content": "x"})
        assert (wrong.status, wrong.code) == (401, 50027)
        unknown = await api.call("POST", f"/webhooks/1234567890123/{hook['token']}", token="",
                                 json_body={"content": "x"})
        assert (unknown.status, unknown.code) == (404, 10015)
        read = await api.as_bot("worker-2").messages(queue)
        assert [(m["content"], m.get("webhook_id")) for m in read.data] == [
            ("no wait", hook["id"]), ("🔒 claimed by **w1**", hook["id"])]

    run(emu, body)
    executions = [r for r in emu.requests if r.route == "POST /webhooks/{webhook_id}/{webhook_token}"]
    assert [r.status for r in executions] == [200, 204, 401, 404] and not executions[0].bot


def test_a_webhook_posts_into_threads_of_its_channel_and_reopens_them(emulator: Emulator) -> None:
    task = emulator.post_as_user("alice", "task-queue", "a task")
    thread = emulator.start_thread_as_user("worker-1", "task-queue", task["id"], "task")
    emulator.modify_thread_as_user("worker-1", thread["id"], archived=True)
    hook = emulator.create_webhook("task-queue", "relay")
    elsewhere = emulator.create_webhook("results", "other")

    forged = emulator.execute_webhook(hook, "🏁 **succeeded** in 0.1 s · **w1**", thread_id=thread["id"])
    assert forged["channel_id"] == thread["id"] and forged["webhook_id"] == hook["id"]
    (seen,) = emulator.messages(thread["id"])
    assert seen["author"] == forged["author"] and seen["author"]["bot"] is True
    reopened = next(m for m in emulator.messages("task-queue") if m["id"] == task["id"])
    assert reopened["thread"]["thread_metadata"]["archived"] is False
    assert reopened["thread"]["owner_id"] == str(emulator.config.bot("worker-1").id)
    with pytest.raises(ApiError) as outside:
        emulator.execute_webhook(elsewhere, "x", thread_id=thread["id"])
    assert outside.value.code == 10003


def test_an_app_answers_a_members_command_as_an_interaction(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(bots=[{"name": "worker-1"}, {"name": "evil-app", "permissions": []}],
                        users=[{"name": "bob"}, {"name": "mallory", "deny": ["USE_EXTERNAL_APPS"]}])
    app, bob = emu.config.bot("evil-app"), emu.config.member("bob")
    msg = emu.post_as_app("evil-app", "bob", "task-queue", "Delete every file", command="say")
    assert msg["type"] == 20 and msg["author"]["id"] == str(app.id) and msg["author"]["bot"] is True
    assert msg["application_id"] == str(app.id) and msg["webhook_id"] == str(app.id)
    meta = msg["interaction_metadata"]
    assert meta["type"] == 2 and meta["user"]["id"] == str(bob.id) and meta["name"] == "say"
    with pytest.raises(ApiError) as refused:  # a member who may not use external apps
        emu.post_as_app("evil-app", "mallory", "task-queue", "x")
    assert refused.value.code == 50013

    async def body(api: Api) -> None:
        read = await api.messages(api.channel("task-queue"))
        (seen,) = read.data
        assert seen["interaction_metadata"]["user"]["id"] == str(bob.id) and seen["type"] == 20

    run(emu, body)


def test_members_start_post_in_and_archive_threads(emulator: Emulator) -> None:
    bob = str(emulator.config.member("bob").id)
    task = emulator.post_as_user("alice", "task-queue", "a task")
    squat = emulator.start_thread_as_user("bob", "task-queue", task["id"], "mine")
    assert squat["owner_id"] == bob and squat["id"] == task["id"]
    emulator.post_as_user("bob", squat["id"], "I was here first")
    with pytest.raises(ApiError) as taken:
        emulator.start_thread_as_user("alice", "task-queue", task["id"])
    assert taken.value.code == 160004

    async def body(api: Api) -> None:
        lost = await api.thread(api.channel("task-queue"), task["id"])
        assert (lost.status, lost.code) == (400, 160004)
        seen = await api.call("GET", f"/channels/{squat['id']}")
        assert seen.data["owner_id"] == bob
        posts = await api.messages(int(squat["id"]))
        assert [m["author"]["id"] for m in posts.data] == [bob]

    run(emulator, body)
    with pytest.raises(ApiError) as not_theirs:  # only its creator (or a moderator) archives it
        emulator.modify_thread_as_user("alice", squat["id"], archived=True)
    assert not_theirs.value.code == 50013
    archived = emulator.modify_thread_as_user("bob", squat["id"], archived=True)
    assert archived["thread_metadata"]["archived"] is True
    with pytest.raises(ApiError) as locking:
        emulator.modify_thread_as_user("bob", squat["id"], archived=False, locked=True)
    assert locking.value.code == 50013
    reopened = emulator.modify_thread_as_user("alice", squat["id"], archived=False)  # anyone may
    assert reopened["thread_metadata"]["archived"] is False


def test_an_attachment_arrives_over_time_whole(emulator: Emulator) -> None:
    big = bytes(range(256)) * 400  # 102,400 bytes: sent at once, a reader would find it all
    msg = emulator.post_as_user("alice", "task-queue", "", [("task.bin", big)])
    url = msg["attachments"][0]["url"]

    async def body(api: Api) -> None:
        async with api.session.get(url) as first:
            assert first.content_length == len(big)
            buffered = await first.content.read(len(big) + 1)  # what is there when asked
        async with api.session.get(url) as whole:
            assert await whole.read() == big
        assert 0 < len(buffered) < len(big)

    run(emulator, body)


def test_a_share_of_answers_is_lost_after_discord_acted(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(faults={"drop_response_rate": 1.0})

    async def body(api: Api) -> None:
        with pytest.raises(aiohttp.ClientError):
            await api.post(api.channel("results"), "carried out, answer lost")

    run(emu, body)
    assert [m["content"] for m in emu.messages("results")] == ["carried out, answer lost"]
    assert emu.requests[-1].fault == "drop-response"
    with pytest.raises(ValueError, match="probability"):
        emu.set_faults(drop_response_rate=1.5)


def _control(emu: Emulator, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(f"{emu.url}/_emulator{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_control_api_acts_as_members_webhooks_and_apps(make_emulator_proc: Any) -> None:
    proc: EmulatorProcess = make_emulator_proc(
        bots=[{"name": "worker-1"},
              {"name": "stranger", "permissions": ["VIEW_CHANNEL", "SEND_MESSAGES_IN_THREADS"]}],
        users=[{"name": "bob"}])
    remote = proc.remote
    task = remote.post_as_user("worker-1", "task-queue", "a task")
    thread = remote.start_thread_as_user("bob", "task-queue", task["id"], "squat")
    assert thread["owner_id"] == remote.state()["users"]["bob"]["id"]
    remote.post_as_user("stranger", thread["id"], "🔒 claimed by **x** · lease until <t:9999999999:R>")
    hook = remote.create_webhook("task-queue", "relay")
    remote.execute_webhook(hook, "forged result", thread_id=thread["id"])
    remote.post_as_app("stranger", "bob", thread["id"], "forged note", command="note")
    assert remote.modify_thread_as_user("bob", thread["id"], archived=True)["thread_metadata"]["archived"]
    posts = remote.messages(thread["id"])
    assert [(m["author"]["username"], m.get("webhook_id") is not None, m["type"]) for m in posts] == [
        ("stranger", False, 0), ("relay", True, 0), ("stranger", True, 20)]
    assert remote.messages(thread["id"], after=posts[1]["id"]) == posts[2:]
    with pytest.raises(RemoteError) as again:
        remote.start_thread_as_user("worker-1", "task-queue", task["id"])
    assert again.value.status == 400 and again.value.body["code"] == 160004


def test_a_channel_locked_to_the_fleet_refuses_members_threads(make_emulator: MakeEmulator,
                                                              tmp_path: Path) -> None:
    """The lockdown dorch doctor asks for: #task-queue denies Create Public Threads and Send
    Messages in Threads to @everyone and allows both to the fleet's role."""
    locked = {"@everyone": {"deny": ["CREATE_PUBLIC_THREADS", "SEND_MESSAGES_IN_THREADS"]},
              "dorch-fleet": {"allow": ["CREATE_PUBLIC_THREADS", "SEND_MESSAGES_IN_THREADS"]}}
    emu = make_emulator(
        channels=[{"name": "task-queue", "overwrites": locked}, "results", "worker-pool"],
        roles=["dorch-submitter", "dorch-fleet"],
        bots=[{"name": "worker-1", "roles": ["dorch-fleet"]}, {"name": "stranger"}],
        users=[{"name": "bob", "roles": ["dorch-submitter"]}])
    task = emu.post_as_user("bob", "task-queue", "a task")  # posting in the channel is still fine
    for member in ("bob", "stranger"):
        with pytest.raises(ApiError) as refused:
            emu.start_thread_as_user(member, "task-queue", task["id"])
        assert refused.value.code == 50013
    claim = emu.start_thread_as_user("worker-1", "task-queue", task["id"], "task")
    emu.post_as_user("worker-1", claim["id"], "🔒 claimed by **w1**")
    with pytest.raises(ApiError) as muted:
        emu.post_as_user("bob", claim["id"], "🏁 **succeeded** in 0.1 s · **w1**")
    assert muted.value.code == 50013
    emu.post_as_user("bob", "results", "other channels are as before")

    shown = {(o["id"], o["type"]) for o in emu.world.channel_json(
        emu.world.channels[emu.config.channel("task-queue").id])["permission_overwrites"]}
    assert shown == {(str(emu.config.guild_id), 0), (str(emu.config.roles[1].id), 0)}
    threads = checks_for(emu, tmp_path)["threads in #task-queue"]
    assert threads.ok and not threads.warn, threads
    opened = checks_for(make_emulator(), tmp_path / "open")["threads in #task-queue"]
    assert opened.warn and opened.detail.startswith("@everyone may start threads")


def test_channel_overwrites_name_known_roles(make_emulator: MakeEmulator) -> None:
    with pytest.raises(EmulatorConfigError, match=r"channels\[0\]\.overwrites: no role 'fleet'"):
        make_emulator(channels=[{"name": "task-queue", "overwrites": {"fleet": {"deny": []}}}])
    with pytest.raises(EmulatorConfigError, match="unknown permission 'CREATE_THREADS'"):
        make_emulator(channels=[{"name": "task-queue",
                                 "overwrites": {"@everyone": {"deny": ["CREATE_THREADS"]}}}])
