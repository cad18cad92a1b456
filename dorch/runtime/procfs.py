"""Is this process (or process group) still running? One answer for the worker's agent groups,
the sandbox's leftovers and `dorch stop`'s supervisor, read from /proc.

A zombie (exited, not yet reaped by its parent) counts as gone: ``kill(pid, 0)`` alone would
say it runs, and an orphan whose reaper is slow, or a container whose PID 1 never reaps, would
then wait out every timeout. Without /proc (or with it hidden) ``kill(pid, 0)`` decides.
``reaper.py`` walks /proc itself: it runs as ``python -I -S`` and imports nothing of dorch.
"""

from __future__ import annotations

import os


def stat(pid: int) -> tuple[bytes, list[bytes]]:
    """PID's command name and the fields of /proc/PID/stat after it (state, ppid, pgrp, ...);
    empty when it is gone. The name may hold spaces and parentheses: it ends at the last ")"."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return b"", []
    close = data.rfind(b")")
    return data[data.find(b"(") + 1:close], data[close + 2:].split()


def alive(pid: int) -> bool:
    """True while PID runs (a zombie counts as gone)."""
    fields = stat(pid)[1]
    if fields:
        return fields[0] not in (b"Z", b"X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """True while a process of group PGID runs (zombies count as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat(int(entry.name))[1]
            if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
    return False
