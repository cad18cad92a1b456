"""Boot Debian containers with systemd-nspawn and drive them over SSH, as a real host is driven.

The root built by ``.ci/build-rootfs`` is the read-only lower layer of an overlay, so a container
costs no copy and boots in about a second; each container writes only to its own upper directory.
Containers share the host network (the host has no systemd to give them one), so each sshd
listens on its own free loopback port. Used by the systemd system test, the Ansible molecule
scenario and the .deb test.

    with boot(rootfs, workdir, name="web1") as c:
        c.ssh("systemctl is-active ssh")

From a playbook or a shell (molecule's create/destroy), containers that outlive the command:

    python -m tests.system.nspawn up web1 web2 --workdir DIR   # prints [{name, port, key, ...}]
    python -m tests.system.nspawn down web1 web2 --workdir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOTFS = REPO / ".cache" / "rootfs-bookworm"
HOST_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ssh": "openssh-client",
    "scp": "openssh-client",
    "ssh-keygen": "openssh-client",
}


class ContainerError(RuntimeError):
    """The container did not boot, or a command in it failed; the text says which and why."""


def missing_requirements() -> list[str]:
    """What this host lacks to run containers (empty when it can): root and the host tools."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (systemd-nspawn and debootstrap need it)")
    for tool, package in HOST_TOOLS.items():
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (apt-get install {package})")
    return problems


def ensure_rootfs(rootfs: Path = DEFAULT_ROOTFS, timeout: float = 900) -> Path:
    """Build the Debian root once (``.ci/build-rootfs`` is idempotent, locks against races, and
    rebuilds a root made with another package list, so it is always asked)."""
    proc = subprocess.run(
        [str(REPO / ".ci" / "build-rootfs"), str(rootfs)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise ContainerError(f".ci/build-rootfs {rootfs} failed:\n{proc.stdout}{proc.stderr}")
    return rootfs


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ssh_keypair(directory: Path) -> Path:
    """An ed25519 key for reaching containers (made once per directory); returns the private key."""
    key = directory / "id_ed25519"
    if not key.exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dorch-system-test",
                        "-f", str(key)], check=True, stdin=subprocess.DEVNULL)
    return key


@dataclass
class Container:
    """A booted container: run commands with ``ssh``, copy files with ``put``, ``stop`` it."""

    name: str
    port: int
    key: Path
    upper: Path
    console: Path
    pid: int = 0
    process: subprocess.Popen[bytes] | None = None
    boot_seconds: float = 0.0
    _options: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._options = [
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5", "-i", str(self.key),
        ]

    @property
    def ssh_target(self) -> str:
        return "root@127.0.0.1"

    def ssh_argv(self, command: str) -> list[str]:
        """The ssh command line (for tools such as Ansible inventories, or for debugging)."""
        return ["ssh", *self._options, "-p", str(self.port), self.ssh_target, command]

    def ssh(
        self, command: str, *, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command as root in the container; raise ContainerError if it fails."""
        proc = subprocess.run(
            self.ssh_argv(command), input=input, capture_output=True, text=True, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise ContainerError(
                f"[{self.name}] `{command}` exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def put(self, local: Path, remote: str, *, timeout: float = 120) -> None:
        """Copy a file or a directory tree into the container (scp -r)."""
        proc = subprocess.run(
            ["scp", "-q", "-r", *self._options, "-P", str(self.port), str(local),
             f"{self.ssh_target}:{remote}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise ContainerError(f"[{self.name}] scp {local} -> {remote} failed: {proc.stderr}")

    def write(self, remote: str, text: str, mode: str = "0644") -> None:
        """Create REMOTE with TEXT (parents made), never passing TEXT on a command line."""
        quoted = shlex.quote(remote)
        self.ssh(f"mkdir -p \"$(dirname {quoted})\" && install -m {mode} /dev/stdin {quoted}",
                 input=text)

    def wait_until(self, command: str, timeout: float, what: str, interval: float = 0.2) -> str:
        """Poll COMMAND until it succeeds; its stdout, or ContainerError naming WHAT at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.ssh(command, check=False, timeout=max(timeout, 10))
            if proc.returncode == 0:
                return proc.stdout
            if time.monotonic() >= deadline:
                raise ContainerError(
                    f"[{self.name}] timed out after {timeout:.0f} s waiting for {what}; "
                    f"last try `{command}` -> {proc.returncode}: {proc.stdout}{proc.stderr}"
                )
            time.sleep(interval)

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:])

    def record(self) -> dict[str, Any]:
        """What another process needs to reach or stop this container (see ``load``)."""
        return {"name": self.name, "host": "127.0.0.1", "port": self.port, "user": "root",
                "key": str(self.key), "pid": self.pid, "upper": str(self.upper),
                "console": str(self.console)}

    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid > 0 and _alive(self.pid)

    def stop(self, timeout: float = 30) -> None:
        """Power off cleanly; SIGKILL the nspawn process if that takes longer than TIMEOUT."""
        if not self.running():
            return
        # nspawn turns SIGTERM into an orderly shutdown of the booted container (--kill-signal).
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not _wait_gone(self, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _wait_gone(self, 10)


def _alive(pid: int) -> bool:
    """True while PID runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_gone(c: Container, timeout: float) -> bool:
    if c.process is not None:
        try:
            c.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while _alive(c.pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _wait_booted(c: Container, timeout: float) -> None:
    """Until systemd in the container reports the boot finished (running or degraded)."""
    deadline = time.monotonic() + timeout
    assert c.process is not None
    last = ""
    while time.monotonic() < deadline:
        if c.process.poll() is not None:
            raise ContainerError(
                f"[{c.name}] systemd-nspawn exited with {c.process.returncode} during boot:\n"
                f"{c.console_tail()}"
            )
        proc = c.ssh("systemctl is-system-running --wait", check=False,
                     timeout=max(deadline - time.monotonic(), 5))
        state = proc.stdout.strip()
        if state in ("running", "degraded"):
            if state == "degraded":
                failed = c.ssh("systemctl --failed --no-legend --plain", check=False).stdout
                raise ContainerError(f"[{c.name}] booted degraded; failed units:\n{failed}")
            return
        last = f"{proc.returncode}: {state} {proc.stderr.strip()}"
        time.sleep(0.2)  # sshd not listening yet: poll again until the deadline
    raise ContainerError(
        f"[{c.name}] not booted within {timeout:.0f} s (last ssh: {last})\n{c.console_tail()}"
    )


def start(
    rootfs: Path,
    workdir: Path,
    name: str,
    *,
    files: Mapping[str, bytes | str] | None = None,
    copy_in: Mapping[str, Path] | None = None,
    nspawn_args: tuple[str, ...] = (),
    timeout: float = 60,
) -> Container:
    """Boot a container from ROOTFS (read-only, overlaid); it runs until ``stop()``.

    FILES (container path -> content) and COPY_IN (container path -> host file or directory) are
    written into the overlay before boot: the quickest way to bring in bulk such as a wheelhouse.
    WORKDIR holds the upper layer (a fresh one each boot), the key, the console log and a
    NAME.json record (for ``python -m tests.system.nspawn down``); it is left behind for
    post-mortems.
    """
    if not (rootfs / ".complete").exists():
        raise ContainerError(f"{rootfs}: no complete root; run .ci/build-rootfs {rootfs}")
    workdir.mkdir(parents=True, exist_ok=True)
    key = ssh_keypair(workdir / "ssh")
    upper = workdir / f"{name}.upper"
    shutil.rmtree(upper, ignore_errors=True)
    port = free_port()
    seed: dict[str, bytes | str] = {
        "/etc/ssh/sshd_config.d/dorch-test.conf": (
            f"Port {port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nUseDNS no\n"
        ),
        "/root/.ssh/authorized_keys": key.with_suffix(".pub").read_text(),
        "/etc/hostname": f"{name}\n",
        **(files or {}),
    }
    for path, content in seed.items():
        target = upper / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    for path, source in (copy_in or {}).items():
        target = upper / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    (upper / "root" / ".ssh").chmod(0o700)
    console = workdir / f"{name}.console.log"
    c = Container(name=name, port=port, key=key, upper=upper, console=console)
    argv = [
        "systemd-nspawn", "--quiet", f"--directory={rootfs}",
        f"--overlay={rootfs}:{upper}:/", f"--machine={name}",
        "--boot", "--register=no", "--keep-unit", "--console=passive", *nspawn_args,
    ]
    started = time.monotonic()
    with console.open("wb") as log:
        c.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
    c.pid = c.process.pid
    try:
        _wait_booted(c, timeout)
    except BaseException:
        c.stop()
        raise
    c.boot_seconds = time.monotonic() - started
    (workdir / f"{name}.json").write_text(json.dumps(c.record(), indent=2))
    return c


@contextlib.contextmanager
def boot(rootfs: Path, workdir: Path, name: str, **options: Any) -> Iterator[Container]:
    """``start`` a container for the duration of a ``with`` block (options as for ``start``)."""
    c = start(rootfs, workdir, name, **options)
    try:
        yield c
    finally:
        c.stop()


def load(workdir: Path, name: str) -> Container:
    """The container ``start`` recorded in WORKDIR (e.g. started by another process)."""
    try:
        record = json.loads((workdir / f"{name}.json").read_text())
    except FileNotFoundError:
        raise ContainerError(f"no container {name!r} recorded in {workdir}") from None
    return Container(name=record["name"], port=record["port"], key=Path(record["key"]),
                     upper=Path(record["upper"]), console=Path(record["console"]),
                     pid=record["pid"])


def _main(argv: list[str] | None = None) -> int:
    """CLI for playbooks and shells: ``up NAME...`` boots and prints each container's record as
    JSON (ssh port, key, pid); ``down NAME...`` powers them off."""
    parser = argparse.ArgumentParser(prog="python -m tests.system.nspawn", description=_main.__doc__)
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("names", nargs="+", metavar="NAME")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--rootfs", type=Path, default=DEFAULT_ROOTFS)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    records = []
    for name in args.names:
        if args.action == "up":
            ensure_rootfs(args.rootfs)
            records.append(start(args.rootfs, args.workdir, name, timeout=args.timeout).record())
        else:
            with contextlib.suppress(ContainerError):
                load(args.workdir, name).stop(args.timeout)
    if records:
        print(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
