"""The agent is untrusted: a hostile agent run by a real `dorch worker` (local bus, `command`
executor) tries every attack of tests/support/hostile_agent.py, with bubblewrap and without.

With bubblewrap every read or write of dorch's files, the worker's /proc entries or the
credentials fails, nothing it starts or leaves survives the task, and each limit ends the task
with an error naming it. Without (isolation = "none") the documented best effort holds: the
worker's /proc entries are unreadable and nothing the agent started survives the task or a
kill -9 of the worker. Under CI these tests fail, not skip, when bubblewrap is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dorch.model import State, TaskSpec
from tests.support.helpers import DORCH, SUPPORT, DorchHome, agent_command, needs_bwrap, wait_until

SECRET = "s3cr3t-marker-4f9c2e"   # in the worker's environment and its credentials directory
WORKER_WAIT = 120.0


@pytest.fixture(scope="module")
def bwrap() -> None:
    needs_bwrap()


@pytest.fixture
def probe_dir() -> Iterator[Path]:
    """A directory in /etc the agent tries to create: never there afterwards."""
    path = Path("/etc/dorch-hostile-probe")
    yield path
    if path.exists():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        pytest.fail(f"the agent created {path} on the host")


def configure(home: DorchHome, isolation: str, **executor: Any) -> None:
    home.configure(
        executor={"kind": "command", "isolation": isolation, "ro_paths": [str(SUPPORT)],
                  **executor},
        executor__command={"argv": agent_command("hostile_agent.py")},
        worker={"max_idle_time": 20, "task_timeout": 120},
    )


def worker_env(home: DorchHome) -> dict[str, str]:
    creds = home.root / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "discord-token").write_text(SECRET)
    return {"DORCH_TEST_SECRET": SECRET, "CREDENTIALS_DIRECTORY": str(creds)}


def run_task(home: DorchHome, prompt: str) -> tuple[Any, dict[str, Any], subprocess.Popen[str]]:
    """Submit PROMPT, run one worker for it; (the task's view, the agent's report, the worker)."""
    task = str(home.call("submit", TaskSpec(prompt), "test"))
    worker = home.spawn_worker("1", **worker_env(home))
    _, err = worker.communicate(timeout=WORKER_WAIT)
    assert worker.returncode == 0, err
    view = home.call("get", task)
    report_file = home.root / "workspaces" / f"{task}-a1" / "hostile.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return view, report, worker


def processes_with(text: str) -> list[int]:
    """Live processes whose command line contains TEXT."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(entry.path, "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry.name))
    return found


def plant_targets(home: DorchHome) -> None:
    """What a hostile agent would love to read: another workspace, an outbox, data files."""
    other = home.root / "workspaces" / "other-a1"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text(f"another task's files {SECRET}")
    data = home.root / "data"
    data.mkdir(exist_ok=True)
    (data / "outbox.sqlite3").write_text(f"outbox {SECRET}")
    (data / "host-state.json").write_text(f"{{\"secret\": \"{SECRET}\"}}")


def test_bubblewrap_agent_reads_and_writes_nothing_of_dorch_and_leaves_nothing(
    home: DorchHome, bwrap: None, probe_dir: Path
) -> None:
    plant_targets(home)
    # as if the operator granted the whole directory, and two files in it by name: dorch's
    # directories in it stay hidden, the named file is shown again, a credential never
    notes = home.root / "shared-notes.txt"
    notes.write_text("notes the agent may read\n")
    worker_env(home)
    configure(home, "bubblewrap", ro_paths=[str(SUPPORT), str(home.root), str(notes),
                                            str(home.root / "creds" / "discord-token")])
    config_before = home.config_path.read_text()
    user_config = home.root / "userconf" / "config.toml"
    tag = "6007.25"
    root, data = home.root, home.root / "data"
    view, report, _ = run_task(
        home, f"proc,creds,walk,queue,outbox,plant,persist,daemon walk={root}:/etc/dorch "
        f"queue={home.queue} creds={root / 'creds'} leave={data}:{root / 'workspaces'} "
        f"configs={user_config}:{home.config_path}:{probe_dir}/config.toml daemon={tag}")

    assert view.state is State.SUCCEEDED, view.result
    attacks = report["attacks"]
    for name in ("proc", "creds", "queue", "outbox"):
        assert attacks[name]["escaped"] is False, (name, attacks[name])
    assert attacks["walk"]["files"] == [str(notes)]
    assert report["ancestors"] == [], "the worker is not even visible from the sandbox"
    assert SECRET not in json.dumps(report) and SECRET not in view.result.output
    # the agent believed it wrote its configs (into the sandbox's tmpfs): nothing on the host
    assert not user_config.exists()
    assert home.config_path.read_text() == config_before
    assert not probe_dir.exists()
    assert not list(data.rglob("dorch-hostile-marker"))
    assert not Path("/tmp/dorch-hostile-marker").exists()
    assert processes_with(f"sleep {tag}") == [], "the daemon outlived the task"

    view, report, _ = run_task(home, f"check leave={data}:{root / 'workspaces'}")
    assert view.state is State.SUCCEEDED, view.result
    assert report["attacks"]["check"] == {"escaped": False, "found": []}


def test_without_sandbox_the_worker_is_unreadable_and_nothing_survives_the_task(
    home: DorchHome,
) -> None:
    configure(home, "none")
    tag = "6007.75"
    view, report, worker = run_task(home, f"proc,daemon daemon={tag}")

    assert view.state is State.SUCCEEDED, view.result
    ancestors = [a["pid"] for a in report["ancestors"]]
    assert worker.pid in ancestors, "the worker is an ancestor of the agent"
    assert report["attacks"]["proc"]["pids"][str(worker.pid)] == {"environ": False, "mem": False}
    assert report["attacks"]["proc"]["escaped"] is False
    assert SECRET not in json.dumps(report)
    assert processes_with(f"sleep {tag}") == [], "the daemon outlived the task"


@pytest.mark.parametrize("isolation", ["none", "bubblewrap"])
def test_nothing_outlives_a_worker_killed_with_sigkill(home: DorchHome, isolation: str,
                                                       request: pytest.FixtureRequest) -> None:
    if isolation == "bubblewrap":
        request.getfixturevalue("bwrap")
    configure(home, isolation)
    tag = "6008.5" if isolation == "none" else "6008.75"
    task = str(home.call("submit", TaskSpec(f"daemon,sleep daemon={tag} hold=600"), "test"))
    worker = home.spawn_worker("1", **worker_env(home))
    try:
        ready = home.root / "workspaces" / f"{task}-a1" / "ready"
        wait_until(ready.exists, WORKER_WAIT, "the agent to start")
        wait_until(lambda: processes_with(f"sleep {tag}"), 30, "the daemon to start")
        from dorch.runtime.sandbox import descendants

        below = descendants(worker.pid)
        assert below, "the agent runs below the worker"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    wait_until(lambda: not [p for p in below if _alive(p)] and not processes_with(f"sleep {tag}"),
               30, "every process of the agent to die with its worker")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


LIMITS = {"max_processes": 40, "memory_mb": 200, "disk_mb": 100}


@pytest.mark.parametrize("isolation", ["bubblewrap", "none"])
def test_each_limit_ends_the_task_with_its_error_and_the_next_task_runs(
    home: DorchHome, isolation: str, request: pytest.FixtureRequest
) -> None:
    if isolation == "bubblewrap":
        request.getfixturevalue("bwrap")
    configure(home, isolation, **LIMITS)
    cases = {
        "fork count=400 hold=60": "the agent hit the process limit (40 processes and threads; "
                                  "[executor] max_processes)",
        "memory mem_mb=2000 hold=60": "the agent hit the memory limit (200 MB; [executor] "
                                      "memory_mb)",
        "disk disk_mb=400 hold=60": "the agent hit the disk limit (100 MB in its workspace "
                                    "and temporary files; [executor] disk_mb)",
    }
    if isolation == "bubblewrap":   # files in /tmp (a tmpfs: memory) count as well
        cases["disk disk_mb=400 disk_dir=/tmp hold=60"] = cases["disk disk_mb=400 hold=60"]
    for prompt, error in cases.items():
        view, _, _ = run_task(home, prompt)
        assert view.state is State.FAILED, (prompt, view.result)
        assert view.result.error == error
    view, report, _ = run_task(home, "check")
    assert view.state is State.SUCCEEDED, view.result
    assert report["attacks"]["check"]["escaped"] is False


@pytest.mark.parametrize("isolation", ["bubblewrap", "none"])
def test_a_500_mb_answer_is_cut_and_says_where_the_whole_is(
    home: DorchHome, isolation: str, request: pytest.FixtureRequest
) -> None:
    if isolation == "bubblewrap":
        request.getfixturevalue("bwrap")
    configure(home, isolation, disk_mb=2000)
    view, _, _ = run_task(home, "print print_mb=500")

    assert view.state is State.SUCCEEDED, view.result.error
    output = view.result.output
    assert len(output.encode()) < 6 * 1024 * 1024 + 1000
    whole = home.root / "workspaces" / f"{view.task.id}-a1" / ".dorch" / "stdout"
    assert output.splitlines()[-1] == (
        f"[dorch: output cut at {6 * 1024 * 1024:,} of {whole.stat().st_size:,} bytes "
        f"([executor] max_output_bytes); the whole output is in {whole}]")
    assert whole.stat().st_size > 500 * 1024 * 1024


@pytest.mark.parametrize(("isolation", "systemd"), [("auto", True), ("bubblewrap", False)])
def test_without_bubblewrap_a_service_or_a_demanding_config_refuses_to_start(
    home: DorchHome, tmp_path: Path, isolation: str, systemd: bool
) -> None:
    configure(home, isolation)
    empty = tmp_path / "no-bwrap-here"
    empty.mkdir()
    env = {"INVOCATION_ID": "0123456789abcdef"} if systemd else {}
    worker = home.spawn_worker("1", PATH=str(empty), **env)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 78, err
    assert "install bubblewrap" in err


def test_a_relative_ro_path_is_a_configuration_error(home: DorchHome) -> None:
    configure(home, "none", ro_paths=["tools/bin"])
    worker = home.spawn_worker("1")
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 78, err
    assert "[executor] ro_paths: 'tools/bin' is not an absolute path" in err


def test_doctor_says_how_the_agent_is_isolated(home: DorchHome, tmp_path: Path) -> None:
    configure(home, "none")
    done = home.dorch("doctor")
    assert "agent isolation: same user: the agent can read your token (install bubblewrap)" \
        in done.stdout, done.stdout + done.stderr
    from dorch.runtime.sandbox import bwrap_works

    if not bwrap_works():
        configure(home, "auto")
        done = home.dorch("doctor")
        assert "agent isolation: sandboxed by bubblewrap" in done.stdout, done.stderr


def test_a_program_prefix_holding_dorchs_data_is_not_bound_whole(tmp_path: Path) -> None:
    from dorch.runtime.sandbox import program_prefixes

    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    program = prefix / "bin" / "agent"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert program_prefixes(str(program), {}, ()) == [str(prefix)]
    data = prefix / "share" / "dorch"
    assert program_prefixes(str(program), {}, (str(data),)) == [str(prefix / "bin")]
    found_on_path = program_prefixes("agent", {"PATH": str(prefix / "bin")}, ())
    assert found_on_path == [str(prefix)]


def test_dorch_up_and_its_workers_are_unreadable_to_a_process_of_their_user(
    home: DorchHome,
) -> None:
    """dorch up runs here like the agent would (no capabilities, even as root: with them root
    reads anything), so only its being non-dumpable keeps a process of the same user out."""
    from dorch.runtime.sandbox import REAPER, descendants

    configure(home, "none")
    same_user = [sys.executable, "-I", "-S", str(REAPER), "--same-user", "--"]
    wrapper = subprocess.Popen([*same_user, DORCH, "up", "--workers", "1"],
                               env=home.env(**worker_env(home)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    up = wait_until(lambda: descendants(wrapper.pid), 60, "dorch up to start")[0]
    try:
        workers = wait_until(lambda: descendants(up), 60, "dorch up to start its worker")
        for pid in (up, workers[0]):
            for what in ("environ", "mem"):
                reader = subprocess.run(
                    [*same_user, sys.executable, "-c",
                     f"print(open('/proc/{pid}/{what}', 'rb').read(64))"],
                    capture_output=True, text=True, timeout=60, check=False)
                assert reader.returncode != 0 and "PermissionError" in reader.stderr, \
                    (pid, what, reader.stdout)
    finally:
        os.kill(up, signal.SIGTERM)
        wrapper.communicate(timeout=60)


@pytest.mark.parametrize("isolation", ["bubblewrap", "none"])
def test_a_stopping_worker_gives_the_agent_sigterm_first(
    home: DorchHome, isolation: str, request: pytest.FixtureRequest
) -> None:
    if isolation == "bubblewrap":
        request.getfixturevalue("bwrap")
    home.configure(
        executor={"kind": "command", "isolation": isolation, "ro_paths": [str(SUPPORT)],
                  "pass_env": ["FAKE_AGENT_READY"]},
        executor__command={"argv": agent_command("fake_agent.py", "ignore-term", "term-note")},
        worker={"max_idle_time": 20, "stop_grace": 2},
    )
    task = str(home.call("submit", TaskSpec("hold on"), "test"))
    worker = home.spawn_worker("1", FAKE_AGENT_READY="ready")   # relative: in the workspace
    workspace = home.root / "workspaces" / f"{task}-a1"
    wait_until((workspace / "ready").exists, WORKER_WAIT, "the agent to start")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert (workspace / "term-note").read_text() == "term\n"
    assert home.call("get", task).state is State.QUEUED, "handed back"
