"""The agent's parent, between the worker and the agent (or its bubblewrap sandbox).

Run as ``python -I -S reaper.py [--rlimit NAME=VALUE]... [--same-user] -- ARGV...`` (standard
library only, nothing imported from dorch; ``dorch.runtime.sandbox`` imports its process-tree walk).
It makes itself a child subreaper (every process
the agent leaves behind, even after setsid(), becomes its child), then runs ARGV with the
rlimits and PR_SET_PDEATHSIG=SIGKILL; with ``--same-user`` (no sandbox) it is also
non-dumpable (the agent cannot read its /proc entries) and ARGV runs without capabilities and
new privileges. When ARGV exits, or the worker dies (even by kill -9: the reaper gets SIGUSR1
then), it kills everything left and exits with ARGV's status. Doing this here, not in a
preexec_fn of the (threaded) worker, keeps the worker's fork plain.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
import time

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 38, 36
_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> int:
    return int(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0))


def children_of(pid: int) -> list[int]:
    """PID's children (from /proc/PID/task/*/children); none if it is gone."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(k) for k in f.read().split())
        except OSError:
            continue
    return out


def descendants(pid: int, limit: int = 100_000) -> list[int]:
    """Every process below PID, parents first (at most LIMIT: a fork bomb races the walk)."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < limit:
        kids = children_of(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def kill_all() -> None:
    """SIGKILL every descendant until none is left (a fork bomb races us: bounded rounds)."""
    for _ in range(200):
        left = descendants(os.getpid())
        if not left:
            return
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        reap()
        time.sleep(0.005)


def terminate_sandboxed() -> None:
    """SIGTERM every process in the sandbox but bubblewrap's own."""
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "bwrap":
                    continue
            os.kill(pid, signal.SIGTERM)
        except OSError:
            continue


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def in_child(rlimits: list[tuple[int, int]], same_user: bool) -> None:
    """Before exec: die with the reaper, the limits; for the same user no capabilities (root
    too) and no setuid gains (bubblewrap does that itself)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if not same_user:
        os.setpgid(0, 0)   # bubblewrap: the worker's SIGTERM to our group must not kill it
    for which, value in rlimits:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, (value, value))
    if same_user:
        for cap in range(64):
            if prctl(PR_CAPBSET_DROP, cap) != 0 and ctypes.get_errno() == 22:   # EINVAL: no more
                break
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def parse(args: list[str]) -> tuple[list[tuple[int, int]], bool, list[str]]:
    """(rlimits, same_user, argv) from the command line."""
    rlimits, same_user = [], False
    while args and args[0] != "--":
        option = args.pop(0)
        if option == "--same-user":
            same_user = True
        elif option == "--rlimit" and args:
            name, _, value = args.pop(0).partition("=")
            rlimits.append((getattr(resource, "RLIMIT_" + name.upper()), int(value)))
        else:
            raise SystemExit(f"reaper.py: unknown option {option!r}")
    if not args[1:]:
        raise SystemExit("reaper.py: nothing to run (usage: reaper.py [options] -- ARGV...)")
    return rlimits, same_user, args[1:]


def main(args: list[str]) -> int:
    rlimits, same_user, argv = parse(list(args))
    # Without a sandbox the agent could read our /proc entries. With one it cannot see us (its
    # own PID namespace), and we stay dumpable: under systemd's ProtectProc=invisible a
    # non-dumpable process is hidden from the worker, whose monitor then sees no agent at all.
    if same_user:
        prctl(PR_SET_DUMPABLE, 0)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    parent = os.getppid()

    def worker_gone(signum: int, frame: object) -> None:
        kill_all()
        os._exit(137)

    signal.signal(signal.SIGUSR1, worker_gone)
    prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
    if os.getppid() != parent:   # the worker died before PDEATHSIG was set
        return 137
    # The worker signals our whole group. Without a sandbox that is the agent too: it decides
    # what SIGTERM means, we stay to clean up after it. bubblewrap would die of it and SIGKILL
    # the agent, so it has a group of its own and we pass SIGTERM to the agent's processes.
    if same_user:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda signum, frame: terminate_sandboxed())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pid = os.fork()
    except OSError as exc:
        print(f"dorch: cannot start the agent: {exc}", file=sys.stderr)
        return 126
    if pid == 0:
        try:
            in_child(rlimits, same_user)
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"dorch: cannot start {argv[0]!r}: {exc.strerror}", file=sys.stderr)
        os._exit(127)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    kill_all()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
