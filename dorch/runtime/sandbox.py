"""Keep the agent away from the worker: a bubblewrap sandbox, else the same user, best effort.

The agent runs prompts and reads pages nobody checked, so dorch treats it as hostile.

Every agent runs under ``dorch/runtime/reaper.py`` (a non-dumpable subreaper that sets the limits and
kills whatever the agent leaves, also when the worker is killed).

``bubblewrap`` (the Debian package ``bubblewrap``): the agent gets new user, pid, IPC and mount
namespaces (the network is shared), no capabilities, read-only system directories and program
prefixes, its workspace read-write, and fresh size-limited tmpfs mounts for its home, /tmp,
/var/tmp and /run; dorch's config, data (queue, outbox, other workspaces), credentials and
keyrings are hidden under empty tmpfs mounts. It cannot see the worker's processes, and
everything it started dies with it (pid namespace, --die-with-parent).

``none``: the agent runs as the worker's user, without capabilities or new privileges. The
worker is non-dumpable, so the agent cannot read its /proc entries, but it can read and write
the user's files (a token kept in a file or keyring, the queue) and signal the worker.

Both: limits per task (processes, memory, disk, output), watched by ``Monitor``; a limit hit
ends the task with an error naming the limit and its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dorch import paths
from dorch.errors import ConfigError
from dorch.runtime import procfs
from dorch.runtime.reaper import children_of, descendants  # the one process-tree walk

if TYPE_CHECKING:
    from dorch.config import Config

log = logging.getLogger(__name__)

SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
FALLBACK_HOME = "/home/agent"
REAPER = Path(__file__).with_name("reaper.py")
MONITOR_INTERVAL = 0.5     # s between two looks at the sandbox's processes
DISK_INTERVAL = 2.0        # s between two walks of the workspace (longer if a walk is slow)

PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36
NPROC_MARGIN = 16
# New user, mount (implied), IPC and PID namespaces; the network is shared. Not --unshare-all:
# its uts and cgroup namespaces are refused by the worker unit (RestrictNamespaces=, to keep its
# exposure at 2.0); under systemd ProtectHostname= already gives the service its own uts.
NAMESPACES = ("--unshare-user", "--unshare-ipc", "--unshare-pid")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    return int(_libc().prctl(option, ctypes.c_ulong(value), 0, 0, 0)) == 0


def harden_process(subreaper: bool = False) -> None:
    """Make this process non-dumpable (its /proc environ and mem unreadable to its own uid) and,
    for a worker, a child subreaper (processes the agent orphans become its children)."""
    _prctl(PR_SET_DUMPABLE, 0)
    if subreaper and _prctl(PR_SET_CHILD_SUBREAPER, 1):
        global _SUBREAPER
        _SUBREAPER = True


_SUBREAPER = False


class SandboxError(ConfigError):
    """The configured isolation cannot be had (exit 78: the service must not start)."""


@dataclass(frozen=True)
class Limits:
    """Per-task limits; 0 means none."""

    max_processes: int = 512
    memory_mb: int = 4096
    disk_mb: int = 10240
    max_output_bytes: int = 6 * 1024 * 1024


@dataclass(frozen=True)
class Sandbox:
    """How one worker runs its agents: ``mode`` is "bubblewrap" or "none"."""

    mode: str
    limits: Limits = field(default_factory=Limits)
    ro_paths: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    bwrap: str = "bwrap"

    @property
    def home(self) -> str:
        """The agent's home inside the sandbox (an empty tmpfs there; unchanged for "none")."""
        home = os.environ.get("HOME", "")
        if self.mode != "bubblewrap":
            return home
        if not home.startswith("/") or home == "/" or any(
            _within(home, d) for d in (*SYSTEM_DIRS, "/proc", "/dev", "/tmp", "/run")
        ) or any(_within(home, h) and home != h for h in self.hidden):
            return FALLBACK_HOME
        return os.path.normpath(home)

    @property
    def scratch(self) -> tuple[str, ...]:
        """The sandbox's writable tmpfs mounts besides the workspace (gone after the task)."""
        return ("/tmp", "/var/tmp", "/run", self.home) if self.mode == "bubblewrap" else ()

    def command(
        self, argv: Sequence[str], env: Mapping[str, str], workspace: Path,
        ro_paths: Iterable[str] = (), readable_in_captures: Iterable[Path] = (),
    ) -> tuple[list[str], dict[str, str]]:
        """The argument vector and environment that run ``argv`` in this sandbox."""
        env = dict(env)
        reaper = [sys.executable, "-I", "-S", str(REAPER), *self.rlimit_options()]
        if self.mode != "bubblewrap":
            return [*reaper, "--same-user", "--", *argv], env
        env["HOME"] = self.home
        for name in ("TMPDIR", "TMP", "TEMP", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
                     "XDG_DATA_HOME", "XDG_STATE_HOME"):
            if not _within(env.get(name, "/"), self.home):   # the defaults: in the new home
                env.pop(name, None)
        args = [*reaper, "--", self.bwrap, *NAMESPACES, "--die-with-parent", "--new-session",
                "--cap-drop", "ALL"]
        bound: list[str] = []
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
                bound.append(d)
        args += ["--proc", "/proc", "--dev", "/dev"]
        for scratch in self.scratch:   # each sized (tmpfs is memory); the monitor sums them
            if self.limits.disk_mb:
                args += ["--size", str(self.limits.disk_mb * 1024 * 1024)]
            args += ["--tmpfs", scratch]
        resolv = os.path.realpath("/etc/resolv.conf")   # often a link into /run (systemd-resolved)
        if not any(_within(resolv, d) for d in bound) and os.path.exists(resolv):
            args += ["--ro-bind", resolv, resolv]
        wanted = [os.path.abspath(os.path.expanduser(p)) for p in (*self.ro_paths, *ro_paths)]
        for path in (*program_prefixes(argv[0], env, self.hidden), *wanted):
            if not any(_within(path, d) for d in bound) and os.path.exists(path):
                args += ["--ro-bind", path, path]
                bound.append(path)
        hidden = [h for h in self.hidden if os.path.isdir(h) and any(_within(h, d) for d in bound)]
        for hide in hidden:
            args += ["--tmpfs", hide]
        # a file asked for by name inside a hidden directory (say /etc/dorch/openclaw.json) is
        # shown again, alone; never one of the credentials
        secret = [d for d in (os.environ.get("CREDENTIALS_DIRECTORY", ""), "/run/credentials") if d]
        for path in wanted:
            if (os.path.exists(path) and any(_within(path, h) and path != h for h in hidden)
                    and not any(_within(path, d) for d in secret)):
                args += ["--ro-bind", path, path]
        ws = str(workspace)
        args += ["--bind", ws, ws]
        captures = workspace / ".dorch"
        if captures.is_dir():
            args += ["--tmpfs", str(captures)]   # the lock, stdout/stderr files, RESULT.md.tmp
            for kept in readable_in_captures:
                args += ["--ro-bind", str(kept), str(kept)]
        args += ["--chdir", ws, "--", *argv]
        return args, env

    def rlimit_options(self) -> list[str]:
        """The reaper's --rlimit options for the limits (see ``dorch/runtime/reaper.py``)."""
        lim, mib = self.limits, 1024 * 1024
        out = []
        if lim.max_processes:
            # RLIMIT_NPROC counts every task of the uid (or of the user namespace), not just
            # the agent's: on top of what runs now, with room for the reaper, bubblewrap and the
            # worker's threads, so that the monitor (which enforces the exact number and says
            # so) sees a fork bomb reach the limit before fork() starts failing.
            out.append(f"nproc={_uid_tasks() + lim.max_processes + NPROC_MARGIN}")
        if lim.memory_mb:
            # per process, twice the total: one process cannot outgrow the monitor between looks
            out.append(f"data={2 * lim.memory_mb * mib}")
        if lim.disk_mb:
            out.append(f"fsize={lim.disk_mb * mib}")
        return [arg for value in out for arg in ("--rlimit", value)]

    def describe(self) -> str:
        if self.mode == "bubblewrap":
            return "sandboxed by bubblewrap"
        return "same user: the agent can read your token (install bubblewrap)"


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def program_prefixes(program: str, env: Mapping[str, str], hidden: Sequence[str]) -> list[str]:
    """The install prefixes of ``program`` to bind read-only: the parent of its directory
    (``<prefix>/bin/prog``) as given and once symlinks are resolved; its own directory instead
    when that prefix would hold a hidden directory or the home (then only the bin dir)."""
    found = shutil.which(program, path=env.get("PATH")) if os.sep not in program else program
    if not found:
        return []
    out = []
    home = os.environ.get("HOME", "")
    for path in dict.fromkeys((os.path.abspath(found), os.path.realpath(found))):
        prefix = os.path.dirname(os.path.dirname(path))
        if prefix in ("", "/") or any(_within(h, prefix) for h in (*hidden, home) if h):
            prefix = os.path.dirname(path)
            if any(_within(h, prefix) for h in (*hidden, home) if h):
                prefix = path
        out.append(prefix)
    return out


@functools.cache
def bwrap_works(bwrap: str = "bwrap") -> str:
    """"" when ``bwrap`` can build a sandbox here, else why not (probed once per process)."""
    found = shutil.which(bwrap)
    if not found:
        return "bwrap is not installed (Debian/Ubuntu: apt install bubblewrap)"
    try:
        done = subprocess.run(
            [found, *NAMESPACES, "--die-with-parent", "--cap-drop", "ALL", "--ro-bind", "/", "/",
             "--proc", "/proc", "--tmpfs", "/tmp", "true"],   # what every sandbox needs
            capture_output=True, text=True, timeout=30, check=False,
            env={"PATH": os.defpath})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{found} does not run: {exc}"
    finally:
        _reap_orphaned_bwrap()
    if done.returncode != 0:
        return (f"{found} cannot create a sandbox here ({done.stderr.strip() or done.returncode};"
                " are unprivileged user namespaces disabled?)")
    return ""


def _reap_orphaned_bwrap() -> None:
    """bwrap's inner process outlives its parent by a moment; in a subreaper it is reparented
    here and would stay a zombie (only bwrap's: an agent's status belongs to its waiter)."""
    for pid in own_children():
        comm, fields = procfs.stat(pid)
        if comm == b"bwrap" and fields[:1] == [b"Z"]:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def hidden_paths(config: Config) -> tuple[str, ...]:
    """What the agent must never see: dorch's config, data, state and credentials, keyrings."""
    candidates = ["/etc/dorch", "/var/lib/dorch", str(paths.config_dir()), str(paths.data_dir()),
                  os.environ.get("STATE_DIRECTORY", ""), os.environ.get("CREDENTIALS_DIRECTORY", ""),
                  "/run/credentials", str(config.local_path().parent),
                  # systemd's credential stores (the encrypted bot token; plain ones too)
                  "/etc/credstore", "/etc/credstore.encrypted", "/usr/lib/credstore",
                  "/usr/lib/credstore.encrypted",
                  os.path.expanduser("~/.local/share/keyrings")]
    if config.file is not None:
        candidates.append(str(Path(config.file).resolve().parent))
    out = []
    for c in candidates:
        for part in c.split(":"):
            if part.startswith("/") and part != "/":
                out.append(os.path.normpath(part))
    return tuple(dict.fromkeys(out))


def from_config(config: Config) -> Sandbox:
    """The sandbox ``[executor] isolation`` asks for; SandboxError when it cannot be had."""
    ex = config.values["executor"]
    where = f"{config.file or '<defaults>'}: [executor] isolation"
    mode = ex["isolation"]
    limits = Limits(ex["max_processes"], ex["memory_mb"], ex["disk_mb"], ex["max_output_bytes"])
    ro_paths = tuple(str(p) for p in ex["ro_paths"])
    for p in ro_paths:
        if not os.path.isabs(os.path.expanduser(p)):
            raise SandboxError(f"{config.file or '<defaults>'}: [executor] ro_paths: {p!r} is "
                               "not an absolute path")
    hidden = hidden_paths(config)
    if mode in ("auto", "bubblewrap"):
        problem = bwrap_works()
        if not problem:
            return Sandbox("bubblewrap", limits, ro_paths, hidden)
        if mode == "bubblewrap" or os.environ.get("INVOCATION_ID"):
            raise SandboxError(
                f"{where}: the agent must run in a bubblewrap sandbox"
                + (" under systemd" if mode == "auto" else "")
                + f", but {problem}; install bubblewrap (apt install bubblewrap)"
                + (", or set isolation = \"none\" to run agents as the service user (they could "
                   "then read its credentials)" if mode == "auto" else "")
            )
        log.warning("agent isolation: same user, the agent can read your token (%s)", problem)
    return Sandbox("none", limits, ro_paths, hidden)


# -- processes -------------------------------------------------------------------------------

def _uid_tasks() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


def own_children() -> set[int]:
    return set(children_of(os.getpid()))


def kill_leftovers(root: int, before: set[int]) -> int:
    """SIGKILL what is left below ``root`` and, in a subreaper, the orphans it adopted since
    (children not in ``before``); reap them. The number of processes killed."""
    killed: set[int] = set()
    for _ in range(100):
        left = descendants(root) if procfs.alive(root) else []
        if _SUBREAPER:
            for child in own_children() - before - {root}:
                left += [child, *descendants(child)]
        left = [p for p in left if procfs.alive(p)]
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        _reap(killed)
        time.sleep(0.01)
    _reap(killed)
    return len(killed)


def _reap(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue


def _pss(pid: int, rss: int) -> int:
    """PID's proportional set size in bytes (RSS if unreadable): shared pages counted once
    across processes, so 200 forked copies of one interpreter are not 200 interpreters."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss


# -- the monitor -----------------------------------------------------------------------------

class Monitor:
    """Watches one running agent (the process tree under ``pid``) and the disk it uses; on a
    limit hit it kills the tree and keeps the error for the task's result."""

    def __init__(self, pid: int, limits: Limits, workspace: Path, on_hit: Callable[[], None],
                 scratch: Sequence[str] = ()) -> None:
        self.pid = pid
        self.scratch = scratch
        self.limits = limits
        self.workspace = workspace
        self.on_hit = on_hit
        self.error = ""
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._next_disk = 0.0

    async def run(self) -> None:
        while not self.error:
            self.check()
            if self.error:
                log.warning("%s", self.error)
                self.on_hit()
                return
            await asyncio.sleep(MONITOR_INTERVAL)

    def check(self) -> None:
        lim = self.limits
        tree = [self.pid, *descendants(self.pid)]
        tasks = rss = 0
        for pid in tree:
            fields = procfs.stat(pid)[1]
            if len(fields) > 22 and fields[0] not in (b"Z", b"X"):
                tasks += int(fields[17])          # num_threads
                rss += _pss(pid, int(fields[21]) * self._page)
        if lim.max_processes and tasks >= lim.max_processes:
            self.error = (f"the agent hit the process limit ({lim.max_processes} processes and "
                          "threads; [executor] max_processes)")
        elif lim.memory_mb and rss > lim.memory_mb * 1024 * 1024:
            self.error = (f"the agent hit the memory limit ({lim.memory_mb} MB; "
                          "[executor] memory_mb)")
        elif lim.disk_mb and time.monotonic() >= self._next_disk:
            started = time.monotonic()
            used = disk_usage(self.workspace) + self._scratch_usage(tree)
            self._next_disk = time.monotonic() + max(DISK_INTERVAL, 10 * (time.monotonic() - started))
            if used > lim.disk_mb * 1024 * 1024:
                self.error = (f"the agent hit the disk limit ({lim.disk_mb} MB in its workspace "
                              "and temporary files; [executor] disk_mb)")

    def _scratch_usage(self, tree: Sequence[int]) -> int:
        """Bytes used in the sandbox's tmpfs mounts, seen through a sandboxed process's root
        (one whose mounts are the sandbox's already: each of the size the sandbox gave it)."""
        size = self.limits.disk_mb * 1024 * 1024
        for pid in tree[1:]:
            used = 0
            try:
                for path in self.scratch:
                    st = os.statvfs(f"/proc/{pid}/root{path}")
                    if st.f_blocks * st.f_frsize != size:
                        raise OSError("not the sandbox's mount (yet)")
                    used += (st.f_blocks - st.f_bfree) * st.f_frsize
            except OSError:
                continue
            return used
        return 0


def disk_usage(root: Path, max_entries: int = 1_000_000) -> int:
    """Bytes allocated under ``root`` (no symlinks followed)."""
    total = 0
    seen = 0
    todo = [str(root)]
    while todo and seen < max_entries:
        try:
            entries = os.scandir(todo.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                seen += 1
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
    return total


def limit_from_exit(limits: Limits, returncode: int | None) -> str:
    """The limit a child's own death points at: SIGXFSZ means a file reached RLIMIT_FSIZE."""
    if returncode == -signal.SIGXFSZ or returncode == 128 + signal.SIGXFSZ:
        return (f"the agent hit the disk limit (a file reached {limits.disk_mb} MB; "
                "[executor] disk_mb)")
    return ""
