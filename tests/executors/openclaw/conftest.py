"""Fixtures for the tests that run the real OpenClaw CLI through real dorch workers, offline.

The CLI comes from ``$DORCH_TEST_OPENCLAW`` (and Node from ``$DORCH_TEST_NODE``), as written by
``.ci/install-openclaw`` into its env file, or from PATH. Without it the tests are skipped
locally and fail under CI (``$CI`` set): CI must never pass without running them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_model import FakeModel, write_openclaw_config
from tests.support.helpers import DORCH, DorchHome

pytestmark = pytest.mark.openclaw

HOW = ("run `.ci/install-openclaw` (installs Node 24 and OpenClaw from npm into "
       "~/.cache/dorch-tools), then `source ~/.cache/dorch-tools/openclaw.env`")
RUN_WAIT = 240.0   # one `agent exec` takes 6-9 s on an idle machine, far more on a loaded one
PRICES = {"fake/fake-model": (2.0, 10.0)}   # $ per million tokens in, out


@dataclass(frozen=True)
class Tools:
    openclaw: str
    node: str


@pytest.fixture(scope="session")
def tools() -> Tools:
    """The real OpenClaw CLI and a Node it accepts, or skip (fail under CI) saying how to get them."""
    from dorch.executors import ExecutorConfigError
    from dorch.executors.openclaw import _find_node

    openclaw = os.environ.get("DORCH_TEST_OPENCLAW") or shutil.which("openclaw") or ""
    problem = ""
    if not openclaw or not os.access(openclaw, os.X_OK):
        problem = f"the OpenClaw CLI is not installed ({openclaw or 'not on PATH'}); {HOW}"
    else:
        try:
            _find_node(os.environ.get("DORCH_TEST_NODE", ""), openclaw, "test setup")
        except ExecutorConfigError as exc:
            problem = f"{exc}; {HOW}"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return Tools(openclaw, os.environ.get("DORCH_TEST_NODE", ""))


@pytest.fixture
def fake() -> Iterator[FakeModel]:
    with FakeModel().running_in_thread() as server:
        yield server


@dataclass
class Fleet:
    """A dorch home whose workers run OpenClaw against the fake model; cleans up after itself."""

    home: DorchHome
    fake: FakeModel
    tools: Tools
    openclaw_config: Path
    compile_cache: Path   # Node's, shared by the session's workers: starts cost seconds less
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def configure(self, **worker: Any) -> None:
        """Write the config: a local bus, the openclaw executor, [prices]; ``worker`` overrides."""
        self.home.configure(
            executor__openclaw={"path": self.tools.openclaw, "node": self.tools.node,
                                "config": str(self.openclaw_config)},
            executor={"kind": "openclaw", "pass_env": ["NODE_COMPILE_CACHE"]},
            worker={"task_timeout": 300, "max_idle_time": 120, "stop_grace": 3, **worker},
        )
        with open(self.home.config_path, "a") as f:
            f.write("[prices]\n" + "".join(
                f'"{model}" = {{ input = {i}, output = {o} }}\n' for model, (i, o) in PRICES.items()))

    def submit(self, text: str) -> str:
        done = self.home.dorch("submit", text)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def start_worker(self, instance: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.home.root / f"worker-{instance}.log", "wb")  # noqa: SIM115 (closed below)
        env = {"NODE_COMPILE_CACHE": str(self.compile_cache), "DORCH_WORKER_ID": f"w{instance}",
               **env}
        worker = subprocess.Popen([DORCH, "worker", "--instance", instance], env=self.home.env(**env),
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self.workers.append(worker)
        return worker

    def state_dir(self, instance: str) -> Path:
        return self.home.root / "data" / "workers" / f"w{instance}"

    def finish(self, worker: subprocess.Popen[bytes], timeout: float = RUN_WAIT) -> int:
        """Wait for a worker to exit (it handles one task); its exit code."""
        try:
            return worker.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not finish within {timeout:.0f} s; log:\n{self.log(worker)}")

    def log(self, worker: subprocess.Popen[bytes]) -> str:
        instance = worker.args[-1]  # type: ignore[index]
        return (self.home.root / f"worker-{instance}.log").read_text(errors="replace")

    def result(self, task_id: str) -> dict[str, Any]:
        done = self.home.dorch("result", task_id, "--json")
        view: dict[str, Any] = json.loads(done.stdout)
        return view

    def workspace(self, task_id: str) -> Path:
        matches = list((self.home.root / "workspaces").glob(f"{task_id}-a1*"))
        assert len(matches) == 1, matches
        return matches[0]

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("node-compile-cache")


@pytest.fixture
def fleet(tmp_path: Path, tools: Tools, fake: FakeModel, compile_cache: Path) -> Iterator[Fleet]:
    fleet = Fleet(DorchHome(tmp_path), fake, tools,
                  write_openclaw_config(tmp_path / "openclaw.json", fake.base_url), compile_cache)
    fleet.configure()
    try:
        yield fleet
    finally:
        fleet.close()


# -- processes, from /proc -----------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for p in _all_pids():
        st = _stat(p)
        if st is not None and st[0] not in ("Z", "X"):
            children.setdefault(st[1], []).append(p)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    return [p for p in _all_pids() if (st := _stat(p)) and st[2] == pgid and st[0] not in ("Z", "X")]


def pgid_of(pid: int) -> int:
    st = _stat(pid)
    assert st is not None, f"process {pid} is gone"
    return st[2]


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """Wait until none of ``pids`` is alive; the ones still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
