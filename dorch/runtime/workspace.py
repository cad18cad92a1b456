"""Per-task workspace directories: the agent's working directory, kept afterwards for inspection.

Layout of one workspace, ``<root>/<task id>-a<attempt>/``::

    RESULT.md        written when the attempt ends: prompt, outcome, output, error
    .dorch/          dorch's own files: the lock, the agent's stdout and stderr
    ...              whatever the agent created (its cwd is the workspace)

A workspace in use is locked (``flock`` on ``.dorch/lock``, held until ``write_result`` or the
worker's exit, which the kernel releases even after ``kill -9``), so ``prune`` never deletes a
running task's files when several workers share one root. ``prune`` only deletes directories
carrying the ``.dorch`` marker, so a mistaken ``workspace_root`` (say, ``$HOME``) loses nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dorch.model import Result, Task

log = logging.getLogger(__name__)

RESULT_FILE = "RESULT.md"
DORCH_DIR = ".dorch"
_LOCK = "lock"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

_held: dict[Path, int] = {}   # workspace -> fd holding its lock, in this process


def capture_dir(workspace: Path) -> Path:
    """Where an executor keeps the agent's stdout/stderr (and a prompt file) for this workspace."""
    return workspace / DORCH_DIR


def new_workspace(root: Path, task_id: str, attempt: int) -> Path:
    """Create a fresh, locked directory for one attempt of a task (never reuses an old one)."""
    root.mkdir(parents=True, exist_ok=True)
    base = (_UNSAFE.sub("_", task_id).strip("._") or "task")[:80] + f"-a{attempt}"
    # Build it locked under a private name, then rename it into place: ``prune`` in another
    # worker never sees an unlocked new workspace.
    staging = Path(tempfile.mkdtemp(prefix=".new-", dir=root))
    (staging / DORCH_DIR).mkdir(mode=0o700)
    fd = os.open(staging / DORCH_DIR / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    for n in range(1, 1000):
        path = root / (base if n == 1 else f"{base}-{n}")
        if path.exists():
            continue   # the same attempt again (handed back and reclaimed): keep the old one too
        try:
            os.rename(staging, path)   # fails if another worker took the name meanwhile
        except OSError:
            continue
        _held[path] = fd
        return path
    os.close(fd)
    shutil.rmtree(staging, ignore_errors=True)
    raise RuntimeError(f"{root}: 1000 workspaces named {base}*; prune the directory")


def write_result(workspace: Path, result: Result, task: Task) -> Path:
    """Write RESULT.md (a human-readable record of the attempt) and release the workspace."""
    spec = task.spec
    lines = [
        f"# Task {task.id} (attempt {task.attempt}): {result.state.value}",
        "",
        f"- model: {spec.model or '(default)'}",
        f"- thinking: {spec.thinking or '(default)'}",
        f"- submitter: {task.submitter or '(unknown)'}",
        f"- duration: {result.duration:.2f} s",
        "",
        "## Prompt",
        "",
        _fenced(spec.prompt),
        "",
        "## Output",
        "",
        _fenced(result.output) if result.output else "(none)",
        "",
    ]
    if result.error:
        lines += ["## Error", "", _fenced(result.error), ""]
    if result.stderr_tail and result.stderr_tail.strip() != result.error.strip():
        lines += ["## Agent stderr (last lines)", "", _fenced(result.stderr_tail), ""]
    path = workspace / RESULT_FILE
    tmp = workspace / DORCH_DIR / (RESULT_FILE + ".tmp")
    tmp.parent.mkdir(exist_ok=True)
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    release(workspace)
    return path


def release(workspace: Path) -> None:
    """Unlock a workspace created by this process (``write_result`` does it)."""
    fd = _held.pop(workspace, None)
    if fd is not None:
        os.close(fd)


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest finished workspaces under ``root``; the deleted paths.

    Workspaces in use (locked) are neither counted nor touched; one whose worker died is
    unlocked and counts as finished.
    """
    try:
        entries = [p for p in root.iterdir() if p.is_dir() and (p / DORCH_DIR).is_dir()]
    except FileNotFoundError:
        return []
    idle = [p for p in entries if p not in _held]
    idle.sort(key=_mtime, reverse=True)
    deleted: list[Path] = []
    kept = 0
    for path in idle:
        if kept < keep:
            if not _in_use(path):
                kept += 1
            continue
        if _delete_unless_in_use(path):
            deleted.append(path)
    return deleted


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _in_use(path: Path) -> bool:
    try:
        fd = os.open(path / DORCH_DIR / _LOCK, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _delete_unless_in_use(path: Path) -> bool:
    """Delete a workspace while holding its lock, so no worker can be using it meanwhile."""
    try:
        fd = os.open(path / DORCH_DIR / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        fd = -1
    try:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            log.warning("could not delete old workspace %s", path)
            return False
        return True
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _fenced(text: str) -> str:
    """TEXT in a Markdown code fence longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}{'' if text.endswith(chr(10)) else chr(10)}{fence}"
