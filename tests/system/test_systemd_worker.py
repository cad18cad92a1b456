"""dorch-worker@N under real systemd 252, in a booted Debian 12 container.

dorch is installed the way a user installs it (a venv at /opt/dorch from the wheel, offline), the
units from systemd/, a local-bus config, and a bot token as an encrypted credential. A stand-in
agent (a shell script run by the ``command`` executor) answers at once, holds a task until the
test releases it (so "mid-task" is a state we wait for, not a guess), or prints its environment.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from . import nspawn
from .conftest import FACTS

T = TypeVar("T")
HOST = "dorchsys"
DORCH = "/opt/dorch/bin/dorch"
INSTANCES = ("1", "2", "3")
RELEASE_DIR = "/etc/dorch-test"

AGENT = f"""#!/bin/sh
# Stand-in agent for the system test; the prompt arrives on stdin.
prompt=$(cat)
case "$prompt" in
    hold\\ *)
        name=${{prompt#hold }}
        i=0
        while [ ! -e "{RELEASE_DIR}/release-$name" ]; do
            i=$((i + 1))
            [ "$i" -gt 1500 ] && {{ echo "never released" >&2; exit 3; }}
            sleep 0.1
        done
        echo "released $name as $(id -un)" ;;
    environ) tr '\\0' '\\n' < /proc/self/environ ;;
    *) echo "$prompt" ;;
esac
"""

CONFIG = """\
[bus]
kind = "local"

[local]
path = "/var/lib/dorch/queue/queue.sqlite3"

[worker]
poll_interval = 0.2
lease_seconds = 4.0
heartbeat_seconds = 1.0
stop_grace = 3.0
task_timeout = 180.0

[executor]
kind = "command"

[executor.command]
argv = ["/usr/local/bin/dorch-test-agent"]
"""


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll PROBE until it returns something truthy; fail naming WHAT at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(0.2)


class Host:
    """The container seen as an admin sees a server: dorch and systemctl over SSH."""

    def __init__(self, c: nspawn.Container) -> None:
        self.c = c

    def sh(self, command: str, check: bool = True, timeout: float = 60) -> str:
        return self.c.ssh(command, check=check, timeout=timeout).stdout

    def dorch(self, args: str, check: bool = True) -> str:
        return self.sh(f"{DORCH} {args}", check=check)

    def submit(self, prompt: str) -> str:
        return self.dorch(f"submit {shlex.quote(prompt)}").strip()

    def task(self, task_id: str) -> dict[str, Any]:
        return json.loads(self.dorch(f"result {task_id} --json", check=False))

    def status(self) -> dict[str, Any]:
        return json.loads(self.dorch("status --json --recent 100"))

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} -p {','.join(props)}")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(
        self, unit: str, what: str, ok: Callable[[dict[str, str]], bool], *props: str,
        timeout: float = 30,
    ) -> dict[str, str]:
        """Poll ``systemctl show`` until OK holds for PROPS; returns them."""

        def probe() -> dict[str, str] | None:
            shown = self.show(unit, *props)
            return shown if ok(shown) else None

        return wait_for(probe, timeout, f"{unit} {what}")

    def journal(self, unit: str = "") -> str:
        return self.sh(f"journalctl --no-pager -o cat {'-u ' + unit if unit else ''}")

    def release(self, name: str) -> None:
        self.sh(f"touch {RELEASE_DIR}/release-{name}")

    def wait_running(self, task_id: str, timeout: float = 30) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            view = self.task(task_id)
            return view if view["state"] == "running" else None

        return wait_for(probe, timeout, f"task {task_id} to be running")

    def wait_finished(self, task_id: str, timeout: float = 60) -> dict[str, Any]:
        out = self.dorch(f"result {task_id} --wait --timeout {timeout} --json", check=False)
        if not out.strip():
            pytest.fail(f"task {task_id} did not finish within {timeout} s", pytrace=False)
        return json.loads(out)

    def start_workers(self) -> None:
        self.sh("systemctl start dorch-workers.target")
        for i in INSTANCES:
            self.wait_unit(f"dorch-worker@{i}", "to be active",
                           lambda s: s["ActiveState"] == "active", "ActiveState")


def unit_of(worker: str) -> str:
    """The unit a worker id ``<host>-<instance>`` belongs to."""
    assert worker.startswith(f"{HOST}-"), worker
    return f"dorch-worker@{worker.rsplit('-', 1)[1]}"


@pytest.fixture(scope="module")
def token() -> str:
    return "test." + secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def host(rootfs: Path, wheelhouse: Path, containers_dir: Path, token: str) -> Iterator[Host]:
    repo = nspawn.REPO
    with nspawn.boot(
        rootfs, containers_dir, HOST,
        copy_in={"/root/wheelhouse": wheelhouse, "/root/units": repo / "systemd",
                 "/root/check-units": repo / ".ci" / "check-units"},
        files={"/usr/local/bin/dorch-test-agent": AGENT},
    ) as c:
        FACTS.append(f"container booted in {c.boot_seconds:.1f} s")
        h = Host(c)
        started = time.monotonic()
        # What a user does on a fresh Debian 12 server with no network (the README's steps).
        h.sh("python3 -m venv /opt/dorch && /opt/dorch/bin/pip install --quiet --no-index "
             "--disable-pip-version-check --find-links /root/wheelhouse dorch", timeout=300)
        FACTS.append(f"dorch installed from the wheelhouse in {time.monotonic() - started:.1f} s")
        h.sh("chmod 755 /usr/local/bin/dorch-test-agent && mkdir -p " + RELEASE_DIR)
        h.sh("install -m 644 /root/units/dorch.sysusers.conf /usr/lib/sysusers.d/dorch.conf && "
             "systemd-sysusers && install -m 644 /root/units/dorch.tmpfiles.conf "
             "/usr/lib/tmpfiles.d/dorch.conf && systemd-tmpfiles --create dorch.conf && "
             "install -m 644 /root/units/dorch-worker@.service "
             "/root/units/dorch-workers.target /etc/systemd/system/ && systemctl daemon-reload")
        c.write("/etc/dorch/config.toml", CONFIG)
        # The token never passes through argv or a plain file: stdin -> systemd-creds.
        c.ssh("mkdir -p /etc/credstore.encrypted && systemd-creds encrypt --name=discord-token "
              "- /etc/credstore.encrypted/discord-token", input=token)
        yield h
        h.sh("systemctl stop dorch-workers.target", check=False)


@pytest.fixture
def fresh(host: Host) -> Iterator[Host]:
    """Every test starts with stopped workers, an empty queue and the good config."""
    host.sh("systemctl stop dorch-workers.target 'dorch-worker@*' && "
            "systemctl reset-failed 'dorch-worker@*' ; "
            f"rm -f {RELEASE_DIR}/release-* /var/lib/dorch/queue/queue.sqlite3*")
    host.c.write("/etc/dorch/config.toml", CONFIG)
    yield host


def test_units_verify_clean_and_exposure_at_most_2(host: Host) -> None:
    out = host.sh("/root/check-units /root/units 2>&1", check=False)
    assert "check-units: verify clean" in out, out
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out
    FACTS.append(f"exposure (systemd-analyze security --offline=yes, systemd 252 in the "
                 f"container): {match.group(1)}")
    assert float(match.group(1)) <= 2.0, out


def test_each_task_runs_in_a_fresh_process_on_every_instance(fresh: Host) -> None:
    h = fresh
    h.start_workers()
    before = {i: h.show(f"dorch-worker@{i}", "MainPID", "NRestarts") for i in INSTANCES}
    ids = [h.submit(f"hold fresh{n}") for n in range(3)]
    # A worker holds at most one task, so three running tasks means all three instances work.
    running = [h.wait_running(tid) for tid in ids]
    assert {unit_of(v["worker"]) for v in running} == {f"dorch-worker@{i}" for i in INSTANCES}
    for n in range(3):
        h.release(f"fresh{n}")
    for tid in ids:
        assert h.wait_finished(tid)["state"] == "succeeded"
    for i in INSTANCES:
        unit = f"dorch-worker@{i}"
        after = h.wait_unit(
            unit, "to restart after its task",
            lambda s: s["NRestarts"] != "0" and s["ActiveState"] == "active",
            "MainPID", "NRestarts", "ActiveState",
        )
        assert int(after["NRestarts"]) > int(before[i]["NRestarts"])
        assert after["MainPID"] not in ("0", before[i]["MainPID"])


def test_twenty_quick_tasks_hit_no_start_limit(fresh: Host) -> None:
    h = fresh
    h.start_workers()
    ids = [h.submit(f"quick {n}") for n in range(20)]
    views = [h.wait_finished(tid, timeout=120) for tid in ids]
    assert [v["state"] for v in views] == ["succeeded"] * 20
    assert [v["result"]["output"].strip() for v in views] == [f"quick {n}" for n in range(20)]
    restarts = 0
    for i in INSTANCES:
        s = h.show(f"dorch-worker@{i}", "Result", "ActiveState", "NRestarts")
        assert s["Result"] != "start-limit-hit", s
        assert s["ActiveState"] in ("active", "activating"), s
        restarts += int(s["NRestarts"])
    assert restarts >= 20
    assert "start-limit-hit" not in h.journal()


def test_kill_9_mid_task_restarts_the_worker_and_the_task_completes(fresh: Host) -> None:
    h = fresh
    h.start_workers()
    tid = h.submit("hold k9")
    view = h.wait_running(tid)
    unit = unit_of(view["worker"])
    before = h.show(unit, "MainPID", "NRestarts")
    h.sh(f"kill -9 {before['MainPID']}")
    # systemd restarts the killed instance; its lease expires and a worker runs attempt 2.
    h.wait_unit(unit, "to be restarted",
                lambda s: int(s["NRestarts"]) > int(before["NRestarts"]), "NRestarts")
    assert "status=9/KILL" in h.journal(unit)

    def attempt_2_running() -> bool:
        view = h.task(tid)
        return view["state"] == "running" and view["task"]["attempt"] == 2

    wait_for(attempt_2_running, 60, f"task {tid} to run again once its lease expired")
    # The killed worker's agent went with it (KillMode=mixed): only attempt 2's agent is left.
    # (the agent itself, not the bubblewrap processes whose command lines also name it)
    assert h.sh("pgrep -c -f '^/bin/sh /usr/local/bin/dorch-test-agent'").strip() == "1"
    h.release("k9")
    done = h.wait_finished(tid, timeout=60)
    assert done["state"] == "succeeded", done
    assert done["task"]["attempt"] == 2
    assert done["result"]["output"].strip() == "released k9 as dorch"


def test_bad_config_exits_78_and_the_unit_stays_stopped(fresh: Host) -> None:
    h = fresh
    h.c.write("/etc/dorch/config.toml", CONFIG + "\n[worker.typo]\nspeed = 1\n")
    h.sh("systemctl start dorch-worker@1", check=False)  # Type=notify: the start job fails
    s = h.wait_unit("dorch-worker@1", "to fail", lambda s: s["ActiveState"] == "failed",
                    "Result", "ExecMainStatus", "ActiveState", "SubState", "NRestarts")
    # "failed", not "activating (auto-restart)": no restart is scheduled.
    assert s == {"Result": "exit-code", "ExecMainStatus": "78", "ActiveState": "failed",
                 "SubState": "failed", "NRestarts": "0"}
    journal = h.journal("dorch-worker@1")
    assert "configuration error" in journal and "/etc/dorch/config.toml" in journal, journal
    assert "typo" in journal, journal


def test_stopping_the_target_mid_task_hands_the_task_back(fresh: Host) -> None:
    h = fresh
    h.start_workers()
    tid = h.submit("hold stop")
    unit = unit_of(h.wait_running(tid)["worker"])
    started = time.monotonic()
    h.sh("systemctl stop dorch-workers.target", timeout=120)
    took = time.monotonic() - started
    for i in INSTANCES:
        assert h.show(f"dorch-worker@{i}", "ActiveState")["ActiveState"] == "inactive"
    # Stopped by its own hand-back, not killed at TimeoutStopSec.
    assert h.show(unit, "Result")["Result"] == "success"
    view = h.task(tid)
    assert view["state"] == "queued" and view["task"]["attempt"] == 1, view
    assert "handed back" in h.journal(unit)
    FACTS.append(f"systemctl stop dorch-workers.target mid-task took {took:.1f} s")
    h.release("stop")
    h.start_workers()
    done = h.wait_finished(tid)
    assert done["state"] == "succeeded" and done["task"]["attempt"] == 1, done


def test_token_reaches_the_service_only_through_its_credentials(fresh: Host, token: str) -> None:
    h = fresh
    h.start_workers()
    tid = h.submit("hold creds")
    unit = unit_of(h.wait_running(tid)["worker"])
    # The service has it, readable by its user only...
    cred = f"/run/credentials/{unit}.service/discord-token"
    assert h.sh(f"cat {cred}") == token
    assert h.sh(f"stat -c '%U %a' {cred}").split() == ["dorch", "400"]
    # ...and it is nowhere else: not in the worker's environment, the unit's properties, the
    # journal, ps, the plain file system, or the agent's environment.
    pid = h.show(unit, "MainPID")["MainPID"]
    assert token not in h.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    for i in INSTANCES:
        assert token not in h.sh(f"systemctl show dorch-worker@{i}")
    assert token not in h.sh("ps -eo args")
    assert h.sh(f"grep -rlF -- {shlex.quote(token)} /etc /var/lib/dorch /opt/dorch /root "
                "|| true") == ""
    h.release("creds")
    h.wait_finished(tid)
    agent = h.wait_finished(h.submit("environ"))
    assert agent["state"] == "succeeded", agent
    env = agent["result"]["output"]
    assert "PATH=" in env  # the dump is real
    assert token not in env
    for name in ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "INVOCATION_ID"):
        assert f"{name}=" not in env, env
    assert token not in h.journal()


def test_an_admin_in_group_dorch_submits_to_the_shared_queue(fresh: Host) -> None:
    h = fresh
    h.start_workers()  # the workers create the queue first, as on a running server
    h.wait_finished(h.submit("warm up"))
    h.sh("id alice >/dev/null 2>&1 || useradd --create-home --groups dorch alice")
    tid = h.sh(f"cd / && sudo -u alice {DORCH} submit 'from alice'").strip()
    done = h.wait_finished(tid)
    assert done["state"] == "succeeded" and done["task"]["submitter"].startswith("alice@"), done
    assert h.sh(f"cd / && sudo -u alice {DORCH} result {tid}").strip() == "from alice"


def test_watchdog_pings_keep_a_long_task_alive_and_status_shows_it(fresh: Host) -> None:
    h = fresh
    watchdog = 2
    h.c.write("/etc/systemd/system/dorch-worker@1.service.d/watchdog.conf",
              f"[Service]\nWatchdogSec={watchdog}\n")
    try:
        h.sh("systemctl daemon-reload && systemctl start dorch-worker@1")
        tid = h.submit("hold watchdog")
        view = h.wait_running(tid)
        before = h.show("dorch-worker@1", "MainPID", "NRestarts")
        status = h.show("dorch-worker@1", "StatusText")["StatusText"]
        assert f"running task {tid}" in status, status

        def ran_three_watchdog_periods() -> bool:
            now = float(h.sh("date +%s.%N"))
            return now - float(view["started_at"]) > 3 * watchdog

        # Time itself is what is tested: a worker that stopped pinging is killed after 2 s.
        wait_for(ran_three_watchdog_periods, 30, "the task to run for 3 watchdog periods")
        assert h.show("dorch-worker@1", "MainPID", "NRestarts") == before
        assert "watchdog timeout" not in h.journal("dorch-worker@1").lower()
        h.release("watchdog")
        assert h.wait_finished(tid)["state"] == "succeeded"
    finally:
        h.sh("rm -rf /etc/systemd/system/dorch-worker@1.service.d && systemctl daemon-reload")
