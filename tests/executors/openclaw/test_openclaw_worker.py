"""The real OpenClaw CLI as dorch's executor, end to end through real workers, offline.

Each test submits with the installed ``dorch`` command, runs ``dorch worker`` processes (one task
each) whose executor runs ``openclaw agent exec`` against the fake model server, and reads the
outcome with ``dorch result``. One ``agent exec`` costs seconds, so each test makes every run
count; where two runs are needed they run at the same time.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from tests.executors.openclaw.conftest import (
    RUN_WAIT,
    Fleet,
    alive,
    descendants,
    environ,
    group_members,
    pgid_of,
    wait_gone,
)
from tests.support.fake_model import hold, rule, slow, text, tool
from tests.support.helpers import wait_until

pytestmark = [pytest.mark.openclaw, pytest.mark.timeout(600)]


def test_prompt_reaches_the_model_verbatim_and_a_tool_writes_into_the_workspace(fleet: Fleet) -> None:
    prompt = ("Write-file test: naïve café ✓ — «guillemets» \"double\" 'single'\n"
              "second line with `backticks`, $HOME and a \\backslash\n\tthird line, tabbed")
    fleet.fake.rules = [rule(
        {**tool("write", path="notes/hello.txt", content="hello from the agent\n"),
         "usage": {"prompt_tokens": 600, "completion_tokens": 20}},
        text("I wrote notes/hello.txt.", usage={"prompt_tokens": 1000, "completion_tokens": 500}),
        match="Write-file test",
    )]
    task_id = fleet.submit(prompt)
    worker = fleet.start_worker("1")
    assert fleet.finish(worker) == 0, fleet.log(worker)

    view = fleet.result(task_id)
    result = view["result"]
    assert view["state"] == "succeeded", result
    assert result["output"] == "I wrote notes/hello.txt."
    assert "\x1b[" not in result["stderr_tail"], "OpenClaw's diagnostics come without colours"
    first, second = fleet.fake.requests
    assert prompt in first.user_text
    assert "write" in first.tool_names
    assert any(m.get("role") == "tool" for m in second.messages), "the tool result went back"

    workspace = fleet.workspace(task_id)
    assert (workspace / "notes" / "hello.txt").read_text() == "hello from the agent\n"
    assert "I wrote notes/hello.txt." in (workspace / "RESULT.md").read_text()

    usage = result["usage"]
    assert (usage["provider"], usage["model"]) == ("fake", "fake-model")
    assert (usage["input_tokens"], usage["output_tokens"]) == (1600, 520)   # both model calls
    assert usage["cost_usd"] == pytest.approx((1600 * 2.0 + 520 * 10.0) / 1e6)   # [prices]
    assert usage["summary"].startswith("fake/fake-model · 1,600 in + 520 out tokens · ")
    assert usage["summary"].endswith(" · $0.0084")


def test_model_and_thinking_reach_openclaw(fleet: Fleet) -> None:
    fleet.fake.rules = [rule(text("Reasoned."), match="think hard")]
    reasoned = fleet.submit("think hard about this [model:fake/fake-reasoner] [thinking:high]")
    rejected = fleet.submit("think hard too [model:fake/fake-model] [thinking:high]")
    workers = [fleet.start_worker("1"), fleet.start_worker("2")]
    for worker in workers:
        assert fleet.finish(worker) == 0, fleet.log(worker)

    ok = fleet.result(reasoned)
    assert ok["state"] == "succeeded", ok["result"]
    assert ok["result"]["output"] == "Reasoned."
    [request] = fleet.fake.requests   # the rejected run never reaches the model
    assert request.model == "fake-reasoner"
    assert request.reasoning_effort == "high"

    failed = fleet.result(rejected)
    assert failed["state"] == "failed"
    message = 'Thinking level "high" is not supported for fake/fake-model'
    assert message in failed["result"]["error"]
    shown = fleet.home.dorch("result", rejected)   # what the user sees
    assert shown.returncode == 1
    assert message in shown.stderr


def test_a_slow_model_times_out_and_leaves_no_process_behind(fleet: Fleet) -> None:
    fleet.configure(task_timeout=10)
    fleet.fake.rules = [rule(slow(600), match="take your time")]
    task_id = fleet.submit("take your time")
    worker = fleet.start_worker("1")
    # The agent's process group: its leader is the first process below the worker in a group of
    # its own (the worker's bubblewrap probe at start-up stays in the worker's group). On a loaded
    # machine OpenClaw may not even reach the model within 10 s: then dorch's own deadline stops
    # it, same outcome.
    def group_leaders() -> list[int]:
        leaders = []
        for p in descendants(worker.pid):
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(p) == p:
                    leaders.append(p)
        return leaders

    launcher = wait_until(group_leaders, RUN_WAIT, "openclaw to start")[0]
    pgid = pgid_of(launcher)
    assert pgid == launcher != pgid_of(worker.pid), "the agent leads its own process group"
    assert fleet.finish(worker) == 0, fleet.log(worker)

    view = fleet.result(task_id)
    assert view["state"] == "timed_out", view["result"]
    assert "10 s" in view["result"]["error"] or "timed out" in view["result"]["error"]
    assert group_members(pgid) == [], "no process left in the agent's process group"


def test_cancel_mid_run_kills_openclaw_and_its_children(fleet: Fleet) -> None:
    fleet.fake.rules = [rule(hold("never delivered"), match="cancel me")]
    task_id = fleet.submit("cancel me")
    worker = fleet.start_worker("1")
    fleet.fake.wait_requests_sync(1, timeout=240)
    tree = descendants(worker.pid)
    # openclaw's launcher re-executes node with its compile cache: a child to kill as well.
    assert len(tree) >= 2 and all(alive(p) for p in tree), tree

    assert fleet.home.dorch("cancel", task_id).returncode == 0
    assert fleet.finish(worker, timeout=60) == 0, fleet.log(worker)
    view = fleet.result(task_id)
    assert view["state"] == "cancelled"
    assert wait_gone(tree, timeout=1) == [], "openclaw and every child of it are gone"


def test_two_workers_run_openclaw_at_once_apart_and_without_the_discord_token(fleet: Fleet) -> None:
    secret = "discord-bot-token-must-not-leak-9f8e7d"
    fleet.fake.rules = [rule(hold("first answer"), match="task one"),
                        rule(hold("second answer"), match="task two")]
    ids = [fleet.submit("task one"), fleet.submit("task two")]
    workers = [fleet.start_worker(n, DISCORD_TOKEN=secret, DORCH_SECRET_DISCORD_TOKEN=secret)
               for n in ("1", "2")]
    # Both runs are inside the model call at once: nothing answers until both arrived.
    fleet.fake.wait_requests_sync(2, timeout=240)

    homes = set()
    for n, worker in zip(("1", "2"), workers, strict=True):
        assert environ(worker.pid)["DISCORD_TOKEN"] == secret   # the worker has it ...
        tree = descendants(worker.pid)
        assert tree
        for pid in tree:                                         # ... no agent process does
            env = environ(pid)
            assert "DISCORD_TOKEN" not in env and "DORCH_SECRET_DISCORD_TOKEN" not in env
            assert not any(secret in value for value in env.values())
        home = environ(tree[0])["OPENCLAW_HOME"]
        assert home == str(fleet.state_dir(n) / "openclaw")
        homes.add(home)
    assert len(homes) == 2

    fleet.fake.release()
    for worker in workers:
        assert fleet.finish(worker) == 0, fleet.log(worker)
    answers = {fleet.result(i)["result"]["output"] for i in ids}
    assert answers == {"first answer", "second answer"}
    for n in ("1", "2"):
        assert (fleet.state_dir(n) / "openclaw" / ".openclaw" / "state" / "openclaw.sqlite").is_file()

