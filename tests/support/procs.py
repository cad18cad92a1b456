"""Helpers for tests that run real child processes (fake agents from tests/support)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FAKE_AGENT = Path(__file__).with_name("fake_agent.py")


def agent(*args: str) -> list[str]:
    """The argument vector running the fake agent in MODE with ARGS."""
    return [sys.executable, str(FAKE_AGENT), *args]


def pid_alive(pid: int) -> bool:
    """A process exists and is not a zombie (Linux /proc; falls back to kill(pid, 0))."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self").is_dir():
        try:
            data = stat.read_bytes()
        except OSError:
            return False
        return data[data.rfind(b")") + 2:][:1] not in (b"Z", b"X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_file(path: Path, timeout: float = 30.0) -> str:
    """Wait until PATH exists (written atomically by the fake agent); its text."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        await asyncio.sleep(0.01)
    return path.read_text()


def stand_in(directory: Path, record: Path, name: str = "agent") -> Path:
    """An executable named NAME that records its argv and cwd in RECORD and echoes the prompt."""
    exe = directory / name
    exe.write_text(
        f"#!{sys.executable}\n"
        "import runpy, sys\n"
        f"sys.argv = [{str(FAKE_AGENT)!r}, 'argv', {str(record)!r}] + sys.argv[1:]\n"
        f"runpy.run_path({str(FAKE_AGENT)!r}, run_name='__main__')\n"
    )
    exe.chmod(0o755)
    return exe


LOCAL_BUS_PROC = Path(__file__).with_name("local_bus_proc.py")


def together(queue: Path, jobs: list[list[str]], **popen: Any) -> list[Any]:
    """Run one process per job (NAME MODE ARGS...), released at once; their JSON outputs."""
    return release_together([
        subprocess.Popen([sys.executable, str(LOCAL_BUS_PROC), str(queue), *job], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
        for job in jobs
    ])


def release_together(procs: list[subprocess.Popen[str]], timeout: float = 180) -> list[Any]:
    """Wait until every child printed ``ready``, release them at once (a line on stdin), and
    collect the JSON line each prints last. A child still running at the end is killed."""
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line == "ready\n", f"process did not start: {line!r} {p.communicate()[1]}"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err or out
            outputs.append(json.loads(out.strip().splitlines()[-1]))
        return outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
