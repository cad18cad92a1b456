"""The `dorch` command as a user runs it: the installed entry point, real processes, real queue."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from dorch import __version__
from tests.support.helpers import DORCH, DorchHome, wait_until


def test_version_and_python_dash_m(home: DorchHome) -> None:
    assert home.dorch("--version").stdout.strip() == f"dorch {__version__}"
    import sys

    out = subprocess.run([sys.executable, "-m", "dorch", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"dorch {__version__}"


def test_help_lists_commands_and_exit_codes(home: DorchHome) -> None:
    out = home.dorch("--help").stdout
    for command in ("submit", "worker", "up", "status", "result", "cancel", "queue", "stop",
                    "config", "demo"):
        assert command in out
    assert "78" in out and "75" in out


def test_submit_prints_id_and_result_waits(home: DorchHome) -> None:
    sub = home.dorch("submit", "Write a sort function [model:gpt-4o] [thinking:medium]")
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    assert task_id.isdigit()
    view = home.dorch("result", task_id, "--json")
    assert json.loads(view.stdout)["state"] == "queued"
    assert home.dorch("result", task_id).returncode == 1
    home.spawn_worker("1").wait(timeout=60)
    res = home.dorch("result", task_id, "--wait", "--timeout", "30")
    assert res.returncode == 0
    assert res.stdout == "Write a sort function\n"
    data = json.loads(home.dorch("result", task_id, "--json").stdout)
    assert data["task"]["spec"] == {"prompt": "Write a sort function", "model": "gpt-4o",
                                    "thinking": "medium"}
    assert data["state"] == "succeeded"


def test_submit_wait_json(home: DorchHome) -> None:
    worker = home.spawn_worker("1")
    out = home.dorch("submit", "hello", "--wait", "--json", "--timeout", "60")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["state"] == "succeeded" and data["result"]["output"] == "hello"
    worker.wait(timeout=30)


def test_positional_model_and_thinking_and_options_win(home: DorchHome) -> None:
    out = home.dorch("submit", "do it [thinking:low]", "gpt-4o", "high", "--json")
    data = json.loads(out.stdout)
    assert (data["model"], data["thinking"]) == ("gpt-4o", "high")
    out = home.dorch("submit", "x [model:a]", "b", "--model", "c", "--json")
    assert json.loads(out.stdout)["model"] == "c"


def test_prompt_from_stdin_and_file_kept_exactly(home: DorchHome) -> None:
    text = "Line 1 — ünïcødé 🚀\n```sh\necho `date`\n```\n\n"
    out = home.dorch("submit", "-", "--json", input=text)
    assert json.loads(out.stdout)["prompt"] == text
    f = home.root / "prompt.md"
    f.write_text(text, encoding="utf-8")
    out = home.dorch("submit", "--file", str(f), "--json")
    assert json.loads(out.stdout)["prompt"] == text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "prompt is empty"),
        (["hi [thinking:huge]"], "unknown thinking level"),
        (["hi [foo:bar]"], "valid tags are [model:...], [thinking:...]"),
        (["[model:a] hi [model:b]"], "conflicting tags"),
    ],
)
def test_bad_task_input_exits_64_and_queues_nothing(
    home: DorchHome, args: list[str], message: str
) -> None:
    out = home.dorch("submit", *args)
    assert out.returncode == 64
    assert message in out.stderr
    assert json.loads(home.dorch("status", "--json").stdout)["counts"].get("queued", 0) == 0


def test_bad_config_exits_78_naming_file_and_key(home: DorchHome) -> None:
    home.config_path.write_text("[worker]\nmax_attempts = 'many'\n")
    out = home.dorch("status")
    assert out.returncode == 78
    assert str(home.config_path) in out.stderr and "max_attempts" in out.stderr


def test_status_json_and_text(home: DorchHome) -> None:
    for i in range(3):
        home.dorch("submit", f"task {i}")
    data = json.loads(home.dorch("status", "--json").stdout)
    assert data["counts"]["queued"] == 3
    text = home.dorch("status").stdout
    assert "3 queued" in text


def test_cancel_queued_task_is_never_run(home: DorchHome) -> None:
    task_id = home.dorch("submit", "never run me").stdout.strip()
    assert home.dorch("cancel", task_id).returncode == 0
    assert home.dorch("cancel", task_id).returncode == 1
    home.configure(worker={"max_idle_time": 0.5})
    home.spawn_worker("1").wait(timeout=30)
    assert json.loads(home.dorch("result", task_id, "--json").stdout)["state"] == "cancelled"
    assert home.dorch("cancel", "999999").returncode == 1


def test_queue_clear_asks_unless_yes(home: DorchHome) -> None:
    for i in range(2):
        home.dorch("submit", f"task {i}")
    refused = home.dorch("queue", "clear", input="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    cleared = home.dorch("queue", "clear", "--yes")
    assert cleared.returncode == 0 and "removed 2" in cleared.stdout
    assert json.loads(home.dorch("status", "--json").stdout)["counts"].get("queued", 0) == 0


def test_config_show_names_sources(home: DorchHome) -> None:
    env = home.env(DORCH_POLL_INTERVAL="7")
    out = home.dorch("config", "show", env=env).stdout
    assert "poll_interval = 7.0  # $DORCH_POLL_INTERVAL" in out
    assert f"# {home.config_path}" in out
    data = json.loads(home.dorch("config", "show", "--json", env=env).stdout)
    assert data["sources"]["worker.max_attempts"] == "default"


def test_up_and_stop(home: DorchHome) -> None:
    up = subprocess.Popen([DORCH, "up", "--workers", "2"], env=home.env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pidfile = home.root / "data" / "up.pid"
    wait_until(pidfile.exists, what="the supervisor's pidfile")
    task_id = home.dorch("submit", "hi").stdout.strip()
    assert home.dorch("result", task_id, "--wait", "--timeout", "60").stdout == "hi\n"
    stopped = home.dorch("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert up.wait(timeout=30) == 0
    assert home.dorch("stop").returncode == 1  # nothing left to stop: says so


def test_up_gives_up_on_exit_78(home: DorchHome) -> None:
    home.configure(executor={"kind": "openclaw"}, executor__openclaw={"path": "/nonexistent/openclaw"})
    up = subprocess.run([DORCH, "up", "--workers", "2"], env=home.env(), text=True,
                        capture_output=True, timeout=60)
    assert up.returncode == 78
    assert up.stderr.count("exited 78") == 2


def test_ctrl_c_on_up_hands_tasks_back(home: DorchHome) -> None:
    from tests.support.helpers import agent_command

    log = home.root / "exec.jsonl"
    home.configure(executor={"kind": "command"},
                   executor__command={"argv": agent_command("recording_agent.py", str(log))},
                   worker={"lease_seconds": 30, "heartbeat_seconds": 1})
    task_id = home.dorch("submit", "SLOW").stdout.strip()
    up = subprocess.Popen([DORCH, "up", "--workers", "1"], env=home.env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until((home.root / "exec.jsonl.started").exists, what="the agent to start")
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=30) == 0
    data = json.loads(home.dorch("result", task_id, "--json").stdout)
    assert data["state"] == "queued" and data["task"]["attempt"] == 1


def test_demo_runs_everything_with_nothing_configured(tmp_path: object) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DORCH_")}
    env["DORCH_CONFIG_DIR"] = str(tmp_path)
    out = subprocess.run([DORCH, "demo", "--tasks", "6", "--delay", "0.2"], env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "6/6 tasks succeeded" in out.stdout
    assert "Write a sort function" in out.stdout


def test_a_user_install_keeps_its_data_dir_private(home: DorchHome) -> None:
    """`dorch up`/`dorch worker` as a user: the data dir (outbox, host state, pidfile) is 0700
    even under a umask of 002 and when an older dorch left it group-writable."""
    import os
    import stat

    data = home.root / "data"
    data.mkdir(mode=0o775)
    data.chmod(0o775)
    home.configure(worker={"max_idle_time": 0.3})
    out = subprocess.run(["sh", "-c", f"umask 002 && exec {DORCH} worker --instance 1"],
                         env=home.env(), capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert not any(os.stat(p).st_mode & 0o002 for p in data.rglob("*"))
