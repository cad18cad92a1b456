"""procfs: the one "is it still running?" answer (worker, sandbox, `dorch stop`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from dorch.runtime import procfs


def test_a_zombie_is_gone_and_a_name_with_parentheses_is_read_right(tmp_path: Path) -> None:
    odd = tmp_path / "x) Z (y"  # a command name that fools a parser splitting at the first ")"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", odd)
    child = subprocess.Popen([str(odd), "60"], process_group=0)
    try:
        assert procfs.stat(child.pid)[0] == b"x) Z (y"[:15]
        assert procfs.alive(child.pid) and procfs.group_alive(child.pid)
        child.send_signal(signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie
        assert procfs.stat(child.pid)[1][0] == b"Z"
        assert not procfs.alive(child.pid) and not procfs.group_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not procfs.alive(child.pid) and procfs.stat(child.pid) == (b"", [])
