"""The emulator as a separate process, driven through its control API; the command; the config."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from dorch_emulator import EmulatorConfig, EmulatorConfigError
from dorch_emulator.config import EXAMPLE
from dorch_emulator.remote import EmulatorProcess, RemoteError

from tests.support.emulator_api import MakeEmulatorProc

DORCH = str(Path(sys.executable).with_name("dorch"))


def api(proc: EmulatorProcess, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """One plain Discord API request to the child emulator."""
    request = urllib.request.Request(proc.api_base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bot {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if exc.headers.get("Content-Type") == "application/json" else raw


def test_control_api_drives_a_child_emulator(emulator_proc: EmulatorProcess) -> None:
    remote = emulator_proc.remote
    state = remote.state()
    assert state["api_base"] == emulator_proc.api_base
    token = state["bots"]["worker-1"]["token"]
    task_queue = state["channels"]["task-queue"]

    posted = remote.post_as_user("alice", "task-queue", "a task from a human",
                                 attachments=[("spec.txt", "details")])
    status, messages = api(emulator_proc, "GET", f"/channels/{task_queue}/messages", token)
    assert status == 200 and [m["id"] for m in messages] == [posted["id"]]
    assert messages[0]["attachments"][0]["filename"] == "spec.txt"

    remote.react_as_user("bob", "task-queue", posted["id"], "🛑")
    status, message = api(emulator_proc, "GET", f"/channels/{task_queue}/messages/{posted['id']}", token)
    assert message["reactions"][0]["emoji"]["name"] == "🛑" and message["reactions"][0]["me"] is False

    assert remote.set_faults(outage="503")["outage"] == "503"
    assert api(emulator_proc, "GET", "/users/@me", token)[0] == 503
    remote.set_faults(outage="off")
    assert api(emulator_proc, "GET", "/users/@me", token)[0] == 200

    records, following = remote.requests()
    assert [r["status"] for r in records] == [200, 200, 503, 200]
    assert records[0]["bot"] == "worker-1" and token not in json.dumps(records)
    assert remote.requests(following) == ([], following)
    stats = remote.stats()
    assert stats["requests"] == 4 and stats["faults"] == {"outage-503": 1}

    with pytest.raises(RemoteError) as bad:
        remote.set_faults(outage="sometimes")
    assert bad.value.status == 400

    remote.reset()
    assert remote.messages("task-queue") == []
    assert remote.stats()["requests"] == 0


def test_refuse_outage_ends_by_itself(emulator_proc: EmulatorProcess) -> None:
    remote = emulator_proc.remote
    token = remote.state()["bots"]["worker-1"]["token"]
    remote.set_faults(outage="refuse", outage_seconds=0.5)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(emulator_proc.api_base + "/users/@me", timeout=5)
    deadline = time.monotonic() + 15
    while True:
        try:
            if api(emulator_proc, "GET", "/users/@me", token)[0] == 200:
                break
        except urllib.error.URLError:
            assert time.monotonic() < deadline, "the emulator did not come back after the outage"
            time.sleep(0.05)
    assert remote.faults()["outage"] == "off"


def test_child_emulator_from_a_config_file(make_emulator_proc: MakeEmulatorProc, tmp_path: Path) -> None:
    config = tmp_path / "world.toml"
    config.write_text('channels = ["tasks"]\n[[bots]]\nname = "w"\ntoken = "tok-w"\n'
                      '[[users]]\nname = "carol"\n')
    proc = make_emulator_proc(config)
    state = proc.remote.state()
    assert list(state["channels"]) == ["tasks"] and state["bots"]["w"]["token"] == "tok-w"
    assert api(proc, "GET", "/users/@me", "tok-w")[1]["username"] == "w"


def test_dorch_emulator_command(tmp_path: Path) -> None:
    # a dorch_emulator package planted in the current directory is not what runs
    planted = tmp_path / "dorch_emulator"
    planted.mkdir()
    (planted / "__init__.py").write_text("")
    (planted / "__main__.py").write_text("print('dorch emulator: url=http://127.0.0.1:9/ planted')\n")
    proc = subprocess.Popen([DORCH, "emulator", "--config", str(EXAMPLE), "--port", "0"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first line is the announcement
        assert line.startswith("dorch emulator: url=http://127.0.0.1:")
        url = line.split("url=")[1].split()[0]
        with urllib.request.urlopen(url + "/_emulator/health", timeout=10) as r:
            assert json.loads(r.read()) == {"ok": True}
    finally:
        proc.terminate()
        assert proc.wait(10) == 0

    bad = tmp_path / "bad.toml"
    bad.write_text('[[bots]]\nname = "w"\ndeny = ["FLY"]\n')
    result = subprocess.run([DORCH, "emulator", "--config", str(bad)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 78
    assert "bots[0].deny: unknown permission 'FLY'" in result.stderr


def test_example_file_is_the_default_world() -> None:
    assert EmulatorConfig.load(EXAMPLE) == EmulatorConfig.default()


@pytest.mark.parametrize(("data", "message"), [
    ({"bot": []}, "config: unknown key 'bot'"),
    ({"bots": [{"name": "w", "channels": {"nowhere": {"deny": []}}}]},
     "bots[0].channels.nowhere: no such channel"),
    ({"users": [{"name": "u", "roles": ["admin"]}]}, "users[0].roles: no role 'admin'"),
    ({"bots": [{"name": "a", "token": "t"}, {"name": "b", "token": "t"}]}, "two bots have the same token"),
    ({"ratelimit": {"routes": {"typing": {"limit": 1}}}}, "[ratelimit.routes.typing]: unknown route"),
    ({"faults": {"error_rate": 2}}, "faults.error_rate is a probability"),
    ({"channels": [{"name": "a", "id": "x"}]}, "channels[0]: id must be a number"),
])
def test_config_mistakes_are_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(EmulatorConfigError) as exc:
        EmulatorConfig.from_dict(data)
    assert message in str(exc.value)
