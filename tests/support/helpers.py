"""Test helpers: an isolated dorch home (config, data dir, queue), the installed `dorch` command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DORCH = str(Path(sys.executable).with_name("dorch"))
SUPPORT = Path(__file__).parent


def unavailable(reason: str) -> None:
    """A tool or right the test needs is missing: skip for REASON, except in CI, where every
    test must run (then it fails)."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def needs_bwrap() -> None:
    """The test needs a working bubblewrap (the agent's sandbox)."""
    from dorch.runtime.sandbox import bwrap_works

    problem = bwrap_works()
    if problem:
        unavailable(f"{problem}: CI must install bubblewrap")


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               interval: float = 0.05) -> Any:
    """Poll PREDICATE until it returns something truthy; fail the test after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class DorchHome:
    """A throw-away dorch installation: its own config file, data dir and local queue."""

    root: Path
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def queue(self) -> Path:
        return self.root / "queue.sqlite3"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()  # a test run by systemd is no service
               if not k.startswith(("DORCH_", "NOTIFY_", "WATCHDOG_", "INVOCATION_ID"))}
        env.update(DORCH_CONFIG=str(self.config_path), DORCH_DATA_DIR=str(self.root / "data"),
                   DORCH_CONFIG_DIR=str(self.root / "userconf"))
        env.update(extra)
        return env

    def configure(self, **sections: dict[str, Any]) -> Path:
        """Write the config: a local bus in ROOT plus the given sections (merged over defaults)."""
        base: dict[str, dict[str, Any]] = {
            "bus": {"kind": "local"},
            "local": {"path": str(self.queue)},
            # the stand-in agents write logs outside their workspace: no sandbox unless a test
            # asks for one (tests/runtime/test_sandbox.py, tests/executors/openclaw/test_openclaw_sandbox.py)
            "executor": {"kind": "echo", "isolation": "none"},
            "worker": {"poll_interval": 0.1, "max_idle_time": 60, "heartbeat_seconds": 0.3,
                       "lease_seconds": 3, "stop_grace": 2, "log_level": "info",
                       "workspace_root": str(self.root / "workspaces")},
        }
        for name, values in sections.items():
            name = name.replace("__", ".")
            base.setdefault(name, {}).update(values)
        self.settings = base
        self.config_path.write_text(_toml(base))
        return self.config_path

    def dorch(self, *args: str, input: str | None = None, timeout: float = 60,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the installed `dorch` entry point."""
        return subprocess.run([DORCH, *args], input=input, capture_output=True, text=True,
                              timeout=timeout, env=env or self.env(), check=False)

    def spawn_worker(self, instance: str, **extra_env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([DORCH, "worker", "--instance", instance], env=self.env(**extra_env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def bus(self) -> Any:
        from dorch.bus.local import LocalBus

        return LocalBus(self.queue)

    def call(self, method: str, *args: Any) -> Any:
        """Call one LocalBus method from a test (sync wrapper)."""
        async def go() -> Any:
            bus = self.bus()
            try:
                return await getattr(bus, method)(*args)
            finally:
                await bus.close()

        return asyncio.run(go())


def _toml(data: dict[str, dict[str, Any]]) -> str:
    import json

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))

    out = []
    for section, keys in data.items():
        out.append(f"[{section}]")
        out.extend(f"{k} = {value(v)}" for k, v in keys.items())
        out.append("")
    return "\n".join(out)


def agent_command(script: str, *args: str) -> list[str]:
    """An argv for the `command` executor running a stand-in agent from tests/support."""
    return [sys.executable, str(SUPPORT / script), *args]
