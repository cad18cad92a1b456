"""Per-task workspaces: fresh per attempt, RESULT.md, retention that never touches work in use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dorch.model import Result, State, Task, TaskSpec
from dorch.runtime.workspace import DORCH_DIR, capture_dir, new_workspace, prune, release, write_result


def task(tid: str = "123", attempt: int = 1, prompt: str = "do it") -> Task:
    return Task(id=tid, spec=TaskSpec(prompt, "openai/gpt-4o", "high"), attempt=attempt,
                submitter="alice")


def age(path: Path, seconds_ago: float) -> None:
    t = path.stat().st_mtime - seconds_ago
    os.utime(path, (t, t))


def test_fresh_directory_per_attempt(tmp_path: Path) -> None:
    a = new_workspace(tmp_path, "123", 1)
    b = new_workspace(tmp_path, "123", 2)
    again = new_workspace(tmp_path, "123", 1)   # the same attempt reclaimed after a hand-back
    assert len({a, b, again}) == 3
    assert a.name == "123-a1" and b.name == "123-a2" and again.name == "123-a1-2"
    assert capture_dir(a) == a / DORCH_DIR and capture_dir(a).is_dir()
    for ws in (a, b, again):
        release(ws)


def test_task_ids_cannot_escape_the_root(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path / "root", "../../etc/passwd", 1)
    assert ws.parent == tmp_path / "root"
    release(ws)


def test_result_file(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path, "123", 1)
    prompt = "show me ```python``` fences"
    result = Result(State.FAILED, output="some ````output````", error="agent exited with code 3",
                    stderr_tail="traceback...\n", duration=1.5)
    path = write_result(ws, result, task(prompt=prompt))
    text = path.read_text()
    assert path == ws / "RESULT.md"
    assert text.startswith("# Task 123 (attempt 1): failed")
    assert "openai/gpt-4o" in text and "high" in text and "alice" in text
    assert prompt in text and "some ````output````" in text
    assert "`````\nsome ````output````\n`````" in text   # fence longer than any backtick run
    assert "agent exited with code 3" in text and "traceback..." in text


def finished(root: Path, n: int) -> list[Path]:
    """N finished workspaces, oldest first."""
    out = []
    for i in range(n):
        ws = new_workspace(root, f"t{i}", 1)
        write_result(ws, Result(State.SUCCEEDED, output=str(i)), task(f"t{i}"))
        age(ws, 1000 - i)
        out.append(ws)
    return out


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    spaces = finished(tmp_path, 5)
    deleted = prune(tmp_path, keep=2)
    assert sorted(deleted) == sorted(spaces[:3])
    assert [p.exists() for p in spaces] == [False, False, False, True, True]
    assert prune(tmp_path, keep=2) == []


def test_prune_never_deletes_a_workspace_in_use(tmp_path: Path) -> None:
    spaces = finished(tmp_path, 3)
    # Another worker process holds an old workspace (its lock): it must survive any prune.
    running = new_workspace(tmp_path, "running", 1)
    release(running)
    age(running, 5000)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
         str(running / DORCH_DIR / "lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        ours = new_workspace(tmp_path, "ours", 1)   # locked by this process, not yet finished
        age(ours, 6000)
        prune(tmp_path, keep=0)
        assert running.exists() and ours.exists()
        assert not any(p.exists() for p in spaces)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    # The holder died (as a killed worker would): its workspace is now fair game.
    prune(tmp_path, keep=0)
    assert not running.exists() and ours.exists()
    release(ours)


def test_prune_leaves_foreign_directories_alone(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff")
    finished(tmp_path, 2)
    prune(tmp_path, keep=0)
    assert (tmp_path / "photos" / "cat.jpg").exists()
    assert prune(tmp_path / "missing", keep=1) == []
