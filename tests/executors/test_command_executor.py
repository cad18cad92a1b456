"""The `command` executor: template rule, presets' argv, outcomes, with real child processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from dorch.config import build
from dorch.executors import ExecRequest, Executor, ExecutorConfigError
from dorch.executors.command import (
    PRESETS,
    CommandExecutor,
    TemplateError,
    check_template,
    expand,
)
from dorch.model import Result, State
from tests.support.procs import agent, pid_alive, stand_in, wait_for_file

VALUES = {"model": "m1", "thinking": "high", "workspace": "/w", "prompt_file": "/w/p"}
NONE = {"model": "", "thinking": "", "workspace": "/w", "prompt_file": "/w/p"}


def request(tmp_path: Path, prompt: str = "do it", model: str | None = None,
            thinking: str | None = None, timeout: float = 60.0) -> ExecRequest:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    return ExecRequest(prompt=prompt, model=model, thinking=thinking, workspace=ws,
                       timeout=timeout, state_dir=tmp_path / "state")


def executor(command: dict[str, Any], executor_section: dict[str, Any] | None = None,
             worker: dict[str, Any] | None = None) -> CommandExecutor:
    raw: dict[str, Any] = {"executor": {"kind": "command", **(executor_section or {}),
                                        "command": command}}
    if worker:
        raw["worker"] = worker
    return CommandExecutor.from_config(build(raw))


def execute(ex: Executor, req: ExecRequest, cancel: asyncio.Event | None = None) -> Result:
    return asyncio.run(ex.run(req, cancel or asyncio.Event()))


# -- the template rule -------------------------------------------------------------------------

def test_filled_placeholders() -> None:
    template = ("agent", "--model", "{model}", "--effort={thinking}", "-C", "{workspace}")
    assert expand(template, VALUES) == ["agent", "--model", "m1", "--effort=high", "-C", "/w"]


def test_empty_placeholder_drops_its_option() -> None:
    template = ("agent", "--model", "{model}", "--effort={thinking}", "--quiet", "{workspace}")
    assert expand(template, NONE) == ["agent", "--quiet", "/w"]


def test_empty_positional_after_a_value_keeps_the_value() -> None:
    # "exec" is not an option: only the empty item itself goes
    assert expand(("agent", "exec", "{model}", "-"), NONE) == ["agent", "exec", "-"]


def test_group_is_dropped_whole() -> None:
    template = ("llm", ("-o", "reasoning_effort", "{thinking}"), "-n")
    assert expand(template, VALUES) == ["llm", "-o", "reasoning_effort", "high", "-n"]
    assert expand(template, NONE) == ["llm", "-n"]


def test_literal_braces() -> None:
    assert expand(check_template(["agent", "{{json}}"], "t"), VALUES) == ["agent", "{json}"]


@pytest.mark.parametrize("template, message", [
    (["agent", "{prompt}"], "unknown placeholder {prompt}"),
    (["agent", "{model!r}"], "unknown placeholder"),
    (["agent", "{model"], "braces"),
    (["{model}", "x"], "first item must be the program"),
    ([], "first item must be the program"),
    (["agent", 3], "string or a list of strings"),
    (["agent", []], "string or a list of strings"),
])
def test_bad_templates_are_explained(template: list[Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        check_template(template, "here")


# -- presets, through a stand-in program that records its argv --------------------------------

PRESET_ARGV = {
    "claude": (
        ["-p", "--output-format", "text", "--model", "anthropic/claude-x", "--effort", "high"],
        ["-p", "--output-format", "text"],
    ),
    "codex": (
        ["exec", "--skip-git-repo-check", "--ephemeral", "-m", "anthropic/claude-x",
         "-c", "model_reasoning_effort=high", "-C", "{ws}", "-"],
        ["exec", "--skip-git-repo-check", "--ephemeral", "-C", "{ws}", "-"],
    ),
    "llm": (
        ["-m", "anthropic/claude-x", "-n", "--no-stream", "-o", "reasoning_effort", "high"],
        ["-n", "--no-stream"],
    ),
}


@pytest.mark.parametrize("preset", sorted(PRESET_ARGV))
def test_preset_argv(preset: str, tmp_path: Path) -> None:
    record = tmp_path / "argv.json"
    ex = executor({"preset": preset, "path": str(stand_in(tmp_path, record, preset))})
    full, bare = PRESET_ARGV[preset]
    req = request(tmp_path, "write a poem", model="anthropic/claude-x", thinking="high")
    result = execute(ex, req)
    assert result.state is State.SUCCEEDED, result.error
    assert result.output == "answer: write a poem"
    seen = json.loads(record.read_text())
    assert seen["argv"] == [a.replace("{ws}", str(req.workspace)) for a in full]
    assert Path(seen["cwd"]) == req.workspace

    result = execute(ex, request(tmp_path, "again"))
    assert result.state is State.SUCCEEDED
    assert json.loads(record.read_text())["argv"] == [
        a.replace("{ws}", str(req.workspace)) for a in bare]


@pytest.mark.parametrize("preset, level, expected", [
    ("claude", "off", ["--effort", "low"]),
    ("claude", "ultra", ["--effort", "max"]),
    ("claude", "adaptive", []),
    ("codex", "off", ["-c", "model_reasoning_effort=minimal"]),
    ("codex", "max", ["-c", "model_reasoning_effort=xhigh"]),
    ("llm", "off", []),
    ("llm", "xhigh", ["-o", "reasoning_effort", "high"]),
])
def test_preset_thinking_mapping(preset: str, level: str, expected: list[str]) -> None:
    ex = CommandExecutor(PRESETS[preset].argv, thinking_map=PRESETS[preset].thinking)
    argv = ex.argv(ExecRequest("p", None, level, Path("/w"), 0, Path("/s")))
    if expected:
        start = argv.index(expected[0])
        assert argv[start:start + len(expected)] == expected
    else:
        assert not any("effort" in a for a in argv), argv


def test_thinking_map_from_config_overrides_the_preset(tmp_path: Path) -> None:
    record = tmp_path / "argv.json"
    ex = executor({"preset": "claude", "path": str(stand_in(tmp_path, record)),
                   "thinking_map": {"high": "max", "low": ""}, "extra_args": ["--verbose"]})
    execute(ex, request(tmp_path, thinking="high"))
    assert json.loads(record.read_text())["argv"][-3:] == ["--effort", "max", "--verbose"]
    execute(ex, request(tmp_path, thinking="low"))
    assert "--effort" not in json.loads(record.read_text())["argv"]


def test_custom_argv_with_default_model_and_prompt_file(tmp_path: Path) -> None:
    record = tmp_path / "argv.json"
    exe = stand_in(tmp_path, record)
    ex = executor({"argv": [str(exe), "--model", "{model}", "--think", "{thinking}",
                            "--prompt-file", "{prompt_file}"], "default_model": "fallback/m"})
    req = request(tmp_path, "from a file", thinking="medium")
    assert execute(ex, req).state is State.SUCCEEDED
    argv = json.loads(record.read_text())["argv"]
    assert argv[:4] == ["--model", "fallback/m", "--think", "medium"]
    assert Path(argv[5]).read_text() == "from a file"


# -- outcomes ----------------------------------------------------------------------------------

def test_nonzero_exit_is_failed_with_stderr_tail(tmp_path: Path) -> None:
    ex = executor({"argv": agent("fail", "7", "model quota exceeded")})
    result = execute(ex, request(tmp_path))
    assert result.state is State.FAILED
    assert "exited with code 7" in result.error
    assert result.error.rstrip().endswith("model quota exceeded")
    assert result.output == "partial output\n"


def test_timeout_is_timed_out(tmp_path: Path) -> None:
    ex = executor({"argv": agent("sleep")}, worker={"stop_grace": 1.0})
    result = execute(ex, request(tmp_path, timeout=0.5))
    assert result.state is State.TIMED_OUT
    assert "timed out after 0.5 s" in result.error


def test_cancel_is_cancelled_and_kills_the_agent(tmp_path: Path) -> None:
    ex = executor({"argv": agent("sleep")})
    req = request(tmp_path)
    ready = tmp_path / "ready"
    req = ExecRequest(req.prompt, None, None, req.workspace, 60, req.state_dir,
                      extra_env={"FAKE_AGENT_READY": str(ready)})

    async def scenario() -> tuple[Result, int]:
        cancel = asyncio.Event()
        task = asyncio.create_task(ex.run(req, cancel))
        pid = int(await wait_for_file(ready))
        cancel.set()
        return await task, pid

    result, pid = asyncio.run(scenario())
    assert result.state is State.CANCELLED
    assert not pid_alive(pid)


def test_missing_program_at_run_time_is_failed(tmp_path: Path) -> None:
    exe = stand_in(tmp_path, tmp_path / "r.json")
    ex = executor({"argv": [str(exe)]})
    exe.unlink()
    result = execute(ex, request(tmp_path))
    assert result.state is State.FAILED and "no such file" in result.error


def test_agent_sees_pass_env_but_never_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DORCH_SECRET_DISCORD_TOKEN", "do-not-leak-1")
    monkeypatch.setenv("DISCORD_TOKEN", "do-not-leak-2")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-for-agent")
    ex = executor({"argv": agent("env")}, {"pass_env": ["ANTHROPIC_API_KEY"]})
    result = execute(ex, request(tmp_path))
    env = json.loads(result.output)
    assert env["ANTHROPIC_API_KEY"] == "sk-for-agent"
    assert "DISCORD_TOKEN" not in env and "DORCH_SECRET_DISCORD_TOKEN" not in env
    assert "do-not-leak" not in result.output


# -- configuration errors (exit 78) ------------------------------------------------------------

@pytest.mark.parametrize("command, section, message", [
    ({"preset": "claude", "argv": ["x"]}, {}, "either preset or argv"),
    ({}, {}, "set preset ="),
    ({"argv": ["sh", "{prompt}"]}, {}, "unknown placeholder"),
    ({"argv": ["dorch-no-such-agent-cli"]}, {}, "not found or not executable on PATH"),
    ({"preset": "codex", "path": "/nonexistent/codex"}, {}, "set \\[executor.command\\] path"),
    ({"argv": ["sh"], "thinking_map": {"hot": "x"}}, {}, "unknown level 'hot'"),
    ({"argv": ["sh"], "thinking_map": {"high": 3}}, {}, "thinking_map.high"),
    ({"argv": ["sh"]}, {"pass_env": ["GITHUB_TOKEN"]}, "refusing to pass GITHUB_TOKEN"),
])
def test_config_errors(command: dict[str, Any], section: dict[str, Any], message: str) -> None:
    with pytest.raises(ExecutorConfigError, match=message) as info:
        executor(command, section)
    assert info.value.exit_code == 78


def test_make_executor_builds_it(tmp_path: Path) -> None:
    from dorch.executors import make_executor

    config = build({"executor": {"kind": "command", "command": {"argv": agent("echo")}}})
    ex = make_executor(config)
    assert ex.name == "command"
    assert execute(ex, request(tmp_path, "round trip")).output == "round trip"
