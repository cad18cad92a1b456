"""The ``command`` executor: any agent CLI through an argument-vector template, never a shell.

The prompt goes to the agent on stdin (never in argv: no length limit, not visible in ``ps``);
its stdout is the answer. Exit code 0 -> succeeded; anything else -> failed, with the end of its
stderr as the error; the task timeout -> timed_out; cancel -> cancelled.

Template rule. ``argv`` is a list whose items are strings or lists of strings (groups). The
placeholders ``{model}``, ``{thinking}``, ``{workspace}`` and ``{prompt_file}`` are filled in;
``{{`` and ``}}`` are literal braces. When a placeholder's value is empty (no model given and no
``default_model``; no thinking level, or one mapped to ``""``):

- a string item containing it is dropped, and so is the item just before it if that one is a
  bare option (a literal starting with ``-``): ``"--model", "{model}"`` both go, and so does
  ``"--effort={thinking}"`` alone;
- a group containing it is dropped whole: ``["-o", "reasoning_effort", "{thinking}"]``.

``{thinking}`` is the task's dorch level passed through ``thinking_map`` (the preset's map, with
``[executor.command] thinking_map`` entries on top); a level missing from the map passes as is.

Presets (``preset = "claude" | "codex" | "llm"``) are templates plus a thinking map, see PRESETS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dorch.errors import ConfigError
from dorch.executors import ExecRequest, ExecutorConfigError
from dorch.model import THINKING_LEVELS, Result, State
from dorch.runtime.process import EnvError, run_child, scrubbed_env
from dorch.runtime.workspace import capture_dir

if TYPE_CHECKING:
    from dorch.config import Config

Item = str | tuple[str, ...]
PLACEHOLDERS = ("model", "thinking", "workspace", "prompt_file")
PROMPT_FILE = "prompt.txt"


@dataclass(frozen=True)
class Preset:
    argv: tuple[Item, ...]
    thinking: Mapping[str, str] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # Claude Code: `claude -p` reads the prompt from stdin; --effort low|medium|high|xhigh|max.
    # No "off": off/minimal -> low; ultra -> max; adaptive -> no flag (the CLI's own default).
    "claude": Preset(
        ("claude", "-p", "--output-format", "text", "--model", "{model}", "--effort", "{thinking}"),
        {"off": "low", "minimal": "low", "low": "low", "medium": "medium", "high": "high",
         "xhigh": "xhigh", "max": "max", "ultra": "max", "adaptive": ""},
    ),
    # Codex: `codex exec ... -` reads the prompt from stdin; the final message is on stdout.
    # model_reasoning_effort minimal|low|medium|high|xhigh: off -> minimal; max/ultra -> xhigh;
    # adaptive -> no setting (the model's default).
    "codex": Preset(
        ("codex", "exec", "--skip-git-repo-check", "--ephemeral", "-m", "{model}",
         "-c", "model_reasoning_effort={thinking}", "-C", "{workspace}", "-"),
        {"off": "minimal", "minimal": "minimal", "low": "low", "medium": "medium",
         "high": "high", "xhigh": "xhigh", "max": "xhigh", "ultra": "xhigh", "adaptive": ""},
    ),
    # llm: reads the prompt from stdin; -n: do not log to its database. `-o reasoning_effort`
    # is a per-model option that non-reasoning models reject, so off/adaptive send nothing;
    # low|medium|high pass, minimal passes, xhigh/max/ultra -> high.
    "llm": Preset(
        ("llm", "-m", "{model}", "-n", "--no-stream", ("-o", "reasoning_effort", "{thinking}")),
        {"off": "", "minimal": "minimal", "low": "low", "medium": "medium", "high": "high",
         "xhigh": "high", "max": "high", "ultra": "high", "adaptive": ""},
    ),
}


class TemplateError(ConfigError, ValueError):
    """An argument template that cannot work (unknown placeholder, bad item)."""


def expand(template: Sequence[Item], values: Mapping[str, str]) -> list[str]:
    """The argument vector for ``values`` by the template rule (see the module docstring)."""
    out: list[str] = []
    prev_bare_option = False
    for item in template:
        if isinstance(item, str):
            text, complete, has_field = _fill(item, values)
            if complete:
                out.append(text)
            elif prev_bare_option:
                out.pop()
            prev_bare_option = complete and not has_field and item.startswith("-")
        else:
            filled = [_fill(part, values) for part in item]
            if all(complete for _, complete, _ in filled):
                out.extend(text for text, _, _ in filled)
            prev_bare_option = False
    return out


def check_template(template: Sequence[Any], where: str) -> tuple[Item, ...]:
    """Validate a template from the config; raises TemplateError naming the problem."""
    items: list[Item] = []
    for item in template:
        parts = [item] if isinstance(item, str) else item
        if not isinstance(parts, list | tuple) or not parts or not all(
            isinstance(p, str) for p in parts
        ):
            raise TemplateError(
                f"{where}: {item!r}: each item must be a string or a list of strings (a group "
                "dropped whole when one of its placeholders is empty)"
            )
        for part in parts:
            _fields(part, where)
        items.append(item if isinstance(item, str) else tuple(item))
    if not items or not isinstance(items[0], str) or "{" in items[0]:
        raise TemplateError(f"{where}: the first item must be the program to run, e.g. \"claude\"")
    return tuple(items)


def _fields(text: str, where: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{where}: {text!r}: {exc} (write {{{{ and }}}} for braces)") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise TemplateError(
                f"{where}: {text!r}: unknown placeholder {{{name}}}; valid: "
                + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            )
        names.append(name)
    return names


def _fill(text: str, values: Mapping[str, str]) -> tuple[str, bool, bool]:
    """(filled text, every placeholder non-empty, has any placeholder)."""
    out: list[str] = []
    complete, has_field = True, False
    for literal, name, _, _ in string.Formatter().parse(text):
        out.append(literal)
        if name is not None:
            has_field = True
            value = values.get(name, "")
            complete = complete and value != ""
            out.append(value)
    return "".join(out), complete, has_field


class CommandExecutor:
    """Runs ``template`` with the prompt on stdin; see the module docstring for the rules."""

    name = "command"

    def __init__(
        self,
        template: Sequence[Item],
        *,
        thinking_map: Mapping[str, str] | None = None,
        default_model: str = "",
        pass_env: Sequence[str] = (),
        grace: float = 5.0,
    ) -> None:
        self.template = tuple(template)
        self.thinking_map = dict(thinking_map or {})
        self.default_model = default_model
        self.pass_env = tuple(pass_env)
        self.grace = grace
        self.uses_prompt_file = any(
            "{prompt_file}" in part
            for item in self.template for part in ([item] if isinstance(item, str) else item)
        )

    @classmethod
    def from_config(cls, config: Config) -> CommandExecutor:
        """Build from ``[executor.command]``; raises ExecutorConfigError (exit 78) with the fix."""
        where = f"{config.file or '<defaults>'}: [executor.command]"
        settings = config.values["executor.command"]
        preset_name, argv = settings["preset"], settings["argv"]
        if preset_name and argv:
            raise ExecutorConfigError(f"{where}: set either preset or argv, not both "
                                      "(use extra_args to add arguments to a preset)")
        if not preset_name and not argv:
            raise ExecutorConfigError(
                f"{where}: set preset = \"claude\" | \"codex\" | \"llm\", or argv = [...] "
                "(e.g. argv = [\"my-agent\", \"--model\", \"{model}\"]; the prompt goes on stdin)"
            )
        preset = PRESETS[preset_name] if preset_name else Preset(())
        try:
            template = check_template(
                [*(preset.argv or argv), *settings["extra_args"]],
                f"{where} {'preset ' + preset_name if preset_name else 'argv'}",
            )
        except TemplateError as exc:
            raise ExecutorConfigError(str(exc)) from None
        if settings["path"]:
            template = (settings["path"], *template[1:])
        thinking_map = {**preset.thinking, **_check_thinking_map(settings["thinking_map"], where)}
        pass_env = config.values["executor"]["pass_env"]
        if not all(isinstance(n, str) for n in pass_env):
            raise ExecutorConfigError(f"{where}: pass_env: expected a list of variable names")
        try:
            scrubbed_env(pass_env=pass_env)
        except EnvError as exc:
            raise ExecutorConfigError(f"{config.file or '<defaults>'}: [executor] {exc}") from None
        program = str(template[0])
        if shutil.which(program) is None:
            raise ExecutorConfigError(
                f"{where}: {program!r} not found or not executable"
                + ("" if os.sep in program else " on PATH")
                + "; install it, or set [executor.command] path to its full path"
            )
        return cls(template, thinking_map=thinking_map, default_model=settings["default_model"],
                   pass_env=pass_env, grace=float(config.worker["stop_grace"]))

    def argv(self, request: ExecRequest, prompt_file: Path | None = None) -> list[str]:
        """The argument vector for one request."""
        thinking = request.thinking or ""
        values = {
            "model": request.model or self.default_model,
            "thinking": self.thinking_map.get(thinking, thinking),
            "workspace": str(request.workspace),
            "prompt_file": str(prompt_file) if prompt_file else "",
        }
        return expand(self.template, values)

    async def run(self, request: ExecRequest, cancel: asyncio.Event) -> Result:
        captures = capture_dir(request.workspace)
        captures.mkdir(parents=True, exist_ok=True)
        prompt = request.prompt.encode("utf-8")
        prompt_file = None
        if self.uses_prompt_file:
            prompt_file = captures / PROMPT_FILE
            prompt_file.write_bytes(prompt)
        try:
            env = scrubbed_env(extra=request.extra_env, pass_env=self.pass_env,
                               secrets=request.secrets)
        except EnvError as exc:
            return Result(State.FAILED, error=str(exc))
        argv = self.argv(request, prompt_file)
        child = await run_child(
            argv, stdin=prompt, cwd=request.workspace, env=env, timeout=request.timeout,
            cancel=cancel, grace=self.grace, capture_dir=captures, sandbox=request.sandbox,
            ro_paths=[str(prompt_file)] if prompt_file else [],
        )
        result = Result(State.SUCCEEDED, output=child.stdout, stderr_tail=child.stderr_tail,
                        duration=child.duration)
        program = Path(argv[0]).name
        if child.error:
            result.state, result.error = State.FAILED, child.error
        elif child.cancelled:
            result.state, result.error = State.CANCELLED, "cancelled"
        elif child.timed_out:
            result.state = State.TIMED_OUT
            result.error = f"{program} timed out after {request.timeout:g} s"
        elif child.returncode != 0:
            result.state = State.FAILED
            result.error = _failure(program, child.returncode, child.stderr_tail)
        return result


def _failure(program: str, code: int | None, stderr_tail: str) -> str:
    if code is not None and code < 0:
        try:
            what = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            what = f"was killed by signal {-code}"
    else:
        what = f"exited with code {code}"
    tail = stderr_tail.strip()
    return f"{program} {what}" + (f":\n{tail}" if tail else " (nothing on stderr)")


def _check_thinking_map(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    for level, value in raw.items():
        if level not in THINKING_LEVELS:
            raise ExecutorConfigError(
                f"{where}: thinking_map: unknown level {level!r}; levels: "
                + ", ".join(THINKING_LEVELS)
            )
        if not isinstance(value, str):
            raise ExecutorConfigError(
                f"{where}: thinking_map.{level}: expected the CLI's value as a string "
                f"(\"\" to drop the option), got {value!r}"
            )
    return dict(raw)
