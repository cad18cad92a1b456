"""Whole bytes and true state on the Discord bus: long tasks and answers arrive byte for byte,
attachments over a cap end in a clear ❌, and ``dorch status``/``result`` report what happened."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from dorch.bus.discord import formats
from tests.support.route_proxy import RouteProxy
from tests.support.world import TOKEN_ENV, World, eventually, started_agents


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_300000_character_task_reaches_the_agent_whole_and_its_answer_comes_back_whole(
        world: World, tmp_path: Path) -> None:
    # the figures: this task reached the agent as 65,376 bytes, and `dorch result`
    # printed a 204,840-byte answer as 65,377 or 127,841 bytes
    line = "0123456789 ünïcödé · the specification goes on and on · "
    prompt = (line * (300_000 // len(line) + 1))[:300_000]
    (tmp_path / "spec.md").write_text(prompt)
    submitted = world.dorch("submit", "--file", str(tmp_path / "spec.md"))
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    world.fleet(1)
    done = world.dorch("result", task_id, "--wait", "--timeout", "90")
    assert done.returncode == 0, done.stderr
    (ran,) = [e["prompt"] for e in world.executions()]
    assert (len(ran), _sha(ran)) == (len(prompt), _sha(prompt))
    answer = f"done: {prompt}\n"
    assert (len(done.stdout), _sha(done.stdout)) == (len(answer), _sha(answer))
    for _ in range(3):  # every read is whole, not only the first
        again = world.dorch("result", task_id)
        assert _sha(again.stdout) == _sha(answer), len(again.stdout)


def test_a_task_over_the_cap_is_refused_at_submit_with_why(world: World, tmp_path: Path) -> None:
    (tmp_path / "huge.md").write_text("x" * ((8 << 20) + 1))
    refused = world.dorch("submit", "--file", str(tmp_path / "huge.md"))
    assert refused.returncode == 64, refused.stderr  # EX_USAGE: bad task
    assert "8,388,609 bytes" in refused.stderr and "at most 8,388,608" in refused.stderr
    assert world.messages("task-queue") == []


def test_an_answer_over_the_cap_is_a_clear_failure_never_a_cut_answer(world: World) -> None:
    sections = dict(world.home.settings)
    sections["executor"] = {**sections["executor"], "max_output_bytes": 16 << 20}
    sections["executor.command"] = {"argv": [
        sys.executable, "-c", "import sys; sys.stdin.read(); print('y' * (9 << 20))"]}
    world.home.configure(**sections)
    task_id = world.dorch("submit", "Write me nine megabytes").stdout.strip()
    world.fleet(1)
    done = world.dorch("result", task_id, "--wait", "--timeout", "90")
    assert done.returncode != 0
    assert "the answer holds 9,437,185 bytes" in done.stdout + done.stderr
    assert "y" * 100 not in done.stdout
    (summary,) = world.summaries()
    assert summary.startswith("❌ **failed**")


def test_an_unknown_route_stops_the_worker_with_78_naming_it(world: World) -> None:
    # a proxy that does not forward the queue's listing: today exit 75 every minute for ever
    queue = world.channel("task-queue")
    with RouteProxy(world.emu.url, {("GET", f"/channels/{queue}/messages")}) as proxy:
        world.configure(discord={"api_base": proxy.url + "/api/v10"})
        fleet = world.fleet(1)
        eventually(lambda: fleet.exits, 60, "the worker to exit")
    assert fleet.exits[0][1] == 78, fleet.logs()
    assert f"GET /channels/{queue}/messages" in fleet.logs()
    assert "no such route" in fleet.logs() and "api_base" in fleet.logs()


def test_the_lease_is_renewed_before_the_agent_starts_when_the_claim_was_slow(
        make_world: Callable[..., World]) -> None:
    # The case: with lease 20 s, claim to agent start reached 20 s (rate-limit waits),
    # nothing renewed the lease before the first heartbeat (heartbeat_seconds after the agent
    # started), and another worker's reaper ran the task again. Here every request takes 2 s,
    # so the claim (thread, receipt) uses more than a heartbeat's worth of its lease.
    world = make_world(worker={"lease_seconds": 8, "heartbeat_seconds": 1.5})
    task_id = world.dorch("submit", "Summarise the design WORK=1").stdout.strip()
    world.emu.set_faults(latency=2.0)
    world.fleet(1)
    done = world.dorch("result", task_id, "--wait", "--timeout", "90")
    assert done.returncode == 0, done.stderr
    agent_started = world.executions_log.stat().st_mtime
    renewals = [r.time for r in world.emu.requests if r.method == "PATCH"
                and r.path.startswith(f"/channels/{task_id}/messages/")]
    assert renewals and renewals[0] < agent_started
    assert len(world.executions()) == 1


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def status_json(world: World) -> dict[str, Any]:
    done = world.dorch("status", "--json")
    assert done.returncode == 0, done.stderr
    return cast(dict[str, Any], json.loads(done.stdout))


def test_status_tells_the_truth_after_a_host_dies(world: World) -> None:
    # The case: after a host died, `dorch status` showed its task running for ever
    # (its board row stayed RUNNING), and --json gave the answer's first line as the prompt,
    # attempt 1, no submitter, no start time, and pid 0 for every worker.
    world.configure(worker={"lease_seconds": 4, "heartbeat_seconds": 1})
    task = world.dorch("submit", "Refactor the parser HANG-ONCE").stdout.strip()
    doomed = world.home.spawn_worker("doomed", **{TOKEN_ENV: world.token("worker-1")})
    agents: list[int] = []
    try:
        agents = eventually(lambda: started_agents(world), 60, "the agent to start")
        eventually(lambda: any("RUNNING" in m["content"] for m in world.messages("worker-pool")),
                   30, "the board to show the task running")
    finally:
        doomed.kill()  # the host dies: its worker and its agent
        doomed.wait(10)
        for agent in agents:
            _kill(agent)  # it may have gone with its worker
    world.fleet(1, bots=("worker-2",))
    done = world.dorch("result", task, "--wait", "--timeout", "90")
    assert done.returncode == 0, done.stderr

    status = status_json(world)
    assert status["counts"]["running"] == 0 and status["running"] == [], status
    rows = {w["worker"]: w for w in status["workers"]}
    assert rows[f"{socket.gethostname()}-doomed"]["state"] == "LOST"
    (view,) = status["recent"]
    assert view["task"]["spec"]["prompt"] == "Refactor the parser HANG-ONCE"
    assert view["task"]["attempt"] == 2
    assert view["task"]["submitter"] == f"{getpass.getuser()}@{socket.gethostname()}"
    assert view["started_at"] and view["finished_at"] >= view["started_at"]
    assert view["worker"] == f"{socket.gethostname()}-0"
    assert view["result"]["output"] == "done: Refactor the parser HANG-ONCE"
    assert all(w["pid"] > 0 for w in status["workers"]), status["workers"]
    shown = json.loads(world.dorch("result", task, "--json").stdout)
    assert shown["task"]["attempt"] == 2 and shown["task"]["submitter"] == view["task"]["submitter"]
    assert shown["started_at"] and shown["worker"] == view["worker"]
    text = world.dorch("status").stdout
    assert "running:" not in text and "LOST" in text


def test_a_task_dead_at_its_last_attempt_shows_that_attempt_and_its_prompt(world: World) -> None:
    # The case: a task dead at 3/3 showed attempt 1 in `status --json`, with the error
    # line as its prompt, and the board rows of the workers that died stayed RUNNING.
    world.configure(worker={"lease_seconds": 4, "heartbeat_seconds": 1, "max_attempts": 2})
    task = world.dorch("submit", "Crunch the numbers SLOW").stdout.strip()
    agents: list[int] = []
    for n, name in enumerate(("first", "second"), start=1):
        worker = world.home.spawn_worker(name, **{TOKEN_ENV: world.token("worker-1")})
        try:
            agents = eventually(lambda n=n: len(started_agents(world)) >= n and
                                started_agents(world), 90, f"attempt {n} to start")
        finally:
            worker.kill()  # the worker dies mid-task, and its host with it
            worker.wait(10)
            for agent in agents:
                _kill(agent)
    world.fleet(1, bots=("worker-2",))
    done = world.dorch("result", task, "--wait", "--timeout", "90")
    assert done.returncode == 1 and "gave up after attempt 2 of 2" in done.stderr, done.stderr

    status = status_json(world)
    (view,) = status["dead"]
    assert view["task"]["attempt"] == 2
    assert view["task"]["spec"]["prompt"] == "Crunch the numbers SLOW"
    assert view["task"]["submitter"] == f"{getpass.getuser()}@{socket.gethostname()}"
    assert "gave up after attempt 2 of 2" in view["result"]["error"]
    rows = {w["worker"]: w["state"] for w in status["workers"]}
    host = socket.gethostname()
    assert rows[f"{host}-first"] == rows[f"{host}-second"] == "LOST", rows
    assert status["counts"]["running"] == 0


def test_a_fenced_run_is_not_counted_as_done(world: World) -> None:
    # The case: the board's "tasks done" counted a run whose lease was lost and whose
    # answer was discarded.
    world.configure(worker={"lease_seconds": 4, "heartbeat_seconds": 1})
    task = world.dorch("submit", "Refactor the parser HANG-ONCE").stdout.strip()
    hung = world.home.spawn_worker("hung", **{TOKEN_ENV: world.token("worker-1")})
    try:
        eventually(lambda: started_agents(world), 60, "the agent to start")
        os.kill(hung.pid, signal.SIGSTOP)  # hangs: its lease is no longer renewed
        world.fleet(1, bots=("worker-2",))
        done = world.dorch("result", task, "--wait", "--timeout", "90")
        assert done.returncode == 0, done.stderr
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    _, err = hung.communicate(timeout=60)
    assert "result discarded" in err, err[-2000:]

    def board() -> dict[str, int]:
        rows = [found for m in world.messages("worker-pool")
                if (found := formats.BOARD.match(m["content"]))]
        return {found["worker"]: int(found["done"]) for found in rows}

    host = socket.gethostname()
    eventually(lambda: board().get(f"{host}-0") == 1, 30, "the winner's row to count its task")
    assert board()[f"{host}-hung"] == 0, board()


def test_a_task_edited_after_it_started_shows_the_prompt_that_ran(world: World) -> None:
    task = world.post("Draft the release notes WORK=3")
    world.fleet(1)
    eventually(lambda: world.executions(), 60, "the agent to start")
    # alice edits her message while the agent works on the text she first wrote (the emulator
    # has no call for a member's edit yet: /work/notes/emulator-requests.md)
    emu_world = world.emu.world
    with emu_world.lock:
        msg = emu_world.channels[world.channel("task-queue")].messages[int(task)]
        msg.content, msg.edited = "Delete the repository", emu_world.now()
    done = world.dorch("result", task, "--wait", "--timeout", "60", "--json")
    shown = json.loads(done.stdout)["task"]["spec"]["prompt"]
    assert shown.startswith("Draft the release notes WORK=3 [edited after it started"), shown
    assert "Delete" not in shown
    (recent,) = status_json(world)["recent"]
    assert recent["task"]["spec"]["prompt"] == shown


def test_a_long_task_re_posted_after_its_worker_died_runs_whole_again(
        world: World, tmp_path: Path) -> None:
    world.configure(worker={"lease_seconds": 4, "heartbeat_seconds": 1})
    line = "HANG-ONCE · the long specification, line after line, ünïcödé included · "
    prompt = (line * (250_000 // len(line) + 1))[:250_000]
    (tmp_path / "spec.md").write_text(prompt)
    task = world.dorch("submit", "--file", str(tmp_path / "spec.md")).stdout.strip()
    doomed = world.home.spawn_worker("doomed", **{TOKEN_ENV: world.token("worker-1")})
    agents: list[int] = []
    try:
        agents = eventually(lambda: started_agents(world), 60, "the agent to start")
    finally:
        doomed.kill()
        doomed.wait(10)
        for agent in agents:
            _kill(agent)
    world.fleet(1, bots=("worker-2",))
    done = world.dorch("result", task, "--wait", "--timeout", "90")
    assert done.returncode == 0, done.stderr
    runs = [e["prompt"] for e in world.executions()]
    assert [(len(r), _sha(r)) for r in runs] == [(len(prompt), _sha(prompt))] * 2
    assert _sha(done.stdout) == _sha(f"done: {prompt}\n")
