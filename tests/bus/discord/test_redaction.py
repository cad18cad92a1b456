"""An agent that prints its worker's bot token on the Discord bus: the thread, its file and
#results show [redacted], never the token."""

from __future__ import annotations

import urllib.request

from tests.support.helpers import SUPPORT, agent_command
from tests.support.world import World, eventually, thread_messages


def test_a_leaked_bot_token_is_posted_as_redacted(world: World) -> None:
    world.configure()
    settings = dict(world.home.settings)
    settings["executor"] = {"kind": "command", "ro_paths": [str(SUPPORT)]}
    settings["executor.command"] = {"argv": agent_command("leaking_agent.py")}
    world.home.configure(**{name.replace(".", "__"): values for name, values in settings.items()})
    token = world.token("worker-1")  # the bot of the fleet's only worker
    # reversed: the agent un-reverses it; OK: it succeeds, so #results quotes its first line
    short = world.dorch("submit", f"OK\nSTOLEN:{token[::-1]}")
    long = world.dorch("submit", f"PAD:6000\nSTOLEN:{token[::-1]}")
    assert short.returncode == 0 and long.returncode == 0, short.stderr + long.stderr
    fleet = world.fleet(1, bots=("worker-1",))
    for task, code in ((short.stdout.strip(), 0), (long.stdout.strip(), 1)):
        done = world.dorch("result", task, "--wait", "--timeout", "60")
        assert done.returncode == code, done.stderr
        assert "stolen=[redacted]" in done.stdout
        eventually(lambda t=task: world.messages("task-queue") and all(
            m["thread"]["thread_metadata"]["archived"] for m in world.messages("task-queue")
            if m["id"] == t), 30, "the task thread to be archived")

    posted = []
    for channel in ("task-queue", "results", "worker-pool"):
        posted += [m["content"] for m in world.messages(channel)]
    files = []
    for task in (short.stdout.strip(), long.stdout.strip()):
        for msg in thread_messages(world, task):
            posted.append(msg["content"])
            for att in msg["attachments"]:
                with urllib.request.urlopen(att["url"], timeout=30) as answer:
                    files.append(answer.read().decode())
    assert files and all("stolen=[redacted]" in f for f in files)  # the long answer's file
    assert any("stolen=[redacted]" in text for text in posted)
    assert [t for t in world.summaries() if "· stolen=[redacted]" in t]
    for text in posted + files + [fleet.logs()]:
        assert token not in text
        assert token[: len(token) // 2] not in text
    # nor in anything dorch wrote on the host (outbox, host state, RESULT.md, logs), but for the
    # token's own credential file and the agent's raw output in its workspace
    written = [p for p in world.root.rglob("*") if p.is_file()
               and "credentials" not in p.parts and ".dorch" not in p.parts]
    assert any(p.name == "RESULT.md" for p in written)
    assert any("outbox" in p.name for p in written)
    assert [p for p in written if token.encode() in p.read_bytes()] == []
