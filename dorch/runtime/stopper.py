"""``dorch stop``: stop this machine's workers, whichever way they were started.

Under systemd with the units installed: ``systemctl stop dorch-workers.target`` (every instance is
``PartOf`` it). Otherwise the ``dorch up`` supervisor found through its pidfile gets SIGTERM and we
wait until it has handed back its tasks and exited.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from dorch import paths
from dorch.errors import DorchError, ExitCode
from dorch.runtime import procfs
from dorch.runtime.supervisor import pidfile_path

TARGET = "dorch-workers.target"


class NothingToStop(DorchError, RuntimeError):
    """No systemd target and no running ``dorch up`` were found."""

    exit_code = ExitCode.FAILED


def _systemd_has_target() -> bool:
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return False
    probe = subprocess.run(["systemctl", "cat", TARGET], capture_output=True, check=False)
    return probe.returncode == 0


def stop_local_workers(timeout: float) -> str:
    """Stop the workers; returns what was done. Raises NothingToStop or TimeoutError."""
    if _systemd_has_target():
        subprocess.run(["systemctl", "stop", TARGET], check=True)
        return f"stopped {TARGET}"
    pidfile = pidfile_path(paths.private_dir())
    try:
        pid = int(pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        raise NothingToStop(
            f"no workers to stop: no {TARGET} under systemd and no `dorch up` pidfile at {pidfile}"
        ) from None
    if not procfs.alive(pid):
        pidfile.unlink(missing_ok=True)
        raise NothingToStop(f"`dorch up` (pid {pid}) is not running; removed its stale pidfile")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while procfs.alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"`dorch up` (pid {pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.1)
    return f"stopped `dorch up` (pid {pid}); running tasks were handed back"
