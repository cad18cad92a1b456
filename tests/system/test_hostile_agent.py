"""A hostile agent under real systemd 252 (issue 15): dorch-worker@1 in a booted Debian 12
container, its agent sandboxed by bubblewrap, the bot token an encrypted credential.

The agent is tests/support/hostile_agent.py (a ``command`` agent; the prompt's words choose the
attacks). One instance runs, so every task below runs on it, one after the other:

1. a victim task, whose workspace holds its (secret) prompt;
2. the hostile task: it reads /proc of the worker, every credential, everything under
   /var/lib/dorch and /etc/dorch (the victim's workspace too), opens the queue and the outbox for
   writing, plants a config wherever dorch reads one, leaves files for the next task, starts a
   daemon, signals the worker, and prints 500 MB;
3. one task per limit: 10,000 processes, memory past ``memory_mb``, disk past ``disk_mb``;
4. a clean-up check: the next agent looks for what the hostile one left.

Each attack is recorded by the agent (``escaped``: it worked) and checked from outside as root.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import nspawn
from .conftest import FACTS
from .test_systemd_worker import CONFIG, Host, wait_for

NAME = "dorchhostile"
UNIT = "dorch-worker@1"
AGENT = "/usr/local/lib/dorch-test/hostile_agent.py"
MARKER = "dorch-hostile-marker"
DAEMON_SECONDS = "6007.5"
SERVICE_HOME = "/var/lib/dorch"
LIMITS = {"max_processes": 200, "memory_mb": 256, "disk_mb": 1024, "max_output_bytes": 1 << 20}
# Where dorch reads a config, and where a later task or the worker would find a planted file.
CONFIGS = [f"{SERVICE_HOME}/.config/dorch/config.toml", "~/.config/dorch/config.toml",
           "/etc/dorch/config.toml", "/etc/dorch/config.toml.new"]
LEAVE = ["/dev/shm", SERVICE_HOME, f"{SERVICE_HOME}/workers/1", f"{SERVICE_HOME}/queue",
         "/run", "/run/user/0"]
WALK = [SERVICE_HOME, "/etc/dorch", "/etc/credstore.encrypted", "/root", "/home"]
QUEUES = [f"{SERVICE_HOME}/queue/queue.sqlite3", f"{SERVICE_HOME}/queue.sqlite3"]


def executor_config() -> str:
    """The system test's bus and worker settings, with the hostile agent in a bubblewrap sandbox."""
    head = CONFIG.split("[executor]", 1)[0]
    limits = "\n".join(f"{k} = {v}" for k, v in LIMITS.items())
    return (f'{head}[executor]\nkind = "command"\nisolation = "bubblewrap"\n{limits}\n\n'
            f'[executor.command]\nargv = ["/usr/bin/python3", "{AGENT}"]\n')


@pytest.fixture(scope="module")
def token() -> str:
    return "test." + secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def box(rootfs: Path, wheelhouse: Path, containers_dir: Path, token: str) -> Iterator[Host]:
    repo = nspawn.REPO
    with nspawn.boot(
        rootfs, containers_dir, NAME,
        copy_in={"/root/wheelhouse": wheelhouse, "/root/units": repo / "systemd",
                 AGENT: repo / "tests" / "support" / "hostile_agent.py"},
    ) as c:
        h = Host(c)
        h.sh("python3 -m venv /opt/dorch && /opt/dorch/bin/pip install --quiet --no-index "
             "--disable-pip-version-check --find-links /root/wheelhouse dorch", timeout=300)
        h.sh(f"chmod 755 {AGENT} && command -v bwrap && "
             "install -m 644 /root/units/dorch.sysusers.conf /usr/lib/sysusers.d/dorch.conf && "
             "systemd-sysusers && install -m 644 /root/units/dorch.tmpfiles.conf "
             "/usr/lib/tmpfiles.d/dorch.conf && systemd-tmpfiles --create dorch.conf && "
             "install -m 644 /root/units/dorch-worker@.service "
             "/root/units/dorch-workers.target /etc/systemd/system/ && systemctl daemon-reload")
        c.write("/etc/dorch/config.toml", executor_config())
        c.ssh("mkdir -p /etc/credstore.encrypted && systemd-creds encrypt --name=discord-token "
              "- /etc/credstore.encrypted/discord-token", input=token)
        if h.c.ssh(f"systemctl start {UNIT}", check=False).returncode != 0:
            pytest.fail(f"{UNIT} did not start:\n{h.journal(UNIT)[-3000:]}", pytrace=False)
        yield h
        h.sh(f"systemctl stop {UNIT}", check=False)
        # The container's files are kept for post-mortems, but not gigabytes of filler.
        h.sh(f"rm -f {SERVICE_HOME}/workers/*/workspaces/*/fill-* "
             f"{SERVICE_HOME}/workers/*/workspaces/*/.dorch/stdout", check=False)


def main_pid(h: Host) -> str:
    """The PID of the idle worker that will take the next task (one task per process)."""
    shown = h.wait_unit(UNIT, "to be active and idle",
                        lambda s: s["ActiveState"] == "active" and s["MainPID"] != "0"
                        and "waiting" in s["StatusText"].lower(),
                        "ActiveState", "MainPID", "StatusText", timeout=60)
    return shown["MainPID"]


def run(h: Host, prompt: str, timeout: float = 180) -> dict[str, Any]:
    """Submit PROMPT to the idle worker; the finished task, its report and the worker's PID."""
    pid = main_pid(h)
    tid = h.submit(prompt.replace("WORKER_PID", pid))
    view = h.wait_finished(tid, timeout=timeout)
    found = h.sh(f"cat {SERVICE_HOME}/workers/*/workspaces/{tid}-a*/hostile.json "
                 "2>/dev/null || true")
    view["report"] = json.loads(found) if found.strip() else {}
    view["worker_pid"] = pid
    view["id"] = tid
    return view


@pytest.fixture(scope="module")
def tasks(box: Host) -> dict[str, dict[str, Any]]:
    """Every task of the scenario, in order, on the one instance."""
    h = box
    out: dict[str, dict[str, Any]] = {}
    victim_secret = "victim-" + secrets.token_hex(8)
    out["victim"] = run(h, f"env secret={victim_secret}")
    out["victim"]["secret"] = victim_secret
    attacks = "proc,creds,walk,queue,outbox,plant,persist,daemon,env,signal,print"
    started = time.monotonic()
    out["hostile"] = run(h, " ".join([
        attacks, "pids=WORKER_PID", f"walk={':'.join(WALK)}", f"queue={':'.join(QUEUES)}",
        f"configs={':'.join(CONFIGS)}", f"leave={':'.join(LEAVE)}", f"daemon={DAEMON_SECONDS}",
        "print_mb=500"]))
    FACTS.append(f"hostile task with a 500 MB answer: {time.monotonic() - started:.1f} s "
                 f"(task duration {out['hostile']['result']['duration']:.1f} s)")
    out["fork"] = run(h, "fork count=10000 hold=30")
    out["memory"] = run(h, "memory mem_mb=2048 hold=30")
    out["disk"] = run(h, "disk disk_mb=2048 hold=30")
    out["check"] = run(h, f"check leave={':'.join(LEAVE)}")
    for name, view in out.items():
        result = view.get("result") or {}
        FACTS.append(f"hostile agent, {name} task: {view['state']} {result.get('error', '')}"
                     f" {result.get('stderr_tail', '')[-300:]}".rstrip())
        for attack_name, entry in view["report"].get("attacks", {}).items():
            detail = {k: v for k, v in entry.items() if k not in ("environ", "escaped")}
            outcome = "stopped"
            if entry["escaped"]:
                outcome = "written in its sandbox" if attack_name == "plant" else "ESCAPED"
            FACTS.append(f"  {attack_name}: {outcome} "
                         f"{json.dumps(detail)[:300]}")
    return out


def attack(view: dict[str, Any], name: str) -> dict[str, Any]:
    entry = view["report"].get("attacks", {}).get(name)
    assert entry is not None, f"the agent recorded no {name!r} attack: {view}"
    return entry


def test_the_hostile_agent_reads_nothing_of_dorch(tasks: dict[str, dict[str, Any]],
                                                  token: str) -> None:
    view = tasks["hostile"]
    assert view["state"] == "succeeded", view
    report = view["report"]
    # Writing a config or a marker works inside the sandbox (its home and /etc/dorch are its own
    # tmpfs): whether any of it reached the host is checked from outside, below.
    escaped = {name: entry for name, entry in report["attacks"].items()
               if entry["escaped"] and name != "plant"}
    assert not escaped, f"attacks that worked: {json.dumps(escaped, indent=1)[:4000]}"
    # It ran in the sandbox's PID namespace: its parent is that namespace's init (bubblewrap),
    # and the worker above it is not visible.
    assert report["ancestors"] == [] and report["pid"] < 10, report["ancestors"]
    read = sorted(p for p in report["read"] if p != "failed")
    assert read == [], f"the agent read {read}"
    assert token not in json.dumps(report)
    assert tasks["victim"]["secret"] not in json.dumps(report)
    # The worker's /proc entries: not there at all in the agent's PID namespace.
    worker = attack(view, "proc")["pids"].get(view["worker_pid"])
    assert worker in (None, {"environ": False, "mem": False}), worker
    assert attack(view, "signal")["pids"][view["worker_pid"]] != "can be signalled"
    assert attack(view, "env")["leaks"] == []


def test_nothing_the_hostile_agent_wrote_outside_its_workspace_survives(
    box: Host, tasks: dict[str, dict[str, Any]]
) -> None:
    h = box
    check = tasks["check"]
    assert check["state"] == "succeeded", check
    assert attack(check, "check") == {"escaped": False, "found": []}
    # Seen as root: no file left, no config planted, anywhere on the host.
    assert h.sh(f"find / \\( -path /proc -o -path /sys \\) -prune -o -name {MARKER} -print") == ""
    planted = h.sh("grep -rlsF 'planted by a hostile agent' / --exclude-dir=proc "
                   "--exclude-dir=sys --exclude-dir=usr --exclude-dir=opt "
                   "--exclude-dir=workspaces || true", timeout=300)
    assert planted == ""
    # The config dorch reads is the one the test wrote.
    assert h.sh("cat /etc/dorch/config.toml") == executor_config()
    # No daemon outlived its task.
    assert h.sh(f"pgrep -af '^sleep {DAEMON_SECONDS}' || true").strip() == ""
    # Nothing of the agents' is left: once the last task's worker has exited, the service user
    # runs the next, idle, worker and nothing else.
    wait_for(lambda: main_pid(h) != check["worker_pid"], 60, "the last task's worker to exit")
    left = h.sh("ps -u dorch -o stat=,args= || true").splitlines()
    assert [p for p in left if "dorch worker" not in p and not p.startswith("Z")] == [], left


def test_a_500_mb_answer_is_cut_and_the_rest_kept_in_the_workspace(
    box: Host, tasks: dict[str, dict[str, Any]]
) -> None:
    view = tasks["hostile"]
    output = view["result"]["output"]
    assert len(output.encode()) < 2 * LIMITS["max_output_bytes"], len(output)
    assert re.search(r"output cut at 1,048,576 of 52[0-9,]+ bytes", output), output[-500:]
    assert "[executor] max_output_bytes" in output


@pytest.mark.parametrize(("name", "what", "key"), [
    ("fork", "process limit", "max_processes"),
    ("memory", "memory limit", "memory_mb"),
    ("disk", "disk limit", "disk_mb"),
])
def test_each_limit_ends_its_task_with_a_clear_error(
    tasks: dict[str, dict[str, Any]], name: str, what: str, key: str
) -> None:
    view = tasks[name]
    assert view["state"] == "failed", view
    error = view["result"]["error"]
    assert what in error and f"[executor] {key}" in error, error
    entry = view["report"].get("attacks", {}).get(name)
    # Killed mid-attack (no entry) or stopped by the limit: never the whole attack.
    assert entry is None or not entry["escaped"], entry


def test_the_worker_stays_healthy_and_the_token_is_nowhere(
    box: Host, tasks: dict[str, dict[str, Any]], token: str
) -> None:
    h = box
    shown = h.show(UNIT, "ActiveState", "Result", "NRestarts", "ExecMainStatus")
    assert shown["ActiveState"] == "active" and shown["Result"] == "success", shown
    # One fresh worker per task, each of which exited cleanly after reporting.
    assert int(shown["NRestarts"]) >= len(tasks), shown
    journal = h.journal(UNIT)
    for bad in ("Traceback", "watchdog timeout", "oom-kill", "status=1/FAILURE", "core-dump"):
        assert bad not in journal, journal[-3000:]
    everything = json.dumps({k: {**v, "report": None} for k, v in tasks.items()})
    assert token not in everything
    assert token not in h.dorch("status --json --recent 100")
    assert token not in h.journal()
    assert h.sh(f"grep -rlF -- {shlex.quote(token)} {SERVICE_HOME} /etc /root || true") == ""
    for view in tasks.values():  # every task reported, none left running or queued
        assert view["state"] in ("succeeded", "failed"), view
