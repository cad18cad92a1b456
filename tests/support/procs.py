"""Helpers for tests that run real child processes (fake agents from tests/support)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

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
