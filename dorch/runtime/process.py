"""Run one agent as a child process: scrubbed environment, own process group, bounded life.

The child never sees a token: its environment is built from an allow-list (``scrubbed_env``).
It runs in a new session, so its whole process group (grandchildren included) can be signalled
at once. Its stdin is an anonymous file and its stdout/stderr are files, so output of any size
is captured without pipe deadlocks and a child that never reads its stdin cannot block us.
On timeout, cancel, cancellation of the awaiting coroutine, and also after a normal exit (stray
background processes), the group gets SIGTERM and, ``grace`` seconds later, SIGKILL.

A process that calls setsid() itself leaves the group and escapes this; with a ``sandbox``
(dorch.runtime.sandbox: every agent a worker runs) the reaper, the bubblewrap pid namespace and the
worker's subreaper catch it, and under systemd the unit's cgroup (KillMode=control-group) too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from dorch.errors import ConfigError
from dorch.runtime import sandbox as sandbox_mod
from dorch.runtime.procfs import group_alive
from dorch.secrets import forbidden_env_name

if TYPE_CHECKING:
    from dorch.runtime.sandbox import Sandbox

log = logging.getLogger(__name__)

STDERR_TAIL_BYTES = 4096
KILL_WAIT = 5.0      # after SIGKILL, how long to wait for the group to disappear
_POLL = 0.02         # group-emptiness polling interval (no event exists for "group is empty")

# Copied from the parent's environment when present. Nothing else reaches the child unless
# named in pass_env / extra, and never a forbidden name (secrets.forbidden_env_name).
ALLOWED_ENV = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "NO_COLOR",
    "TMPDIR", "TMP", "TEMP",
    "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
    "SSL_CERT_FILE", "SSL_CERT_DIR",
})
ALLOWED_ENV_PREFIXES = ("LC_",)

class EnvError(ConfigError, ValueError):
    """A variable that must never reach an agent was asked for (pass_env or extra)."""


def scrubbed_env(
    extra: Mapping[str, str] = {},
    pass_env: Iterable[str] = (),
    secrets: Mapping[str, str] = {},
) -> dict[str, str]:
    """The child's environment: the allow-list, plus ``pass_env`` names, ``extra``, ``secrets``.

    Asking for a forbidden name (a token, DORCH_*, systemd's channels) in ``pass_env`` or
    ``extra`` raises EnvError rather than silently dropping it, so a misconfiguration is seen.
    Names in ``pass_env`` that are not set in the parent's environment are skipped. ``secrets``
    are the agent's declared secrets ([executor] secrets): token-like names pass there.
    """
    bad = sorted({n for n in (*pass_env, *extra) if forbidden_env_name(n)}
                 | {n for n in secrets if forbidden_env_name(n, secret=True)})
    if bad:
        raise EnvError(
            "refusing to pass " + ", ".join(bad) + " to the agent: dorch never gives a child "
            "DORCH_* variables, tokens or systemd's credential/notify/watchdog variables; "
            "remove it from [executor] pass_env"
        )
    env: dict[str, str] = {}
    for name, value in os.environ.items():
        allowed = name in ALLOWED_ENV or name.startswith(ALLOWED_ENV_PREFIXES)
        if allowed and not forbidden_env_name(name):
            env[name] = value
    for name in pass_env:
        if name in os.environ:
            env[name] = os.environ[name]
    env.setdefault("PATH", os.defpath)
    env.update(extra)
    env.update(secrets)
    return env


@dataclass(frozen=True)
class ChildResult:
    """What a child did. ``returncode`` is None when it did not exit by itself (killed, or never
    started: then ``error`` says why)."""

    returncode: int | None
    stdout: str
    stderr_tail: str
    timed_out: bool = False
    cancelled: bool = False
    duration: float = 0.0
    pid: int = 0
    error: str = ""
    stdout_path: Path | None = None
    stderr_path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not (self.timed_out or self.cancelled)


async def run_child(
    argv: Sequence[str],
    *,
    stdin: bytes,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    cancel: asyncio.Event,
    grace: float = 5.0,
    capture_dir: Path,
    sandbox: Sandbox | None = None,
    ro_paths: Sequence[str] = (),
) -> ChildResult:
    """Run ``argv`` (never through a shell) and wait for it, ``timeout`` (<= 0: none) or ``cancel``.

    stdout and stderr are written to ``capture_dir``/stdout and /stderr and kept there; with a
    ``sandbox`` only the first ``max_output_bytes`` of stdout are read (a note at the end says
    where the rest is), its limits are enforced, and whatever the agent left is killed.
    ``ro_paths``: more paths the sandboxed agent may read.
    If the awaiting coroutine is cancelled, the group is stopped before CancelledError propagates.
    """
    if not argv:
        raise ValueError("run_child: empty argument vector")
    capture_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = capture_dir / "stdout", capture_dir / "stderr"
    started = time.monotonic()
    if sandbox is not None:
        if shutil.which(argv[0], path=env.get("PATH", os.defpath)) is None:
            missing = FileNotFoundError(2, "No such file or directory", argv[0])
            return ChildResult(returncode=None, stdout="", stderr_tail="",
                               error=_start_error(argv[0], missing, cwd, env))
        readable = [p for p in ro_paths if Path(p).parent == capture_dir]
        argv, env = sandbox.command(argv, env, cwd, ro_paths=ro_paths,
                                    readable_in_captures=[Path(p) for p in readable])
    before = sandbox_mod.own_children() if sandbox is not None else set()
    fout = open(out_path, "w+b")  # noqa: SIM115 (closed below; read back through this fd)
    ferr = open(err_path, "w+b")  # noqa: SIM115
    try:
        with tempfile.TemporaryFile(dir=capture_dir) as fin:
            fin.write(stdin)
            fin.flush()
            fin.seek(0)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=fin, stdout=fout, stderr=ferr, cwd=cwd, env=dict(env),
                    start_new_session=True,
                )
            except OSError as exc:
                return ChildResult(
                    returncode=None, stdout="", stderr_tail="",
                    duration=time.monotonic() - started, error=_start_error(argv[0], exc, cwd, env),
                )
        return await _wait_child(proc, timeout=timeout, cancel=cancel, grace=grace,
                                 sandbox=sandbox, before=before, cwd=cwd, started=started,
                                 out=(fout, out_path), err=(ferr, err_path))
    finally:
        fout.close()
        ferr.close()


async def _wait_child(
    proc: asyncio.subprocess.Process, *, timeout: float, cancel: asyncio.Event, grace: float,
    sandbox: Sandbox | None, before: set[int], cwd: Path, started: float,
    out: tuple[BinaryIO, Path], err: tuple[BinaryIO, Path],
) -> ChildResult:
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    monitor = watcher = None
    if sandbox is not None:
        monitor = sandbox_mod.Monitor(proc.pid, sandbox.limits, cwd,
                                      on_hit=lambda: _kill_tree(proc.pid), scratch=sandbox.scratch)
        watcher = asyncio.ensure_future(monitor.run())
    timed_out = cancelled = False
    exited_by_itself = False
    waiter = asyncio.ensure_future(proc.wait())
    canceller = asyncio.ensure_future(cancel.wait())
    try:
        done, _ = await asyncio.wait(
            {waiter, canceller}, timeout=timeout if timeout > 0 else None,
            return_when=asyncio.FIRST_COMPLETED,
        )
        exited_by_itself = waiter in done
        if not exited_by_itself:
            cancelled = canceller in done
            timed_out = not cancelled
        await stop_group(pgid, grace)
        # The leader is dead now (or unkillable); bound the wait for its status anyway.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), KILL_WAIT)
    except asyncio.CancelledError:
        try:
            await stop_group(pgid, grace)
        except asyncio.CancelledError:
            _killpg(pgid, signal.SIGKILL)
        raise
    finally:
        canceller.cancel()
        if not waiter.done():
            waiter.cancel()
        if watcher is not None:
            watcher.cancel()
        if sandbox is not None:
            sandbox_mod.kill_leftovers(proc.pid, before)
    limit_error = ""
    cap = 0
    if sandbox is not None and monitor is not None:
        limit_error = monitor.error or sandbox_mod.limit_from_exit(sandbox.limits, proc.returncode)
        cap = sandbox.limits.max_output_bytes
    return ChildResult(
        returncode=proc.returncode if exited_by_itself else None,
        stdout=read_output(out[0], out[1], cap),
        stderr_tail=read_tail(err[0], STDERR_TAIL_BYTES),
        timed_out=timed_out and not limit_error,
        cancelled=cancelled,
        duration=time.monotonic() - started,
        pid=proc.pid,
        error=limit_error,
        stdout_path=out[1],
        stderr_path=err[1],
    )


def _kill_tree(pid: int) -> None:
    """A limit was hit: SIGKILL the child's whole tree now (its group may not hold it all)."""
    for p in [pid, *sandbox_mod.descendants(pid)]:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


def read_output(f: BinaryIO, path: Path, cap: int) -> str:
    """The child's stdout as text, through the worker's own fd (a swapped file changes nothing):
    at most ``cap`` bytes (0: all), then a line saying it was cut and where the whole is."""
    size = os.fstat(f.fileno()).st_size
    limit = size if cap <= 0 else min(size, cap)
    data = os.pread(f.fileno(), limit, 0) if limit else b""
    if limit >= size:
        return data.decode("utf-8", errors="replace")
    text = _cut_utf8(data).decode("utf-8", errors="replace")
    return (text + ("" if text.endswith("\n") else "\n")
            + f"[dorch: output cut at {cap:,} of {size:,} bytes ([executor] max_output_bytes); "
            f"the whole output is in {path}]\n")


def _cut_utf8(data: bytes) -> bytes:
    """DATA without a UTF-8 sequence cut at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


async def stop_group(pgid: int, grace: float) -> bool:
    """SIGTERM the group, SIGKILL it after ``grace`` s if anything is left. True once it is empty."""
    if not group_alive(pgid):
        return True
    _killpg(pgid, signal.SIGTERM)
    if await _wait_group_gone(pgid, grace):
        return True
    log.info("process group %d still alive %.1f s after SIGTERM: sending SIGKILL", pgid, grace)
    _killpg(pgid, signal.SIGKILL)
    if await _wait_group_gone(pgid, KILL_WAIT):
        return True
    log.warning("process group %d did not disappear after SIGKILL", pgid)
    return False


async def _wait_group_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def read_tail(source: Path | BinaryIO, size: int) -> str:
    """The last ``size`` bytes of a file (a path, or an open file read through its fd) as text
    (a split UTF-8 sequence at the cut is dropped)."""
    try:
        if isinstance(source, Path):
            with open(source, "rb") as f:
                end = os.fstat(f.fileno()).st_size
                data = os.pread(f.fileno(), size, max(0, end - size))
        else:
            end = os.fstat(source.fileno()).st_size
            data = os.pread(source.fileno(), size, max(0, end - size))
    except OSError:
        return ""
    if end > size:
        cut = 0
        while cut < 3 and cut < len(data) and 0x80 <= data[cut] <= 0xBF:
            cut += 1
        data = data[cut:]
    return data.decode("utf-8", errors="replace")


def _start_error(program: str, exc: OSError, cwd: Path, env: Mapping[str, str]) -> str:
    if exc.filename is not None and str(exc.filename) == str(cwd):
        return f"cannot start {program!r}: working directory {cwd} does not exist"
    if isinstance(exc, FileNotFoundError):
        if os.sep in program:
            return f"cannot start {program!r}: no such file; check the path in the config"
        return (
            f"cannot start {program!r}: not found on PATH ({env.get('PATH', os.defpath)}); "
            "install it or give its full path in the config"
        )
    if isinstance(exc, PermissionError):
        return f"cannot start {program!r}: permission denied; is it an executable file (chmod +x)?"
    return f"cannot start {program!r}: {exc.strerror or exc}"
